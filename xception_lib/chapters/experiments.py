"""The paper's experiments at CIFAR scale (chapter 6): ablations, recipes, a control, and their runs.

Residual connections (the paper's Figure 9), the intermediate activation (Figure 10) and the
spectrum from regular to depthwise convolutions are each one ``dataclasses.replace`` of a base
config (:func:`ablations`). Every run is an :class:`xception_lib.ledger.Run`::

    python -m xception_lib.chapters.experiments ablations --seeds 3 --epochs 15 --out runs.jsonl
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from xception_lib import ledger
from xception_lib.config import XceptionConfig
from xception_lib.model import Xception
from xception_lib.runtime import synchronize

EXPERIMENT_FIELDS = {"residual": "residual", "activation": "intermediate_activation", "segments": "segments"}
"""Which config field each experiment varies."""


@dataclass(frozen=True)
class Ablation:
    """One point of the sweep: ``config = dataclasses.replace(base, **changes)``, named e.g. ``"segments=4"``."""

    name: str
    changes: dict[str, Any]
    config: XceptionConfig

    def experiments(self) -> tuple[str, ...]:
        """The experiments this point belongs to: those whose field is the only one changed (the base: all)."""
        return experiments_of(self.changes)


def experiments_of(changes: dict[str, Any]) -> tuple[str, ...]:
    return tuple(e for e, f in EXPERIMENT_FIELDS.items() if set(changes) <= {f})


def spectrum_segments(config: XceptionConfig) -> list[int | None]:
    """1, 2, 4, ... up to the largest power of two dividing every separable convolution's input, then ``None``."""
    common = math.gcd(*config.separable_in_channels())
    largest = common & -common  # the largest power of two dividing it
    return [*(2**k for k in range(largest.bit_length())), None]


def ablations(base: XceptionConfig, experiments: Sequence[str] = tuple(EXPERIMENT_FIELDS)) -> list[Ablation]:
    """The base (the paper's choices), then ``residual=False``, ``activation=relu``/``elu``, the spectrum's points."""
    unknown = [e for e in experiments if e not in EXPERIMENT_FIELDS]
    if unknown:
        raise ValueError(f"unknown experiment(s) {unknown}; expected some of {list(EXPERIMENT_FIELDS)}")
    if not base.residual or base.intermediate_activation != "none" or base.segments is not None:
        raise ValueError(
            "expected a base with residual=True, intermediate_activation='none' and segments=None, got "
            f"residual={base.residual}, intermediate_activation={base.intermediate_activation!r}, "
            f"segments={base.segments}"
        )
    choices = {"residual": [False], "activation": ["relu", "elu"], "segments": spectrum_segments(base)[:-1]}
    points = [Ablation("base", {}, base)]
    for experiment in experiments:
        field_name = EXPERIMENT_FIELDS[experiment]
        short = "activation" if experiment == "activation" else field_name
        for value in choices[experiment]:
            config = dataclasses.replace(base, **{field_name: value})
            points.append(Ablation(f"{short}={value}", {field_name: value}, config))
    return points


def sweep_base(width_multiplier: float = 0.5, middle_blocks: int = 4) -> XceptionConfig:
    """The base of the GPU sweep: ``XceptionConfig.cifar()`` at half width (a quarter of the MACs)."""
    return XceptionConfig.cifar(width_multiplier=width_multiplier, middle_blocks=middle_blocks)


def preview_base() -> XceptionConfig:
    """The base of the CPU preview: an eighth of the width and one middle block."""
    return XceptionConfig.cifar(width_multiplier=0.125, middle_blocks=1)


def preview_train_config(device: torch.device | str = "cpu", **overrides: Any) -> Any:
    """The CPU preview's recipe: one epoch on 256 training images (batches of 32), 500 test images."""
    from xception_lib import train as tr

    settings = {"epochs": 1, "batch_size": 32, "train_subset": 256, "test_subset": 500, "compile": False}
    return tr.recommended_config(device, **{**settings, **overrides})


def ablation_queue(base: XceptionConfig, seeds: int, train_config: Any, runs: Iterable[ledger.Run] = (),
                   experiments: Sequence[str] = tuple(EXPERIMENT_FIELDS)) -> list[tuple[Ablation, Any]]:
    """``(ablation, train_config with its seed)`` for each run still missing from ``runs``, the most informative first.

    The paper's claims (base, residual off, ReLU, ELU) come first, one seed of each per round, then
    the spectrum the same way, so that a queue cut anywhere, and continued later, keeps the claims
    compared at matched seeds. A run is done when ``runs`` holds its configuration, recipe and seed.
    """
    if seeds < 1:
        raise ValueError(f"expected seeds >= 1, got {seeds}")
    points = ablations(base, experiments)
    recipe_key = {k: v for k, v in dataclasses.asdict(train_config).items() if k != "seed"}
    configs = {p.name: json.loads(json.dumps(dataclasses.asdict(p.config))) for p in points}
    done = {(r.name, r.seed) for r in runs if r.kind == "ablation" and configs.get(r.name) == r.model_config
            and {k: v for k, v in r.train_config.items() if k != "seed"} == recipe_key}
    claims = [p for p in points if "segments" not in p.changes]
    spectrum = [p for p in points if "segments" in p.changes]
    return [(p, dataclasses.replace(train_config, seed=s)) for group in (claims, spectrum) for s in range(seeds)
            for p in group if (p.name, s) not in done]


@dataclass(frozen=True)
class SeparableLayer:
    """One separable convolution: its input and output channels and its output size."""

    in_channels: int
    out_channels: int
    height: int
    width: int


def separable_layout(config: XceptionConfig, image_size: int = 32) -> list[SeparableLayer]:
    """Every separable convolution of ``config`` in forward order, derived from the config alone."""
    size = image_size
    if config.stem == "imagenet":
        size = (size - 3) // 2 + 1 - 2  # 3x3 stride 2, then 3x3, no padding
    down = lambda n, stride: n if stride == 1 else -(-n // 2)  # noqa: E731  (3x3 max-pool, stride 2)
    outs: list[int] = []
    sizes: list[int] = []
    for out, stride in zip(config.entry_channels, config.entry_strides):
        outs += [config.channels(out)] * 2
        sizes += [size, size]
        size = down(size, stride)
    mid = config.channels(config.entry_channels[-1])
    e0, e1, e2 = (config.channels(c) for c in config.exit_channels)
    outs += [mid] * (3 * config.middle_blocks) + [mid, e0]
    sizes += [size] * (3 * config.middle_blocks + 2)
    size = down(size, config.exit_stride)
    outs += [e1, e2]
    sizes += [size, size]
    return [SeparableLayer(i, o, s, s) for i, o, s in zip(config.separable_in_channels(), outs, sizes)]


def build_model(architecture: XceptionConfig | str, num_classes: int = 10) -> nn.Module:
    """An :class:`~xception_lib.Xception` of the config, or ``"resnet18"`` (:func:`resnet18_cifar`)."""
    if isinstance(architecture, XceptionConfig):
        return Xception(architecture)
    if architecture == "resnet18":
        return resnet18_cifar(num_classes)
    raise ValueError(f"expected an XceptionConfig or 'resnet18', got {architecture!r}")


def resnet18_cifar(num_classes: int = 10) -> nn.Module:
    """The control: torchvision's ResNet-18 in its CIFAR form (a 3x3 stride-1 stem, no max-pool), 11.2M parameters.

    The first stage keeps the 32x32 input, as in the CIFAR ResNets that reach 94-95% in about 30 epochs.
    """
    from torchvision.models import resnet18

    model = resnet18(num_classes=num_classes)
    model.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


def complexity(architecture: XceptionConfig | str, image_size: int = 32) -> dict[str, int | None]:
    """``params`` of the built model and ``macs`` of one image (fvcore; ``None`` where fvcore is missing)."""
    model = build_model(architecture)
    try:
        from xception_lib.complexity import count_macs

        macs: int | None = count_macs(model, (1, 3, image_size, image_size))
    except ImportError:  # a bare GPU machine
        macs = None
    return {"params": sum(p.numel() for p in model.parameters()), "macs": macs}


def measure_step_time(architecture: XceptionConfig | str, *, batch_size: int, device: torch.device | str = "cpu",
                      image_size: int = 32, amp: str = "off", channels_last: bool = False, warmup: int = 2,
                      steps: int = 5) -> float:
    """Median seconds of one :func:`~xception_lib.train.train_step` of a fresh model on random data.

    Each step is synchronised, so the time is the device's; the global random state is left alone.
    """
    from xception_lib.train import resolve_amp, train_step

    if batch_size < 1 or steps < 1 or warmup < 0:
        raise ValueError(f"expected batch_size >= 1, steps >= 1, warmup >= 0; got {batch_size}, {steps}, {warmup}")
    device = torch.device(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_model(architecture).to(device, memory_format=fmt).train()
        x = torch.randn(batch_size, 3, image_size, image_size).to(device, memory_format=fmt)
        y = torch.randint(0, 10, (batch_size,), device=device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    dtype = resolve_amp(amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    times = []
    for _ in range(warmup + steps):
        synchronize(device)
        start = time.perf_counter()
        train_step(model, x, y, optimizer, scaler, dtype)
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times[warmup:])


@dataclass(frozen=True)
class Recipe:
    """A training recipe: ``TrainConfig`` and model changes, plus what ``fit`` does not do itself."""

    name: str
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields replaced in recommended_config
    model: dict[str, Any] = field(default_factory=dict)  # XceptionConfig fields replaced (the control ignores them)
    cutout: int = 0  # side of a square zeroed at a random place of each training image
    ema: float | None = None  # decay of a weight (and BN statistics) average, updated every step, evaluated at the end
    tta_flip: bool = False  # also evaluate the mean prediction of each test image and its mirror image
    why: str = ""  # where the choice comes from

    def extras(self) -> dict[str, Any]:
        """What the recipe adds beyond ``TrainConfig`` (``ledger.Run.extras``)."""
        out = {"cutout": self.cutout, "ema": self.ema, "tta_flip": self.tta_flip, "model": self.model}
        return {k: v for k, v in out.items() if v}


_LR = {"lr": 0.4}  # 0.1 per 128 images (CIFAR ResNets), scaled linearly to batch 512; the recorded run had 0.2
_REG = {"cutout": 12, "ema": 0.999, "tta_flip": True}  # each also records the accuracy without EMA and without flips
RECIPES: tuple[Recipe, ...] = (
    Recipe("lr0.4+cutout12+ema+flip", _LR, **_REG,
           why="Cutout (DeVries & Taylor 2017), hlb-CIFAR10's EMA, against the overfit"),
    Recipe("lr0.4+flip", _LR, tta_flip=True, why="linear scaling of the learning rate; airbench94's test-time flips"),
    Recipe("lr0.4+cutout12+ema+flip+40ep+compile", {**_LR, "epochs": 40, "compile": True}, **_REG,
           why="more epochs in the same time, paid for by torch.compile"),
    Recipe("lr0.4+ls0.2+cutout12+ema+flip", {**_LR, "label_smoothing": 0.2}, **_REG,
           why="airbench94's label smoothing 0.2"),
    Recipe("lr0.4+dropout0.3+cutout12+ema+flip", _LR, {"dropout": 0.3}, **_REG, why="dropout before the classifier"),
    Recipe("baseline+flip", tta_flip=True, why="the recorded reference recipe (89.7% on an H100, 99.4% train acc.)"),
)
"""The recipe race's candidates for ``xception_cifar``, most promising first, grounded in fast CIFAR-10 training."""


def recipe(name: str) -> Recipe:
    """The recipe of :data:`RECIPES` called ``name``."""
    by_name = {r.name: r for r in RECIPES}
    if name not in by_name:
        raise ValueError(f"unknown recipe {name!r}; expected one of {list(by_name)}")
    return by_name[name]


class WithExtras(nn.Module):
    """``model`` with a recipe's Cutout (of training batches) and weight EMA (updated every training step).

    In eval mode it is ``model``; the average is kept outside the module's children, away from the optimizer.
    """

    def __init__(self, model: nn.Module, cutout: int = 0, ema: float | None = None) -> None:
        super().__init__()
        self.model, self.cutout, self.decay = model, cutout, ema
        self.config = getattr(model, "config", None)
        self._ema: list[nn.Module] = []  # a list, so that nn.Module does not register it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.decay is not None:
            self.update_ema()  # the weights after the previous step
        if self.training and self.cutout:
            n, _, h, w = x.shape
            top = torch.randint(-self.cutout // 2, h - self.cutout // 2, (n, 1, 1), device=x.device)
            left = torch.randint(-self.cutout // 2, w - self.cutout // 2, (n, 1, 1), device=x.device)
            rows = torch.arange(h, device=x.device).view(1, h, 1)
            cols = torch.arange(w, device=x.device).view(1, 1, w)
            inside = (rows >= top) & (rows < top + self.cutout) & (cols >= left) & (cols < left + self.cutout)
            x = x * (~inside).unsqueeze(1).to(x.dtype)  # 0 is the mean of normalised images
        return self.model(x)

    @torch.compiler.disable
    @torch.no_grad()
    def update_ema(self) -> None:
        """Move the average towards the current weights (the first call copies them)."""
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        if not self._ema:
            self._ema.append(AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(self.decay), use_buffers=True))
        self._ema[0].update_parameters(self.model)

    @property
    def averaged(self) -> nn.Module:
        return self._ema[0].module


def test_accuracy(model: nn.Module, data: Any, *, device: torch.device | str, flip: bool = False) -> float:
    """Accuracy on ``data``'s test images; with ``flip``, of the average prediction of each image and its mirror."""
    from xception_lib.train import predict

    kw = {"device": device, "mean": data.mean, "std": data.std}
    probs = predict(model, data.test_images, **kw)
    if flip:
        probs = probs + predict(model, data.test_images.flip(-1), **kw)
    return (probs.argmax(1) == data.test_labels).float().mean().item()


def train_run(name: str, architecture: XceptionConfig | str, train_config: Any, data: Any, *,
              device: torch.device | str, kind: str = "ablation", study: str = "ablations",
              changes: dict[str, Any] | None = None, extras: Recipe | None = None, step_time: bool = True,
              command: str | None = None, notes: dict[str, Any] | None = None, progress: bool = False) -> ledger.Run:
    """Train one model (``XceptionConfig`` or ``"resnet18"``) with :func:`~xception_lib.train.fit`; return its run.

    The initial weights come from ``train_config.seed`` (the global random state is left alone);
    ``extras``' Cutout, EMA and test-time flips apply; ``step_time`` first times a fresh model's step.
    """
    from xception_lib import train as tr
    from xception_lib.provenance import environment

    device = torch.device(device)
    extras = extras or Recipe("plain")
    cost = complexity(architecture)
    step_s = None
    if step_time:
        step_s = measure_step_time(architecture, batch_size=train_config.batch_size, device=device,
                                   amp=train_config.amp, channels_last=train_config.channels_last)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(train_config.seed)
        model = build_model(architecture, data.num_classes)
    trained: nn.Module = WithExtras(model, extras.cutout, extras.ema) if extras.cutout or extras.ema else model
    start = time.perf_counter()
    history = tr.fit(trained, data, train_config, device=device, progress=progress)
    wall = time.perf_counter() - start
    test = data.subset(test=train_config.test_subset, seed=train_config.seed) if train_config.test_subset else data
    metrics = {}
    if extras.ema:
        trained.update_ema()  # the last step
        metrics["ema_test_acc"] = test_accuracy(trained.averaged, test, device=device)
    if extras.tta_flip:
        metrics["tta_test_acc"] = test_accuracy(model, test, device=device, flip=True)
        if extras.ema:
            metrics["ema_tta_test_acc"] = test_accuracy(trained.averaged, test, device=device, flip=True)
    speeds = [s for s in history.images_per_sec if s > 0]
    xception = isinstance(architecture, XceptionConfig)
    return ledger.Run(
        kind=kind, study=study, name=name, model="xception" if xception else str(architecture),
        model_config=json.loads(json.dumps(dataclasses.asdict(architecture))) if xception else {},
        changes=dict(changes or {}), train_config=dataclasses.asdict(train_config), seed=int(train_config.seed),
        epochs=history.epochs, params=int(cost["params"]), macs=cost["macs"],
        final_test_acc=float(history.test_acc[-1]), wall_time_s=wall,
        images_per_sec=float(statistics.median(speeds)) if speeds else math.nan, history=history,
        environment=ledger.Environment(**environment(device)),
        data={"name": data.name, "source": str(data.source), "train_size": len(data.train_labels),
              "test_size": len(data.test_labels)},
        command=command if command is not None else shlex.join(sys.argv), step_time_s=step_s,
        step_batch_size=train_config.batch_size if step_time else None, extras=extras.extras(), metrics=metrics,
        notes=dict(notes or {}), preview=bool(train_config.is_preview or device.type != "cuda"),
    )


def reference_run() -> ledger.Run | None:
    """The book's latest recorded reference run of ``xception_cifar``, or ``None``."""
    return ledger.latest(ledger.read(), kind="reference")


def ablation_runs(epochs: int | None = None) -> list[ledger.Run]:
    """The book's recorded ablation runs (GPU, not previews), of ``epochs`` epochs if given."""
    return [r for r in ledger.select(ledger.read(), kind="ablation") if epochs is None or r.epochs == epochs]


@dataclass(frozen=True)
class Goal:
    """The reference run against its goal (test accuracy ``target_acc`` within ``target_s`` seconds)."""

    final_test_acc: float
    best_test_acc: float
    best_epoch: int
    final_train_acc: float
    epochs: int
    wall_time_s: float
    seconds_per_epoch: float
    epochs_in_target: int
    met_accuracy: bool
    met_time: bool


def reference_summary(run: ledger.Run, *, target_acc: float = 0.94, target_s: float = 120.0) -> Goal:
    """How a run measures up to the goal; ``seconds_per_epoch`` includes the evaluation."""
    test_acc = run.history.test_acc
    best = max(range(len(test_acc)), key=test_acc.__getitem__)
    per_epoch = run.wall_time_s / run.epochs
    return Goal(run.final_test_acc, test_acc[best], best + 1, run.history.train_acc[-1], run.epochs, run.wall_time_s,
                per_epoch, int(target_s // per_epoch), run.final_test_acc >= target_acc, run.wall_time_s <= target_s)


def summary_table(runs: Sequence[ledger.Run]) -> Any:  # -> pandas.DataFrame
    """One row per configuration: runs, accuracy mean ± s.e. (%), parameters, MACs, ms per step."""
    import pandas as pd

    rows = [{"config": s.name, "runs": s.n, "test acc %": _pm(s.mean, s.se), "params (M)": s.first.params / 1e6,
             "MACs (M)": (s.first.macs or math.nan) / 1e6, "ms/step": 1e3 * (s.first.step_time_s or math.nan)}
            for s in ledger.summarize(runs)]
    return pd.DataFrame(rows).set_index("config").round(2).dropna(axis=1, how="all")  # no step times: no column


def effects_table(sweeps: dict[str, Sequence[ledger.Run]]) -> Any:  # -> pandas.DataFrame
    """Each configuration minus the base, in points ± s.e. (runs), one column per sweep; then MACs x, time x."""
    import pandas as pd

    columns = {label: {e.name: f"{_pm(e.delta, e.se, sign=True)} ({e.n})" for e in ledger.effects(runs)}
               for label, runs in sweeps.items()}
    table = pd.DataFrame(columns).fillna("-")
    first = {e.name: e for e in ledger.effects(next(iter(sweeps.values())))}
    table["MACs x"] = [round(first[n].macs_ratio, 2) if n in first else math.nan for n in table.index]
    table["time x"] = [round(first[n].step_time_ratio, 2) if n in first else math.nan for n in table.index]
    return table


def _pm(value: float, se: float, sign: bool = False) -> str:
    spread = "n/a" if math.isnan(se) else f"{100 * se:.2f}"
    return f"{100 * value:{'+' if sign else ''}.2f} ± {spread}"


def experiment_rows(runs: Sequence[ledger.Run], experiment: str) -> list[ledger.Summary]:
    """The configurations of one experiment (base included); the spectrum sorted from 1 segment to depthwise."""
    if experiment not in EXPERIMENT_FIELDS:
        raise ValueError(f"unknown experiment {experiment!r}; expected one of {list(EXPERIMENT_FIELDS)}")
    rows = [s for s in ledger.summarize(runs) if experiment in experiments_of(s.first.changes)]
    if experiment == "segments":
        rows.sort(key=lambda s: s.first.model_config["segments"] or math.inf)
    return rows


_BASE_VALUES = {"residual": True, "activation": "none", "segments": "depthwise"}


def point_label(row: ledger.Summary, experiment: str) -> str:
    """A configuration's value of the experiment's field (``"True"``, ``"elu"``, ``"8"``, ``"depthwise"``)."""
    return str(row.first.changes.get(EXPERIMENT_FIELDS[experiment], _BASE_VALUES[experiment]))


def plot_experiment(runs: Sequence[ledger.Run], experiment: str, title: str | None = None):  # -> Figure
    """Test accuracy per epoch (mean over runs, band min..max) and final accuracy (mean ± s.e., every run a dot)."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    rows = experiment_rows(runs, experiment)
    fig, (curve, final) = plt.subplots(1, 2, figsize=(7, 3.2), gridspec_kw={"width_ratios": (3, 2)})
    colors = plt.get_cmap("viridis")([0.9 * i / max(1, len(rows) - 1) for i in range(len(rows))])
    for pos, (row, color) in enumerate(zip(rows, colors)):
        n = min(r.epochs for r in row.runs)
        per_epoch = list(zip(*(r.history.test_acc[:n] for r in row.runs)))
        epochs = range(1, n + 1)
        curve.plot(epochs, [100 * statistics.fmean(v) for v in per_epoch], "o-", ms=3, color=color,
                   label=f"{point_label(row, experiment)} ({row.n})")
        band = [[100 * f(v) for v in per_epoch] for f in (min, max)]
        curve.fill_between(epochs, *band, color=color, alpha=0.2)
        yerr = 0 if math.isnan(row.se) else 100 * row.se
        final.bar(pos, 100 * row.mean, yerr=yerr, color=color, capsize=4, alpha=0.8)
        final.plot([pos] * row.n, [100 * r.final_test_acc for r in row.runs], "k.", ms=4)
    curve.set(xlabel="epoch", ylabel="test accuracy (%)")
    curve.xaxis.set_major_locator(MaxNLocator(integer=True))
    curve.legend(fontsize=9, title="(runs)", title_fontsize=9)
    low, high = min(100 * r.min for r in rows), max(100 * r.max for r in rows)
    pad = max(1.0, 0.2 * (high - low))
    final.set_ylim(max(0.0, low - pad), min(100.0, high + pad))
    final.set_xticks(range(len(rows)), [point_label(r, experiment) for r in rows])
    final.set(xlabel=EXPERIMENT_FIELDS[experiment], ylabel="final test accuracy (%)")
    for ax in (curve, final):
        ax.grid(alpha=0.3)
    fig.suptitle(title or f"{experiment}: {_where(runs)}", fontsize=10)
    fig.tight_layout()
    return fig


def plot_spectrum(runs: Sequence[ledger.Run], title: str | None = None):  # -> Figure
    """Final accuracy (mean ± s.e.) against segments, and against MACs and measured step time (two panels)."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    rows = experiment_rows(runs, "segments")
    labels = [point_label(r, "segments").replace("depthwise", "dw") for r in rows]
    accs = [100 * r.mean for r in rows]
    errs = [0 if math.isnan(r.se) else 100 * r.se for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(7.2, 2.9), sharey=True)
    axes[0].errorbar(range(len(rows)), accs, yerr=errs, fmt="o-", capsize=3)
    axes[0].set_xticks(range(len(rows)), labels)
    axes[0].set(xlabel="segments", ylabel="final test acc. (%)")
    costs = (("macs", 1e6, "MACs per image (M)"), ("step_time_s", 1e-3, "ms per training step"))
    for ax, (attr, scale, label) in zip(axes[1:], costs):
        values = [(getattr(r.first, attr) or math.nan) / scale for r in rows]
        ax.errorbar(values, accs, yerr=errs, fmt="o", capsize=3)
        for i, (v, a, text) in enumerate(zip(values, accs, labels)):  # alternate sides: neighbours do not overlap
            above = i % 2 or a == min(accs)  # the lowest point's label stays clear of the axis
            ax.annotate(text, (v, a), textcoords="offset points", xytext=(5, 6 if above else -12), fontsize=9)
        if attr == "macs":  # a wide range: logarithmic, labelled 100, 200, 500, ...
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.margins(x=0.15)
        ax.set_xlabel(label)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(title or f"The spectrum: {_where(runs)}", fontsize=10)
    fig.tight_layout()
    return fig


def _where(runs: Sequence[ledger.Run]) -> str:
    env = runs[0].environment
    kind = "CPU PREVIEW" if not runs[0].is_result else "recorded"
    return f"{kind}, {env.device_name}, {runs[0].epochs} epochs"


def _positive(kind: type) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}") from None
        if not value > 0 or (kind is float and not math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}")
        return value

    return parse


_PROG = "python -m xception_lib.chapters.experiments"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=_PROG, description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    commands = {"cifar10": "the reference run of xl.xception_cifar with a recipe", "ablations": "the ablation queue"}
    for name, text in commands.items():
        p = sub.add_parser(name, help=text)
        p.add_argument("--out", required=True, type=Path, help="the ledger (JSON Lines) to append every run to")
        p.add_argument("--data-root", default=None, help="CIFAR-10 location (default: $XCEPTION_DATA)")
        p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
        p.add_argument("--preview", action="store_true", help="a labelled CPU-sized preview (never a GPU result)")
        p.add_argument("--epochs", type=_positive(int), default=None)
        p.add_argument("--batch-size", type=_positive(int), default=None)
        p.add_argument("--train-subset", type=_positive(int), default=None, help="train on this many images")
        p.add_argument("--test-subset", type=_positive(int), default=None, help="evaluate on this many test images")
        p.add_argument("--no-progress", action="store_true")
        if name == "cifar10":
            p.add_argument("--seed", type=int, default=0)
            p.add_argument("--recipe", default="baseline+flip", help=f"one of {[r.name for r in RECIPES]}")
        else:
            p.add_argument("--seeds", type=_positive(int), default=3, help="seeds per config (default 3)")
            p.add_argument("--budget-s", type=_positive(float), default=None,
                           help="start no run after this many seconds")
            p.add_argument("--width", type=_positive(float), default=0.5, help="width multiplier of the base")
            p.add_argument("--middle-blocks", type=_positive(int), default=4)
            p.add_argument("--experiments", default=",".join(EXPERIMENT_FIELDS),
                           help="some of residual,activation,segments")
    return parser


def _check(args: argparse.Namespace, parser: argparse.ArgumentParser) -> torch.device:
    """Every argument checked before any work; a mistake exits with a message naming it."""
    try:
        recipe(args.recipe) if args.command == "cifar10" else ablations(sweep_base(), args.experiments.split(","))
    except ValueError as error:
        parser.error(f"--{'recipe' if args.command == 'cifar10' else 'experiments'}: {error}")
    try:
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError as error:
        parser.error(f"--device: {error}")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA GPU is available; use --device cpu --preview")
    if device.type != "cuda" and not args.preview:
        parser.error("no GPU: the full schedule is meant for one; pass --preview for a labelled CPU preview")
    if args.out.is_dir():
        parser.error(f"--out {args.out}: is a folder; expected a ledger file such as {args.out / ledger.LEDGER_NAME}")
    folder = next(p for p in [args.out.resolve().parent, *args.out.resolve().parents] if p.exists())
    try:
        if not folder.is_dir():
            raise NotADirectoryError(f"{folder} is a file")
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as error:
        parser.error(f"--out {args.out}: cannot write in {folder} ({error}); choose a writable place")
    if args.out.exists():
        try:
            ledger.read(args.out)
        except ValueError as error:
            parser.error(f"--out: {error}")
    if args.data_root is not None and not Path(args.data_root).exists():
        parser.error(f"--data-root {args.data_root}: does not exist")
    return device


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: validate everything, load the data, train, append each run to ``--out``."""
    parser = _parser()
    args = parser.parse_args(argv)
    device = _check(args, parser)
    command = shlex.join([*_PROG.split(), *(sys.argv[1:] if argv is None else argv)])
    from xception_lib import data as xd
    from xception_lib import train as tr

    data = xd.load_cifar("cifar10", root=args.data_root)
    overrides = {k: v for k in ("epochs", "batch_size", "train_subset", "test_subset") if (v := getattr(args, k))}
    start = time.perf_counter()
    chosen = recipe(args.recipe) if args.command == "cifar10" else None
    if chosen:
        settings = {**chosen.train, "seed": args.seed, **overrides}
    else:
        settings = overrides if args.preview else {"epochs": 15, **overrides}
    cfg = preview_train_config(device, **settings) if args.preview else tr.recommended_config(device, **settings)
    if chosen:
        config = dataclasses.replace(preview_base() if args.preview else XceptionConfig.cifar(), **chosen.model)
        jobs = [("reference", chosen.name, config, cfg, {})]
    else:
        base = preview_base() if args.preview else sweep_base(args.width, args.middle_blocks)
        queue = ablation_queue(base, args.seeds, cfg, ledger.read(args.out), args.experiments.split(","))
        jobs = [("ablation", p.name, p.config, c, p.changes) for p, c in queue]
    for kind, name, config, cfg, changes in jobs:
        if getattr(args, "budget_s", None) and time.perf_counter() - start > args.budget_s:
            print(f"budget of {args.budget_s:g} s spent: stopping before {name}, seed {cfg.seed}")
            break
        run = train_run(name, config, cfg, data, device=device, kind=kind, study="reference" if chosen else "ablations",
                        changes=changes, extras=chosen, command=command, progress=not args.no_progress)
        ledger.append(run, args.out)
        print(f"{name} seed {run.seed}: test accuracy {100 * run.final_test_acc:.2f}% in {run.wall_time_s:.1f} s "
              f"-> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
