"""The frozen configuration behind every Xception model in this library.

An ablation is one ``dataclasses.replace`` away::

    import dataclasses
    import xception_lib as xl

    base = xl.XceptionConfig.imagenet()
    no_residual = dataclasses.replace(base, residual=False)
    model = xl.Xception(no_residual)

The defaults of :meth:`XceptionConfig.imagenet` reproduce the paper's Figure 5 and the author's Keras implementation
(``keras.applications.Xception``), including Keras's batch-norm epsilon and its ``padding="same"`` max-pooling.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from dataclasses import dataclass
from typing import Literal, get_args

Activation = Literal["none", "relu", "elu"]
Stem = Literal["imagenet", "cifar"]
PoolPadding = Literal["same", "symmetric"]
Flow = Literal["entry_flow", "middle_flow", "exit_flow"]

_INTERVALS = {"width_multiplier": "(0, inf)", "bn_eps": "(0, inf)", "dropout": "[0, 1)", "bn_momentum": "[0, 1]"}


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


@dataclass(frozen=True)
class BlockSpec:
    """One residual block of Figure 5: ``reps`` x (ReLU -> SeparableConv -> BN), a max-pool, a shortcut.

    Attributes:
        flow: The stage that holds the block (the name of the model's attribute).
        reps: Separable convolutions in the block.
        stride: Stride of the closing 3x3 max-pool (1: no pool).
        start_with_relu: Whether a ReLU precedes the first separable convolution (not in the first block, whose input
            the stem has just activated).
        grow_first: Whether the first (entry and middle flows) or the last (exit flow) separable convolution widens.
    """

    flow: Flow
    in_channels: int
    out_channels: int
    reps: int
    stride: int
    start_with_relu: bool
    grow_first: bool

    def widths(self) -> list[tuple[int, int]]:
        """``(in_channels, out_channels)`` of each separable convolution in turn."""
        grow = 0 if self.grow_first else self.reps - 1  # the one that widens
        a, b = self.in_channels, self.out_channels  # a before it, b from it on
        return [(a if i <= grow else b, b if i >= grow else a) for i in range(self.reps)]

    @property
    def projects(self) -> bool:
        """Whether the shortcut needs a 1x1 convolution and batch norm, because the width or the resolution changes."""
        return self.in_channels != self.out_channels or self.stride != 1


@dataclass(frozen=True)
class XceptionConfig:
    """Everything that defines an Xception variant.

    Attributes:
        num_classes: Outputs of the final linear classifier.
        in_channels: Channels of the input image (3 for RGB).
        stem: ``"imagenet"``: two 3x3 convolutions without padding, the first with stride 2 (299 -> 149 -> 147), as in
            the paper. ``"cifar"``: the same two convolutions with stride 1 and padding 1, so a 32x32 image keeps its
            resolution; a stride-2 stem would throw away three quarters of a tiny image before any feature is learnt.
        stem_channels: Output channels of the two stem convolutions.
        entry_channels: Output channels of the entry flow's three residual blocks.
        entry_strides: Stride of each entry block (applied by its final max-pool).
        middle_blocks: Number of middle-flow blocks (the paper uses 8), each with its own weights.
        exit_channels: Output channels of the exit block, then of the two separable convolutions that follow it
            (1024, 1536, 2048 in the paper).
        exit_stride: Stride of the exit block's max-pool.
        width_multiplier: Scales every channel count (rounded to multiples of 8).
        residual: Residual connections on (the paper) or off (its Figure 9 ablation).
        intermediate_activation: Non-linearity between the depthwise and the pointwise step of every separable
            convolution: ``"none"`` (the paper), ``"relu"`` or ``"elu"`` (its Figure 10 ablation).
        segments: Number of channel segments of the spatial convolution inside each separable convolution. ``None``
            means one segment per channel (depthwise, the paper); ``1`` makes it a regular 3x3 convolution. It must
            divide every input channel count of every separable convolution.
        dropout: Dropout probability before the classifier (the paper uses 0.5 on ImageNet in training; the Keras
            reference has none, so the default is 0).
        bn_eps: Batch-norm epsilon. Keras uses 1e-3; PyTorch's default, kept by the PyTorch ports of the Keras weights,
            is 1e-5.
        bn_momentum: Batch-norm momentum in PyTorch's convention (0.01 equals Keras's 0.99).
        pool_padding: ``"same"`` pads the stride-2 max-pools like TensorFlow (asymmetrically, only at the bottom/right
            when the input size is even), as Keras's reference model does; ``"symmetric"`` pads one pixel on every side,
            as the PyTorch ports do.
    """

    num_classes: int = 1000
    in_channels: int = 3
    stem: Stem = "imagenet"
    stem_channels: tuple[int, int] = (32, 64)
    entry_channels: tuple[int, int, int] = (128, 256, 728)
    entry_strides: tuple[int, int, int] = (2, 2, 2)
    middle_blocks: int = 8
    exit_channels: tuple[int, int, int] = (1024, 1536, 2048)
    exit_stride: int = 2
    width_multiplier: float = 1.0
    residual: bool = True
    intermediate_activation: Activation = "none"
    segments: int | None = None
    dropout: float = 0.0
    bn_eps: float = 1e-3
    bn_momentum: float = 0.01
    pool_padding: PoolPadding = "same"

    def __post_init__(self) -> None:
        for name, minimum in (("num_classes", 1), ("in_channels", 1), ("middle_blocks", 0), ("exit_stride", 1)):
            _check_int(name, getattr(self, name), minimum)
        for name, length in (("stem_channels", 2), ("entry_channels", 3), ("entry_strides", 3), ("exit_channels", 3)):
            value = getattr(self, name)
            if not isinstance(value, tuple) or len(value) != length:
                raise TypeError(f"{name} must be a tuple of {length} ints, got {value!r}")
            for i, item in enumerate(value):
                _check_int(f"{name}[{i}]", item, 1)
        for name, interval in _INTERVALS.items():  # "[" and "]" include the end, "(" and ")" do not
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise TypeError(f"{name} must be a finite real number, got {value!r}")
            low, high = (float(end) for end in interval[1:-1].split(", "))
            value = float(value)
            above = value >= low if interval[0] == "[" else value > low
            below = value <= high if interval[-1] == "]" else value < high
            if not (above and below):
                raise ValueError(f"{name} must be in {interval}, got {value}")
        if not isinstance(self.residual, bool):
            raise TypeError(f"residual must be True or False, got {self.residual!r}")
        for name, kind in (("stem", Stem), ("intermediate_activation", Activation), ("pool_padding", PoolPadding)):
            if getattr(self, name) not in get_args(kind):
                raise ValueError(f"{name} must be one of {get_args(kind)}, got {getattr(self, name)!r}")
        if any(s not in (1, 2) for s in (*self.entry_strides, self.exit_stride)):
            raise ValueError(
                f"entry_strides and exit_stride must be 1 or 2, got {self.entry_strides} and {self.exit_stride}"
            )
        if self.segments is not None:
            _check_int("segments", self.segments, 1)
            bad = [c for c in self.separable_in_channels() if c % self.segments]
            if bad:
                raise ValueError(
                    f"segments={self.segments} must divide the input channels of every separable "
                    f"convolution, but does not divide {sorted(set(bad))}"
                )

    def channels(self, base: int) -> int:
        """A channel count after the width multiplier, rounded to the nearest multiple of 8 (at least 8).

        Every channel count of the paper's Xception is already a multiple of 8 (728 = 8 x 91), so a multiplier of 1.0
        leaves the architecture unchanged.
        """
        return max(8, int(round(base * self.width_multiplier / 8)) * 8)

    def blocks(self) -> tuple[BlockSpec, ...]:
        """Figure 5's residual blocks: the one place the layout is written down."""
        c = self.channels
        stem, x1 = c(self.stem_channels[1]), c(self.exit_channels[0])
        e1, e2, e3 = (c(n) for n in self.entry_channels)
        s1, s2, s3 = self.entry_strides
        return (  # flow, in, out, reps, stride, start_with_relu, grow_first
            # entry flow: each block widens in its first separable conv, then pools
            BlockSpec("entry_flow", stem, e1, 2, s1, False, True),  # the stem ends in ReLU
            BlockSpec("entry_flow", e1, e2, 2, s2, True, True),
            BlockSpec("entry_flow", e2, e3, 2, s3, True, True),
            # middle flow: 3 separable convs at one width, own weights per block
            *(BlockSpec("middle_flow", e3, e3, 3, 1, True, True),) * self.middle_blocks,
            # exit flow: one block, widening in its *last* separable conv, pools
            BlockSpec("exit_flow", e3, x1, 2, self.exit_stride, True, False),
        )

    def separable_layers(self) -> list[tuple[Flow, int, int]]:
        """Every separable convolution as ``(flow, in_channels, out_channels)``, in forward order:
        those of :meth:`blocks`, then the exit flow's two (1024 -> 1536 -> 2048 in the paper)."""
        x1, x2, x3 = (self.channels(n) for n in self.exit_channels)
        rows = [(b.flow, cin, cout) for b in self.blocks() for cin, cout in b.widths()]
        return rows + [("exit_flow", x1, x2), ("exit_flow", x2, x3)]

    def separable_in_channels(self) -> list[int]:
        """Input channels of every separable convolution, in forward order."""
        return [cin for _, cin, _ in self.separable_layers()]

    def to_dict(self) -> dict[str, object]:
        """The fields as JSON values (tuples become lists, numpy numbers Python ones), as run records store them."""
        return json.loads(json.dumps(dataclasses.asdict(self), default=lambda number: number.item()))

    # ----------------------------------------------------------------- presets
    @classmethod
    def imagenet(cls, **overrides: object) -> XceptionConfig:
        """The paper's Xception for 299x299 ImageNet images (Figure 5)."""
        return cls(**overrides)  # type: ignore[arg-type]

    @classmethod
    def cifar(cls, **overrides: object) -> XceptionConfig:
        """Xception's entry/middle/exit structure sized for 32x32 images.

        The choices, and why:

        * ``stem="cifar"``: stride-1, padded stem; the ImageNet stem would shrink 32 -> 13.
        * entry strides ``(1, 2, 2)``: the first entry block keeps 32x32 so early features see the full image; the
          middle flow then runs at 8x8 and the exit flow ends at 4x4, the same 1/8 and 1/16 of the input the paper's
          flows see at 19x19 and 10x10 (relative to the 149 px stem output).
        * widths ``(128, 256, 512)`` / ``(768, 1024, 1024)`` and 4 middle blocks: about 7 million parameters and 0.6
          GMACs per image, the size of the ResNet-18 models usually trained on CIFAR-10, while keeping a short GPU run
          short (chapters 5 and 6 report what it reaches). Every separable convolution reads a power-of-two channel
          count (64 to 1024), so every power-of-two ``segments`` value up to 64 is valid for the spectrum experiments.
        * ``bn_eps=1e-5`` and symmetric pooling: PyTorch's conventions; no Keras weights exist for this variant, so
          nothing needs to match.
        """
        base = cls(
            num_classes=10,
            stem="cifar",
            entry_channels=(128, 256, 512),
            entry_strides=(1, 2, 2),
            middle_blocks=4,
            exit_channels=(768, 1024, 1024),
            bn_eps=1e-5,
            bn_momentum=0.1,
            pool_padding="symmetric",
        )
        return dataclasses.replace(base, **overrides)  # type: ignore[arg-type]

    @classmethod
    def timm_port(cls, **overrides: object) -> XceptionConfig:
        """The paper's Xception with the conventions of the PyTorch port of its weights, timm's ``legacy_xception``
        (batch-norm epsilon 1e-5, symmetric max-pool padding): :func:`xception_lib.from_timm` loads into it, so that
        its logits equal timm's (:mod:`xception_lib.pretrained` says why the port differs)."""
        return cls.imagenet(bn_eps=1e-5, bn_momentum=0.1, pool_padding="symmetric", **overrides)
