"""Small device, mode and progress utilities that the trainer, the benchmarks and the chapters share."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``with eval_mode(model):`` puts ``model`` in eval mode for the block, then restores its mode."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def synchronize(device: torch.device | str) -> None:
    """Wait for the device's queued work (a no-op on the CPU, whose calls are synchronous).

    Timings of GPU work are only meaningful after this: CUDA kernels run asynchronously.
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def progress_bar(total: int, initial: int, desc: str, enabled: bool) -> Any:
    """tqdm's bar of ``total`` steps (a widget in Jupyter, text in a terminal); disabled (it shows nothing, its
    ``write`` still prints) unless ``enabled``, and also in a kernel without ipywidgets (a headless book build),
    where a text bar would leave hundreds of carriage-return updates in the output."""
    if enabled and "ipykernel" in sys.modules:
        try:
            import ipywidgets  # noqa: F401
        except ImportError:
            enabled = False
    tqdm = importlib.import_module("tqdm.auto" if enabled else "tqdm").tqdm  # tqdm.auto warns without ipywidgets
    return tqdm(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True, disable=not enabled)
