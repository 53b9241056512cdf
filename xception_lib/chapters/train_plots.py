"""The training chapter's figures (matplotlib ``Figure`` objects; matplotlib is imported where it is needed)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import torch

from xception_lib.chapters import style
from xception_lib.history import History

FONT = 9  # smallest text size in points, at the figures' printed width (at most 7.2 in, the book's column)


def plot_images(
    images: torch.Tensor,
    labels: Sequence[int] | torch.Tensor | None = None,
    classes: Sequence[str] | None = None,
    *,
    ncols: int = 8,
    titles: Sequence[str] | None = None,
    size: float = 0.9,
) -> Any:
    """A grid of ``N x 3 x H x W`` images (uint8 0-255 or float 0-1), titled by ``classes[labels[i]]``
    (or ``labels[i]``), or by ``titles``; ``ncols`` images per row, ``size`` inches each."""
    import matplotlib.pyplot as plt

    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3 or not len(images):
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"expected images as a non-empty N x 3 x H x W tensor, got {got}")
    for name, given in (("labels", labels), ("titles", titles)):
        if given is not None and len(given) != len(images):
            raise ValueError(f"expected one of {name} per image ({len(images)}), got {len(given)}")
    if titles is None and labels is not None:
        titles = [classes[int(y)] if classes else str(int(y)) for y in labels]
    lines = max((str(t).count("\n") + 1 for t in titles or []), default=1)
    nrows = -(-len(images) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * size, nrows * (size + 0.18 * lines + 0.1)), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, (ax, image) in enumerate(zip(axes.flat, images.detach().cpu(), strict=False)):
        image = image if image.dtype == torch.uint8 else image.float().clamp(0, 1)
        ax.imshow(image.permute(1, 2, 0).numpy(), interpolation="nearest")
        ax.set_title(titles[i] if titles else "", fontsize=FONT)
    fig.tight_layout(pad=0.2)
    return fig


def plot_history(history: History, *, label: str = "your run") -> Any:
    """Learning curves: loss per step and per epoch, accuracy per epoch, learning rate; headed by ``label``
    (a CPU preview by "CPU preview") and the hardware.

    The training loss is what the optimiser minimised (with label smoothing, if the recipe uses it); the
    test loss is the plain cross-entropy, so the two are on different scales: compare runs by accuracy.
    """
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(7.2, 2.9), layout="constrained")
    where = history.meta.get("environment", {}).get("device_name")
    config = history.meta.get("config", {})
    kind = "CPU preview" if config.get("is_preview") else label
    fig.suptitle(f"{kind} ({where})" if where else kind, fontsize=FONT + 1)
    per_step, epochs = history.steps / max(history.epochs, 1), range(1, history.epochs + 1)
    steps = [(i + 1) / per_step for i in range(history.steps)]  # in epochs
    axes[0].plot(steps, history.step_loss, color="0.75", lw=0.7, label="train, per step")
    smoothing = config.get("label_smoothing")
    train = f"train (label smoothing {smoothing}), epoch mean" if smoothing else "train, epoch mean"
    for name, losses, accuracies, line in (
        (train, history.train_loss, history.train_acc, {"ls": "--", "marker": "o", "mfc": "white"}),
        ("test", history.test_loss, history.test_acc, {"ls": "-", "marker": "s"}),
    ):
        axes[0].plot(epochs, losses, ms=3.5, color=style.colour("xception"), label=name, **line)
        axes[1].plot(epochs, [100 * a for a in accuracies], ms=3.5, color=style.colour("xception"), **line)
    axes[2].plot(steps, history.step_lr, color="0.3")
    axes[2].set_ylim(bottom=0)
    for ax, ylabel in zip(axes, ("cross-entropy", "accuracy (%)", "learning rate"), strict=True):
        ax.set_xlabel("epoch", fontsize=FONT)
        ax.set_ylabel(ylabel, fontsize=FONT)
        ax.tick_params(labelsize=FONT)
        ax.grid(alpha=0.3)
    fig.legend(loc="outside lower center", ncol=3, fontsize=FONT, frameon=False)
    return fig


def plot_confusion_matrix(matrix: torch.Tensor, classes: Sequence[str]) -> Any:
    """A ``C x C`` confusion matrix of counts (rows: true class, columns: prediction), shown as percentages
    of each row."""
    import matplotlib.pyplot as plt

    n = len(classes)
    if not isinstance(matrix, torch.Tensor) or tuple(matrix.shape) != (n, n) or matrix.is_complex():
        got = tuple(matrix.shape) if isinstance(matrix, torch.Tensor) else type(matrix).__name__
        raise ValueError(f"expected a {n} x {n} tensor of counts (one row and column per class), got {got}")
    counts = matrix.detach().cpu().double()
    shown = 100 * counts / counts.sum(1, keepdim=True).clamp(min=1)
    fig, ax = plt.subplots(figsize=(6.4, 5.4))
    im = ax.imshow(shown.numpy(), cmap="Blues")
    ax.set_xticks(range(n), classes, rotation=45, ha="right", fontsize=FONT + 1)
    ax.set_yticks(range(n), classes, fontsize=FONT + 1)
    ax.set_xlabel("predicted class", fontsize=FONT + 1)
    ax.set_ylabel("true class", fontsize=FONT + 1)
    top = float(shown.max())
    for i, j in itertools.product(range(n), repeat=2):
        colour = "white" if shown[i, j] > top / 2 else "black"
        ax.text(j, i, f"{shown[i, j]:.0f}", ha="center", va="center", fontsize=FONT, color=colour)
    colorbar = fig.colorbar(im, ax=ax)
    colorbar.set_label("% of the true class", fontsize=FONT + 1)
    colorbar.ax.tick_params(labelsize=FONT)
    fig.tight_layout()
    return fig


def plot_predictions(
    images: torch.Tensor, labels: torch.Tensor, probabilities: torch.Tensor, classes: Sequence[str]
) -> Any:
    """Images titled with the predicted class and its probability, green if right, red if wrong (with the true class)."""
    if probabilities.dim() != 2 or probabilities.shape != (len(images), len(classes)) or len(labels) != len(images):
        raise ValueError(
            f"expected N images, N labels and N x {len(classes)} probabilities (one column per class), got "
            f"{len(images)} images, {len(labels)} labels and probabilities of shape {tuple(probabilities.shape)}"
        )
    confidence, predicted = probabilities.max(1)
    right = [int(p) == int(y) for p, y in zip(predicted, labels, strict=True)]
    titles = [
        f"{classes[int(p)]} {float(c):.0%}\n" + ("right" if ok else f"true: {classes[int(y)]}")
        for p, c, y, ok in zip(predicted, confidence, labels, right, strict=True)
    ]
    fig = plot_images(images, ncols=5, titles=titles, size=1.44)
    for ax, ok in zip(fig.axes, right, strict=False):
        ax.title.set_color("tab:green" if ok else "tab:red")
    return fig
