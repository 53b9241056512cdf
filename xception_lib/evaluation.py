"""What a trained classifier does on images it did not train on: accuracy, class probabilities, confusion matrix."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from xception_lib import distributed
from xception_lib.config import XceptionConfig
from xception_lib.loader import GpuLoader, check_images, check_labels, check_number, check_split
from xception_lib.runtime import eval_mode, resolve_amp


def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, **options: Any) -> float:
    """Accuracy of ``model`` on uint8 ``images`` with one integer label each; ``options`` are :func:`predict`'s
    (``mean`` and ``std`` at least)."""
    config = getattr(model, "config", None)
    check_split(images, labels, config.num_classes if isinstance(config, XceptionConfig) else None)
    predictions = predict(model, images, **options).argmax(1)
    return float((predictions == labels.cpu()).double().mean())


@torch.no_grad()
def predict(
    model: nn.Module,
    images: torch.Tensor,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device | str | None = None,
    batch_size: int = 1000,
    amp: str = "off",
) -> torch.Tensor:
    """Class probabilities (``N x classes``, float32, on the CPU) of ``model`` in eval mode for ``N x 3 x H x W``
    uint8 ``images``, normalised with the training data's ``mean`` and ``std``; ``device``: default the model's;
    ``amp`` as in :class:`~xception_lib.train.TrainConfig`."""
    check_images(images, "images")
    if len(images) == 0:
        raise ValueError("images is empty (0 x C x H x W); pass at least one image")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    amp_dtype = resolve_amp(amp, device)
    weight = next((p for p in model.parameters() if p.dim() == 4), torch.empty(0))  # feed the model its own layout
    nhwc = not weight.is_contiguous() and weight.is_contiguous(memory_format=torch.channels_last)
    no_labels = torch.zeros(len(images), dtype=torch.int64)
    loader = GpuLoader(
        images, no_labels, mean=mean, std=std, batch_size=batch_size, train=False, device=device, channels_last=nhwc
    )
    with eval_mode(model), torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        return torch.cat([model(x).float().softmax(1).cpu() for x, _ in loader])


@torch.no_grad()
def loss_and_accuracy(model: nn.Module, loader: GpuLoader, amp_dtype: torch.dtype | None) -> tuple[float, float]:
    """Mean cross-entropy (no label smoothing) and accuracy of ``model`` in eval mode over ``loader``'s images, all
    processes' shards together (:mod:`~xception_lib.distributed`): what ``fit`` measures after an epoch."""
    totals = torch.zeros(3, dtype=torch.float64, device=loader.device)  # loss sum, correct, count
    with eval_mode(model):
        for x, y in loader:
            with torch.autocast(loader.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits = model(x).float()
            totals[0] += nn.functional.cross_entropy(logits, y, reduction="sum")
            totals[1] += (logits.argmax(1) == y).sum()
            totals[2] += len(y)
    loss_sum, correct, count = distributed.all_reduce_sum(totals).tolist()
    return loss_sum / count, correct / count


def confusion_matrix(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``num_classes x num_classes`` counts of 1-D class indices: row = true class, column = predicted class."""
    check_number("confusion_matrix", "num_classes", num_classes, integer=True, low=1)
    if predictions.shape != labels.shape or predictions.dim() != 1:
        shapes = f"{tuple(predictions.shape)} and {tuple(labels.shape)}"
        raise ValueError(f"predictions and labels must have the same shape, 1-D (one class per image), got {shapes}")
    for name, values in (("predictions", predictions), ("labels", labels)):
        check_labels(values, num_classes, name)
    flat = labels.cpu().long() * num_classes + predictions.cpu().long()
    return torch.bincount(flat, minlength=num_classes * num_classes).view(num_classes, num_classes)
