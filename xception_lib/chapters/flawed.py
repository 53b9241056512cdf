"""Measurements for chapter 4, which reads a blog post's Xception against the paper.

The post's mistakes are on chapter 4's page, one short function per flaw (named as in :data:`FLAW_NAMES`) that changes
a built :class:`~xception_lib.model.Xception` in place. This module measures such models: closed-form parameter
deltas from the block table, weight sharing, state-dict compatibility, the audit table and its figure.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from xception_lib.chapters.anatomy import format_shape, meta_model, shape_trace
from xception_lib.chapters.style import LAYERS, MODELS
from xception_lib.complexity import conv_params, depthwise_params, separable_params
from xception_lib.config import XceptionConfig
from xception_lib.model import Xception
from xception_lib.runtime import eval_mode

if TYPE_CHECKING:  # matplotlib and pandas are optional: imported inside the functions that use them
    import pandas
    from matplotlib.figure import Figure

#: The post's flaws, in the order chapter 4 fixes them (its page defines one function of each name).
FLAW_NAMES = (
    "regular_depthwise",  # the "depthwise" 3x3 convolution keeps groups=1: a regular one
    "shared_middle_block",  # one middle block called eight times: 8 deep, one block of weights
    "bias_before_bn",  # every convolution has a bias, which the batch norm after it subtracts
    "bn_relu_between",  # BN and ReLU between the depthwise and the pointwise step
    "bn_relu_after_pointwise",  # BN and ReLU after the pointwise step, before the block's BN
    "entry_block1_no_bn",  # no batch norm after the first entry block's separable convolutions
    "shortcut_without_bn",  # no batch norm after the 1x1 stride-2 shortcut convolutions
    "stem_stride_1",  # the first stem convolution has stride 1 instead of 2
    "stem_padding",  # both stem convolutions pad by 1 (the paper: none, 299 -> 149 -> 147)
    "fixed_size_pool",  # a 2x2 stride-1 average pool and a flatten: only 2x2 exit maps fit
    "exit_relu_before",  # ReLU before, not after, the exit flow's last two separable convolutions
)


def post_config() -> XceptionConfig:
    """The blog post's setting: the paper's widths, 100 classes, the PyTorch ports' conventions (not flaws)."""
    return XceptionConfig.timm_port(num_classes=100)


def param_delta(name: str, config: XceptionConfig | None = None) -> int:
    """How many parameters flaw ``name`` alone adds to ``Xception(config)`` (negative: removes), in closed form.

    Computed from the config's block table (default :func:`post_config`) with :mod:`xception_lib.complexity`'s
    formulas, never from a model, so that a flawed model can be held to it.
    """
    if name not in FLAW_NAMES:
        raise ValueError(f"unknown flaw {name!r}; expected one of {FLAW_NAMES}")
    cfg = config if config is not None else post_config()
    seps, blocks = cfg.separable_layers(), cfg.blocks()
    shortcuts = [b.out_channels for b in blocks if b.projects]
    middle = [sum(separable_params(i, o, 3) + 2 * o for i, o in b.widths()) for b in blocks if b.flow == "middle_flow"]
    stem = sum(cfg.channels(s) for s in cfg.stem_channels)
    deltas = {
        "regular_depthwise": sum(conv_params(cin, cin, 3) - depthwise_params(cin, 3) for _, cin, _ in seps),
        "shared_middle_block": -sum(middle[1:]),
        "bias_before_bn": stem + sum(i + o for _, i, o in seps) + sum(shortcuts),
        "bn_relu_between": sum(2 * cin for _, cin, _ in seps),
        "bn_relu_after_pointwise": sum(2 * cout for _, _, cout in seps),
        "entry_block1_no_bn": -sum(2 * cout for _, cout in blocks[0].widths()),
        "shortcut_without_bn": -2 * sum(shortcuts),
    }
    return deltas.get(name, 0)


def fix_sequence() -> list[tuple[str, tuple[str, ...]]]:
    """The post's flaws, then one fewer at each step: ``[("as published", FLAW_NAMES), ("fix <first>", <the
    others>), ...]``; the last step has none left."""
    labels = ["as published", *(f"fix {name}" for name in FLAW_NAMES)]
    return [(label, FLAW_NAMES[i:]) for i, label in enumerate(labels)]


def size_ranges(sizes: Sequence[int]) -> str:
    """``[17, 18, 19, 32, 40] -> '17-19, 32, 40'``; ``'none'`` if empty."""
    runs = [[s for _, s in run] for _, run in itertools.groupby(enumerate(sizes), lambda t: t[1] - t[0])]
    return ", ".join(f"{r[0]}" if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs) or "none"


def middle_flow_usage(model: nn.Module) -> tuple[int, int]:
    """The convolutions ``model.middle_flow`` (run alone on an 8x8 map) applies, and the distinct modules (weights)
    among them: ``(applications, distinct)``."""
    convs = [m for m in model.get_submodule("middle_flow").modules() if isinstance(m, nn.Conv2d)]
    calls: list[nn.Module] = []
    handles = [m.register_forward_hook(lambda module, _inputs, _output: calls.append(module)) for m in convs]
    try:
        with eval_mode(model), torch.no_grad():
            x = torch.zeros(1, convs[0].in_channels, 8, 8, device=convs[0].weight.device)
            model.get_submodule("middle_flow")(x)
    finally:
        for h in handles:
            h.remove()
    return len(calls), len(set(map(id, calls)))


def matches_reference(model: Xception) -> bool:
    """Whether a (flawed) Xception's state dict has exactly the names and shapes of ``Xception(model.config)``,
    so that a strict ``load_state_dict`` works both ways."""
    ours, paper = model.state_dict(), meta_model(model.config).state_dict()
    return {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in paper.items()}


@dataclass(frozen=True)
class Audit:
    """One row of chapter 4's audit table: a model, measured."""

    label: str  #: What the row is (e.g. ``"as published"``, ``"fix regular_depthwise"``).
    params: int  #: Parameters (a tensor used twice counts once, as in ``model.parameters()``).
    reference_params: int  #: Parameters of :class:`~xception_lib.model.Xception` with the same config.
    shapes: dict[str, tuple[int, ...] | None]  #: ``anatomy.shape_trace``'s shapes at 299 px (``None``: failed).
    logits_at_299: bool  #: Whether a 299 px image reaches the logits.
    middle: tuple[int, int]  #: :func:`middle_flow_usage`'s ``(applications, distinct)``.


def audit(model: Xception, *, label: str) -> Audit:
    """Measure a (flawed) Xception, best built on the ``meta`` device, against ``Xception(model.config)``."""
    shapes = {step.name: step.shape for step in shape_trace(model, (1, 3, 299, 299))}
    return Audit(
        label=label,
        params=sum(p.numel() for p in model.parameters()),
        reference_params=sum(p.numel() for p in meta_model(model.config).parameters()),
        shapes=shapes,
        logits_at_299=shapes.get("logits") is not None,
        middle=middle_flow_usage(model),
    )


def audit_table(rows: Sequence[Audit]) -> pandas.DataFrame:
    """The audits as a table, one row each, labelled by the flaw last fixed: parameters and the gap to the reference,
    the stem's and exit flow's outputs for a 299 px image, whether it reaches the logits (``299 px``), and distinct
    middle-flow convolutions out of those applied (``middle``)."""
    import pandas as pd

    return pd.DataFrame(
        {
            "params": [f"{r.params:,}" for r in rows],
            "vs Xception": [f"{r.params - r.reference_params:+,}" for r in rows],
            **{s.removesuffix("_flow"): [format_shape(r.shapes.get(s)) for r in rows] for s in ("stem", "exit_flow")},
            "299 px": ["yes" if r.logits_at_299 else "no" for r in rows],
            "middle": [f"{distinct}/{applied}" for applied, distinct in (r.middle for r in rows)],
        },
        index=pd.Index([r.label.removeprefix("fix ") for r in rows], name="after fixing"),
    )


def plot_fix_sequence(rows: Sequence[Audit]) -> Figure:
    """Parameters after each of :func:`fix_sequence`'s steps (``rows``, top to bottom) against Xception's: a bar is
    grey while the count differs, Xception's blue once it matches, hatched while a 299 px image cannot reach the logits."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    if not rows:
        raise ValueError("expected at least one Audit row, got none")
    fig = Figure(figsize=(7.0, 1.2 + 0.3 * len(rows)), layout="constrained")
    ax = fig.subplots()
    ys = range(len(rows))
    same, differs = MODELS["xception"], LAYERS["other"]  # blue: Xception's count; grey: another
    colours = [same if r.params == r.reference_params else differs for r in rows]
    hatches = ["" if r.logits_at_299 else "//" for r in rows]
    bars = ax.barh(ys, [r.params / 1e6 for r in rows], color=colours, hatch=hatches, edgecolor="#333333", linewidth=0.6)
    labels = [f"{r.params / 1e6:.2f} M ({r.params - r.reference_params:+,})" for r in rows]
    ax.bar_label(bars, labels=labels, fontsize=9, padding=3, bbox=dict(facecolor="white", edgecolor="none", pad=0.5))
    ax.axvline(rows[0].reference_params / 1e6, color="#333333", linestyle="--", linewidth=1.0)
    ax.set_yticks(list(ys), [r.label.removeprefix("fix ") for r in rows], fontsize=9)
    ax.invert_yaxis()
    ax.set_xlim(0, max(r.params for r in rows) / 1e6 * 1.5)  # room for the labels
    ax.set_xlabel("parameters (millions) after fixing each flaw in turn, top to bottom", fontsize=10)
    ax.tick_params(axis="x", labelsize=9)
    ax.spines[["top", "right"]].set_visible(False)
    keys = ((differs, "", "count differs"), (same, "", "count matches"), ("white", "//", "299 px fails"))
    patches = [Patch(facecolor=colour, edgecolor="#333333", hatch=hatch, label=label) for colour, hatch, label in keys]
    handles = [Line2D([], [], color="#333333", linestyle="--", label="Xception, same config"), *patches]
    fig.legend(handles=handles, fontsize=9, loc="outside lower center", ncols=4, frameon=False)
    return fig
