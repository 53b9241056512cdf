"""The training chapter's apparatus: image grids, learning curves, confusion matrix, predictions, and
:func:`compare_loaders`, the benchmark of :class:`~xception_lib.loader.GpuLoader` against torchvision.

matplotlib is imported inside each function, so importing the library does not need it.
Every function returns the ``Figure``; notebooks display it, scripts ``savefig`` it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from xception_lib.history import History
from xception_lib.loader import GpuLoader
from xception_lib.runtime import synchronize

__all__ = ["FONT", "compare_loaders", "plot_confusion_matrix", "plot_history", "plot_images", "plot_predictions"]

FONT = 9
"""Smallest text size in points, at the figures' printed width (at most 7.2 in, the book's column)."""


def plot_images(
    images: torch.Tensor, labels: Sequence[int] | torch.Tensor | None = None, classes: Sequence[str] | None = None, *,
    ncols: int = 8, titles: Sequence[str] | None = None, size: float = 0.9,
) -> Any:
    """A grid of ``N x 3 x H x W`` images (uint8 0-255 or float 0-1), titled by ``classes[labels[i]]``
    (or ``labels[i]``), or by ``titles``; ``ncols`` images per row, ``size`` inches each."""
    import matplotlib.pyplot as plt

    n = len(images)
    nrows = max(1, -(-n // ncols))
    lines = max((str(t).count("\n") + 1 for t in titles), default=1) if titles is not None else 1
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * size, nrows * (size + 0.18 * lines + 0.1)), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        image = images[i].detach().cpu()
        ax.imshow((image if image.dtype == torch.uint8 else image.clamp(0, 1)).permute(1, 2, 0).numpy(), interpolation="nearest")
        if titles is not None:
            ax.set_title(titles[i], fontsize=FONT)
        elif labels is not None:
            label = int(labels[i])
            ax.set_title(classes[label] if classes is not None else str(label), fontsize=FONT)
    fig.tight_layout(pad=0.2)
    return fig


def _as_history(run: History | dict[str, Any]) -> History:
    if isinstance(run, History):
        return run
    if "runs" in run:  # a record of xception_lib.chapters.experiments: its first run
        run = run["runs"][0]
    return History.from_dict(run["history"] if "history" in run else run)


def _run_label(history: History, default: str) -> str:
    where = history.meta.get("environment", {}).get("device_name")
    kind = "CPU preview" if history.meta.get("config", {}).get("is_preview") else default
    return f"{kind} ({where})" if where else kind


def plot_history(history: History | dict[str, Any], reference: History | dict[str, Any] | None = None) -> Any:
    """Learning curves, one row per run: loss per step and per epoch, accuracy per epoch, learning rate.

    With ``reference`` (a recorded run, e.g. the GPU run loaded from JSON), a second row
    shows it below the reader's run, headed by the hardware it was measured on.

    Args:
        history: The run to plot (a :class:`History` or its ``to_dict()``).
        reference: Another run: a :class:`History`, its ``to_dict()``, a dictionary with a
            ``"history"`` entry, or a record of :mod:`xception_lib.chapters.experiments` (its first run).
    """
    import matplotlib.pyplot as plt

    runs = [(_as_history(history), "your run")] + ([(_as_history(reference), "recorded reference")] if reference is not None else [])
    fig = plt.figure(figsize=(7.2, 2.9 * len(runs)), layout="constrained")
    for subfig, (run, default) in zip(fig.subfigures(len(runs), 1, squeeze=False)[:, 0], runs):
        subfig.suptitle(_run_label(run, default), fontsize=FONT + 1)
        axes = subfig.subplots(1, 3)
        per_step = run.steps / run.epochs if run.epochs else 1.0
        epochs = list(range(1, run.epochs + 1))
        if run.step_loss:
            axes[0].plot([(i + 1) / per_step for i in range(run.steps)], run.step_loss, color="0.75", lw=0.7, label="train, per step")
        axes[0].plot(epochs, run.train_loss, "o-", ms=3, color="tab:blue", label="train (epoch mean)")
        axes[0].plot(epochs, run.test_loss, "s-", ms=3, color="tab:orange", label="test")
        axes[1].plot(epochs, [100 * a for a in run.train_acc], "o-", ms=3, color="tab:blue", label="train (epoch mean)")
        axes[1].plot(epochs, [100 * a for a in run.test_acc], "s-", ms=3, color="tab:orange", label="test")
        if run.step_lr:
            axes[2].plot([(i + 1) / per_step for i in range(len(run.step_lr))], run.step_lr, color="0.3")
        for ax, ylabel in zip(axes, ("cross-entropy", "accuracy (%)", "learning rate")):
            ax.set_xlabel("epoch", fontsize=FONT)
            ax.set_ylabel(ylabel, fontsize=FONT)
            ax.tick_params(labelsize=FONT)
            ax.grid(alpha=0.3)
        handles = dict(zip(*reversed(axes[0].get_legend_handles_labels()))) | dict(zip(*reversed(axes[1].get_legend_handles_labels())))
        subfig.legend(handles.values(), handles.keys(), loc="outside lower center", ncol=4, fontsize=FONT, frameon=False)
    return fig


def plot_confusion_matrix(matrix: torch.Tensor, classes: Sequence[str], *, normalize: bool = True) -> Any:
    """A confusion matrix (rows: true class, columns: prediction), as row percentages.

    Args:
        matrix: ``C x C`` counts from :func:`xception_lib.train.confusion_matrix`.
        classes: Class names.
        normalize: Show each row as percentages of that class's images.
    """
    import matplotlib.pyplot as plt

    counts = matrix.double()
    shown = 100 * counts / counts.sum(1, keepdim=True).clamp(min=1) if normalize else counts
    fig, ax = plt.subplots(figsize=(6.4, 5.4))
    im = ax.imshow(shown.numpy(), cmap="Blues")
    n = len(classes)
    ax.set_xticks(range(n), classes, rotation=45, ha="right", fontsize=FONT + 1)
    ax.set_yticks(range(n), classes, fontsize=FONT + 1)
    ax.set_xlabel("predicted class", fontsize=FONT + 1)
    ax.set_ylabel("true class", fontsize=FONT + 1)
    top = float(shown.max())
    for i in range(n):
        for j in range(n):
            value = float(shown[i, j])
            ax.text(j, i, f"{value:.0f}", ha="center", va="center", fontsize=FONT, color="white" if value > top / 2 else "black")
    colorbar = fig.colorbar(im, ax=ax)
    colorbar.set_label("% of the true class" if normalize else "images", fontsize=FONT + 1)
    colorbar.ax.tick_params(labelsize=FONT)
    fig.tight_layout()
    return fig


def plot_predictions(
    images: torch.Tensor, labels: torch.Tensor, probabilities: torch.Tensor, classes: Sequence[str], *, ncols: int = 5
) -> Any:
    """Images titled with the predicted class and its probability, green if right, red if wrong (with the true class)."""
    confidence, predicted = probabilities.max(1)
    right = [int(predicted[i]) == int(labels[i]) for i in range(len(images))]
    titles = [
        f"{classes[int(predicted[i])]} {float(confidence[i]):.0%}\n" + ("right" if right[i] else f"true: {classes[int(labels[i])]}")
        for i in range(len(images))
    ]
    fig = plot_images(images, ncols=ncols, titles=titles, size=1.44)
    for ax, ok in zip(fig.axes, right):
        ax.title.set_color("tab:green" if ok else "tab:red")
    return fig


class _ArrayDataset(torch.utils.data.Dataset):
    """What ``torchvision.datasets.CIFAR10`` does per item: a PIL image through the transforms."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Callable[[Any], torch.Tensor]) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def _images_per_second(
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]], num_batches: int, warmup: int, repeats: int,
    device: torch.device,
) -> float:
    """Best images per second over ``repeats`` windows of ``num_batches`` batches, after ``warmup`` (the best
    window, as other processes on a shared machine only ever slow a window down)."""
    for _ in range(warmup):
        next(batches)
    best = 0.0
    for _ in range(repeats):
        synchronize(device)
        start, n = time.perf_counter(), 0
        for _ in range(num_batches):
            x, y = next(batches)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            n += len(y)
        synchronize(device)
        best = max(best, n / (time.perf_counter() - start))
    return best


def compare_loaders(
    images: torch.Tensor, labels: torch.Tensor, *, mean: Sequence[float], std: Sequence[float], batch_size: int = 256,
    num_batches: int = 10, warmup: int = 2, repeats: int = 3, num_workers: int = 2, threads: int | None = 1,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Images per second of :class:`GpuLoader` and of the torchvision pipeline of most CIFAR tutorials (a PIL
    image per item, ``RandomCrop(32, padding=4)``, ``RandomHorizontalFlip``, ``ToTensor``, ``Normalize``, a
    ``DataLoader`` with ``num_workers`` processes, each batch copied to ``device``).

    Each is timed over ``repeats`` windows of ``num_batches`` batches after ``warmup`` batches; the best window
    counts. ``images`` must hold ``(warmup + repeats * num_batches) * batch_size`` images or more. ``threads``:
    PyTorch's intra-op threads while :class:`GpuLoader` is timed (restored; ``None``: as is); 1 gives it no more
    CPU than one worker has. Returns the rates (``gpu_loader``, ``dataloader``), their ``ratio`` and the settings.
    """
    import torchvision.transforms as T

    device = torch.device(device)
    needed = (warmup + repeats * num_batches) * batch_size
    if len(labels) < needed:
        raise ValueError(
            f"need at least (warmup + repeats * num_batches) * batch_size = {needed} images, got {len(labels)}"
        )
    transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std)])
    dataset = _ArrayDataset(images.permute(0, 2, 3, 1).numpy(), labels.numpy(), transform)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=True, num_workers=num_workers, drop_last=True,
        pin_memory=device.type == "cuda",
    )
    batches = iter(loader)
    try:
        dataloader_rate = _images_per_second(batches, num_batches, warmup, repeats, device)
    finally:
        del batches  # stops the worker processes
    gpu = GpuLoader(images, labels, batch_size=batch_size, train=True, device=device, mean=mean, std=std)
    saved_threads = torch.get_num_threads()
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        gpu_rate = _images_per_second(iter(gpu), num_batches, warmup, repeats, device)
    finally:
        torch.set_num_threads(saved_threads)
    settings = {"batch_size": batch_size, "num_batches": num_batches, "repeats": repeats, "num_workers": num_workers}
    threads = threads if threads is not None else saved_threads
    rates = {"gpu_loader": gpu_rate, "dataloader": dataloader_rate, "ratio": gpu_rate / dataloader_rate}
    return {**rates, **settings, "threads": threads, "device": str(device)}
