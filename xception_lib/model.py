"""Xception (Chollet, CVPR 2017), built from an :class:`~xception_lib.XceptionConfig`.

The network of the paper's Figure 5, as in Keras's reference implementation (by the paper's author): a stem of two 3x3
convolutions; the residual blocks of :meth:`~xception_lib.XceptionConfig.blocks` (the one table of
the layout) in the entry, middle and exit flows; two more separable convolutions (1536 and 2048
channels); global average pooling, optional dropout and a linear classifier.

Every separable convolution is followed by batch norm; ReLUs come *before* the separable
convolutions inside residual blocks, so a block's output is the un-activated sum.
"""

from __future__ import annotations

from collections import OrderedDict, defaultdict

import torch
from torch import nn

from xception_lib.config import BlockSpec, XceptionConfig
from xception_lib.layers import SeparableConv2d
from xception_lib.pooling import MaxPool2dSame


class XceptionBlock(nn.Module):
    """A residual block: ``reps`` x (ReLU -> SeparableConv2d -> BN), a max-pool.

    Layers are named ``act1, sep1, bn1, act2, sep2, bn2, ...`` and ``pool``.
    The shortcut is the identity, or a 1x1 convolution + BN when the block
    changes the width or the resolution; with ``config.residual=False`` there
    is none.

    Args:
        spec: Its row of Figure 5 (one of :meth:`XceptionConfig.blocks`).
        config: The rest: residuals, the separable convolutions' ``segments``
            and intermediate activation, batch norm's settings, the max-pool's
            padding (``"same"``: TensorFlow's; ``"symmetric"``: PyTorch's).
    """

    def __init__(self, spec: BlockSpec, config: XceptionConfig) -> None:
        super().__init__()
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        for i, (cin, cout) in enumerate(spec.widths(), start=1):
            if i > 1 or spec.start_with_relu:
                layers[f"act{i}"] = nn.ReLU()
            layers[f"sep{i}"] = SeparableConv2d(
                cin, cout, intermediate=config.intermediate_activation, segments=config.segments
            )
            layers[f"bn{i}"] = nn.BatchNorm2d(cout, config.bn_eps, config.bn_momentum)
        if spec.stride != 1 and config.pool_padding == "same":
            layers["pool"] = MaxPool2dSame(3, spec.stride)
        elif spec.stride != 1:
            layers["pool"] = nn.MaxPool2d(3, spec.stride, padding=1)
        self.layers = nn.Sequential(layers)

        self.shortcut: nn.Module | None = None
        if config.residual and spec.projects:
            conv = nn.Conv2d(spec.in_channels, spec.out_channels, 1, spec.stride, bias=False)
            bn = nn.BatchNorm2d(spec.out_channels, config.bn_eps, config.bn_momentum)
            self.shortcut = nn.Sequential(OrderedDict(conv=conv, bn=bn))
        elif config.residual:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.layers(x)  # N x out_channels x H/stride x W/stride
        if self.shortcut is not None:
            y = y + self.shortcut(x)  # not in place: x stays intact for hooks
        return y


class Xception(nn.Module):
    """Xception with named stages: ``stem``, ``entry_flow``, ``middle_flow``, ``exit_flow``, ``head``.

    Args:
        config: The architecture (default: the paper's); ``dataclasses.replace`` it to build an ablation. The builders
            :func:`xception` and :func:`xception_cifar` take its fields as keywords.
    """

    def __init__(self, config: XceptionConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config if config is not None else XceptionConfig()
        c = cfg.channels

        def bn(channels: int) -> nn.BatchNorm2d:
            return nn.BatchNorm2d(channels, eps=cfg.bn_eps, momentum=cfg.bn_momentum)

        def sep(cin: int, cout: int) -> SeparableConv2d:
            return SeparableConv2d(cin, cout, 3, intermediate=cfg.intermediate_activation, segments=cfg.segments)

        s1, s2 = c(cfg.stem_channels[0]), c(cfg.stem_channels[1])
        stride, padding = (2, 0) if cfg.stem == "imagenet" else (1, 1)
        self.stem = nn.Sequential(
            OrderedDict(
                conv1=nn.Conv2d(cfg.in_channels, s1, 3, stride=stride, padding=padding, bias=False),
                bn1=bn(s1),
                act1=nn.ReLU(),
                conv2=nn.Conv2d(s1, s2, 3, padding=padding, bias=False),
                bn2=bn(s2),
                act2=nn.ReLU(),
            )
        )
        flows: defaultdict[str, OrderedDict[str, nn.Module]] = defaultdict(OrderedDict)
        for spec in cfg.blocks():  # Figure 5, row by row
            blocks = flows[spec.flow]
            name = "block" if spec.flow == "exit_flow" else f"block{len(blocks) + 1}"
            blocks[name] = XceptionBlock(spec, cfg)
        self.entry_flow = nn.Sequential(flows["entry_flow"])
        self.middle_flow = nn.Sequential(flows["middle_flow"])
        e0, e1, e2 = (c(x) for x in cfg.exit_channels)
        self.exit_flow = nn.Sequential(
            OrderedDict(
                **flows["exit_flow"],
                sep1=sep(e0, e1),
                bn1=bn(e1),
                act1=nn.ReLU(),
                sep2=sep(e1, e2),
                bn2=bn(e2),
                act2=nn.ReLU(),
            )
        )
        self.num_features = e2
        self.head = nn.Sequential(
            OrderedDict(
                pool=nn.AdaptiveAvgPool2d(1),
                flatten=nn.Flatten(1),
                dropout=nn.Dropout(cfg.dropout),
                fc=nn.Linear(e2, cfg.num_classes),
            )
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ``TypeError``/``ValueError`` unless ``x`` is a batch of images the model can run on."""
        cin, m = self.config.in_channels, 7 if self.config.stem == "imagenet" else 1  # two unpadded 3x3 convs
        expected = f"expected a 4-D tensor N x {cin} x H x W with H, W >= {m}"
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{expected}, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(
                f"expected a floating-point image batch, got dtype {x.dtype}: convert to float and normalise "
                "first, e.g. x = (x.float() / 255 - mean) / std with the data set's per-channel mean and std"
            )
        weight = self.stem[0].weight  # conv1's
        if x.dtype != weight.dtype and not torch.is_autocast_enabled(x.device.type):
            raise TypeError(
                f"expected {weight.dtype} images like the model's weights, got {x.dtype}: use x.to({weight.dtype})"
            )
        if x.dim() != 4:
            raise ValueError(f"{expected}, got a {x.dim()}-D tensor of shape {tuple(x.shape)}")
        if x.shape[1] != cin:
            raise ValueError(f"{expected}: expected {cin} input channels, got {x.shape[1]} (shape {tuple(x.shape)})")
        if x.shape[2] < m or x.shape[3] < m:
            raise ValueError(f"{expected}: image of {x.shape[2]}x{x.shape[3]} is too small for the stem")

    def stages(self) -> OrderedDict[str, nn.Module]:
        """The named stages whose outputs :meth:`forward_intermediates` returns, in order."""
        entry = [(f"entry_flow.{name}", block) for name, block in self.entry_flow.named_children()]
        return OrderedDict(
            [("stem", self.stem), *entry, ("middle_flow", self.middle_flow), ("exit_flow", self.exit_flow)]
        )

    def forward_intermediates(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        """Run the feature extractor and return every named stage's output.

        The shapes in the comments are those of the paper's model on a 299x299
        image.

        Returns:
            ``{"stem", "entry_flow.block1", "entry_flow.block2",
            "entry_flow.block3", "middle_flow", "exit_flow"}`` mapped to their
            output tensors. Block outputs are the un-activated residual sums, as
            the next block receives them.
        """
        self.check_input(x)  # N x 3 x 299 x 299
        out: OrderedDict[str, torch.Tensor] = OrderedDict()
        x = out["stem"] = self.stem(x)  # N x 32 x 149 x 149, then N x 64 x 147 x 147
        for name, block in self.entry_flow.named_children():
            x = out[f"entry_flow.{name}"] = block(x)
            # N x 128 x 74 x 74, then N x 256 x 37 x 37, then N x 728 x 19 x 19
        x = out["middle_flow"] = self.middle_flow(x)  # N x 728 x 19 x 19, 8 blocks
        out["exit_flow"] = self.exit_flow(x)  # N x 1024, 1536, then 2048 x 10 x 10
        return out

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Image batch -> final feature map (N x 2048 x 10 x 10 at 299 px)."""
        return self.forward_intermediates(x)["exit_flow"]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Feature map -> logits (or pooled features with ``pre_logits=True``)."""
        pool, flatten, dropout, fc = self.head
        x = flatten(pool(x))  # N x 2048
        if pre_logits:
            return x
        return fc(dropout(x))  # N x num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def xception(num_classes: int = 1000, **overrides: object) -> Xception:
    """The paper's Xception (22,855,952 parameters with 1000 classes), with any :class:`XceptionConfig` field
    overridden, e.g. ``xception(residual=False)``."""
    return Xception(XceptionConfig.imagenet(num_classes=num_classes, **overrides))


def xception_cifar(num_classes: int = 10, **overrides: object) -> Xception:
    """Xception for 32x32 images (CIFAR-10/100); see :meth:`XceptionConfig.cifar` for the design."""
    return Xception(XceptionConfig.cifar(num_classes=num_classes, **overrides))
