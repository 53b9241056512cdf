"""The training chapter's figures: image grids, learning curves, confusion matrix, predictions.

matplotlib is imported inside each function, so importing the library does not need it.
Every function returns the ``Figure``; notebooks display it, scripts ``savefig`` it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from xception_lib.chapters import style
from xception_lib.history import History

__all__ = ["FONT", "plot_confusion_matrix", "plot_history", "plot_images", "plot_predictions"]

FONT = 9
"""Smallest text size in points, at the figures' printed width (at most 7.2 in, the book's column)."""


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
    n, lines = len(images), max((str(t).count("\n") + 1 for t in titles or []), default=1)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * size, nrows * (size + 0.18 * lines + 0.1)), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            image = images[i].detach().cpu()
            image = image if image.dtype == torch.uint8 else image.float().clamp(0, 1)
            ax.imshow(image.permute(1, 2, 0).numpy(), interpolation="nearest")
            label = None if labels is None else int(labels[i])
            title = titles[i] if titles is not None else classes[label] if classes and label is not None else label
            ax.set_title("" if title is None else str(title), fontsize=FONT)
    fig.tight_layout(pad=0.2)
    return fig


def _as_history(run: History | dict[str, Any]) -> History:
    """A :class:`History`, its ``to_dict()``, or a dictionary with a ``"history"`` entry, as a History."""
    if isinstance(run, History):
        return run
    return History.from_dict(run["history"] if "history" in run else run)


def plot_history(
    history: History | dict[str, Any],
    reference: History | dict[str, Any] | None = None,
    *,
    label: str = "your run",
    colour: str = "xception",
) -> Any:
    """Learning curves, one row per run: loss per step and per epoch, accuracy per epoch, learning rate.

    The training loss is what the optimiser minimised (with label smoothing, if the recipe uses it); the
    test loss is the plain cross-entropy, so the two are on different scales: compare runs by accuracy.
    Both are drawn in the model's colour from :mod:`~xception_lib.chapters.style`: test solid with
    squares, training dashed with open circles.

    Args:
        history: The run to plot (a :class:`History` or its ``to_dict()``).
        reference: Another run, drawn in a second row headed by its hardware: a :class:`History`, its
            ``to_dict()``, or a dictionary with a ``"history"`` entry.
        label: The heading of ``history``'s row (a CPU preview is headed "CPU preview" whatever it is).
        colour: The model whose colour the curves take (a key of ``style.MODELS``).
    """
    import matplotlib.pyplot as plt

    model_colour = style.colour(colour)
    runs = [(_as_history(history), label)] + ([(_as_history(reference), "recorded reference")] if reference else [])
    fig = plt.figure(figsize=(7.2, 2.9 * len(runs)), layout="constrained")
    for subfig, (run, default) in zip(fig.subfigures(len(runs), 1, squeeze=False)[:, 0], runs, strict=True):
        where = run.meta.get("environment", {}).get("device_name")
        kind = "CPU preview" if run.meta.get("config", {}).get("is_preview") else default
        subfig.suptitle(f"{kind} ({where})" if where else kind, fontsize=FONT + 1)
        axes = subfig.subplots(1, 3)
        per_step, epochs = run.steps / max(run.epochs, 1), range(1, run.epochs + 1)
        if run.step_loss:
            steps = [(i + 1) / per_step for i in range(len(run.step_loss))]
            axes[0].plot(steps, run.step_loss, color="0.75", lw=0.7, label="train, per step")
        smoothing = run.meta.get("config", {}).get("label_smoothing")
        train = f"train (label smoothing {smoothing}), epoch mean" if smoothing else "train, epoch mean"
        for name, losses, accuracies, line in (
            (train, run.train_loss, run.train_acc, {"ls": "--", "marker": "o", "mfc": "white"}),
            ("test", run.test_loss, run.test_acc, {"ls": "-", "marker": "s"}),
        ):
            axes[0].plot(epochs, losses, ms=3.5, color=model_colour, label=name, **line)
            axes[1].plot(epochs, [100 * a for a in accuracies], ms=3.5, color=model_colour, **line)
        if run.step_lr:  # every step's rate; older histories have only the rate at the end of each epoch
            axes[2].plot([(i + 1) / per_step for i in range(len(run.step_lr))], run.step_lr, color="0.3")
        else:
            axes[2].plot(epochs, run.lr, "o-", ms=3, color="0.3")
        axes[2].set_ylim(bottom=0)
        for ax, ylabel in zip(axes, ("cross-entropy", "accuracy (%)", "learning rate"), strict=True):
            ax.set_xlabel("epoch", fontsize=FONT)
            ax.set_ylabel(ylabel, fontsize=FONT)
            ax.tick_params(labelsize=FONT)
            ax.grid(alpha=0.3)
        subfig.legend(loc="outside lower center", ncol=3, fontsize=FONT, frameon=False)
    return fig


def plot_confusion_matrix(matrix: torch.Tensor, classes: Sequence[str], *, normalize: bool = True) -> Any:
    """A confusion matrix (rows: true class, columns: prediction), as row percentages.

    Args:
        matrix: ``C x C`` counts from :func:`xception_lib.evaluation.confusion_matrix`.
        classes: Class names, ``C`` of them.
        normalize: Show each row as percentages of that class's images.
    """
    import matplotlib.pyplot as plt

    n = len(classes)
    if not isinstance(matrix, torch.Tensor) or tuple(matrix.shape) != (n, n) or matrix.is_complex():
        got = tuple(matrix.shape) if isinstance(matrix, torch.Tensor) else type(matrix).__name__
        raise ValueError(f"expected a {n} x {n} tensor of counts (one row and column per class), got {got}")
    counts = matrix.detach().cpu().double()
    shown = 100 * counts / counts.sum(1, keepdim=True).clamp(min=1) if normalize else counts
    fig, ax = plt.subplots(figsize=(6.4, 5.4))
    im = ax.imshow(shown.numpy(), cmap="Blues")
    ax.set_xticks(range(n), classes, rotation=45, ha="right", fontsize=FONT + 1)
    ax.set_yticks(range(n), classes, fontsize=FONT + 1)
    ax.set_xlabel("predicted class", fontsize=FONT + 1)
    ax.set_ylabel("true class", fontsize=FONT + 1)
    top = float(shown.max())
    for i in range(n):
        for j in range(n):
            value = float(shown[i, j])
            ax.text(
                j,
                i,
                f"{value:.0f}",
                ha="center",
                va="center",
                fontsize=FONT,
                color="white" if value > top / 2 else "black",
            )
    colorbar = fig.colorbar(im, ax=ax)
    colorbar.set_label("% of the true class" if normalize else "images", fontsize=FONT + 1)
    colorbar.ax.tick_params(labelsize=FONT)
    fig.tight_layout()
    return fig


def plot_predictions(
    images: torch.Tensor, labels: torch.Tensor, probabilities: torch.Tensor, classes: Sequence[str], *, ncols: int = 5
) -> Any:
    """Images titled with the predicted class and its probability, green if right, red if wrong (with the true class)."""
    if probabilities.dim() != 2 or probabilities.shape != (len(images), len(classes)) or len(labels) != len(images):
        raise ValueError(
            f"expected N images, N labels and N x {len(classes)} probabilities (one column per class), got "
            f"{len(images)} images, {len(labels)} labels and probabilities of shape {tuple(probabilities.shape)}"
        )
    confidence, predicted = probabilities.max(1)
    right = [int(p) == int(y) for p, y in zip(predicted, labels, strict=False)]
    titles = [
        f"{classes[int(p)]} {float(c):.0%}\n" + ("right" if ok else f"true: {classes[int(y)]}")
        for p, c, y, ok in zip(predicted, confidence, labels, right, strict=False)
    ]
    fig = plot_images(images, ncols=ncols, titles=titles, size=1.44)
    for ax, ok in zip(fig.axes, right, strict=False):
        ax.title.set_color("tab:green" if ok else "tab:red")
    return fig
