"""Closed-form formulas against torchinfo and fvcore, layer by layer."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import xception_lib as xl
from xception_lib import complexity as cx

pytest.importorskip("fvcore", reason="the MAC counter; install xception_lib[tools]")
pytest.importorskip("torchinfo", reason="the parameter counter; install xception_lib[tools]")


def test_formulas_by_hand() -> None:
    assert cx.conv_params(728, 728, 3) == 9 * 728 * 728
    assert cx.conv_params(8, 16, 3, groups=4, bias=True) == 9 * 2 * 16 + 16
    assert cx.depthwise_params(728, 3) == cx.conv_params(728, 728, 3, groups=728)
    assert cx.pointwise_params(728, 1024) == cx.conv_params(728, 1024, 1)
    assert cx.separable_macs(728, 728, 3, 19, 19) == (9 * 728 + 728 * 728) * 19 * 19
    assert cx.separable_savings(728, 728, 3) == pytest.approx(1 / (1 / 728 + 1 / 9))
    assert round(cx.separable_savings(728, 728, 3), 1) == 8.9
    with pytest.raises(ValueError, match="groups=3 must divide"):
        cx.conv_params(8, 8, 3, groups=3)


@pytest.mark.parametrize(
    "layer",
    [
        nn.Conv2d(16, 24, 3, padding=1, bias=False),
        nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False),
        nn.Conv2d(16, 24, 1, bias=False),
        nn.Conv2d(16, 24, 3, stride=2, groups=4, bias=True),
    ],
)
def test_single_layer_formula_matches_counters(layer: nn.Conv2d) -> None:
    shape = (2, 16, 20, 20)
    out = layer(torch.zeros(shape))
    h, w = out.shape[-2:]
    k, g = layer.kernel_size[0], layer.groups
    formula_params = cx.conv_params(16, layer.out_channels, k, g, layer.bias is not None)
    assert cx.torchinfo_params(layer, shape) == formula_params
    # fvcore counts one MAC per multiply-accumulate (a bias add is not one), for the whole batch
    assert cx.count_macs(layer, shape) == shape[0] * cx.conv_macs(16, layer.out_channels, k, h, w, g)


def test_separable_conv_formula_matches_counters() -> None:
    sep = xl.SeparableConv2d(728, 728, 3)
    shape = (1, 728, 19, 19)
    assert cx.torchinfo_params(sep, shape) == cx.separable_params(728, 728, 3)
    assert cx.count_macs(sep, shape) == cx.separable_macs(728, 728, 3, 19, 19)


@pytest.mark.parametrize("segments", [None, 8])
def test_every_conv_of_a_model_agrees_layer_by_layer(segments: int | None) -> None:
    """Chapter 2's check: the closed forms against the tensors and fvcore, convolution by convolution."""
    model = xl.xception(width_multiplier=0.25, middle_blocks=2, segments=segments)
    size = (1, 3, 96, 96)
    shapes, fvcore = cx.output_shapes(model, size), cx.fvcore_analysis(model, size).by_module()
    convs = {name: m for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    assert set(shapes) == set(convs)
    for name, conv in convs.items():
        [(_, c_out, h, w)] = shapes[name]
        k, g = conv.kernel_size[0], conv.groups
        assert cx.conv_params(conv.in_channels, c_out, k, g) == conv.weight.numel(), name
        assert cx.conv_macs(conv.in_channels, c_out, k, h, w, g) == fvcore[name], name
    assert {c.groups for c in convs.values()} > {1}  # depthwise (or grouped) convolutions were among them


@pytest.mark.slow
def test_full_xception_counts() -> None:
    model = xl.xception()
    assert cx.torchinfo_params(model) == 22_855_952
    shapes = cx.output_shapes(model, (1, 3, 299, 299))
    conv_macs = sum(
        cx.conv_macs(m.in_channels, m.out_channels, m.kernel_size[0], *shapes[name][0][2:], m.groups)
        for name, m in model.named_modules()
        if isinstance(m, nn.Conv2d)
    )
    fc_macs = 2048 * 1000
    total = cx.count_macs(model)
    # fvcore adds small per-element counts for batch norm and pooling on top of convs + fc
    assert conv_macs + fc_macs < total < 1.02 * (conv_macs + fc_macs)
    assert 8.3e9 < total < 8.5e9  # the ~8.4 G multiply-adds usually quoted for Xception


def test_output_shapes_records_every_call_keeps_the_mode_and_removes_its_hooks() -> None:
    shared = nn.Conv2d(4, 4, 3, padding=1)
    model = nn.Sequential(shared, nn.Conv2d(4, 8, 3, stride=2), shared.__class__(8, 8, 1)).train()
    twice = nn.Sequential(shared, shared)
    assert cx.output_shapes(twice, (2, 4, 9, 9)) == {"0": [(2, 4, 9, 9), (2, 4, 9, 9)]}
    assert cx.output_shapes(model, (1, 4, 9, 9)) == {"0": [(1, 4, 9, 9)], "1": [(1, 8, 4, 4)], "2": [(1, 8, 4, 4)]}
    assert model.training and all(not m._forward_hooks for m in model.modules())
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        cx.output_shapes(model, (4, 9, 9))


def test_torchinfo_params_counts_a_shared_layer_once() -> None:
    shared = nn.Conv2d(4, 4, 3, padding=1, bias=False)
    assert cx.torchinfo_params(nn.Sequential(shared, shared), (1, 4, 8, 8)) == 4 * 4 * 9
