"""The building blocks of the paper's Figures 1-4 and the depthwise separable convolution."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import xception_lib as xl
from xception_lib import complexity as cx


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_separable_conv_is_depthwise_then_pointwise_without_bias() -> None:
    sep = xl.SeparableConv2d(16, 32, 3)
    assert sep.depthwise.groups == 16 and sep.depthwise.kernel_size == (3, 3)
    assert sep.pointwise.kernel_size == (1, 1) and sep.pointwise.groups == 1
    assert sep.depthwise.bias is None and sep.pointwise.bias is None
    assert isinstance(sep.intermediate, nn.Identity)
    assert n_params(sep) == cx.separable_params(16, 32, 3)
    assert sep(torch.randn(1, 16, 10, 10)).shape == (1, 32, 10, 10)


def test_separable_conv_stride_and_padding() -> None:
    sep = xl.SeparableConv2d(8, 8, 5, stride=2)
    assert sep.depthwise.padding == (2, 2) and sep(torch.randn(1, 8, 11, 11)).shape == (1, 8, 6, 6)
    with pytest.raises(ValueError, match=r"intermediate must be one of \('none', 'relu', 'elu'\), got 'tanh'"):
        xl.SeparableConv2d(8, 8, intermediate="tanh")  # type: ignore[arg-type]


@pytest.mark.parametrize("activation", ["relu", "elu"])
def test_intermediate_activation_changes_the_output_not_the_params(activation: str) -> None:
    torch.manual_seed(0)
    plain = xl.SeparableConv2d(8, 8)
    act = xl.SeparableConv2d(8, 8, intermediate=activation)  # type: ignore[arg-type]
    act.load_state_dict(plain.state_dict())
    x = torch.randn(2, 8, 6, 6)
    assert n_params(act) == n_params(plain)
    assert not torch.allclose(plain(x), act(x))


def test_separable_conv_equals_regular_conv_with_factorised_kernel() -> None:
    torch.manual_seed(0)
    sep = xl.SeparableConv2d(6, 10, 3)
    kernel = sep.equivalent_kernel()
    assert kernel.shape == (10, 6, 3, 3)
    i, o = 4, 7
    assert torch.allclose(kernel[o, i], sep.pointwise.weight[o, i, 0, 0] * sep.depthwise.weight[i, 0])
    x = torch.randn(2, 6, 9, 9)
    assert torch.allclose(sep(x), F.conv2d(x, kernel, padding=1), atol=1e-5)


def test_equivalent_kernel_refuses_nonlinear_or_grouped_layers() -> None:
    with pytest.raises(ValueError, match="intermediate='none'"):
        xl.SeparableConv2d(4, 4, intermediate="relu").equivalent_kernel()
    with pytest.raises(ValueError, match="depthwise"):
        xl.SeparableConv2d(4, 4, segments=2).equivalent_kernel()


def test_segments_span_regular_to_depthwise() -> None:
    c = 16
    for segments in (1, 2, 4, 16):
        sep = xl.SeparableConv2d(c, c, segments=segments)
        assert sep.depthwise.groups == segments
        assert n_params(sep.depthwise) == cx.conv_params(c, c, 3, groups=segments)
    assert xl.SeparableConv2d(c, c, segments=c).depthwise.groups == xl.SeparableConv2d(c, c).depthwise.groups
    with pytest.raises(ValueError, match="segments=3 must be >= 1 and divide in_channels=16"):
        xl.SeparableConv2d(c, c, segments=3)


def test_inception_module_concatenates_four_towers() -> None:
    module = xl.InceptionModule(32, tower_channels=8)
    assert module(torch.randn(1, 32, 12, 12)).shape == (1, 32, 12, 12)


def test_simplified_inception_equals_its_segmented_reformulation() -> None:
    torch.manual_seed(0)
    simple = xl.SimplifiedInception(12, tower_channels=5, towers=3)
    segmented = xl.SegmentedInception.from_simplified(simple)
    assert segmented.spatial.groups == 3
    assert n_params(segmented) == n_params(simple)
    x = torch.randn(2, 12, 8, 8)
    assert torch.allclose(simple(x), segmented(x), atol=1e-6)


def test_reformulation_depends_on_every_tower() -> None:
    torch.manual_seed(0)
    simple = xl.SimplifiedInception(4, tower_channels=2, towers=2)
    segmented = xl.SegmentedInception.from_simplified(simple)
    with torch.no_grad():
        simple.towers[1][2].weight.add_(1.0)
    x = torch.randn(1, 4, 5, 5)
    assert not torch.allclose(simple(x), segmented(x))


def test_extreme_inception_has_one_segment_per_channel() -> None:
    module = xl.extreme_inception(8, 16)
    assert module.spatial.groups == 16
    assert n_params(module.spatial) == cx.depthwise_params(16, 3) + 16  # bias
    assert module(torch.randn(1, 8, 7, 7)).shape == (1, 16, 7, 7)
    with pytest.raises(ValueError, match="divide out_channels"):
        xl.SegmentedInception(8, 16, segments=5)
