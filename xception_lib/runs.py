"""Training runs for the ledger (chapter 5's recipe race, chapter 6's ablations): models, costs, step times, recipes."""

from __future__ import annotations

import dataclasses
import functools
import shlex
import statistics
import sys
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from xception_lib import ledger
from xception_lib.complexity import count_macs
from xception_lib.config import XceptionConfig
from xception_lib.evaluation import predict
from xception_lib.model import Xception
from xception_lib.provenance import check, environment
from xception_lib.runtime import resolve_amp
from xception_lib.timing import Timing, clock, measure
from xception_lib.train import fit, train_step


def build_model(architecture: XceptionConfig | str, num_classes: int = 10) -> nn.Module:
    """An :class:`~xception_lib.Xception` of the config, or ``"resnet18"``: the control, torchvision's ResNet-18
    with a 3x3 stride-1 stem and no max-pool, which keep the 32x32 input in the first stage, as in the CIFAR ResNets
    that reach 94-95% in about 30 epochs."""
    if isinstance(architecture, XceptionConfig):
        return Xception(architecture)
    if architecture != "resnet18":
        raise ValueError(f"expected an XceptionConfig or 'resnet18', got {architecture!r}")
    from torchvision.models import resnet18

    model = resnet18(num_classes=num_classes)
    model.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


def complexity(architecture: XceptionConfig | str) -> dict[str, int | None]:
    """``params`` of the built model and ``macs`` of one 32x32 image (fvcore; ``None`` where fvcore is missing)."""
    model = build_model(architecture)
    try:
        macs: int | None = count_macs(model, (1, 3, 32, 32))
    except ImportError:  # fvcore is missing (a bare GPU machine)
        macs = None
    return {"params": sum(p.numel() for p in model.parameters()), "macs": macs}


def measure_step_time(
    architecture: XceptionConfig | str,
    *,
    batch_size: int,
    device: torch.device | str = "cpu",
    amp: str = "off",
    channels_last: bool = False,
    warmup: int = 2,
    steps: int = 5,
    budget_s: float | None = None,
) -> Timing:
    """The seconds of single :func:`~xception_lib.train.train_step` calls of a fresh model on random 32x32 images,
    timed by :func:`xception_lib.timing.measure` (``steps`` within ``budget_s``); the global random state is left alone.
    """
    check("batch_size", batch_size, int, 1)
    device = torch.device(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_model(architecture).to(device).to(memory_format=fmt).train()
        x = torch.randn(batch_size, 3, 32, 32).to(device, memory_format=fmt)
        y = torch.randint(0, 10, (batch_size,), device=device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    dtype = resolve_amp(amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    step = functools.partial(train_step, model, x, y, optimizer, scaler, dtype)
    return measure(step, warmup=warmup, repeats=steps, budget_s=budget_s, device=device)


def estimate(step: Timing, steps: int) -> str:
    """A training-time estimate from a measured step: the median and the range of the steps, times ``steps``."""
    low, mid, high = (steps * t / 60 for t in (min(step.times), step.median, max(step.times)))
    cut = " (the time budget cut the measurement short)" if step.truncated else ""
    return (
        f"{1000 * step.median:.0f} ms per step (median of {len(step.times)}; fastest {1000 * min(step.times):.0f} ms, "
        f"slowest {1000 * max(step.times):.0f} ms){cut}\nESTIMATE for {steps:,} steps: {mid:.1f} min "
        f"(fastest to slowest step: {low:.1f}-{high:.1f} min),\nevaluation not included"
    )


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


_LR: dict[str, Any] = {"lr": 0.4}  # 0.1 per 128 images (CIFAR ResNets), scaled to batch 512; the recorded run had 0.2
# against the overfit; each recipe with EMA or flips also records the accuracy without them
_REG: dict[str, Any] = {"cutout": 12, "ema": 0.999, "tta_flip": True}
_LONG: dict[str, Any] = {**_LR, "epochs": 40, "compile": True}
RECIPES: tuple[Recipe, ...] = (
    Recipe("lr0.4+cutout12+ema+flip", _LR, **_REG, why="Cutout (DeVries & Taylor 2017), hlb-CIFAR10's EMA"),
    Recipe("lr0.4+flip", _LR, tta_flip=True, why="linear scaling of the learning rate; airbench94's test-time flips"),
    Recipe("lr0.4+cutout12+ema+flip+40ep+compile", _LONG, **_REG, why="more epochs, paid for by torch.compile"),
    Recipe("lr0.4+ls0.2+cutout12+ema+flip", {**_LR, "label_smoothing": 0.2}, **_REG, why="as in airbench94"),
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
        self._ema: list[AveragedModel] = []  # a list, so that nn.Module does not register it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.decay is not None:
            self.update_ema()  # the weights after the previous step
        if self.training and self.cutout:
            c, (n, _, h, w) = self.cutout, x.shape
            top = torch.randint(-c // 2, h - c // 2, (n, 1, 1), device=x.device)
            left = torch.randint(-c // 2, w - c // 2, (n, 1, 1), device=x.device)
            rows, cols = torch.arange(h, device=x.device).view(1, h, 1), torch.arange(w, device=x.device).view(1, 1, w)
            inside = (rows >= top) & (rows < top + c) & (cols >= left) & (cols < left + c)
            x = x * (~inside).unsqueeze(1).to(x.dtype)  # 0 is the mean of normalised images
        return self.model(x)

    @torch.compiler.disable
    @torch.no_grad()
    def update_ema(self) -> nn.Module:
        """Move the average towards the current weights (the first call copies them, on their device); return it."""
        if not self._ema:
            self._ema.append(AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(self.decay), use_buffers=True))
        self._ema[0].update_parameters(self.model)
        return self._ema[0].module


def test_accuracy(model: nn.Module, data: Any, *, device: torch.device | str, flip: bool = False) -> float:
    """Accuracy on ``data``'s test images; with ``flip``, of the average prediction of each image and its mirror."""
    kw = {"device": device, "mean": data.mean, "std": data.std}
    probs = predict(model, data.test_images, **kw)
    if flip:
        probs = probs + predict(model, data.test_images.flip(-1), **kw)
    return (probs.argmax(1) == data.test_labels).float().mean().item()


def train_run(
    name: str,
    architecture: XceptionConfig | str,
    cfg: Any,
    data: Any,
    *,
    device: torch.device | str,
    kind: str = "ablation",
    study: str = "ablations",
    changes: dict[str, Any] | None = None,
    extras: Recipe | None = None,
    step_time: bool = True,
    command: str | None = None,
    notes: dict[str, Any] | None = None,
    progress: bool = False,
) -> ledger.Run:
    """Train one model (``XceptionConfig`` or ``"resnet18"``) with :func:`~xception_lib.train.fit`; return its run.

    The initial weights come from ``cfg.seed`` (the global random state is left alone); ``extras``' Cutout, EMA and
    test-time flips apply; ``step_time`` first times a fresh model's step.
    """
    device = torch.device(device)
    extras = extras or Recipe("plain")
    cost = complexity(architecture)
    options = {"device": device, "amp": cfg.amp, "channels_last": cfg.channels_last}
    step_s = measure_step_time(architecture, batch_size=cfg.batch_size, **options).median if step_time else None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = build_model(architecture, data.num_classes)
    extra = WithExtras(model, extras.cutout, extras.ema) if extras.cutout or extras.ema else None
    elapsed = clock()
    history = fit(extra or model, data, cfg, device=device, progress=progress)
    wall = elapsed()
    test = data.subset(test=cfg.test_subset, seed=cfg.seed) if cfg.test_subset else data
    averaged = {"ema_": extra.update_ema()} if extra is not None and extras.ema else {}  # after the last step
    metrics = {f"{k}test_acc": test_accuracy(m, test, device=device) for k, m in averaged.items()}
    if extras.tta_flip:  # the model's and the average's
        for k, m in {"": model, **averaged}.items():
            metrics[f"{k}tta_test_acc"] = test_accuracy(m, test, device=device, flip=True)
    sizes = {"train_size": len(data.train_labels), "test_size": len(data.test_labels)}
    added = {"cutout": extras.cutout, "ema": extras.ema, "tta_flip": extras.tta_flip, "model": extras.model}
    return ledger.Run(
        kind=kind,
        study=study,
        name=name,
        model="xception" if isinstance(architecture, XceptionConfig) else str(architecture),
        model_config=architecture.to_dict() if isinstance(architecture, XceptionConfig) else {},
        changes=dict(changes or {}),
        train_config=dataclasses.asdict(cfg),
        seed=int(cfg.seed),
        epochs=history.epochs,
        params=int(cost["params"] or 0),
        macs=cost["macs"],
        final_test_acc=float(history.test_acc[-1]),
        wall_time_s=wall,
        images_per_sec=statistics.median([s for s in history.images_per_sec if s > 0] or [float("nan")]),
        history=history,
        environment=environment(device),
        data={"name": data.name, "source": str(data.source), **sizes},
        command=command if command is not None else shlex.join(sys.argv),
        step_time_s=step_s,
        step_batch_size=cfg.batch_size if step_time else None,
        extras={k: v for k, v in added.items() if v},  # what the recipe adds beyond TrainConfig
        metrics=metrics,
        notes=dict(notes or {}),
        preview=bool(cfg.is_preview or device.type != "cuda"),
    )
