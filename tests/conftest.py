"""Shared fixtures: small, fast model configs for the tests."""

from __future__ import annotations

import pytest
import torch

import xception_lib as xl


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
