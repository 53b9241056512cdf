"""Shared fixtures: small, fast model configs for the tests."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType

import pytest
import torch

import xception_lib as xl

REPO = Path(__file__).resolve().parents[1]


def load_tool(name: str) -> ModuleType:
    """The script ``tools/<name>.py`` imported as a module (``tools/`` is not a package)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def cifar10() -> xl.data.CifarArrays:
    """The whole CIFAR-10 copy (``XCEPTION_DATA``, else ``../shared/data``); skipped where it is missing."""
    root = Path(os.environ.get("XCEPTION_DATA") or REPO.parent / "shared" / "data")
    if not (root / "cifar10-jpeg.tar.xz").exists() and not root.is_file():
        pytest.skip(f"offline CIFAR-10 copy not found at {root} (set XCEPTION_DATA)")
    return xl.data.load_cifar("cifar10", root)


@pytest.fixture
def tiny_cfg() -> xl.XceptionConfig:
    """The paper's layout at a quarter of its width and 2 middle blocks: fast on a CPU."""
    return xl.XceptionConfig.imagenet(width_multiplier=0.25, middle_blocks=2, num_classes=7)


@pytest.fixture
def image_71() -> torch.Tensor:
    """Two 71x71 RGB images (71 is the smallest size timm's Xception is usually run at)."""
    return torch.randn(2, 3, 71, 71, generator=torch.Generator().manual_seed(0))


@pytest.fixture
def one_thread() -> object:
    """Run single-threaded: on a CPU shared with other jobs, two intra-op threads can be
    ten times slower than one (each waits for the other at every kernel's barrier)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
