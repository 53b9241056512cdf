"""Tests of xception_lib.loader: GpuLoader (batches, augmentation, shards, input checks)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import xception_lib as xl
from xception_lib.loader import GpuLoader, check_number

REPO = Path(__file__).resolve().parents[1]
MEAN, STD = xl.data.DATASETS["cifar10"]["mean"], xl.data.DATASETS["cifar10"]["std"]
NORM = {"mean": MEAN, "std": STD}


def _coordinate_images(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose pixels say where they are: R = row + 1, G = column + 1, B = image id."""
    rows = torch.arange(1, 33, dtype=torch.uint8).view(1, 32, 1).expand(n, 32, 32)
    cols = torch.arange(1, 33, dtype=torch.uint8).view(1, 1, 32).expand(n, 32, 32)
    ids = torch.arange(n, dtype=torch.uint8).view(n, 1, 1).expand(n, 32, 32)
    return torch.stack([rows, cols, ids], 1).contiguous(), torch.arange(n)


def _unnormalize(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(MEAN).view(1, 3, 1, 1) * 255
    std = torch.tensor(STD).view(1, 3, 1, 1) * 255
    return (x * std + mean).round().to(torch.int64)


@pytest.mark.data
def test_loader_shapes_and_eval_order(cifar10: xl.data.CifarArrays) -> None:
    images, labels = cifar10.test_images[:1000], cifar10.test_labels[:1000]
    loader = GpuLoader(images, labels, **NORM, batch_size=300, train=False)
    assert len(loader) == 4  # 300 + 300 + 300 + 100: nothing dropped when evaluating
    batches = list(loader)
    assert [len(y) for _, y in batches] == [300, 300, 300, 100]
    x, y = batches[0]
    assert x.shape == (300, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.equal(torch.cat([y for _, y in batches]), labels)
    assert torch.equal(_unnormalize(torch.cat([x for x, _ in batches])), images.long())
    train = GpuLoader(images, labels, **NORM, batch_size=300, channels_last=True)
    assert len(train) == 3  # drop_last for training
    x, _ = next(iter(train))
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert abs(float(x.mean())) < 0.3 and 0.8 < float(x.std()) < 1.3  # roughly standardised


def test_augmentation_statistics() -> None:
    n, p = 256, 4
    images, labels = _coordinate_images(n)
    loader = GpuLoader(images, labels, **NORM, batch_size=64, crop_padding=p, seed=0)
    shifts_y, shifts_x, flipped = [], [], []
    for _ in range(8):  # 8 epochs x 256 images
        for x, y in loader:
            x = _unnormalize(x)
            assert x.min() >= 0 and x.max() <= 255
            for image, label in zip(x, y, strict=False):
                r, g, b = image
                inside = (r > 0) & (g > 0)
                assert torch.all(image[:, ~inside] == 0), "padding must be zeros"
                assert torch.all(b[inside] == label), "labels must follow their images"
                i, j = inside.nonzero()[0].tolist()
                shifts_y.append(int(r[i, j]) - 1 - i)  # source row - output row
                mirrored = bool(j + 1 < 32 and inside[i, j + 1] and g[i, j + 1] < g[i, j])
                flipped.append(mirrored)
                shifts_x.append(int(g[i, j]) - 1 - (31 - j if mirrored else j))
    shifts = torch.tensor(shifts_y + shifts_x)
    assert shifts.min() == -p and shifts.max() == p  # within the padding, reaching both ends
    frequencies = torch.bincount(shifts + p, minlength=2 * p + 1).double() / len(shifts)
    assert torch.all((frequencies - 1 / (2 * p + 1)).abs() < 0.03), frequencies  # uniform offsets
    assert 0.45 < sum(flipped) / len(flipped) < 0.55


def test_epochs_are_permutations_and_reproducible() -> None:
    images, labels = _coordinate_images(100)
    loader = GpuLoader(images, labels, **NORM, batch_size=25, seed=5)
    epoch0 = torch.cat([y for _, y in loader])
    epoch1 = torch.cat([y for _, y in loader])
    assert sorted(epoch0.tolist()) == list(range(100)) == sorted(epoch1.tolist())
    assert not torch.equal(epoch0, epoch1)
    again = GpuLoader(images, labels, **NORM, batch_size=25, seed=5)
    again.set_epoch(1)
    assert torch.equal(torch.cat([y for _, y in again]), epoch1)
    assert again.epoch == 2  # iterating advances the epoch
    again.set_epoch(1)
    x1 = torch.cat([x for x, _ in again])
    again.set_epoch(1)
    assert torch.equal(torch.cat([x for x, _ in again]), x1)
    other_seed = torch.cat([y for _, y in GpuLoader(images, labels, **NORM, batch_size=25, seed=6)])
    assert not torch.equal(other_seed, epoch0)


def test_shards_make_up_the_global_batch() -> None:
    images, labels = _coordinate_images(96)
    whole = list(GpuLoader(images, labels, **NORM, batch_size=32, seed=2))
    shards = [list(GpuLoader(images, labels, **NORM, batch_size=16, seed=2, rank=r, world_size=2)) for r in range(2)]
    assert len(whole) == len(shards[0]) == len(shards[1]) == 3
    for k, (x, y) in enumerate(whole):
        x_parts = torch.cat([shards[0][k][0], shards[1][k][0]])
        y_parts = torch.cat([shards[0][k][1], shards[1][k][1]])
        order, parts_order = y.argsort(), y_parts.argsort()
        assert torch.equal(y[order], y_parts[parts_order])
        assert torch.equal(x[order], x_parts[parts_order])  # the same crops and flips too


def test_loader_rejects_bad_input() -> None:
    images, labels = _coordinate_images(8)
    with pytest.raises(TypeError, match="uint8"):
        GpuLoader(images.float(), labels, **NORM)
    with pytest.raises(ValueError, match="one label for each of the 8 images"):
        GpuLoader(images, labels[:5], **NORM)
    with pytest.raises(ValueError, match="batch_size"):
        GpuLoader(images, labels, **NORM, batch_size=0)
    with pytest.raises(ValueError, match="rank"):
        GpuLoader(images, labels, **NORM, rank=2, world_size=2)


def test_augment_views_stay_within_padding() -> None:
    images, labels = _coordinate_images(4)
    loader = GpuLoader(images, labels, **NORM, crop_padding=2)
    views = loader.augment(torch.tensor([1] * 16))
    assert views.shape == (16, 3, 32, 32) and views.dtype == torch.uint8
    assert torch.all(views[:, 2][(views[:, 0] > 0)] == 1)
    assert len({bytes(v.numpy()) for v in views}) > 4  # different crops and flips


@pytest.mark.parametrize(
    ("overrides", "error", "match"),
    [
        ({"batch_size": 1.5}, TypeError, "batch_size must be an integer"),
        ({"batch_size": True}, TypeError, "batch_size"),
        ({"crop_padding": -1}, ValueError, "crop_padding must be an integer >= 0"),
        ({"seed": "0"}, TypeError, "seed"),
        ({"world_size": 0}, ValueError, "world_size"),
        ({"mean": (0.5, 0.5)}, ValueError, "3 values each"),
        ({"std": (0.2, 0.0, 0.2)}, ValueError, r"std\[1\] must be a finite number > 0"),
        ({"std": (0.2, math.nan, 0.2)}, ValueError, r"std\[1\]"),
        ({"mean": (0.5, 0.5, 255)}, ValueError, r"mean\[2\] must be a finite number >= 0 and <= 1"),
    ],
)
def test_loader_names_the_bad_argument(overrides: dict[str, object], error: type[Exception], match: str) -> None:
    images, labels = _coordinate_images(8)
    with pytest.raises(error, match=match):
        GpuLoader(images, labels, **{**NORM, **overrides})


def test_loader_rejects_bad_labels_and_needs_mean_and_std() -> None:
    images, labels = _coordinate_images(8)
    with pytest.raises(TypeError, match="integer tensor of class indices"):
        GpuLoader(images, labels.float(), **NORM)
    with pytest.raises(ValueError, match=">= 0, got values from -1"):
        GpuLoader(images, labels - 1, **NORM)
    with pytest.raises(TypeError, match="mean"):
        GpuLoader(images, labels)  # type: ignore[call-arg]  # no silent CIFAR-10 default


def test_check_number_messages() -> None:
    check_number("X", "n", 3, integer=True, low=1)
    check_number("X", "p", None, optional=True)
    with pytest.raises(TypeError, match=r"X: n must be an integer >= 1, got 2.0 \(float\)"):
        check_number("X", "n", 2.0, integer=True, low=1)
    with pytest.raises(ValueError, match=r"X: p must be a finite number >= 0 and < 1, got inf"):
        check_number("X", "p", math.inf, low=0, high=1, high_open=True)
