"""xception_lib: the companion library of the book *Xception, step by step*.

``import xception_lib as xl`` is the one import a chapter needs. Heavy optional tools
(torchinfo, fvcore, timm, matplotlib) are imported inside the functions that use them.
"""

from xception_lib.config import XceptionConfig, scale_channels
from xception_lib.layers import (
    InceptionModule,
    MaxPool2d,
    MaxPool2dSame,
    SegmentedInception,
    SeparableConv2d,
    SimplifiedInception,
    extreme_inception,
)
from xception_lib.model import Xception, XceptionBlock, xception, xception_cifar
from xception_lib.pretrained import from_timm

# Submodules loaded on first use (``xl.complexity``, ``xl.viz``, ...), so that
# ``import xception_lib`` stays fast and needs only torch.
_SUBMODULES = (
    "anatomy",
    "bench",
    "complexity",
    "data",
    "experiments",
    "figures",
    "flawed",
    "pretrained",
    "profiling",
    "provenance",
    "train",
    "viz",
)


def __getattr__(name: str) -> object:
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f"xception_lib.{name}")
    raise AttributeError(f"module 'xception_lib' has no attribute {name!r}")

__version__ = "0.1.0"

__all__ = [
    "InceptionModule",
    "MaxPool2d",
    "MaxPool2dSame",
    "SegmentedInception",
    "SeparableConv2d",
    "SimplifiedInception",
    "Xception",
    "XceptionBlock",
    "XceptionConfig",
    "extreme_inception",
    "from_timm",
    "scale_channels",
    "xception",
    "xception_cifar",
]
