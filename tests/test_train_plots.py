"""Chapter 5's figures: learning curves, confusion matrix, image grids and predictions."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from xception_lib.chapters import train_plots
from xception_lib.history import History

plt = pytest.importorskip("matplotlib.pyplot")


@pytest.fixture(autouse=True)
def close_figures() -> Any:
    yield
    plt.close("all")


def run(*, smoothing: float, preview: bool = True, epochs: int = 3, steps_per_epoch: int = 4) -> History:
    history = History(meta={"config": {"label_smoothing": smoothing, "is_preview": preview}})
    for e in range(epochs):
        history.append_epoch(
            train_loss=2 - e / 2,
            train_acc=0.3 + e / 10,
            test_loss=1.5 - e / 2,
            test_acc=0.25 + e / 10,
            lr=0.1,
            images_per_sec=100.0,
            epoch_time=1.0,
        )
        history.step_loss += [2.0 - e / 2] * steps_per_epoch
        history.step_lr += [0.1] * steps_per_epoch
    return history


def legend_texts(fig: Any) -> list[str]:
    return [t.get_text() for legend in fig.legends for t in legend.get_texts()]


def readable(fig: Any) -> None:
    """Drawn for the book's column: at most 7.5 in wide, no text under 9 pt."""
    from matplotlib.text import Text

    fig.canvas.draw()
    assert fig.get_figwidth() <= 7.5
    sizes = [t.get_fontsize() for t in fig.findobj(Text) if t.get_text().strip() and t.get_visible()]
    assert sizes and min(sizes) >= 9


def test_history_is_headed_by_its_kind_and_hardware() -> None:
    history = run(smoothing=0.1)
    history.meta["environment"] = {"device_name": "a CPU"}
    fig = train_plots.plot_history(history, label="recorded run")
    assert len(fig.axes) == 3 and fig._suptitle.get_text() == "CPU preview (a CPU)"
    readable(fig)


def test_the_legend_says_which_loss_is_smoothed() -> None:
    """Issue 20, finding 3: the smoothed training loss and the plain test loss are on different scales."""
    assert "train (label smoothing 0.1), epoch mean" in legend_texts(train_plots.plot_history(run(smoothing=0.1)))
    assert "train, epoch mean" in legend_texts(train_plots.plot_history(run(smoothing=0.0)))


def test_history_curves_are_the_recorded_values() -> None:
    history = run(smoothing=0.1)
    fig = train_plots.plot_history(history)
    loss_ax, acc_ax, lr_ax = fig.axes
    test_line = [line for line in loss_ax.lines if line.get_label() == "test"][0]
    assert list(test_line.get_ydata()) == history.test_loss
    assert [list(line.get_ydata()) for line in acc_ax.lines] == [
        [100 * a for a in history.train_acc],
        [100 * a for a in history.test_acc],
    ]
    assert list(lr_ax.lines[0].get_ydata()) == history.step_lr


def test_confusion_matrix_shows_row_percentages() -> None:
    matrix = torch.tensor([[3, 1], [0, 4]])
    fig = train_plots.plot_confusion_matrix(matrix, ["a", "b"])
    assert len(fig.axes) == 2  # the matrix and its colour bar
    assert [t.get_text() for t in fig.axes[0].texts] == ["75", "25", "0", "100"]


def test_predictions_titles_right_in_green_wrong_in_red() -> None:
    images = torch.randint(0, 256, (3, 3, 8, 8), dtype=torch.uint8)
    labels = torch.tensor([0, 1, 1])
    probabilities = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]])
    fig = train_plots.plot_predictions(images, labels, probabilities, ["cat", "dog"])
    titles = [ax.title for ax in fig.axes[:3]]
    assert [t.get_text() for t in titles] == ["cat 90%\nright", "dog 80%\nright", "cat 70%\ntrue: dog"]
    assert [t.get_color() for t in titles] == ["tab:green", "tab:green", "tab:red"]
    readable(fig)


def test_image_grid_titles_by_class_name() -> None:
    images = torch.rand(5, 3, 8, 8)
    fig = train_plots.plot_images(images, torch.tensor([0, 1, 0, 1, 1]), ["cat", "dog"], ncols=4)
    assert len(fig.axes) == 8  # two rows of four; the last three empty
    assert [ax.get_title() for ax in fig.axes[:5]] == ["cat", "dog", "cat", "dog", "dog"]
    assert [ax.get_title() for ax in train_plots.plot_images(images[:2], [3, 4]).axes[:2]] == ["3", "4"]


def test_curves_take_the_models_colour_from_the_books_palette() -> None:
    """Issue 20: one colour per model across the book; train and test told apart by line style."""
    from xception_lib.chapters import style

    loss_ax, acc_ax, _ = train_plots.plot_history(run(smoothing=0.1)).axes
    epoch_lines = [line for line in loss_ax.lines if line.get_label() != "train, per step"] + acc_ax.lines
    assert {line.get_color() for line in epoch_lines} == {style.colour("xception")}
    assert {line.get_linestyle() for line in acc_ax.lines} == {"--", "-"}


def test_the_learning_rate_axis_starts_at_zero() -> None:
    assert train_plots.plot_history(run(smoothing=0.1)).axes[2].get_ylim()[0] == 0


def test_the_first_row_is_headed_by_the_given_label() -> None:
    fig = train_plots.plot_history(run(smoothing=0.1, preview=False), label="recorded run")
    assert fig._suptitle.get_text() == "recorded run"
