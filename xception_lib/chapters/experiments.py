"""The paper's experiments at CIFAR scale (chapter 6): the ablations, their queue, tables and figures.

Residual connections (the paper's Figure 9), the intermediate activation (Figure 10) and the spectrum from regular to
depthwise convolutions are each one ``dataclasses.replace`` of a base config (:func:`ablations`). Every run is an
:class:`xception_lib.ledger.Run` (:func:`xception_lib.runs.train_run`): ``python -m xception_lib.chapters ablations``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from xception_lib import ledger, train
from xception_lib.chapters import style
from xception_lib.config import XceptionConfig

#: The config field each experiment varies.
EXPERIMENT_FIELDS = {"residual": "residual", "activation": "intermediate_activation", "segments": "segments"}


@dataclass(frozen=True)
class Ablation:
    """One point of the sweep: ``config = dataclasses.replace(base, **changes)``, named e.g. ``"segments=4"``."""

    name: str
    changes: dict[str, Any]
    config: XceptionConfig


def spectrum_segments(config: XceptionConfig) -> list[int | None]:
    """1, 2, 4, ... up to the largest power of two dividing every separable convolution's input, then ``None``."""
    common = math.gcd(*config.separable_in_channels())
    largest = common & -common  # the largest power of two dividing it
    return [*(2**k for k in range(largest.bit_length())), None]


def ablations(base: XceptionConfig) -> list[Ablation]:
    """The base (the paper's choices), then ``residual=False``, ``activation=relu``/``elu``, the spectrum's points."""
    paper = {"residual": True, "intermediate_activation": "none", "segments": None}
    got = {name: getattr(base, name) for name in paper}
    if got != paper:
        raise ValueError(f"expected a base with the paper's choices {paper}, got {got}")
    spectrum = spectrum_segments(base)[:-1]
    choices: dict[str, list[Any]] = {"residual": [False], "activation": ["relu", "elu"], "segments": spectrum}
    points = [Ablation("base", {}, base)]
    for experiment, field in EXPERIMENT_FIELDS.items():
        for value in choices[experiment]:
            changes = {field: value}
            points.append(Ablation(f"{experiment}={value}", changes, dataclasses.replace(base, **changes)))
    return points


def sweep_base() -> XceptionConfig:
    """The base of the GPU sweep: ``XceptionConfig.cifar()`` at half width (a quarter of the MACs)."""
    return XceptionConfig.cifar(width_multiplier=0.5, middle_blocks=4)


def preview_base() -> XceptionConfig:
    """The base of the CPU preview: an eighth of the width and one middle block."""
    return XceptionConfig.cifar(width_multiplier=0.125, middle_blocks=1)


def preview_train_config(device: torch.device | str = "cpu", **overrides: Any) -> Any:
    """The CPU preview's recipe: one epoch on 256 training images (batches of 32), 500 test images."""
    settings = {"epochs": 1, "batch_size": 32, "train_subset": 256, "test_subset": 500, "compile": False}
    return train.recommended_config(device, **{**settings, **overrides})


def ablation_queue(
    base: XceptionConfig, seeds: int, train_config: Any, runs: Iterable[ledger.Run] = ()
) -> list[tuple[Ablation, Any]]:
    """``(ablation, train_config with its seed)`` for each run still missing from ``runs``, the most informative first.

    The paper's claims (base, residual off, ReLU, ELU) come first, one seed of each per round, then the spectrum the
    same way, so that a queue cut anywhere, and continued later, keeps the claims compared at matched seeds. A run is
    done when ``runs`` holds its configuration, recipe and seed.
    """
    if seeds < 1:
        raise ValueError(f"expected seeds >= 1, got {seeds}")
    points = ablations(base)
    recipe = {**dataclasses.asdict(train_config), "seed": None}  # every setting but the seed
    configs = {p.name: json.loads(json.dumps(dataclasses.asdict(p.config))) for p in points}
    ours = [r for r in runs if r.kind == "ablation" and configs.get(r.name) == r.model_config]
    done = {(r.name, r.seed) for r in ours if {**r.train_config, "seed": None} == recipe}
    groups = [p for p in points if "segments" not in p.changes], [p for p in points if "segments" in p.changes]
    queue = [(p, s) for group in groups for s in range(seeds) for p in group if (p.name, s) not in done]
    return [(p, dataclasses.replace(train_config, seed=s)) for p, s in queue]


def separable_layout(config: XceptionConfig, image_size: int = 32) -> Any:  # -> pandas.DataFrame
    """Every separable convolution of ``config`` in forward order, a row each: ``in_channels``, ``out_channels`` and
    its output's ``height`` and ``width``."""
    import pandas as pd

    size = (image_size - 3) // 2 + 1 - 2 if config.stem == "imagenet" else image_size  # 3x3 stride 2, then 3x3
    sizes = []
    for block in config.blocks():
        sizes += [size] * block.reps
        size = -(-size // block.stride)  # the block's max-pool, rounding up
    sizes += [size, size]  # the exit flow's two after its block
    rows = [(i, o, n, n) for (_, i, o), n in zip(config.separable_layers(), sizes, strict=True)]
    return pd.DataFrame(rows, columns=["in_channels", "out_channels", "height", "width"])


def command_today(command: str) -> str:
    """A recorded command as it runs today: the command lines moved to ``python -m xception_lib.chapters``."""
    return re.sub(r"^python -m xception_lib\.(chapters\.)?experiments ", "python -m xception_lib.chapters ", command)


def reference_run() -> ledger.Run | None:
    """The book's latest recorded reference run of ``xception_cifar``, or ``None``."""
    return ledger.latest(ledger.read(), kind="reference")


def ablation_runs(epochs: int | None = None) -> list[ledger.Run]:
    """The book's recorded ablation runs (GPU, not previews), of ``epochs`` epochs if given."""
    return [r for r in ledger.select(ledger.read(), kind="ablation") if epochs is None or r.epochs == epochs]


@dataclass(frozen=True)
class Goal:
    """A reference run against its goal: test accuracy ``target_acc`` within ``target_s`` seconds."""

    run: ledger.Run
    target_acc: float = 0.94
    target_s: float = 120.0

    def report(self) -> str:
        """Chapter 5's printout: time, accuracy and the training accuracy, each against the goal."""
        run, met = self.run, {True: "met", False: "missed"}
        per_epoch = run.wall_time_s / run.epochs  # the evaluation included
        best = max(range(len(run.history.test_acc)), key=run.history.test_acc.__getitem__) + 1
        train_acc = run.history.train_acc[-1]
        return (
            f"time:     {run.wall_time_s:.0f} s for {run.epochs} epochs ({per_epoch:.2f} s per epoch "
            f"with its evaluation): goal {met[run.wall_time_s <= self.target_s]}\n"
            f"accuracy: {run.final_test_acc:.2%} on the 10,000 test images (best epoch {best}): "
            f"goal {met[run.final_test_acc >= self.target_acc]}\n"
            f"training accuracy in the last epoch: {train_acc:.2%} "
            f"({100 * (train_acc - run.final_test_acc):.1f} points above the test accuracy)\n"
            f"epochs of this speed that would fit in {self.target_s:.0f} s: {int(self.target_s // per_epoch)}"
        )

    def verdict(self) -> str:
        """The goal's verdict as a sentence of chapter 5's text."""
        run, meets = self.run, {True: "meets", False: "misses"}
        train_acc = run.history.train_acc[-1]
        return (
            f"The recorded run {meets[run.wall_time_s <= self.target_s]} the time goal ({run.wall_time_s:.0f} s of "
            f"{self.target_s:.0f} s) and {meets[run.final_test_acc >= self.target_acc]} the accuracy goal "
            f"({run.final_test_acc:.2%} of {self.target_acc:.0%}). Its last epoch classified {train_acc:.1%} of the "
            f"*training* images correctly, {100 * (train_acc - run.final_test_acc):.1f} points more than the test images."
        )


def summary_table(runs: Sequence[ledger.Run]) -> Any:  # -> pandas.DataFrame
    """One row per configuration: runs, accuracy mean ± s.e. (%), parameters, MACs, ms per step."""
    import pandas as pd

    rows = [
        {
            "config": s.name,
            "runs": s.n,
            "test acc %": _pm(s.mean, s.se),
            "params (M)": s.first.params / 1e6,
            "MACs (M)": (s.first.macs or math.nan) / 1e6,
            "ms/step": 1e3 * (s.first.step_time_s or math.nan),
        }
        for s in ledger.summarize(runs)
    ]
    return pd.DataFrame(rows).set_index("config").round(2).dropna(axis=1, how="all")  # no step times: no column


def effects_table(sweeps: dict[str, Sequence[ledger.Run]]) -> Any:  # -> pandas.DataFrame
    """Each configuration minus the base, in points ± s.e. (runs), one column per sweep; then MACs x, time x."""
    import pandas as pd

    columns = {
        label: {e.name: f"{_pm(e.delta, e.se, sign=True)} ({e.n})" for e in ledger.effects(runs)}
        for label, runs in sweeps.items()
    }
    costs = cost_table(sweeps).iloc[:, :2].set_axis(["MACs x", "time x"], axis=1)  # of the first sweep
    return pd.DataFrame(columns).fillna("-").join(costs.round(2))


def cost_table(sweeps: dict[str, Sequence[ledger.Run]]) -> Any:  # -> pandas.DataFrame
    """Each configuration's MACs and measured step time relative to the base, one time column per sweep."""
    import pandas as pd

    effects = {label: {e.name: e for e in ledger.effects(runs)} for label, runs in sweeps.items()}
    first = next(iter(effects.values()))
    table = pd.DataFrame({"MACs x": {n: e.macs_ratio for n, e in first.items()}})
    for label, by_name in effects.items():
        table[f"time x, {label}"] = pd.Series({n: e.step_time_ratio for n, e in by_name.items()})
    return table


def cost_verdict(sweeps: dict[str, Sequence[ledger.Run]]) -> str:
    """Per sweep: the configuration with the most MACs against the slowest one, as a sentence (chapter 8)."""
    parts = []
    for label, runs in sweeps.items():
        effects = ledger.effects(runs)
        most = max(effects, key=lambda e: e.macs_ratio)
        slowest = max(effects, key=lambda e: e.step_time_ratio)
        parts.append(
            f"in the {label} sweep {most.name}, with {most.macs_ratio:.1f} times the base's MACs, took "
            f"{most.step_time_ratio:.2f} times its step time, and the slowest was {slowest.name} "
            f"({slowest.macs_ratio:.2f} times the MACs) at {slowest.step_time_ratio:.2f} times"
        )
    return "; ".join(parts)


def effect_verdict(effect: ledger.Effect) -> str:
    """The chapter's rule for a difference from the base: 3 or more standard errors from zero, with 3 runs or more
    on each side, is a real effect; within 2 is no evidence either way; in between, suggestive."""
    z = abs(effect.delta) / effect.se if effect.se > 0 else math.nan
    if min(effect.n, effect.base_n) < 3 or math.isnan(z):
        verdict = "too few runs for a verdict"
    else:
        verdict = "a real effect" if z >= 3 else "no evidence either way" if z < 2 else "suggestive, not settled"
    return f"{100 * effect.delta:+.2f} ± {100 * effect.se:.2f} points ({effect.n} vs {effect.base_n} runs): {verdict}"


def _pm(value: float, se: float, sign: bool = False) -> str:
    """``value ± se`` in percentage points; a single run has no standard error, and shows none."""
    mean = f"{100 * value:{'+' if sign else ''}.2f}"
    return mean if math.isnan(se) else f"{mean} ± {100 * se:.2f}"


def experiment_rows(runs: Sequence[ledger.Run], experiment: str) -> list[ledger.Summary]:
    """The configurations of one experiment (base included); the spectrum sorted from 1 segment to depthwise."""
    if experiment not in EXPERIMENT_FIELDS:
        raise ValueError(f"unknown experiment {experiment!r}; expected one of {list(EXPERIMENT_FIELDS)}")
    rows = [s for s in ledger.summarize(runs) if set(s.first.changes) <= {EXPERIMENT_FIELDS[experiment]}]
    if experiment == "segments":
        rows.sort(key=lambda s: s.first.model_config["segments"] or math.inf)
    return rows


_BASE_VALUES = {"residual": True, "activation": "none", "segments": "depthwise"}


def point_label(row: ledger.Summary, experiment: str) -> str:
    """A configuration's value of the experiment's field (``"True"``, ``"elu"``, ``"8"``, ``"depthwise"``)."""
    return str(row.first.changes.get(EXPERIMENT_FIELDS[experiment], _BASE_VALUES[experiment]))


def plot_experiment(runs: Sequence[ledger.Run], experiment: str):  # -> Figure
    """Test accuracy per epoch (mean over runs, band min..max) and final accuracy (mean ± s.e., every run a dot)."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    rows = experiment_rows(runs, experiment)
    fig, (curve, final) = plt.subplots(1, 2, figsize=(7, 3.2), gridspec_kw={"width_ratios": (3, 2)})
    names = ("xception", "inception_v3", "resnet50", "mobilenet_v2", "xception_timm_port", "vgg16")
    if len(rows) > len(names):
        raise ValueError(f"expected at most {len(names)} configurations in one figure, got {len(rows)}")
    colors = [style.colour(name) for name in names[: len(rows)]]  # the base in Xception's blue
    for pos, (row, color) in enumerate(zip(rows, colors, strict=True)):
        n = min(r.epochs for r in row.runs)
        per_epoch = list(zip(*(r.history.test_acc[:n] for r in row.runs), strict=True))
        epochs, label = range(1, n + 1), f"{point_label(row, experiment)} ({row.n})"
        curve.plot(epochs, [100 * statistics.fmean(v) for v in per_epoch], "o-", ms=3, color=color, label=label)
        band = [[100 * f(v) for v in per_epoch] for f in (min, max)]
        curve.fill_between(epochs, *band, color=color, alpha=0.2)
        yerr = 0 if math.isnan(row.se) else 100 * row.se  # a dot plot: the axis need not start at zero
        final.errorbar(pos, 100 * row.mean, yerr=yerr, fmt="D", ms=7, color=color, capsize=5, zorder=3)
        final.plot([pos + 0.18] * row.n, [100 * r.final_test_acc for r in row.runs], "k.", ms=5)
    curve.set(xlabel="epoch", ylabel="test accuracy (%)")
    curve.xaxis.set_major_locator(MaxNLocator(integer=True))
    curve.legend(fontsize=9, title="(runs)", title_fontsize=9)
    low, high = min(100 * r.min for r in rows), max(100 * r.max for r in rows)
    pad = max(1.0, 0.2 * (high - low))
    final.set_ylim(max(0.0, low - pad), min(100.0, high + pad))
    final.set_xticks(range(len(rows)), [point_label(r, experiment) for r in rows])
    final.set(xlim=(-0.5, len(rows) - 0.5), xlabel=EXPERIMENT_FIELDS[experiment], ylabel="test acc. at the end (%)")
    for ax in (curve, final):
        ax.grid(alpha=0.3)
    fig.suptitle(f"{experiment}: {_where(runs)}", fontsize=10)
    fig.tight_layout()
    return fig


def plot_spectrum(runs: Sequence[ledger.Run], title: str | None = None):  # -> Figure
    """End-of-run accuracy (mean ± s.e.) against segments, MACs and, where measured, the step time (a panel each)."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    rows = experiment_rows(runs, "segments")
    labels = [point_label(r, "segments").replace("depthwise", "dw") for r in rows]
    accs = [100 * r.mean for r in rows]
    errs = [0 if math.isnan(r.se) else 100 * r.se for r in rows]
    costs = [("macs", 1e6, "MACs per image (M)"), ("step_time_s", 1e-3, "ms per training step")]
    costs = [c for c in costs if all(getattr(r.first, c[0]) for r in rows)]  # no empty panel
    fig, axes = plt.subplots(1, 1 + len(costs), figsize=(7.0, 3.0), sharey=True)
    blue = style.colour("xception")  # every point is a variant of Xception
    axes[0].errorbar(range(len(rows)), accs, yerr=errs, fmt="o-", capsize=3, color=blue)
    axes[0].set_xticks(range(len(rows)), labels)
    axes[0].set(xlabel="segments", ylabel="test acc. at the end (%)")
    for ax, (attr, scale, label) in zip(axes[1:], costs, strict=True):
        values = [(getattr(r.first, attr) or math.nan) / scale for r in rows]
        ax.errorbar(values, accs, yerr=errs, fmt="o", capsize=3, color=blue)
        ground = {"boxstyle": "square,pad=0.1", "facecolor": "white", "edgecolor": "none", "alpha": 0.8}
        for i, (v, a, text) in enumerate(zip(values, accs, labels, strict=True)):  # on a white ground: error bars
            above = i % 2 or a == min(accs)  # do not cross a label; neighbours alternate; the lowest clears the axis
            ax.annotate(
                text, (v, a), textcoords="offset points", xytext=(5, 6 if above else -12), fontsize=9, bbox=ground
            )
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
    run = runs[0]
    return f"{'recorded' if run.is_result else 'CPU PREVIEW'}, {run.environment.device_name}, {run.epochs} epochs"
