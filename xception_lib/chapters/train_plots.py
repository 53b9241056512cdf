"""Figures for the training chapter: image grids, learning curves, confusion matrix, predictions.

matplotlib is imported inside each function, so importing the library does not need it.
Every function returns the ``Figure``; notebooks display it, scripts ``savefig`` it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from xception_lib.history import History

__all__ = ["plot_confusion_matrix", "plot_history", "plot_images", "plot_predictions"]


def _hwc(image: torch.Tensor) -> Any:
    """A ``3 x H x W`` uint8 or [0, 1] float tensor as an ``H x W x 3`` array for ``imshow``."""
    image = image.detach().cpu()
    if image.dtype == torch.uint8:
        return image.permute(1, 2, 0).numpy()
    return image.clamp(0, 1).permute(1, 2, 0).numpy()


def plot_images(
    images: torch.Tensor,
    labels: Sequence[int] | torch.Tensor | None = None,
    classes: Sequence[str] | None = None,
    *,
    ncols: int = 8,
    titles: Sequence[str] | None = None,
    size: float = 1.2,
) -> Any:
    """A grid of ``N x 3 x H x W`` images, titled by class name (or by ``titles``).

    Args:
        images: uint8 (0-255) or float (0-1) images.
        labels: Class indices for the titles.
        classes: Class names indexed by label.
        ncols: Images per row.
        titles: Explicit titles (override ``labels``).
        size: Inches per image.
    """
    import matplotlib.pyplot as plt

    n = len(images)
    nrows = max(1, -(-n // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * size, nrows * (size + 0.25)), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        ax.imshow(_hwc(images[i]), interpolation="nearest")
        if titles is not None:
            ax.set_title(titles[i], fontsize=8)
        elif labels is not None:
            label = int(labels[i])
            ax.set_title(classes[label] if classes is not None else str(label), fontsize=8)
    fig.tight_layout()
    return fig


def _as_history(run: History | dict[str, Any]) -> History:
    if isinstance(run, History):
        return run
    if "runs" in run:  # a record of xception_lib.chapters.experiments: its first run
        run = run["runs"][0]
    return History.from_dict(run["history"] if "history" in run else run)


def _run_label(history: History, default: str) -> str:
    env = history.meta.get("environment", {})
    config = history.meta.get("config", {})
    where = env.get("device_name")
    kind = "CPU preview" if config.get("is_preview") else default
    return f"{kind} ({where})" if where else kind


def plot_history(history: History | dict[str, Any], reference: History | dict[str, Any] | None = None) -> Any:
    """Learning curves: loss per step and per epoch, accuracy per epoch, learning rate.

    With ``reference`` (a recorded run, e.g. the GPU run loaded from JSON), a second row
    shows it beside the reader's run, labelled with the hardware it was measured on.

    Args:
        history: The run to plot (a :class:`History` or its ``to_dict()``).
        reference: Another run to plot below it: a :class:`History`, its ``to_dict()``,
            a dictionary with a ``"history"`` entry, or a record of
            :mod:`xception_lib.chapters.experiments` (its first run); ``None``: only ``history``.
    """
    import matplotlib.pyplot as plt

    runs = [(_as_history(history), "your run")]
    if reference is not None:
        runs.append((_as_history(reference), "recorded reference"))
    fig, axes = plt.subplots(len(runs), 3, figsize=(13, 3.4 * len(runs)), squeeze=False)
    for row, (run, default) in enumerate(runs):
        label = _run_label(run, default)
        steps_per_epoch = run.steps / run.epochs if run.epochs else 1.0
        ax = axes[row, 0]
        if run.step_loss:
            x = [(i + 1) / steps_per_epoch for i in range(run.steps)]
            ax.plot(x, run.step_loss, color="0.7", lw=0.8, label="train (per step)")
        epochs = list(range(1, run.epochs + 1))
        ax.plot(epochs, run.train_loss, "o-", label="train (epoch mean)")
        ax.plot(epochs, run.test_loss, "s-", label="test")
        ax.set(xlabel="epoch", ylabel="cross-entropy", title=f"Loss: {label}")
        ax.legend(fontsize=8)
        ax = axes[row, 1]
        ax.plot(epochs, [100 * a for a in run.train_acc], "o-", label="train (augmented)")
        ax.plot(epochs, [100 * a for a in run.test_acc], "s-", label="test")
        ax.set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy")
        ax.legend(fontsize=8)
        ax = axes[row, 2]
        if run.step_lr:
            ax.plot([(i + 1) / steps_per_epoch for i in range(len(run.step_lr))], run.step_lr)
        ax.set(xlabel="epoch", ylabel="learning rate", title="Learning-rate schedule")
        for ax in axes[row]:
            ax.grid(alpha=0.3)
    fig.tight_layout()
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
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    im = ax.imshow(shown.numpy(), cmap="Blues")
    n = len(classes)
    ax.set_xticks(range(n), classes, rotation=45, ha="right")
    ax.set_yticks(range(n), classes)
    ax.set(xlabel="predicted class", ylabel="true class")
    top = float(shown.max())
    for i in range(n):
        for j in range(n):
            value = float(shown[i, j])
            ax.text(j, i, f"{value:.0f}", ha="center", va="center", fontsize=7, color="white" if value > top / 2 else "black")
    fig.colorbar(im, ax=ax, label="% of the true class" if normalize else "images")
    fig.tight_layout()
    return fig


def plot_predictions(
    images: torch.Tensor, labels: torch.Tensor, probabilities: torch.Tensor, classes: Sequence[str], *, ncols: int = 8
) -> Any:
    """Images titled with the predicted class and its probability, green if right, red if wrong."""
    fig = plot_images(images, ncols=ncols, titles=[""] * len(images), size=1.4)
    confidence, predicted = probabilities.max(1)
    for i, ax in enumerate(fig.axes[: len(images)]):
        right = int(predicted[i]) == int(labels[i])
        ax.set_title(
            f"{classes[int(predicted[i])]} {float(confidence[i]):.0%}\n(true: {classes[int(labels[i])]})",
            fontsize=7,
            color="tab:green" if right else "tab:red",
        )
    fig.tight_layout()
    return fig
