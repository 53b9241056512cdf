"""anatomy: per-flow parameters and MACs, the shape trace, and the architecture drawing."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import xception_lib as xl
from xception_lib import complexity as cx
from xception_lib.chapters import anatomy as an

PAPER = xl.XceptionConfig.imagenet()


def conv_out(n: int, k: int = 3, stride: int = 1, pad: int = 0) -> int:
    return (n + 2 * pad - k) // stride + 1


def same_pool_out(n: int, stride: int = 2) -> int:
    return -(-n // stride)  # TensorFlow "same": ceil(n / stride)


# ---------------------------------------------------------------- parameters and MACs


@pytest.mark.parametrize(
    "cfg", [PAPER, xl.XceptionConfig.imagenet(width_multiplier=0.25, middle_blocks=2, num_classes=7)]
)
def test_flow_costs_params_are_the_flows_parameters(cfg: xl.XceptionConfig) -> None:
    model = an.meta_model(cfg)
    measured = an.flow_costs(model, (1, 3, 71, 71))["params"].to_dict()
    assert measured == {name: sum(p.numel() for p in getattr(model, name).parameters()) for name in an.FLOWS}


def test_flow_macs_agree_with_fvcore(tiny_cfg: xl.XceptionConfig) -> None:
    model = xl.Xception(tiny_cfg)
    size = (2, 3, 71, 71)
    rows = an.flow_costs(model, size)["macs"].to_dict()
    by_op = cx.fvcore_analysis(model, size).by_module_and_operator()
    for flow in an.FLOWS:
        ops = by_op.get(flow, {})
        assert rows[flow] == ops.get("conv", 0) + ops.get("linear", 0), flow
    assert all(v > 0 for v in rows.values())


def test_flow_macs_leave_no_hooks_and_keep_the_mode(tiny_cfg: xl.XceptionConfig) -> None:
    model = xl.Xception(tiny_cfg).train()
    macs = an.flow_costs(model, (1, 3, 71, 71))["macs"]
    assert model.training
    assert all(not m._forward_hooks for m in model.modules())
    c1, c2 = model.stem.conv1.out_channels, model.stem.conv2.out_channels
    h1 = conv_out(71, stride=2)
    h2 = conv_out(h1)
    assert macs["stem"] == cx.conv_macs(3, c1, 3, h1, h1) + cx.conv_macs(c1, c2, 3, h2, h2)
    assert macs["head"] == model.head.fc.in_features * model.head.fc.out_features


def test_flow_costs_rejects_bad_size(tiny_cfg: xl.XceptionConfig) -> None:
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        an.flow_costs(xl.Xception(tiny_cfg), (3, 71, 71))


def test_flow_costs_needs_the_flows() -> None:
    with pytest.raises(ValueError, match="missing"):
        an.flow_costs(nn.Sequential(nn.Conv2d(3, 4, 3)), (1, 3, 8, 8))


# ---------------------------------------------------------------- shapes


def test_shape_trace_of_the_paper_model() -> None:
    steps = {s.name: s.shape for s in an.shape_trace(an.meta_model(PAPER), (1, 3, 299, 299))}
    s1 = conv_out(299, stride=2)
    s2 = conv_out(s1)
    e1 = same_pool_out(s2)
    e2 = same_pool_out(e1)
    e3 = same_pool_out(e2)
    x = same_pool_out(e3)
    assert (s1, s2, e1, e2, e3, x) == (149, 147, 74, 37, 19, 10)  # the paper's Figure 5
    assert steps["stem.conv1"] == (1, 32, s1, s1)
    assert steps["stem.conv2"] == (1, 64, s2, s2)
    assert steps["entry_flow.block1"] == (1, 128, e1, e1)
    assert steps["entry_flow.block3"] == (1, 728, e3, e3)
    assert steps["middle_flow"] == (1, 728, e3, e3)
    assert steps["exit_flow"] == (1, 2048, x, x)
    assert steps["logits"] == (1, 1000)


def test_shape_trace_equals_a_real_forward(tiny_cfg: xl.XceptionConfig, image_71: torch.Tensor) -> None:
    model = xl.Xception(tiny_cfg).eval()
    steps = {s.name: s.shape for s in an.shape_trace(model, tuple(image_71.shape))}
    with torch.no_grad():
        stages = model.forward_intermediates(image_71)
        logits = model.forward_head(stages["exit_flow"])
    for name, tensor in stages.items():
        assert steps[name] == tuple(tensor.shape)
    assert steps["logits"] == tuple(logits.shape)
    assert all(not m._forward_hooks for m in model.modules())


def test_shape_trace_reports_a_failing_head(tiny_cfg: xl.XceptionConfig) -> None:
    model = an.meta_model(tiny_cfg)
    model.head.fc = nn.Linear(3, 7, device="meta")  # wrong input width: the head must fail
    steps = an.shape_trace(model, (1, 3, 71, 71))
    assert steps[-1].name == "logits" and steps[-1].shape is None and steps[-1].error


def test_shape_trace_reports_a_too_small_input() -> None:
    steps = an.shape_trace(an.meta_model(PAPER), (1, 3, 5, 5))
    assert steps[-1].shape is None and "too small" in (steps[-1].error or "")


def test_shape_trace_needs_an_xception() -> None:
    with pytest.raises(TypeError, match="expected an xception_lib Xception"):
        an.shape_trace(nn.Conv2d(3, 3, 1), (1, 3, 8, 8))


def test_format_shape() -> None:
    assert an.format_shape((1, 728, 19, 19)) == "19x19x728"
    assert an.format_shape((1, 1000)) == "1000"
    assert an.format_shape(None) == "-"


# ---------------------------------------------------------------- figures


def _gids(fig) -> list[str]:  # noqa: ANN001
    return [p.get_gid() for ax in fig.axes for p in ax.patches if p.get_gid()]


def test_architecture_figure_draws_every_layer_of_figure_5() -> None:
    pytest.importorskip("matplotlib")
    fig = an.architecture_figure(PAPER)
    gids = _gids(fig)
    # entry: 2 x 3 separable convs; middle: one block of 3, drawn once; exit: 2 + 2
    assert gids.count("box:separable") == 6 + 3 + 4
    assert gids.count("box:joint") == 2  # the two stem convolutions
    assert gids.count("box:shortcut") == 4  # three entry blocks and the exit block
    assert gids.count("box:add") == 5
    assert gids.count("box:pool") == 5  # four max-pools and the global average pool
    texts = " ".join(t.get_text() for ax in fig.axes for t in ax.texts)
    for shape in ("149x149x32", "147x147x64", "74x74x128", "37x37x256", "19x19x728", "10x10x2048"):
        assert shape in texts
    assert "repeated 8 times" in texts


def test_architecture_figure_follows_the_config() -> None:
    pytest.importorskip("matplotlib")
    fig = an.architecture_figure(xl.XceptionConfig.imagenet(width_multiplier=0.5, middle_blocks=4))
    texts = " ".join(t.get_text() for ax in fig.axes for t in ax.texts)
    assert "SeparableConv 368" in texts and "repeated 4 times" in texts
    with pytest.raises(ValueError, match="stem='imagenet'"):
        an.architecture_figure(xl.XceptionConfig.cifar())


def test_architecture_figure_fits_the_column_and_every_label_fits_its_box() -> None:
    pytest.importorskip("matplotlib")
    fig = an.architecture_figure(PAPER)
    assert fig.get_size_inches()[0] <= 7.5
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    (ax,) = fig.axes
    texts = [t for t in ax.texts if t.get_text().strip()]
    assert min(t.get_fontsize() for t in texts) >= 9
    boxes = [p.get_window_extent(renderer) for p in ax.patches if (p.get_gid() or "").startswith("box:")]
    labels = [t for t in texts if t.get_gid() == "box-text"]
    assert len(labels) > 40
    for label in labels:
        extent = label.get_window_extent(renderer)
        inside = [b for b in boxes if b.contains(*extent.get_points().mean(axis=0))]
        assert inside and extent.width <= inside[0].width and extent.height <= inside[0].height, label.get_text()


@pytest.mark.slow
def test_comparison_table_rows() -> None:
    pytest.importorskip("torchvision")
    rows = an.comparison_table(["Xception", "MobileNetV2"])
    assert list(rows.index) == ["Xception", "MobileNetV2"]
    assert rows.loc["Xception", "params"] == 22_855_952 and rows.loc["Xception", "input_size"] == 299
    assert rows.loc["MobileNetV2", "params"] == 3_504_872
    assert rows.loc["MobileNetV2", "macs"] < rows.loc["Xception", "macs"] / 20
    with pytest.raises(ValueError, match="unknown model"):
        an.comparison_table(["VGG"])


def test_the_max_pools_of_chapter_3_read_two_even_sizes_at_128_px_and_one_at_299() -> None:
    meta = an.meta_model(xl.XceptionConfig.imagenet())
    stages = ["stem", "entry_flow.block1", "entry_flow.block2", "middle_flow"]

    def pool_inputs(size: int) -> list[int]:
        height = {s.name: s.shape[-1] for s in an.shape_trace(meta, (1, 3, size, size))}
        return [height[name] for name in stages]

    assert pool_inputs(299) == [147, 74, 37, 19]  # one even size: 74
    assert pool_inputs(128) == [61, 31, 16, 8]  # two: 16 and 8


def test_inception_v3_counts_that_chapter_3_explains() -> None:
    models = pytest.importorskip("torchvision.models")
    with torch.device("meta"):
        tv = models.inception_v3(weights=None, aux_logits=True, init_weights=False)
    aux = sum(p.numel() for p in tv.AuxLogits.parameters())
    main = sum(p.numel() for p in tv.parameters()) - aux
    scales = sum(
        m.weight.numel()
        for name, m in tv.named_modules()
        if isinstance(m, nn.BatchNorm2d) and not name.startswith("AuxLogits")
    )
    assert (aux, main, scales) == (3_326_696, 23_834_568, 17_216)
    assert main - 23_626_728 == 207_840  # against the paper's Table 3
