"""The figures of chapters 1-2: each returns a Figure with the expected panels and data."""

from __future__ import annotations

import pytest

pytest.importorskip("matplotlib", reason="figures need matplotlib; install xception_lib[tools]")

from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import FancyBboxPatch  # noqa: E402

from xception_lib import complexity as cx  # noqa: E402
from xception_lib.chapters import figures  # noqa: E402
from xception_lib.listing import fit_source  # noqa: E402


def _boxes(fig: Figure) -> list[str]:
    """The kinds of the diagram's boxes, from their gids ("box:<kind>")."""
    (ax,) = fig.axes
    return [p.get_gid().split(":", 1)[1] for p in ax.patches if isinstance(p, FancyBboxPatch)]


@pytest.mark.parametrize(
    ("kind", "cross", "spatial", "joint"),
    [
        ("regular", 0, 0, 1),
        ("inception", 4, 0, 3),  # four 1x1 convs; 3x3 convs in two towers (one of them twice)
        ("simplified", 3, 0, 3),
        ("segmented", 1, 3, 0),
        ("extreme", 1, 8, 0),  # one 1x1, eight drawn 3x3 boxes and an ellipsis
        ("separable", 1, 1, 0),
    ],
)
def test_module_diagram_boxes(kind: str, cross: int, spatial: int, joint: int) -> None:
    fig = figures.module_diagram(kind)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 1
    kinds = _boxes(fig)
    assert (kinds.count("cross"), kinds.count("spatial"), kinds.count("joint")) == (cross, spatial, joint)
    assert kinds.count("io") >= 1  # the input
    assert fig.axes[0].get_title()
    assert len(fig.legends) == 1


def test_module_diagram_rejects_unknown_kind() -> None:
    with pytest.raises(ValueError, match="kind must be one of"):
        figures.module_diagram("xception")


def test_segment_spectrum_counters_match_closed_forms() -> None:
    pytest.importorskip("fvcore")
    pytest.importorskip("torchinfo")
    points = figures.segment_spectrum(24, 7)
    assert [p.segments for p in points] == [1, 2, 3, 4, 6, 8, 12, 24]
    for p in points:
        assert p.params == p.formula_params
        assert p.macs == p.formula_macs
    # more segments, fewer parameters and MACs, down to the 1x1 plus a depthwise 3x3
    assert all(a.params > b.params and a.macs > b.macs for a, b in zip(points, points[1:], strict=False))
    last = points[-1]
    assert last.params == cx.conv_params(24, 24, 1, bias=True) + cx.depthwise_params(24, 3) + 24
    assert last.macs == cx.pointwise_macs(24, 24, 7, 7) + cx.depthwise_macs(24, 3, 7, 7)


def test_spectrum_plot_two_log_panels() -> None:
    points = [figures.SpectrumPoint(s, 100 // s + 10, 1000 // s + 50, 100 // s + 10, 1000 // s + 50) for s in (1, 2, 4)]
    fig = figures.spectrum_plot(points)
    assert len(fig.axes) == 2
    for ax in fig.axes:
        assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
        xs, ys = ax.lines[1].get_data()  # the counted markers
        assert list(xs) == [1, 2, 4]
    assert list(fig.axes[0].lines[1].get_data()[1]) == [110, 60, 35]
    assert "MACs" in fig.axes[1].get_title()
    with pytest.raises(ValueError):
        figures.spectrum_plot([])


def test_savings_plot_curves_and_ceilings() -> None:
    channels = [8, 64, 512]
    fig = figures.savings_plot(channels, kernel_sizes=(3, 5))
    (ax,) = fig.axes
    curves = [line for line in ax.lines if list(line.get_xdata()) == channels]
    assert len(curves) == 2
    assert list(curves[0].get_ydata()) == pytest.approx([1 / (1 / c + 1 / 9) for c in channels])
    ceilings = sorted(line.get_ydata()[0] for line in ax.lines if line not in curves)
    assert ceilings == [9, 25]
    assert ax.get_xscale() == "log"


def test_bar_pair_panels_and_validation() -> None:
    fig = figures.bar_pair(["regular", "separable"], [10.0, 2.0], [300.0, 40.0], titles=("MACs", "time"))
    assert [ax.get_title() for ax in fig.axes] == ["MACs", "time"]
    heights = [[bar.get_height() for bar in ax.patches] for ax in fig.axes]
    assert heights == [[10.0, 2.0], [300.0, 40.0]]
    assert all(ax.get_ylim()[0] == 0 for ax in fig.axes)  # bars start at zero
    # on log scales, dots: a bar on a log axis has no meaningful length
    fig = figures.bar_pair(["regular", "separable"], [10.0, 2.0], [300.0, 40.0], titles=("MACs", "time"), log=True)
    assert all(ax.get_yscale() == "log" and not ax.patches for ax in fig.axes)
    dots = [ax.collections[0].get_offsets()[:, 1].tolist() for ax in fig.axes]
    assert dots == [[10.0, 2.0], [300.0, 40.0]]
    with pytest.raises(ValueError, match="as many values as labels"):
        figures.bar_pair(["a"], [1.0, 2.0], [1.0])


def test_bar_colours_follow_the_legend() -> None:
    from matplotlib.colors import to_hex

    fig = figures.bar_pair(["regular", "separable", "depthwise", "pointwise", "stem"], [1.0] * 5, [1.0] * 5)
    faces = [to_hex(bar.get_facecolor()) for bar in fig.axes[0].patches]
    c = {kind: to_hex(colour) for kind, colour in figures.COLOURS.items()}
    assert faces == [c["joint"], c["spatial"], c["spatial"], c["cross"], c["pool"]]  # orange: depthwise, blue: 1x1
    assert fig.axes[0].patches[1].get_hatch() == "///"


def test_bars_of_models_take_the_books_model_colours() -> None:
    from matplotlib.colors import to_hex

    from xception_lib.chapters import style

    names = ["Xception", "Inception V3", "ResNet-50", "MobileNetV2"]
    fig = figures.bar_pair(names, [1.0] * 4, [1.0] * 4)
    faces = [to_hex(bar.get_facecolor()) for bar in fig.axes[0].patches]
    keys = ["xception", "inception_v3", "resnet50", "mobilenet_v2"]
    assert faces == [to_hex(style.MODELS[key]) for key in keys]
    assert all(ax.get_ylim()[0] == 0 for ax in fig.axes)  # bars start at zero


def test_diagram_text_is_white_on_the_dark_blue_only() -> None:
    assert figures.text_colour(figures.COLOURS["cross"]) == "white"
    assert figures.text_colour(figures.COLOURS["spatial"]) == "black"
    assert figures.text_colour("#ffffff") == "black"


def _every_figure() -> list[Figure]:
    points = [figures.SpectrumPoint(s, 100 // s + 10, 1000 // s + 50, 100 // s + 10, 1000 // s + 50) for s in (1, 2, 4)]
    return [
        *(figures.module_diagram(kind) for kind in figures.DIAGRAMS),
        figures.spectrum_plot(points),
        figures.savings_plot([8, 64, 512]),
        figures.bar_pair(["regular", "separable", "depthwise", "pointwise"], [1.0] * 4, [2.0] * 4),
    ]


def test_figures_are_drawn_for_the_column_with_legible_text() -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    for fig in _every_figure():
        assert fig.get_size_inches()[0] <= 7.5
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        renderer = canvas.get_renderer()
        texts = [
            t
            for t in fig.findobj(lambda o: hasattr(o, "get_fontsize") and hasattr(o, "get_text"))
            if t.get_text().strip()
        ]
        assert min(t.get_fontsize() for t in texts) >= 9
        boxes = [
            p.get_window_extent(renderer)
            for ax in fig.axes
            for p in ax.patches
            if (p.get_gid() or "").startswith("box:")
        ]
        for ax in fig.axes:  # each diagram label fits inside its box
            for text in ax.texts:
                extent = text.get_window_extent(renderer)
                inside = [b for b in boxes if b.contains(*extent.get_points().mean(axis=0))]
                if inside:
                    assert extent.width <= inside[0].width, text.get_text()


def _code_only(source: str) -> str:
    """The AST of ``source`` without docstrings, as text: what runs, not how it is laid out."""
    import ast

    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            if isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]  # type: ignore[attr-defined]
    return ast.dump(tree)


def test_fit_source_fits_the_column_and_keeps_the_code() -> None:
    import textwrap

    source = (
        "    def f(self, x):\n"
        '        """A docstring line that is far too long for the column of the book, by some margin."""\n'
        "        y = x + 1  # a trailing comment that pushes this line well past the eighty characters\n"
        "        return y\n"
    )
    fitted = fit_source(source)
    assert all(len(line) <= 80 for line in fitted.splitlines())
    assert _code_only(fitted) == _code_only(textwrap.dedent(source))
    assert "    # a trailing comment" in fitted and "    y = x + 1\n" in fitted
    assert "far too long" in fitted and "some margin" in fitted
    short = "def g():\n    return 1\n"
    assert fit_source(short) == short
