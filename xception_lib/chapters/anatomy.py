"""Anatomy of an Xception: where its parameters and MACs live, its shapes, and its drawing.

Chapter 3 takes the whole network apart with four tools:

* :func:`flow_params_formula` and :func:`flow_costs`: parameters and MACs per flow (stem,
  entry flow, middle flow, exit flow, head), the first from closed-form formulas of the
  config alone, the second measured on a model (tensor sizes and the output shape of every
  convolution and linear layer);
* :func:`shape_trace`: the tensor shape after every stage, read from
  :meth:`~xception_lib.model.Xception.forward_intermediates` plus the two stem convolutions;
* :func:`architecture_figure`: the paper's Figure 5 (entry, middle and exit flow) drawn
  with matplotlib patches from a config, with the shapes of :func:`shape_trace` beside it;
* :func:`plot_flow_costs` and :func:`plot_comparison`: bar charts of the per-flow costs and
  of :func:`xception_lib.complexity.comparison_table`.

Every function that needs only shapes works on a model built on the ``meta`` device
(``with torch.device("meta"): model = xl.xception()``), which allocates no memory and
computes nothing, so tracing a 299 px forward pass costs milliseconds.

MACs are multiply-accumulates of convolutions and linear layers (FLOPs = 2 x MACs);
batch-norm, ReLU and pooling are not counted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from xception_lib.complexity import (
    conv_module_macs,
    conv_params,
    depthwise_params,
    pointwise_params,
    separable_params,
)
from xception_lib.config import XceptionConfig

if TYPE_CHECKING:  # matplotlib is optional: imported inside the functions that draw
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from xception_lib.complexity import ModelComplexity

#: The top-level stages of :class:`~xception_lib.model.Xception`, in forward order.
FLOWS = ("stem", "entry_flow", "middle_flow", "exit_flow", "head")

#: Face colour of each kind of box. As in chapters 1 and 2, blue maps cross-channel
#: correlations (1x1), orange spatial ones (per channel), purple both at once (a regular
#: convolution).
COLOURS = {
    "cross": "#9ecae1",
    "spatial": "#fdae6b",
    "joint": "#bcbddc",
    "pool": "#d9d9d9",
    "relu": "#ffffff",
    "io": "#f7f7f7",
    "add": "#c7e9c0",
}


# ------------------------------------------------------------------ parameters and MACs


def _bn_params(channels: int) -> int:
    """Learnable parameters of a batch norm (scale and shift; running statistics are buffers)."""
    return 2 * channels


def separable_layers(config: XceptionConfig) -> list[tuple[str, int, int]]:
    """Every separable convolution of a config as ``(flow, in_channels, out_channels)``, in order.

    Args:
        config: The architecture.

    Returns:
        One entry per separable convolution (34 for the paper's Xception).
    """
    c = config.channels
    rows: list[tuple[str, int, int]] = []
    prev = c(config.stem_channels[1])
    for out in config.entry_channels:
        rows += [("entry_flow", prev, c(out)), ("entry_flow", c(out), c(out))]  # grow first
        prev = c(out)
    rows += [("middle_flow", prev, prev)] * (3 * config.middle_blocks)
    e0, e1, e2 = (c(x) for x in config.exit_channels)
    rows += [("exit_flow", prev, prev), ("exit_flow", prev, e0)]  # the exit block grows last
    rows += [("exit_flow", e0, e1), ("exit_flow", e1, e2)]
    return rows


def flow_params_formula(config: XceptionConfig) -> dict[str, int]:
    """Parameters of each flow from closed-form formulas, without building a model.

    Stem: two regular 3x3 convolutions, each with a batch norm. Each separable convolution:
    ``k^2 C_in + C_in C_out`` plus a batch norm of ``C_out``. Each strided or widening
    residual block: a 1x1 shortcut convolution and its batch norm. Head: ``2048 x classes``
    weights and ``classes`` biases.

    Args:
        config: The architecture; it must have depthwise separable convolutions
            (``segments=None``) and the paper's residual layout.

    Returns:
        ``{flow: parameters}`` for every name in :data:`FLOWS`.
    """
    if config.segments is not None:
        raise ValueError(f"flow_params_formula expects depthwise convolutions (segments=None), got {config.segments}")
    c = config.channels
    s1, s2 = c(config.stem_channels[0]), c(config.stem_channels[1])
    out = dict.fromkeys(FLOWS, 0)
    out["stem"] = conv_params(config.in_channels, s1, 3) + _bn_params(s1) + conv_params(s1, s2, 3) + _bn_params(s2)
    for flow, cin, cout in separable_layers(config):
        out[flow] += separable_params(cin, cout, 3) + _bn_params(cout)
    if config.residual:
        prev = s2
        for ch, stride in zip(config.entry_channels, config.entry_strides):
            if c(ch) != prev or stride != 1:
                out["entry_flow"] += pointwise_params(prev, c(ch)) + _bn_params(c(ch))
            prev = c(ch)
        out["exit_flow"] += pointwise_params(prev, c(config.exit_channels[0])) + _bn_params(c(config.exit_channels[0]))
    features = c(config.exit_channels[2])
    out["head"] = features * config.num_classes + config.num_classes
    return out


def depthwise_share(config: XceptionConfig) -> float:
    """The fraction of all parameters held by the depthwise (spatial) filters."""
    total = sum(flow_params_formula(config).values())
    return sum(depthwise_params(cin, 3) for _, cin, _ in separable_layers(config)) / total


@dataclass(frozen=True)
class FlowCost:
    """Parameters and MACs of one flow.

    Attributes:
        name: The flow (a name in :data:`FLOWS`).
        params: Parameters of the flow's modules.
        macs: Multiply-accumulates of its convolutions and linear layers for one forward
            pass of the given input (batch included).
    """

    name: str
    params: int
    macs: int


def _flow_of(name: str) -> str:
    return name.split(".", 1)[0]


def layer_macs(model: nn.Module, input_size: Sequence[int] = (1, 3, 299, 299)) -> dict[str, int]:
    """Closed-form MACs of every convolution and linear layer, from the output shapes of one pass.

    The output shapes come from forward hooks that record shapes only and are removed
    afterwards; the model runs in eval mode on its own device (``meta`` works: no memory,
    no arithmetic).

    Args:
        model: Any module.
        input_size: ``(N, C, H, W)`` of the input.

    Returns:
        ``{module name: MACs}`` for every ``nn.Conv2d`` and ``nn.Linear`` that ran.
    """
    if len(input_size) != 4:
        raise ValueError(f"expected input_size (N, C, H, W), got {tuple(input_size)}")
    macs: dict[str, int] = {}

    def recorder(name: str) -> Callable[[nn.Module, object, torch.Tensor], None]:
        def hook(module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
            if isinstance(module, nn.Conv2d):
                n, _, h, w = output.shape
                macs[name] = macs.get(name, 0) + n * conv_module_macs(module, h, w)
            else:
                assert isinstance(module, nn.Linear)
                rows = output.numel() // module.out_features
                macs[name] = macs.get(name, 0) + rows * module.in_features * module.out_features

        return hook

    handles = [
        m.register_forward_hook(recorder(n)) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(*input_size, device=device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return macs


def flow_costs(model: nn.Module, input_size: Sequence[int] = (1, 3, 299, 299)) -> list[FlowCost]:
    """Parameters and MACs of each top-level flow of an Xception.

    Parameters are counted from the modules' tensors (a tensor shared by two flows counts
    once, in the first); MACs come from :func:`layer_macs`.

    Args:
        model: An :class:`~xception_lib.model.Xception` (or any model with the stages of
            :data:`FLOWS` as children).
        input_size: ``(N, C, H, W)`` of the input.

    Returns:
        One :class:`FlowCost` per name in :data:`FLOWS`.
    """
    children = dict(model.named_children())
    missing = [f for f in FLOWS if f not in children]
    if missing:
        raise ValueError(f"expected a model with children {FLOWS}, missing {missing}")
    macs = layer_macs(model, input_size)
    seen: set[int] = set()
    rows = []
    for flow in FLOWS:
        params = 0
        for p in children[flow].parameters():
            if id(p) not in seen:
                seen.add(id(p))
                params += p.numel()
        rows.append(FlowCost(flow, params, sum(v for k, v in macs.items() if _flow_of(k) == flow)))
    return rows


def format_flow_costs(rows: Sequence[FlowCost], formula: dict[str, int] | None = None) -> str:
    """A text table of :func:`flow_costs`, with each flow's share of the total.

    Args:
        rows: The per-flow costs.
        formula: Optionally, :func:`flow_params_formula` of the same config, shown beside
            the measured parameters.
    """
    total_p = sum(r.params for r in rows)
    total_m = sum(r.macs for r in rows)
    head = f"{'flow':12} {'parameters':>12} {'share':>6}"
    head += f" {'formula':>12}" if formula is not None else ""
    head += f" {'MACs':>15} {'share':>6}"
    lines = [head, "-" * len(head)]
    for r in rows:
        line = f"{r.name:12} {r.params:>12,} {r.params / total_p:>6.1%}"
        line += f" {formula[r.name]:>12,}" if formula is not None else ""
        line += f" {r.macs:>15,} {r.macs / total_m if total_m else 0.0:>6.1%}"
        lines.append(line)
    total = f"{'total':12} {total_p:>12,} {1:>6.0%}"
    total += f" {sum(formula.values()):>12,}" if formula is not None else ""
    total += f" {total_m:>15,} {1:>6.0%}"
    lines += ["-" * len(head), total]
    return "\n".join(lines)


def source_code(obj: object, *, docstrings: bool = False) -> str:
    """The source of a class or function, by default without its docstrings (for display).

    Args:
        obj: A class, function or method.
        docstrings: Keep the docstrings.
    """
    import ast
    import inspect
    import textwrap

    source = textwrap.dedent(inspect.getsource(obj))  # type: ignore[arg-type]
    if docstrings:
        return source
    lines = source.splitlines()
    drop: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                end = first.end_lineno or first.lineno
                drop.update(range(first.lineno - 1, end))
                if end < len(lines) and not lines[end].strip():
                    drop.add(end)  # the blank line after the docstring
    return "\n".join(line for i, line in enumerate(lines) if i not in drop)


# ------------------------------------------------------------------ shapes


@dataclass(frozen=True)
class ShapeStep:
    """The output shape of one step of a forward pass.

    Attributes:
        name: The step (``"input"``, ``"stem.conv1"``, a stage of ``forward_intermediates``,
            ``"logits"``).
        shape: The output shape, or ``None`` if the step failed.
        error: Why the step failed (the exception's message), or ``None``.
    """

    name: str
    shape: tuple[int, ...] | None
    error: str | None = None


def shape_trace(model: nn.Module, input_size: Sequence[int] = (1, 3, 299, 299)) -> list[ShapeStep]:
    """The shape after each stem convolution, each stage, and the classifier.

    Stage outputs come from ``model.forward_intermediates``; the two stem convolutions are
    read by forward hooks that record shapes only and are removed afterwards. A stage or
    classifier that fails (e.g. an input size a model cannot handle) ends the trace with
    a :class:`ShapeStep` carrying the error instead of a shape.

    Args:
        model: A model with ``forward_intermediates`` and ``forward_head`` (an
            :class:`~xception_lib.model.Xception`, or the book's ``FlawedXception``), on
            any device (``meta`` is free).
        input_size: ``(N, C, H, W)``.

    Returns:
        The steps in forward order, starting with ``"input"``.
    """
    if len(input_size) != 4:
        raise ValueError(f"expected input_size (N, C, H, W), got {tuple(input_size)}")
    if not hasattr(model, "forward_intermediates") or not hasattr(model, "forward_head"):
        raise TypeError(f"expected a model with forward_intermediates and forward_head, got {type(model).__name__}")
    recorded: dict[str, tuple[int, ...]] = {}
    stem_convs = {f"stem.{n}": m for n, m in model.get_submodule("stem").named_children() if isinstance(m, nn.Conv2d)}

    def recorder(name: str) -> Callable[[nn.Module, object, torch.Tensor], None]:
        def hook(_m: nn.Module, _inputs: object, output: torch.Tensor) -> None:
            recorded[name] = tuple(output.shape)

        return hook

    handles = [m.register_forward_hook(recorder(n)) for n, m in stem_convs.items()]
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    steps = [ShapeStep("input", tuple(input_size))]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            try:
                stages = model.forward_intermediates(torch.zeros(*input_size, device=device))
            except (RuntimeError, ValueError) as error:
                return steps + [ShapeStep(n, s) for n, s in recorded.items()] + [ShapeStep("features", None, str(error))]
            steps += [ShapeStep(n, s) for n, s in recorded.items()]
            steps += [ShapeStep(n, tuple(t.shape)) for n, t in stages.items()]
            try:
                steps.append(ShapeStep("logits", tuple(model.forward_head(next(reversed(stages.values()))).shape)))
            except (RuntimeError, ValueError) as error:
                steps.append(ShapeStep("logits", None, str(error)))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return steps


def format_shape(shape: tuple[int, ...] | None) -> str:
    """``(1, 728, 19, 19) -> '19x19x728'`` (height x width x channels, as in the paper)."""
    if shape is None:
        return "-"
    if len(shape) == 4:
        return f"{shape[2]}x{shape[3]}x{shape[1]}"
    return "x".join(str(s) for s in shape[1:])


def meta_model(config: XceptionConfig) -> nn.Module:
    """An :class:`~xception_lib.model.Xception` on the ``meta`` device: shapes only, no memory."""
    from xception_lib.model import Xception

    with torch.device("meta"):
        return Xception(config)


def calibrate_batch_norm(model: nn.Module, batch: torch.Tensor) -> nn.Module:
    """Set every batch norm's running statistics to those of one batch, then switch to eval mode.

    A randomly initialised model has running means of 0 and variances of 1, which match
    none of its activations; a model whose statistics come from data behaves like a
    trained one in eval mode (activations stay in range, the batch-norm epsilon matters
    where variances are small). The weights are not touched.

    Args:
        model: Any model with ``nn.BatchNorm2d`` layers.
        batch: The input batch whose statistics to store (more than one value per channel).

    Returns:
        The same model, in eval mode.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    if not norms:
        raise ValueError("expected a model with nn.BatchNorm2d layers, found none")
    momenta = [m.momentum for m in norms]
    try:
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average: after one batch, exactly its statistics
        model.train()
        with torch.no_grad():
            model(batch)
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
    return model.eval()


# ------------------------------------------------------------------ the drawing


class _Column:
    """One flow of the drawing: boxes stacked top to bottom, joined by arrows."""

    def __init__(self, ax: Axes, x: float, top: float, width: float = 2.9) -> None:
        self.ax, self.x, self.y, self.w = ax, x, top, width
        self.last: float | None = None  # bottom edge of the previous box

    def box(self, text: str, kind: str, h: float = 0.42, gap: float = 0.26) -> tuple[float, float]:
        """Add a box below the previous one; return its (top, bottom) edges."""
        from matplotlib.patches import FancyBboxPatch, Rectangle

        top = self.y
        bottom = top - h
        x0 = self.x - self.w / 2
        if kind == "separable":  # half spatial (depthwise), half cross-channel (pointwise)
            self.ax.add_patch(Rectangle((x0, bottom), self.w * 0.32, h, facecolor=COLOURS["spatial"], lw=0))
            self.ax.add_patch(Rectangle((x0 + self.w * 0.32, bottom), self.w * 0.68, h, facecolor=COLOURS["cross"], lw=0))
            face = "none"
        else:
            face = COLOURS[kind]
        self.ax.add_patch(
            FancyBboxPatch(
                (x0, bottom), self.w, h, boxstyle="round,pad=0,rounding_size=0.05",
                facecolor=face, edgecolor="#333333", linewidth=0.9, gid=f"box:{kind}",
            )
        )
        self.ax.text(self.x, bottom + h / 2, text, ha="center", va="center", fontsize=9)
        if self.last is not None:
            self.arrow(self.last, top)
        self.last = bottom
        self.y = bottom - gap
        return top, bottom

    def arrow(self, y_from: float, y_to: float, x: float | None = None) -> None:
        x = self.x if x is None else x
        self.ax.annotate(
            "", xy=(x, y_to), xytext=(x, y_from),
            arrowprops={"arrowstyle": "-|>", "color": "#333333", "lw": 0.9, "shrinkA": 0, "shrinkB": 0},
        )

    def note(self, y: float, text: str) -> None:
        """A shape annotation left of the arrow at height ``y`` (in the gap between two boxes)."""
        self.ax.text(self.x - 0.12, y, text, ha="right", va="center", fontsize=8, style="italic", color="#555555")

    def residual(self, start: float, end_top: float, shortcut: str | None) -> float:
        """A shortcut from just above ``start`` to an addition node placed below ``end_top``.

        Returns the bottom of the addition node.
        """
        from matplotlib.patches import Circle

        branch = start - 0.13
        r = 0.16
        add_y = self.y - r
        xr = self.x + self.w / 2 + 0.8
        line = {"color": "#333333", "lw": 0.9}
        self.ax.plot([self.x, xr], [branch, branch], **line)
        if shortcut is None:
            self.ax.plot([xr, xr], [branch, add_y], **line)
        else:
            mid = (branch + add_y) / 2
            bw, bh = 1.2, 0.55
            from matplotlib.patches import FancyBboxPatch

            self.ax.plot([xr, xr], [branch, mid + bh / 2], **line)
            self.ax.add_patch(
                FancyBboxPatch(
                    (xr - bw / 2, mid - bh / 2), bw, bh, boxstyle="round,pad=0,rounding_size=0.05",
                    facecolor=COLOURS["cross"], edgecolor="#333333", linewidth=0.9, gid="box:shortcut",
                )
            )
            self.ax.text(xr, mid, shortcut, ha="center", va="center", fontsize=7.5)
            self.ax.plot([xr, xr], [mid - bh / 2, add_y], **line)
        self.ax.annotate("", xy=(self.x + r, add_y), xytext=(xr, add_y),
                         arrowprops={"arrowstyle": "-|>", "color": "#333333", "lw": 0.9, "shrinkA": 0, "shrinkB": 0})
        self.ax.add_patch(Circle((self.x, add_y), r, facecolor=COLOURS["add"], edgecolor="#333333", lw=0.9, gid="box:add"))
        self.ax.text(self.x, add_y, "+", ha="center", va="center", fontsize=10)
        assert self.last is not None
        self.arrow(self.last, add_y + r)
        self.last = add_y - r
        self.y = add_y - r - 0.26
        return self.last


def architecture_figure(config: XceptionConfig | None = None, input_size: int = 299) -> Figure:
    """The paper's Figure 5 drawn from a config: entry, middle and exit flows side by side.

    Regular convolutions are purple, separable convolutions half orange (the depthwise,
    spatial step) and half blue (the pointwise, cross-channel step), 1x1 shortcut
    convolutions blue. The italic labels are the tensor shapes (height x width x
    channels) that :func:`shape_trace` measures on a ``meta``-device model of the config.

    Args:
        config: The architecture (default: the paper's); it must use the ImageNet stem and
            have residual connections.
        input_size: Height and width of the input image.

    Returns:
        A matplotlib figure (not registered with pyplot).
    """
    from matplotlib.figure import Figure

    cfg = config if config is not None else XceptionConfig.imagenet()
    if cfg.stem != "imagenet" or not cfg.residual:
        raise ValueError(f"architecture_figure draws the paper's layout: expected stem='imagenet' and residual=True, got {cfg.stem!r}, {cfg.residual}")
    shapes = {s.name: s.shape for s in shape_trace(meta_model(cfg), (1, cfg.in_channels, input_size, input_size))}
    c = cfg.channels
    fig = Figure(figsize=(11.0, 13.0), layout="constrained")
    ax = fig.subplots()
    top = 0.0
    pool = "MaxPooling 3x3, stride 2"

    entry = _Column(ax, 0.0, top)
    _, b = entry.box(f"{input_size}x{input_size}x{cfg.in_channels} images", "io")
    entry.box(f"Conv {c(cfg.stem_channels[0])}, 3x3, stride 2", "joint")
    entry.box("ReLU", "relu", h=0.3)
    entry.note(entry.last + 0.0 - 0.13, format_shape(shapes["stem.conv1"]))
    entry.box(f"Conv {c(cfg.stem_channels[1])}, 3x3", "joint")
    entry.box("ReLU", "relu", h=0.3)
    entry.note(entry.last - 0.13, format_shape(shapes["stem.conv2"]))
    for i, (ch, stride) in enumerate(zip(cfg.entry_channels, cfg.entry_strides)):
        start = entry.y + 0.26
        steps = [] if i == 0 else [("ReLU", "relu")]
        steps += [(f"SeparableConv {c(ch)}, 3x3", "separable"), ("ReLU", "relu"), (f"SeparableConv {c(ch)}, 3x3", "separable")]
        for text, kind in steps:
            entry.box(text, kind, h=0.3 if kind == "relu" else 0.42)
        if stride != 1:
            entry.box(pool.replace("stride 2", f"stride {stride}"), "pool")
        shortcut = f"Conv 1x1\nstride {stride}" if stride != 1 else "Conv 1x1"
        end = entry.residual(start, entry.y, shortcut)
        entry.note(end - 0.13, format_shape(shapes[f"entry_flow.block{i + 1}"]))
    entry.box(f"{format_shape(shapes['entry_flow.block3'])} feature maps", "io")
    ax.text(entry.x, top + 0.45, "Entry flow", ha="center", fontsize=12, weight="bold")

    middle = _Column(ax, 5.1, top)
    middle.box(f"{format_shape(shapes['entry_flow.block3'])} feature maps", "io")
    start = middle.y + 0.26
    width = c(cfg.entry_channels[2])
    for _ in range(3):
        middle.box("ReLU", "relu", h=0.3)
        middle.box(f"SeparableConv {width}, 3x3", "separable")
    end = middle.residual(start, middle.y, None)
    middle.box(f"{format_shape(shapes['middle_flow'])} feature maps", "io")
    ax.text(middle.x, middle.y - 0.1, f"repeated {cfg.middle_blocks} times,\neach time with its own weights",
            ha="center", va="top", fontsize=9, weight="bold")
    ax.text(middle.x, top + 0.45, "Middle flow", ha="center", fontsize=12, weight="bold")
    ax.text(middle.x, middle.y - 0.9, "Every Conv and SeparableConv is\nfollowed by batch normalisation\n(not drawn), as in the paper.",
            ha="center", va="top", fontsize=8.5, style="italic")

    exit_ = _Column(ax, 10.2, top)
    exit_.box(f"{format_shape(shapes['middle_flow'])} feature maps", "io")
    start = exit_.y + 0.26
    e0, e1, e2 = (c(x) for x in cfg.exit_channels)
    for text, kind in (("ReLU", "relu"), (f"SeparableConv {width}, 3x3", "separable"), ("ReLU", "relu"),
                       (f"SeparableConv {e0}, 3x3", "separable"), (pool.replace("stride 2", f"stride {cfg.exit_stride}"), "pool")):
        exit_.box(text, kind, h=0.3 if kind == "relu" else 0.42)
    exit_.residual(start, exit_.y, f"Conv 1x1\nstride {cfg.exit_stride}")
    for text, kind in ((f"SeparableConv {e1}, 3x3", "separable"), ("ReLU", "relu"),
                       (f"SeparableConv {e2}, 3x3", "separable"), ("ReLU", "relu")):
        exit_.box(text, kind, h=0.3 if kind == "relu" else 0.42)
    exit_.note(exit_.last - 0.13, format_shape(shapes["exit_flow"]))
    exit_.box("GlobalAveragePooling", "pool")
    exit_.note(exit_.last - 0.13, f"{e2}-d vector")
    exit_.box("Optional fully-connected layers", "io")
    exit_.box(f"Logistic regression, {cfg.num_classes}", "cross")
    ax.text(exit_.x, top + 0.45, "Exit flow", ha="center", fontsize=12, weight="bold")

    from matplotlib.patches import Patch

    handles = [
        Patch(facecolor=COLOURS["joint"], edgecolor="#333333", label="regular conv (spatial and cross-channel)"),
        Patch(facecolor=COLOURS["spatial"], edgecolor="#333333", label="depthwise step (spatial)"),
        Patch(facecolor=COLOURS["cross"], edgecolor="#333333", label="pointwise / 1x1 (cross-channel)"),
        Patch(facecolor=COLOURS["add"], edgecolor="#333333", label="residual addition"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=4, fontsize=8.5, frameon=False)
    bottom = min(entry.y, middle.y, exit_.y)
    x0, x1, y0, y1 = -1.6, 12.9, bottom - 0.2, top + 0.8
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    width = fig.get_size_inches()[0]
    fig.set_size_inches(width, width * (y1 - y0) / (x1 - x0) + 0.5)  # equal aspect, room for the legend
    ax.set_aspect("equal")
    ax.axis("off")
    return fig


# ------------------------------------------------------------------ bar charts


def _short(value: float) -> str:
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g}{suffix}"
    return f"{value:.3g}"


def _bars(
    ax: Axes, labels: Sequence[str], values: Sequence[float], title: str, colour: str, percent: bool, unit: tuple[float, str]
) -> None:
    factor, name = unit
    bars = ax.barh(list(labels)[::-1], [v / factor for v in values][::-1], color=colour, edgecolor="#333333", linewidth=0.6)
    total = sum(values)
    texts = [f"{_short(v)} ({v / total:.0%})" if percent and total else _short(v) for v in values][::-1]
    ax.bar_label(bars, labels=texts, fontsize=8, padding=2)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(name, fontsize=8.5)
    ax.margins(x=0.3)
    ax.tick_params(labelsize=8.5)
    ax.spines[["top", "right"]].set_visible(False)


def plot_flow_costs(rows: Sequence[FlowCost]) -> Figure:
    """Two bar charts: parameters and MACs of each flow, with each flow's share.

    Args:
        rows: The output of :func:`flow_costs`.
    """
    from matplotlib.figure import Figure

    if not rows:
        raise ValueError("expected at least one FlowCost, got none")
    fig = Figure(figsize=(10.0, 3.0), layout="constrained")
    left, right = fig.subplots(1, 2, sharey=True)
    labels = [r.name.replace("_", " ") for r in rows]
    _bars(left, labels, [r.params for r in rows], "parameters", COLOURS["joint"], True, (1e6, "millions"))
    _bars(right, labels, [r.macs for r in rows], "MACs (conv + linear)", COLOURS["spatial"], True, (1e9, "billions"))
    return fig


def format_comparison(rows: Sequence[ModelComplexity]) -> str:
    """A text table of :func:`xception_lib.complexity.comparison_table`, with GMACs and GFLOPs."""
    head = f"{'model':28} {'input':>7} {'parameters':>12} {'GMACs':>7} {'GFLOPs':>7}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r.name:28} {r.input_size:>4} px {r.params:>12,} {r.macs / 1e9:>7.2f} {2 * r.macs / 1e9:>7.2f}"
        )
    return "\n".join(lines)


def plot_comparison(rows: Sequence[ModelComplexity]) -> Figure:
    """Parameters and MACs of several models at their native input sizes, as bar charts.

    Args:
        rows: The output of :func:`xception_lib.complexity.comparison_table`.
    """
    from matplotlib.figure import Figure

    if not rows:
        raise ValueError("expected at least one ModelComplexity row, got none")
    fig = Figure(figsize=(10.0, 0.5 * len(rows) + 1.2), layout="constrained")
    left, right = fig.subplots(1, 2, sharey=True)
    labels = [f"{r.name} ({r.input_size} px)" for r in rows]
    _bars(left, labels, [r.params for r in rows], "parameters", COLOURS["joint"], False, (1e6, "millions"))
    _bars(right, labels, [r.macs for r in rows], "MACs per image", COLOURS["spatial"], False, (1e9, "billions"))
    return fig
