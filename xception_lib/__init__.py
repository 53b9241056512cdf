"""xception_lib: the companion library of the book *Xception, step by step*.

``import xception_lib as xl`` is the one import a chapter needs. Heavy optional tools
(torchinfo, fvcore, timm, matplotlib) are imported inside the functions that use them.
"""

from xception_lib.config import XceptionConfig, scale_channels
from xception_lib.layers import (
    InceptionModule,
    SegmentedInception,
    SeparableConv2d,
    SimplifiedInception,
    extreme_inception,
)
from xception_lib.model import Xception, XceptionBlock, xception, xception_cifar
from xception_lib.pooling import MaxPool2d, MaxPool2dSame
from xception_lib.pretrained import from_timm

# Submodules loaded on first use (``xl.complexity``, ``xl.viz``, ...), so that
# ``import xception_lib`` stays fast and needs only torch. The reusable library sits at the
# top level; the apparatus of single chapters lives in ``xception_lib.chapters``.
_SUBMODULES = (
    "benchmark",
    "checkpoint",
    "complexity",
    "data",
    "distributed",
    "evaluation",
    "exercises",
    "folders",
    "history",
    "ledger",
    "loader",
    "model",
    "pooling",
    "pretrained",
    "provenance",
    "runs",
    "runtime",
    "timing",
    "train",
    "transfer",
)
_CHAPTER_MODULES = (
    "anatomy",
    "bench",
    "experiments",
    "figures",
    "flawed",
    "gradcam",
    "images",
    "profiling",
    "style",
    "train_plots",
    "viz",
)


def __getattr__(name: str) -> object:
    import importlib

    if name in _SUBMODULES or name == "chapters":
        return importlib.import_module(f"xception_lib.{name}")
    if name in _CHAPTER_MODULES:
        return importlib.import_module(f"xception_lib.chapters.{name}")
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
