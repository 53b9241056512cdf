"""Small device, precision, mode and progress utilities that the trainer, the benchmarks and the chapters share."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

AMP_CHOICES = ("auto", "bf16", "fp16", "off")  # the values of TrainConfig.amp and of resolve_amp's amp


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``with eval_mode(model):`` puts ``model`` in eval mode for the block, then restores its mode."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def resolve_amp(amp: str, device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype for ``amp`` on ``device`` (``None``: full precision). ``"auto"`` is bfloat16 on GPUs of
    compute capability 8.0 and up (A100, H100, RTX 30xx on), float16 below (V100, T4, where ``fit`` adds a gradient
    scaler), off on a CPU. (``torch.cuda.is_bf16_supported()`` counts emulation too: ``True`` on a T4.)"""
    device = torch.device(device)
    if amp == "auto" and device.type == "cuda":
        amp = "bf16" if torch.cuda.get_device_capability(device) >= (8, 0) else "fp16"
    if amp not in AMP_CHOICES:
        raise ValueError(f"amp must be 'auto', 'bf16', 'fp16' or 'off', got {amp!r}")
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)


def synchronize(device: torch.device | str) -> None:
    """Wait for the device's queued work (CUDA kernels run asynchronously: a timing needs this); a no-op on the CPU."""
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
