"""Anatomy of an Xception (chapter 3): where its parameters and MACs (convolutions and linear layers only) live, its
shapes, its drawing, its neighbours. What needs only shapes runs on a ``meta`` model (:func:`meta_model`): free.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from xception_lib import complexity as cx
from xception_lib.chapters import figures
from xception_lib.chapters.style import LAYERS
from xception_lib.config import BlockSpec, XceptionConfig
from xception_lib.model import Xception, xception
from xception_lib.runtime import eval_mode

if TYPE_CHECKING:  # matplotlib and pandas are optional: imported inside the functions that use them
    import pandas
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: The top-level stages of :class:`~xception_lib.model.Xception`, in forward order.
FLOWS = ("stem", "entry_flow", "middle_flow", "exit_flow", "head")

#: Face colour of each kind of box, as in chapters 1 and 2 (blue for 1x1, orange for spatial, purple for both), and three more.
COLOURS = {**figures.COLOURS, "relu": "#ffffff", "io": "#f7f7f7", "add": LAYERS["other"]}


def flow_costs(model: nn.Module, input_size: Sequence[int] = (1, 3, 299, 299)) -> pandas.DataFrame:
    """Parameters (from the tensors) and MACs (of convolutions and linear layers, whole batch) of each flow of
    :data:`FLOWS`, one row each; MACs by the closed forms from the output shapes of one pass
    (:func:`~xception_lib.complexity.output_shapes`)."""
    import pandas as pd

    children, modules = dict(model.named_children()), dict(model.named_modules())
    missing = [f for f in FLOWS if f not in children]
    if missing:
        raise ValueError(f"expected a model with children {FLOWS}, missing {missing}")
    macs = dict.fromkeys(FLOWS, 0)
    for name, shapes in cx.output_shapes(model, input_size, (nn.Conv2d, nn.Linear)).items():
        m, flow = modules[name], name.split(".", 1)[0]
        if isinstance(m, nn.Conv2d):
            k = m.kernel_size[0]
            macs[flow] += sum(n * cx.conv_macs(m.in_channels, c, k, h, w, m.groups) for n, c, h, w in shapes)
        else:
            macs[flow] += sum(math.prod(s) // m.out_features * m.in_features * m.out_features for s in shapes)
    params = {flow: sum(p.numel() for p in children[flow].parameters()) for flow in FLOWS}
    return pd.DataFrame({"params": params, "macs": macs}).rename_axis("name")


@dataclass(frozen=True)
class ShapeStep:
    """The output shape of a step (``"input"``, ``"stem.conv1"``, a stage, ``"logits"``), or ``None`` and the error."""

    name: str
    shape: tuple[int, ...] | None
    error: str | None = None


def shape_trace(model: Xception, input_size: Sequence[int] = (1, 3, 299, 299)) -> list[ShapeStep]:
    """The shape after each stem convolution, each stage, and the classifier.

    ``model`` is an Xception, as built or changed (chapter 4's flawed models), on any device (``meta`` is free). A
    failing stage or classifier (e.g. on an input too small) ends the trace with a :class:`ShapeStep` with the error.
    """
    if len(input_size) != 4:
        raise ValueError(f"expected input_size (N, C, H, W), got {tuple(input_size)}")
    if not isinstance(model, Xception):
        raise TypeError(f"expected an xception_lib Xception (changed or not), got {type(model).__name__}")
    recorded: dict[str, tuple[int, ...]] = {}
    handles = [
        m.register_forward_hook(lambda _m, _in, out, n=n: recorded.__setitem__(f"stem.{n}", tuple(out.shape)))
        for n, m in model.get_submodule("stem").named_children()
        if isinstance(m, nn.Conv2d)
    ]
    device = next(model.parameters()).device
    stages: dict[str, torch.Tensor] = {}
    try:
        with eval_mode(model), torch.no_grad():
            stages = model.forward_intermediates(torch.zeros(*input_size, device=device))
            logits = model.forward_head(next(reversed(stages.values())))
            last = ShapeStep("logits", tuple(logits.shape))
    except (RuntimeError, ValueError) as error:
        last = ShapeStep("logits" if stages else "features", None, str(error))
    finally:
        for h in handles:
            h.remove()
    steps = [ShapeStep("input", tuple(input_size))] + [ShapeStep(n, s) for n, s in recorded.items()]
    return [*steps, *(ShapeStep(n, tuple(t.shape)) for n, t in stages.items()), last]


def format_shape(shape: tuple[int, ...] | None) -> str:
    """``(1, 728, 19, 19) -> '19x19x728'`` (height x width x channels, as in the paper)."""
    if shape is None:
        return "-"
    if len(shape) == 4:
        return f"{shape[2]}x{shape[3]}x{shape[1]}"
    return "x".join(str(s) for s in shape[1:])


def meta_model(config: XceptionConfig) -> Xception:
    """An :class:`~xception_lib.model.Xception` on the ``meta`` device: shapes only, no memory."""
    with torch.device("meta"):
        return Xception(config)


_EDGE: dict[str, Any] = {"edgecolor": "#333333", "linewidth": 0.8}
_STYLE = "round,pad=0,rounding_size=0.03"
_LABEL: dict[str, Any] = {"ha": "center", "va": "center", "fontsize": 9, "gid": "box-text"}


class _Column:
    """One flow of the drawing, in inches (data units): boxes joined by arrows, shapes on the left, shortcuts right."""

    WIDTH, HEIGHT, GAP = 1.6, 0.25, 0.13

    def __init__(self, ax: Axes, x: float, top: float, title: str) -> None:
        self.ax, self.x, self.y = ax, x, top - 0.3
        self.last: float | None = None  # bottom edge of the previous box
        ax.text(x, top, title, ha="center", va="center", fontsize=11, weight="bold")

    def box(self, text: str, kind: str) -> None:
        """Add a box below the previous one (``kind="separable"``: half orange, half blue)."""
        from matplotlib.patches import FancyBboxPatch, Rectangle

        w, h = self.WIDTH, 0.19 if kind == "relu" else self.HEIGHT
        x0, bottom = self.x - w / 2, self.y - h
        if kind == "separable":  # the depthwise (spatial) step, then the pointwise (cross-channel) one
            self.ax.add_patch(Rectangle((x0, bottom), 0.3 * w, h, facecolor=COLOURS["spatial"], lw=0))
            self.ax.add_patch(Rectangle((x0 + 0.3 * w, bottom), 0.7 * w, h, facecolor=COLOURS["cross"], lw=0))
        face = "none" if kind == "separable" else COLOURS[kind]
        box = FancyBboxPatch((x0, bottom), w, h, boxstyle=_STYLE, facecolor=face, gid=f"box:{kind}", **_EDGE)
        self.ax.add_patch(box)
        plate = {"facecolor": "white", "edgecolor": "none", "pad": 0.8} if kind == "separable" else None
        self.ax.text(self.x, bottom + h / 2, text, color=figures.text_colour(face), bbox=plate, **_LABEL)
        if self.last is not None:
            self.arrow(self.x, self.last, self.y)
        self.last, self.y = bottom, bottom - self.GAP

    def arrow(self, x: float, y_from: float, y_to: float, x_from: float | None = None) -> None:
        props = {"arrowstyle": "-|>", "color": "#333333", "lw": 0.8, "shrinkA": 0, "shrinkB": 0}
        self.ax.annotate("", xy=(x, y_to), xytext=(x if x_from is None else x_from, y_from), arrowprops=props)

    def note(self, text: str) -> None:
        """A shape label left of the arrow below the last box."""
        assert self.last is not None
        x, y = self.x - self.WIDTH / 2 - 0.05, self.last - self.GAP / 2
        self.ax.text(x, y, text, ha="right", va="center", fontsize=9, style="italic", color="#444444")

    def residual(self, start: float, shortcut: str | None) -> None:
        """A shortcut from just above ``start`` (the block's first box) to an addition below the last box."""
        from matplotlib.patches import Circle, FancyBboxPatch

        assert self.last is not None
        r, branch, xr = 0.09, start + self.GAP / 2, self.x + self.WIDTH / 2 + 0.42
        add_y = self.y - r
        self.ax.plot([self.x, xr, xr], [branch, branch, add_y], color="#333333", lw=0.8, zorder=0)
        if shortcut is not None:  # a 1x1 convolution on the shortcut
            mid, bw, bh = (branch + add_y) / 2, 0.68, 0.36
            corner, face = (xr - bw / 2, mid - bh / 2), COLOURS["cross"]
            box = FancyBboxPatch(corner, bw, bh, boxstyle=_STYLE, facecolor=face, gid="box:shortcut", **_EDGE)
            self.ax.add_patch(box)
            self.ax.text(xr, mid, shortcut, color=figures.text_colour(face), **_LABEL)
        self.arrow(self.x + r, add_y, add_y, x_from=xr)
        self.ax.add_patch(Circle((self.x, add_y), r, facecolor=COLOURS["add"], gid="box:add", **_EDGE))
        self.ax.text(self.x, add_y, "+", ha="center", va="center", fontsize=9)
        self.arrow(self.x, self.last, add_y + r)
        self.last, self.y = add_y - r, add_y - r - self.GAP


def architecture_figure(cfg: XceptionConfig) -> Figure:
    """The paper's Figure 5 drawn from a config at 299 px, 7 inches wide: the entry flow on the left, the middle and
    exit flows on the right. Separable convolutions are half orange (depthwise), half blue (pointwise); the italic
    labels are the shapes (height x width x channels) that :func:`shape_trace` measures on a ``meta`` model."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    if cfg.stem != "imagenet" or not cfg.residual:
        got = f"stem={cfg.stem!r}, residual={cfg.residual}"
        raise ValueError(f"expected the paper's layout, stem='imagenet' and residual=True: got {got}")
    shape = {s.name: format_shape(s.shape) for s in shape_trace(meta_model(cfg), (1, cfg.in_channels, 299, 299))}
    c = cfg.channels
    fig = Figure(figsize=(7.0, 10.0))
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))

    def block(column: _Column, spec: BlockSpec) -> None:  # a row of the block table, drawn
        start = column.y
        for i, (_, cout) in enumerate(spec.widths()):
            if i > 0 or spec.start_with_relu:
                column.box("ReLU", "relu")
            column.box(f"SeparableConv {cout}", "separable")
        if spec.stride != 1:
            column.box(f"MaxPool 3x3, stride {spec.stride}", "pool")
        stride = f"\nstride {spec.stride}" if spec.stride != 1 else ""
        column.residual(start, f"Conv 1x1{stride}" if spec.projects else None)

    blocks = {flow: [b for b in cfg.blocks() if b.flow == flow] for flow in FLOWS}
    entry = _Column(ax, 1.7, 0.0, "Entry flow")
    entry.box(f"299x299x{cfg.in_channels} images", "io")
    for i, name in enumerate(("conv1", "conv2")):
        entry.box(f"Conv {c(cfg.stem_channels[i])}, 3x3" + (", stride 2" if i == 0 else ""), "joint")
        entry.box("ReLU", "relu")
        entry.note(shape[f"stem.{name}"])
    for i, spec in enumerate(blocks["entry_flow"]):
        block(entry, spec)
        entry.note(shape[f"entry_flow.block{i + 1}"])
    entry.box(f"{shape['entry_flow.block3']} maps", "io")

    middle = _Column(ax, 5.05, 0.0, "Middle flow")
    middle.box(f"{shape['entry_flow.block3']} maps", "io")
    block(middle, blocks["middle_flow"][0])  # one drawn for all
    middle.box(f"{shape['middle_flow']} maps", "io")
    repeated = f"repeated {cfg.middle_blocks} times,\neach time with its own weights"
    ax.text(middle.x, middle.y, repeated, ha="center", va="top", fontsize=9, weight="bold")

    e1, e2 = (c(x) for x in cfg.exit_channels[1:])
    exit_ = _Column(ax, 5.05, middle.y - 0.65, "Exit flow")
    exit_.box(f"{shape['middle_flow']} maps", "io")
    block(exit_, blocks["exit_flow"][0])
    for width in (e1, e2):
        exit_.box(f"SeparableConv {width}", "separable")
        exit_.box("ReLU", "relu")
    exit_.note(shape["exit_flow"])
    exit_.box("GlobalAveragePooling", "pool")
    exit_.note(f"{e2}-d vector")
    exit_.box("Optional FC layers", "io")
    exit_.box(f"Linear, {cfg.num_classes} classes", "cross")  # the paper: "Logistic regression"

    labels = {
        "joint": "regular conv (spatial and cross-channel)",
        "spatial": "depthwise step (spatial)",
        "cross": "pointwise or 1x1 conv (cross-channel)",
        "add": "residual addition",
    }
    handles = [Patch(facecolor=COLOURS[kind], label=label, **_EDGE) for kind, label in labels.items()]
    bottom = min(entry.y, exit_.y) - 0.1
    place: dict[str, Any] = {"bbox_to_anchor": (3.5, bottom), "bbox_transform": ax.transData}
    ax.legend(handles=handles, loc="upper center", **place, ncols=2, fontsize=9, frameon=False)
    note = "Separable convolutions are 3x3. Every Conv and SeparableConv\nis followed by batch normalisation"
    ax.text(
        3.5, bottom - 0.5, f"{note} (not drawn), as in the paper.", ha="center", va="top", fontsize=9, style="italic"
    )
    height = 0.25 - (bottom - 0.95)
    fig.set_size_inches(7.0, height)
    ax.set(xlim=(0.0, 7.0), ylim=(0.25 - height, 0.25))
    ax.axis("off")
    return fig


def comparison_table(names: Sequence[str]) -> pandas.DataFrame:
    """Parameters (torchinfo) and MACs (fvcore) of the models ``names`` with random weights, each at its native input
    size, one row each."""
    import pandas as pd
    from torchvision import models

    available: dict[str, tuple[Callable[[], nn.Module], int]] = {
        "Xception": (xception, 299),
        "Inception V3": (lambda: models.inception_v3(weights=None, aux_logits=False, init_weights=False), 299),
        "ResNet-50": (lambda: models.resnet50(weights=None), 224),
        "MobileNetV2": (lambda: models.mobilenet_v2(weights=None), 224),
    }
    unknown = [n for n in names if n not in available]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; expected some of {list(available)}")
    rows = {}
    for name in names:
        build, size = available[name]
        model, shape = build(), (1, 3, size, size)
        params, macs = cx.torchinfo_params(model, shape), cx.count_macs(model, shape)
        rows[name] = {"input_size": size, "params": params, "macs": macs}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("name")
