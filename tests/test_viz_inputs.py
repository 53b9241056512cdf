"""Bad and unusual inputs to chapters 5 and 7's functions that take tensors: shapes, dtypes, memory formats,
empty inputs. Each probe expects a clear error naming what was wrong, or the right result; none may be
silently wrong or end in a raw error from deep inside PyTorch or matplotlib."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

import xception_lib as xl
from xception_lib.chapters import gradcam, images, train_plots, viz

plt = pytest.importorskip("matplotlib.pyplot")

SPEC = images.CIFAR10


@pytest.fixture(autouse=True)
def close_figures() -> Any:
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def model() -> xl.Xception:
    torch.manual_seed(0)
    return xl.Xception(xl.XceptionConfig.imagenet(width_multiplier=0.25, middle_blocks=2, num_classes=7)).eval()


def photo_uint8() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)


def x71(n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, 71, 71, generator=torch.Generator().manual_seed(0))


def same_as_uint8(given: np.ndarray | torch.Tensor) -> None:
    torch.testing.assert_close(images.preprocess(given, SPEC), images.preprocess(photo_uint8(), SPEC))


# (name, probe, expected error type or None for "must succeed", message pattern)
PROBES: list[tuple[str, Callable[[xl.Xception], object], type[Exception] | None, str]] = [
    # images.preprocess
    (
        "preprocess: float 0-255",
        lambda m: images.preprocess(photo_uint8().astype(np.float32), SPEC),
        ValueError,
        r"\[0, 1\]",
    ),
    ("preprocess: int64 0-255", lambda m: images.preprocess(photo_uint8().astype(np.int64), SPEC), TypeError, "uint8"),
    ("preprocess: bool image", lambda m: images.preprocess(photo_uint8() > 128, SPEC), TypeError, "uint8"),
    (
        "preprocess: float with nan",
        lambda m: images.preprocess(np.full((8, 8, 3), np.nan, np.float32), SPEC),
        ValueError,
        "nan",
    ),
    ("preprocess: empty list", lambda m: images.preprocess([], SPEC), ValueError, "at least one image"),
    (
        "preprocess: empty batch",
        lambda m: images.preprocess(np.zeros((0, 32, 32, 3), np.uint8), SPEC),
        ValueError,
        "non-empty",
    ),
    (
        "preprocess: 0 x 0 image",
        lambda m: images.preprocess(np.zeros((0, 0, 3), np.uint8), SPEC),
        ValueError,
        "non-empty",
    ),
    ("preprocess: greyscale", lambda m: images.preprocess(np.zeros((8, 8), np.uint8), SPEC), ValueError, "H x W x 3"),
    ("preprocess: float in [0, 1] = uint8 / 255", lambda m: same_as_uint8(photo_uint8() / 255.0), None, ""),
    ("preprocess: non-contiguous view", lambda m: same_as_uint8(np.asfortranarray(photo_uint8())), None, ""),
    (
        "preprocess: channels_last batch",
        lambda m: same_as_uint8(
            torch.from_numpy(photo_uint8()).permute(2, 0, 1)[None].contiguous(memory_format=torch.channels_last)
        ),
        None,
        "",
    ),
    # images.to_display
    ("to_display: empty image", lambda m: images.to_display(torch.zeros(3, 0, 0), SPEC), ValueError, "3 x H x W"),
    (
        "to_display: a batch of 2",
        lambda m: images.to_display(torch.zeros(2, 3, 4, 4), SPEC),
        ValueError,
        "one RGB image",
    ),
    # viz
    (
        "stage_outputs: uint8 images",
        lambda m: viz.stage_outputs(m, (x71() * 50).to(torch.uint8)),
        TypeError,
        "preprocess",
    ),
    ("stage_outputs: 2-D tensor", lambda m: viz.stage_outputs(m, torch.zeros(71, 71)), ValueError, "N x 3 x H x W"),
    ("stage_outputs: 1 channel", lambda m: viz.stage_outputs(m, torch.zeros(1, 1, 71, 71)), ValueError, "3"),
    (
        "stage_outputs: channels_last = contiguous",
        lambda m: [
            torch.testing.assert_close(a, b)
            for a, b in zip(
                viz.stage_outputs(m, x71().contiguous(memory_format=torch.channels_last)).values(),
                viz.stage_outputs(m, x71()).values(),
                strict=True,
            )
        ],
        None,
        "",
    ),
    ("activation_statistics: empty batch", lambda m: viz.activation_statistics(m, x71()[:0]), ValueError, "N >= 1"),
    ("select_channels: no channels", lambda m: viz.select_channels(torch.zeros(4, 2, 2), n=0), ValueError, r"\[1, 4\]"),
    ("select_channels: a batch", lambda m: viz.select_channels(torch.zeros(1, 4, 2, 2)), ValueError, "C x h x w"),
    ("top_k: k = 0", lambda m: viz.top_k(m, x71(), [str(i) for i in range(7)], k=0), ValueError, "k must be"),
    ("top_k: too few names", lambda m: viz.top_k(m, x71(), ["a"]), ValueError, "class names"),
    ("plot_feature_maps: two images", lambda m: viz.plot_feature_maps(m, x71(), "stem"), ValueError, "one image"),
    ("plot_separable_steps: inputs = 0", lambda m: viz.plot_separable_steps(m, x71(1), inputs=0), ValueError, "inputs"),
    # gradcam
    (
        "grad_cam: a tensor of targets = a list",
        lambda m: torch.testing.assert_close(
            gradcam.grad_cam(m, x71(), torch.tensor([1, 2])), gradcam.grad_cam(m, x71(), [1, 2])
        ),
        None,
        "",
    ),
    ("grad_cam: a 0-d tensor target", lambda m: gradcam.grad_cam(m, x71(), torch.tensor(3)), None, ""),
    ("grad_cam: empty batch", lambda m: gradcam.grad_cam(m, x71()[:0], 0), ValueError, "N >= 1"),
    (
        "grad_cam: uint8 images",
        lambda m: gradcam.grad_cam(m, torch.zeros(1, 3, 71, 71, dtype=torch.uint8)),
        TypeError,
        "preprocess",
    ),
    ("grad_cam: class out of range", lambda m: gradcam.grad_cam(m, x71(), 7), ValueError, r"\[0, 6\]"),
    # train_plots
    (
        "plot_confusion_matrix: not C x C",
        lambda m: train_plots.plot_confusion_matrix(torch.ones(3, 2), ["a", "b", "c"]),
        ValueError,
        "3 x 3",
    ),
    (
        "plot_predictions: fewer labels than images",
        lambda m: train_plots.plot_predictions(
            torch.zeros(4, 3, 8, 8), torch.zeros(2, dtype=torch.long), torch.full((4, 2), 0.5), ["a", "b"]
        ),
        ValueError,
        "labels",
    ),
    (
        "plot_predictions: probabilities of the wrong width",
        lambda m: train_plots.plot_predictions(
            torch.zeros(2, 3, 8, 8), torch.zeros(2, dtype=torch.long), torch.full((2, 3), 0.3), ["a", "b"]
        ),
        ValueError,
        "one column per class",
    ),
    (
        "plot_images: fewer titles",
        lambda m: train_plots.plot_images(torch.zeros(3, 3, 8, 8), titles=["a"]),
        ValueError,
        "titles",
    ),
    ("plot_images: no images", lambda m: train_plots.plot_images(torch.zeros(0, 3, 8, 8)), ValueError, "non-empty"),
    (
        "plot_images: H x W x 3 layout",
        lambda m: train_plots.plot_images(torch.zeros(2, 8, 8, 3)),
        ValueError,
        "N x 3 x H x W",
    ),
    (
        "plot_images: channels_last floats",
        lambda m: train_plots.plot_images(torch.rand(2, 3, 8, 8).contiguous(memory_format=torch.channels_last)),
        None,
        "",
    ),
]


@pytest.mark.parametrize(("name", "probe", "error", "pattern"), PROBES, ids=[p[0] for p in PROBES])
def test_input_probe(
    model: xl.Xception, name: str, probe: Callable[[xl.Xception], object], error: type[Exception] | None, pattern: str
) -> None:
    if error is None:
        probe(model)
    else:
        with pytest.raises(error, match=pattern):
            probe(model)
