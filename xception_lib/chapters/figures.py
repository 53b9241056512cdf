"""Figures of chapters 1-3: module diagrams, the segment spectrum, savings and bar charts, and library source.

Every function returns a :class:`matplotlib.figure.Figure` built without ``pyplot`` (nothing registered globally),
as wide as the book's column. The colours carry the book's one idea: **blue** maps cross-channel correlations
(1x1), **orange** spatial ones (one channel or segment at a time), **purple** both at once (a regular convolution).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from xception_lib.chapters.style import COLUMN_IN, LAYERS, colour

if TYPE_CHECKING:  # matplotlib is optional: imported inside the functions that draw
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: Face colour of each kind of box in the diagrams (what the box correlates), from :data:`~.style.LAYERS`.
COLOURS = {
    "cross": LAYERS["pointwise"],  # 1x1: cross-channel
    "spatial": LAYERS["depthwise"],  # 3x3 on one channel / segment: spatial
    "joint": LAYERS["regular"],  # regular 3x3: both at once
    "pool": LAYERS["pool"],
    "io": "#ffffff",
    "concat": LAYERS["other"],
}


def text_colour(face: str) -> str:
    """Black or white, whichever contrasts more with ``face`` (WCAG's relative luminance): white on the dark blue
    of a 1x1, black on the others and on no face (``"none"``)."""
    from matplotlib.colors import to_rgb

    rgb = to_rgb("white" if face == "none" else face)
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
    return "white" if 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2] < 0.179 else "black"


#: The kinds of :func:`module_diagram` and their titles.
DIAGRAMS = {
    "regular": "A regular convolution",
    "inception": "Figure 1: an Inception module",
    "simplified": "Figure 2: the simplified Inception module",
    "segmented": "Figure 3: one 1x1, then 3x3 over 3 segments",
    "extreme": "Figure 4: the extreme version",
    "separable": "A depthwise separable convolution",
}
_EDGE: dict[str, Any] = {"edgecolor": "#333333", "linewidth": 1.0}


def _new_figure(height: float, ncols: int = 1) -> tuple[Figure, list[Axes]]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(COLUMN_IN, height), layout="constrained")
    return fig, list(fig.subplots(1, ncols, squeeze=False)[0])


def _box(ax: Axes, x: float, y: float, text: str, kind: str, w: float = 1.6, h: float = 0.5) -> tuple[float, float]:
    """Draw a rounded box centred at ``(x, y)``; return its centre."""
    from matplotlib.patches import FancyBboxPatch

    face, corners = COLOURS[kind], "round,pad=0.02,rounding_size=0.08"
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, corners, facecolor=face, gid=f"box:{kind}", **_EDGE))
    ax.text(x, y, text, ha="center", va="center", fontsize=10, color=text_colour(face))
    return x, y


def _arrow(ax: Axes, start: tuple[float, float], end: tuple[float, float], h: float = 0.5) -> None:
    """An arrow from the top of the box at ``start`` to the bottom of the box at ``end``."""
    props = {"arrowstyle": "-|>", "color": "#333333", "linewidth": 1.0, "shrinkA": 1, "shrinkB": 1}
    ax.annotate("", xy=(end[0], end[1] - h / 2), xytext=(start[0], start[1] + h / 2), arrowprops=props)


def _towers(ax: Axes, towers: Sequence[Sequence[tuple[str, str]]], width: float = 2.0) -> None:
    """Input at the bottom, parallel towers of boxes, "concatenate" at the top (as in the paper)."""
    n, top = len(towers), max(len(t) for t in towers) + 1
    xs = [(i - (n - 1) / 2) * width for i in range(n)]
    _box(ax, 0.0, 0.0, "input", "io")
    _box(ax, 0.0, float(top), "concatenate", "concat", w=max(2.0, width * (n - 1) + 1.2))
    for x, tower in zip(xs, towers, strict=False):
        for level, (text, kind) in enumerate(tower, start=1):
            _arrow(ax, (x if level > 1 else 0.0, level - 1.0), _box(ax, x, float(level), text, kind))
        _arrow(ax, (x, float(len(tower))), (x, float(top)))
    _finish(ax, xs[0] - width / 2, xs[-1] + width / 2, -0.6, top + 0.6)


def _segmented(ax: Axes, segments: int, shown: int, label: str) -> None:
    """Input -> one 1x1 convolution -> a spatial convolution per segment -> concatenate."""
    width = 6.0
    inp = _box(ax, 0.0, 0.0, "input", "io")
    what = f"split into {segments} segments" if segments > 0 else "one segment per channel"
    conv = _box(ax, 0.0, 1.0, f"1x1 conv (output {what})", "cross", w=width)
    _arrow(ax, inp, conv)
    step = width / shown
    xs = [(i - (shown - 1) / 2) * step for i in range(shown)]
    box_w = min(1.6, step * 0.8)
    for i, x in enumerate(xs):
        if shown > 3 and i == shown // 2:
            ax.text(x, 2.0, "...", ha="center", va="center", fontsize=12)
            continue
        cur = _box(ax, x, 2.0, label, "spatial", w=box_w)
        _arrow(ax, (x, 1.0), cur)
        _arrow(ax, cur, (x, 3.0))
    _box(ax, 0.0, 3.0, "concatenate", "concat", w=width)
    _finish(ax, -width / 2 - 0.3, width / 2 + 0.3, -0.6, 3.6)


def _chain(ax: Axes, steps: Sequence[tuple[str, str]], notes: Sequence[str]) -> None:
    """A single path from input (bottom) to output (top), a note beside each arrow."""
    for level, (text, kind) in enumerate([("input", "io"), *steps, ("output", "io")]):
        _box(ax, 0.0, float(level), text, kind, w=1.6 if kind == "io" else 3.6)
        if level:
            _arrow(ax, (0.0, level - 1.0), (0.0, float(level)))
    for level, note in enumerate(notes, start=1):
        ax.text(2.0, level + 0.5, note, ha="left", va="center", fontsize=10, style="italic")
    _finish(ax, -2.2, 4.6, -0.6, len(steps) + 1.6)


def _finish(ax: Axes, x0: float, x1: float, y0: float, y1: float) -> None:
    ax.set(xlim=(x0, x1), ylim=(y0, y1), aspect="equal")
    ax.set_axis_off()


def module_diagram(kind: str) -> Figure:
    """A box-and-arrow diagram (one axes, a colour legend) of a module of the paper's argument, one of
    :data:`DIAGRAMS`: a regular 3x3 convolution, the paper's Figures 1-4, or a depthwise separable one."""
    from matplotlib.patches import Patch

    if kind not in DIAGRAMS:
        raise ValueError(f"kind must be one of {tuple(DIAGRAMS)}, got {kind!r}")
    fig, (ax,) = _new_figure(3.8)
    one, three = ("1x1 conv", "cross"), ("3x3 conv", "joint")
    if kind == "regular":
        _chain(ax, [("3x3 conv, all channels", "joint")], ["space and channels, jointly"])
    elif kind == "inception":
        _towers(ax, [[one], [one, three], [one, three, three], [("3x3 avg pool", "pool"), one]])
    elif kind == "simplified":
        _towers(ax, [[one, three]] * 3)
    elif kind == "separable":
        steps = [("depthwise 3x3, per channel", "spatial"), ("pointwise 1x1", "cross")]
        _chain(ax, steps, ["spatial first", "then cross-channel\n(no ReLU in between)"])
    else:  # segmented or extreme
        _segmented(ax, *((3, 3, "3x3 conv") if kind == "segmented" else (0, 9, "3x3")))
    ax.set_title(DIAGRAMS[kind], fontsize=11)
    labels = {
        "cross": "cross-channel (1x1)",
        "spatial": "spatial (per channel or segment)",
        "joint": "both at once (regular conv)",
    }
    handles = [Patch(facecolor=COLOURS[k], label=label, **_EDGE) for k, label in labels.items()]
    fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=9, frameon=False)
    return fig


@dataclass(frozen=True)
class SpectrumPoint:
    """One number of segments: the counters' parameters and MACs beside the closed forms."""

    segments: int
    params: int  # torchinfo
    macs: int  # fvcore, one image
    formula_params: int
    formula_macs: int


def segment_spectrum(channels: int, size: int, segments: Sequence[int] | None = None) -> list[SpectrumPoint]:
    """Parameters and MACs of ``SegmentedInception(channels, channels, s)`` (3x3) on a ``size`` x ``size`` input for
    each ``s`` in ``segments`` (default: every divisor of ``channels``, the valid segment counts), counted by torchinfo and fvcore beside the
    closed forms, in increasing order of ``s``."""
    from xception_lib import complexity as cx
    from xception_lib.layers import SegmentedInception

    chosen = [s for s in range(1, channels + 1) if channels % s == 0] if segments is None else sorted(segments)
    shape = (1, channels, size, size)
    c, points = channels, []
    for s in chosen:
        module = SegmentedInception(c, c, s)
        params = cx.conv_params(c, c, 1, bias=True) + cx.conv_params(c, c, 3, groups=s, bias=True)
        macs = cx.conv_macs(c, c, 1, size, size) + cx.conv_macs(c, c, 3, size, size, groups=s)
        points.append(SpectrumPoint(s, cx.torchinfo_params(module, shape), cx.count_macs(module, shape), params, macs))
    return points


def _log2_x(ax: Axes, label: str) -> None:
    """A base-2 logarithmic x axis with plain numbers (8, 16, ...) and a grid."""
    from matplotlib.ticker import ScalarFormatter

    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.set_xlabel(f"{label} (log scale)")
    ax.grid(True, which="both", linewidth=0.3)


def spectrum_plot(points: Sequence[SpectrumPoint]) -> Figure:
    """Parameters and MACs against the number of segments, on log-log axes (two panels): the counters as markers,
    the closed forms as a line, the ends labelled "regular" (1 segment) and "extreme" (one segment per channel)."""
    if not points:
        raise ValueError("expected at least one SpectrumPoint, got none")
    fig, axes = _new_figure(3.4, ncols=2)
    s = [p.segments for p in points]
    for ax, key, ylabel in zip(axes, ("params", "macs"), ("parameters", "MACs per image"), strict=True):
        counted = [getattr(p, key) for p in points]
        ax.plot(
            s, [getattr(p, f"formula_{key}") for p in points], "-", color="#999999", linewidth=1.5, label="closed form"
        )
        ax.plot(s, counted, "o", color="#333333", markersize=4, label="counted (torchinfo / fvcore)")
        _log2_x(ax, "segments")
        ax.set_yscale("log")
        ax.set_title(f"{ylabel} (log scale)", fontsize=10)
        ax.annotate("regular", (s[0], counted[0]), textcoords="offset points", xytext=(5, -12), fontsize=9)
        ax.annotate("extreme", (s[-1], counted[-1]), textcoords="offset points", xytext=(-45, 8), fontsize=9)
    axes[0].legend(fontsize=9, loc="upper right")
    return fig


def savings_plot(channels: Sequence[int], kernel_sizes: Sequence[int] = (3, 5, 7)) -> Figure:
    """How many times fewer MACs a separable convolution needs, ``1 / (1/C_out + 1/k^2)``: one curve per kernel size
    against the output channels (log x axis), with its ceiling ``k^2`` dashed."""
    from xception_lib.complexity import separable_savings

    if not channels:
        raise ValueError("expected at least one channel count, got none")
    fig, (ax,) = _new_figure(3.6)
    shades = ("#222222", "#555555", "#888888", "#aaaaaa")  # one grey per kernel size
    for k, shade in zip(kernel_sizes, shades, strict=False):
        ax.plot(channels, [separable_savings(c, c, k) for c in channels], label=f"{k}x{k}", color=shade)
        ax.axhline(k * k, linestyle="--", linewidth=0.8, color=shade)
    _log2_x(ax, "channels $C_{in} = C_{out}$")
    ax.set_ylabel("regular MACs / separable MACs")
    ax.legend(title="kernel (dashed: $k^2$)", fontsize=9, title_fontsize=9)
    return fig


def bar_pair(
    labels: Sequence[str],
    left: Sequence[float],
    right: Sequence[float],
    titles: tuple[str, str] = ("parameters", "MACs"),
    log: bool = False,
) -> Figure:
    """Two bar charts side by side over the same labels (e.g. parameters and MACs, or MACs and time), each bar in
    its layer kind's or its model's colour (:func:`~xception_lib.chapters.style.colour`), else grey; a separable
    convolution does both steps: orange (depthwise, spatial) with blue stripes. ``log``: logarithmic value axes,
    drawn as dots (bars start at zero)."""
    if not (len(labels) == len(left) == len(right)) or not labels:
        got = f"{len(labels)} labels, {len(left)} and {len(right)} values"
        raise ValueError(f"expected as many values as labels (>= 1), got {got}")
    fig, axes = _new_figure(3.2, ncols=2)
    colours = [colour("depthwise" if label == "separable" else label, LAYERS["pool"]) for label in labels]
    for ax, values, title in zip(axes, (left, right), titles, strict=True):
        ax.set_title(title, fontsize=10)
        ax.tick_params(axis="x", labelsize=9, rotation=20 if len(labels) > 3 else 0)
        if log:  # a dot plot: a bar on a log scale starts nowhere, so its length means nothing
            ax.scatter(list(labels), list(values), c=colours, s=70, edgecolors="#333333", linewidths=0.6, zorder=3)
            for label, value in zip(labels, values, strict=True):
                ax.annotate(
                    short_number(value),
                    (label, value),
                    textcoords="offset points",
                    xytext=(0, 8),
                    ha="center",
                    fontsize=9,
                )
            ax.set_yscale("log")
            ax.grid(axis="y", which="major", alpha=0.3)
            ax.margins(x=0.15, y=0.3)
            continue
        bars = ax.bar(list(labels), list(values), color=colours, edgecolor="#333333", linewidth=0.6)
        for label, bar in zip(labels, bars, strict=True):
            if label == "separable":
                bar.set(hatch="///", edgecolor=COLOURS["cross"])
        ax.bar_label(bars, labels=[short_number(v) for v in values], fontsize=9)
        ax.yaxis.set_major_formatter(lambda value, _: short_number(value))  # "20M", not "2.0" under a "1e7"
        ax.margins(y=0.15)
    return fig


def short_number(value: float) -> str:
    """``1234567 -> '1.23M'``; small values with 3 significant digits."""
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g}{suffix}"
    return f"{value:.3g}"


def source_code(obj: object, width: int = 80) -> Any:
    """The source of a library function or class, highlighted and fitted to the column
    (:func:`xception_lib.listing.fit_source`): an ``IPython.display.Code`` that a notebook cell displays."""
    import inspect

    from IPython.display import Code

    from xception_lib.listing import fit_source

    return Code(fit_source(inspect.getsource(obj), width), language="python")  # type: ignore[arg-type]
