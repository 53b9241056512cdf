"""xception_lib: the companion library of the book *Xception, step by step*.

``import xception_lib as xl`` is the one import a chapter needs. Heavy optional tools
(torchinfo, fvcore, timm, matplotlib) are imported inside the functions that use them.
"""

from xception_lib.config import XceptionConfig
from xception_lib.layers import (
    InceptionModule,
    SegmentedInception,
    SeparableConv2d,
    SimplifiedInception,
    extreme_inception,
)
from xception_lib.model import Xception, XceptionBlock, xception, xception_cifar
from xception_lib.pooling import MaxPool2dSame
from xception_lib.pretrained import from_timm


def __getattr__(name: str) -> object:
    """``xl.complexity``, ``xl.viz``, ...: a module of the library, or of ``xception_lib.chapters`` (the apparatus
    of single chapters), imported on first use, so that ``import xception_lib`` stays fast and needs only torch."""
    import importlib
    from pathlib import Path

    here = Path(__file__).parent
    for package, folder in (("xception_lib", here), ("xception_lib.chapters", here / "chapters")):
        if not name.startswith("_") and (folder / f"{name}.py").is_file():
            return importlib.import_module(f"{package}.{name}")
    raise AttributeError(f"module 'xception_lib' has no attribute {name!r}")


__version__ = "0.1.0"

__all__ = [
    "InceptionModule",
    "MaxPool2dSame",
    "SegmentedInception",
    "SeparableConv2d",
    "SimplifiedInception",
    "Xception",
    "XceptionBlock",
    "XceptionConfig",
    "extreme_inception",
    "from_timm",
    "xception",
    "xception_cifar",
]
