"""Separable convolutions and the Inception modules of the paper's Figures 1-4, in the order of its argument.

Figure 1's Inception module (:class:`InceptionModule`), simplified to towers of "1x1 then 3x3" (Figure 2,
:class:`SimplifiedInception`), is one 1x1 convolution followed by 3x3 convolutions over non-overlapping segments of
its output channels (Figure 3, :class:`SegmentedInception`); with one segment per channel it is Figure 4's
"extreme" Inception module (:func:`extreme_inception`), nearly Xception's :class:`SeparableConv2d`.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from xception_lib.config import Activation

_ACTIVATIONS = {"none": nn.Identity, "relu": nn.ReLU, "elu": nn.ELU}


def _check_divides(segments: int, channels: int, what: str) -> None:
    if segments < 1 or channels % segments:
        raise ValueError(f"segments={segments} must be >= 1 and divide {what}={channels}")


class SeparableConv2d(nn.Module):
    """Depthwise separable convolution: a spatial map per channel, then a 1x1 channel mix.

    ``depthwise`` is a ``k x k`` convolution with ``groups=in_channels`` (each channel
    filtered on its own: spatial correlations only); ``pointwise`` is a 1x1 convolution
    (cross-channel correlations only). Both are bias-free because in Xception every
    separable convolution is followed by batch norm.

    Args:
        kernel_size: Spatial size of the depthwise kernel (odd; padded to keep the size at stride 1).
        intermediate: Non-linearity between the two steps: ``"none"`` (Xception),
            ``"relu"`` or ``"elu"`` (the paper's Figure 10 ablation).
        segments: Number of channel segments of the spatial step; ``None`` (default) is
            one per channel (depthwise), ``1`` a regular convolution.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        *,
        intermediate: Activation = "none",
        segments: int | None = None,
    ) -> None:
        super().__init__()
        groups = in_channels if segments is None else segments
        _check_divides(groups, in_channels, "in_channels")
        if intermediate not in _ACTIVATIONS:
            raise ValueError(f"intermediate must be one of {tuple(_ACTIVATIONS)}, got {intermediate!r}")
        self.depthwise = nn.Conv2d(
            in_channels, in_channels, kernel_size, stride, kernel_size // 2, groups=groups, bias=False
        )
        self.intermediate = _ACTIVATIONS[intermediate]()
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.depthwise(x)  # N x C_in x H' x W': spatial, per channel/segment
        x = self.intermediate(x)
        return self.pointwise(x)  # N x C_out x H' x W': cross-channel

    def equivalent_kernel(self) -> torch.Tensor:
        """The regular convolution kernel this layer computes, when it is purely linear.

        ``K[o, i, :, :] = P[o, i] * D[i, :, :]``: a depthwise separable convolution is a
        regular convolution whose kernel factorises into a pointwise matrix ``P`` and one
        spatial filter ``D[i]`` per input channel. Shape: ``(out_channels, in_channels, k, k)``.
        """
        if not isinstance(self.intermediate, nn.Identity):
            raise ValueError("equivalent_kernel needs intermediate='none': a non-linearity breaks the factorisation")
        if self.depthwise.groups != self.depthwise.in_channels:
            raise ValueError("equivalent_kernel needs a depthwise step (segments=None)")
        p = self.pointwise.weight[:, :, 0, 0]  # C_out x C_in
        d = self.depthwise.weight[:, 0]  # C_in x k x k
        return p[:, :, None, None] * d[None]


class ConvBNReLU(nn.Sequential):
    """Convolution, batch norm, ReLU: the unit every Inception tower is made of."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
        )


class InceptionModule(nn.Module):
    """A canonical Inception-V3-style module (the paper's Figure 1).

    Four towers see the same input and their outputs are concatenated along channels:
    a 1x1 convolution; 1x1 then 3x3; 1x1 then two 3x3 (a factorised 5x5); 3x3 average
    pooling then 1x1, each with ``tower_channels`` outputs.
    """

    def __init__(self, in_channels: int, tower_channels: int = 64) -> None:
        super().__init__()
        t = tower_channels
        self.tower_1x1 = ConvBNReLU(in_channels, t, 1)
        self.tower_3x3 = nn.Sequential(ConvBNReLU(in_channels, t, 1), ConvBNReLU(t, t, 3))
        self.tower_5x5 = nn.Sequential(ConvBNReLU(in_channels, t, 1), ConvBNReLU(t, t, 3), ConvBNReLU(t, t, 3))
        self.tower_pool = nn.Sequential(nn.AvgPool2d(3, stride=1, padding=1), ConvBNReLU(in_channels, t, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        towers = (self.tower_1x1, self.tower_3x3, self.tower_5x5, self.tower_pool)
        return torch.cat([tower(x) for tower in towers], dim=1)  # N x 4t x H x W


class SimplifiedInception(nn.Module):
    """The simplified Inception module (the paper's Figure 2): ``towers`` x (1x1 -> 3x3).

    Convolutions carry a bias and are followed by ReLU; there is no batch norm, so the
    module's equivalence with :class:`SegmentedInception` is exact. The paper's figure has 3 towers.
    """

    def __init__(self, in_channels: int, tower_channels: int, towers: int = 3) -> None:
        super().__init__()
        if towers < 1:
            raise ValueError(f"towers must be >= 1, got {towers}")
        self.towers = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(in_channels, tower_channels, 1),
                nn.ReLU(),
                nn.Conv2d(tower_channels, tower_channels, 3, padding=1),
                nn.ReLU(),
            )
            for _ in range(towers)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([tower(x) for tower in self.towers], dim=1)  # N x towers*t x H x W


class SegmentedInception(nn.Module):
    """One 1x1 convolution, then 3x3 convolutions over non-overlapping channel segments.

    The paper's Figure 3 (with 3 segments) and, with one segment per output channel,
    its Figure 4. The number of segments spans the spectrum between a regular
    convolution (1 segment) and a depthwise one (``out_channels`` segments).

    Args:
        out_channels: Channels of the 1x1 output and of the module's output.
        segments: Number of channel segments; must divide ``out_channels``.
        activation: Whether a ReLU follows each of the two steps (as in the figures).
    """

    def __init__(
        self, in_channels: int, out_channels: int, segments: int, kernel_size: int = 3, activation: bool = True
    ) -> None:
        super().__init__()
        _check_divides(segments, out_channels, "out_channels")
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1)
        self.spatial = nn.Conv2d(out_channels, out_channels, kernel_size, padding=kernel_size // 2, groups=segments)
        self.act = nn.ReLU() if activation else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.pointwise(x))  # N x C_out x H x W: cross-channel first
        return self.act(self.spatial(x))  # N x C_out x H x W: spatial, within each segment

    @classmethod
    def from_simplified(cls, module: SimplifiedInception) -> SegmentedInception:
        """Rewrite a :class:`SimplifiedInception` as one 1x1 conv and a grouped 3x3 conv.

        The towers' 1x1 weights are stacked into one convolution; their 3x3 weights
        become the groups of one grouped convolution. The result computes exactly the
        same function (the paper's Figure 2 -> Figure 3).
        """
        towers = [cast(nn.Sequential, tower) for tower in module.towers]
        first, second = [cast(nn.Conv2d, t[0]) for t in towers], [cast(nn.Conv2d, t[2]) for t in towers]
        seg = cls(first[0].in_channels, sum(c.out_channels for c in first), segments=len(first))
        with torch.no_grad():
            for conv, parts in ((seg.pointwise, first), (seg.spatial, second)):
                conv.weight.copy_(torch.cat([c.weight for c in parts]))
                conv.bias.copy_(torch.cat([c.bias for c in parts]))  # type: ignore[union-attr, misc]
        return seg


def extreme_inception(in_channels: int, out_channels: int) -> SegmentedInception:
    """The "extreme" Inception module (Figure 4): one spatial convolution per channel.

    It differs from :class:`SeparableConv2d` in the order of its two steps (1x1 first)
    and in the ReLU after each step.
    """
    return SegmentedInception(in_channels, out_channels, segments=out_channels)
