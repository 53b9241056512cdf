"""Tests of xception_lib.data (loading, caching) and xception_lib.loader (GpuLoader)."""

from __future__ import annotations

import os
import pickle
import time
import urllib.error
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import xception_lib as xl
from xception_lib.data import DataNotFoundError, load_cifar

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


def real_data_root() -> Path:
    """Where the offline CIFAR-10 copy is: $XCEPTION_DATA, else ../shared/data (as in CI)."""
    root = Path(os.environ.get("XCEPTION_DATA") or REPO.parent / "shared" / "data")
    if not (root / "cifar10-jpeg.tar.xz").exists() and not root.is_file():
        pytest.skip(f"offline CIFAR-10 copy not found at {root} (set XCEPTION_DATA)")
    return root


@pytest.fixture(scope="module")
def cifar10() -> xl.data.CifarArrays:
    return load_cifar("cifar10", real_data_root())


# ----------------------------------------------------------------------------- loading


def test_real_archive_via_environment_variable(monkeypatch: pytest.MonkeyPatch, cifar10: xl.data.CifarArrays) -> None:
    monkeypatch.setenv("XCEPTION_DATA", str(real_data_root()))
    start = time.perf_counter()
    data = load_cifar("cifar10")  # cached by the fixture's load: no decoding
    seconds = time.perf_counter() - start
    assert seconds < 1.0, f"cached load took {seconds:.2f} s"
    assert data.source.endswith("cifar10-jpeg.tar.xz")
    assert data.train_images.shape == (50000, 3, 32, 32) and data.train_images.dtype == torch.uint8
    assert data.test_images.shape == (10000, 3, 32, 32) and data.test_images.dtype == torch.uint8
    assert data.train_labels.dtype == torch.int64
    assert data.classes == ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    assert data.train_labels.bincount().tolist() == [5000] * 10
    assert data.test_labels.bincount().tolist() == [1000] * 10
    assert torch.equal(data.train_images[:100], cifar10.train_images[:100])
    # The usual CIFAR-10 channel means, recomputed from the JPEG copy.
    means = data.train_images[::10].double().mean((0, 2, 3)) / 255
    assert torch.allclose(means, torch.tensor(data.mean, dtype=torch.float64), atol=0.003)


def _write_image_folder(root: Path, rng: np.random.Generator) -> dict[str, list[np.ndarray]]:
    """A tiny ImageFolder tree of lossless PNGs; returns the arrays per split, in file order."""
    from PIL import Image

    arrays: dict[str, list[np.ndarray]] = {"train": [], "test": []}
    for split, per_class in (("train", 3), ("test", 2)):
        for name in ("cat", "airplane"):  # written out of order: classes must come out sorted
            for i in range(per_class):
                folder = root / split / name
                folder.mkdir(parents=True, exist_ok=True)
                image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(image).save(folder / f"{i:04d}.png")
    for split in ("train", "test"):
        for name in ("airplane", "cat"):
            for file in sorted((root / split / name).iterdir()):
                arrays[split].append(np.asarray(Image.open(file).convert("RGB")))
    return arrays


def test_image_folder_tree_and_zip_archive(tmp_path: Path) -> None:
    tree = tmp_path / "cifar10-jpeg"
    expected = _write_image_folder(tree, np.random.default_rng(0))
    cache = tmp_path / "cache"
    from_tree = load_cifar("cifar10", tree, cache=cache)
    from_parent = load_cifar("cifar10", tmp_path, cache=cache)  # finds cifar10-jpeg/ inside
    archive = tmp_path / "copy.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for file in sorted(tree.rglob("*.png")):
            z.write(file, Path("cifar10-jpeg") / file.relative_to(tree))
    from_zip = load_cifar("cifar10", archive, cache=cache)
    for data in (from_tree, from_parent, from_zip):
        assert data.classes == ("airplane", "cat")
        assert data.train_labels.tolist() == [0, 0, 0, 1, 1, 1]
        assert data.test_labels.tolist() == [0, 0, 1, 1]
        want = torch.from_numpy(np.stack(expected["train"])).permute(0, 3, 1, 2)
        assert torch.equal(data.train_images, want)
        assert torch.equal(data.test_images, torch.from_numpy(np.stack(expected["test"])).permute(0, 3, 1, 2))
    assert len(list(cache.glob("cifar10-*.pt"))) == 2  # the tree (found twice) and the zip
    again = load_cifar("cifar10", archive, cache=cache)  # from the cache this time
    assert torch.equal(again.train_images, from_zip.train_images)


def _write_fake_pickles(folder: Path, name: str, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """torchvision's pickle layout with random contents (for testing the parser only)."""
    folder.mkdir(parents=True)
    info = xl.data.DATASETS[name]
    num_classes = 10 if name == "cifar10" else 100
    out: dict[str, list[np.ndarray]] = {"train_x": [], "train_y": [], "test_x": [], "test_y": []}
    for split, files in (("train", info["train_files"]), ("test", info["test_files"])):
        for file in files:
            data = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
            labels = rng.integers(0, num_classes, 4).tolist()
            with open(folder / file, "wb") as f:
                pickle.dump({"data": data, info["label_key"]: labels, "batch_label": file}, f)
            out[f"{split}_x"].append(data)
            out[f"{split}_y"].append(np.asarray(labels))
    with open(folder / info["meta_file"], "wb") as f:
        pickle.dump({info["meta_key"]: [f"class{i}" for i in range(num_classes)]}, f)
    return {k: np.concatenate(v) for k, v in out.items()}


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_torchvision_pickle_format(tmp_path: Path, name: str) -> None:
    folder = tmp_path / "data" / str(xl.data.DATASETS[name]["torchvision_dir"])
    expected = _write_fake_pickles(folder, name, np.random.default_rng(1))
    data = load_cifar(name, tmp_path / "data", cache=tmp_path / "cache")
    assert data.name == name and data.num_classes == (10 if name == "cifar10" else 100)
    assert data.train_images.shape == (len(expected["train_y"]), 3, 32, 32)
    # Pickled rows are 1024 red, then 1024 green, then 1024 blue values, row-major.
    assert torch.equal(data.train_images, torch.from_numpy(expected["train_x"]).view(-1, 3, 32, 32))
    assert data.train_images[0, 1, 0, 5].item() == expected["train_x"][0, 1024 + 5]
    assert data.test_labels.tolist() == expected["test_y"].tolist()


def test_missing_data_names_both_ways(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataNotFoundError) as info:
        load_cifar("cifar10", empty, cache=tmp_path / "cache")
    message = str(info.value)
    assert "XCEPTION_DATA" in message and "root=" in message and "download" in message and str(empty) in message
    assert isinstance(info.value, FileNotFoundError)

    # No local copy and the network unreachable: the download error is chained.
    import torchvision

    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("no network")

    monkeypatch.delenv("XCEPTION_DATA", raising=False)
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(DataNotFoundError) as info:
        load_cifar("cifar10", cache=tmp_path / "cache")
    assert "XCEPTION_DATA" in str(info.value) and "download failed" in str(info.value)
    assert isinstance(info.value.__cause__, urllib.error.URLError)
    with pytest.raises(DataNotFoundError, match="download=False"):
        load_cifar("cifar10", cache=tmp_path / "cache", download=False)
    with pytest.raises(ValueError, match="cifar10"):
        load_cifar("mnist")


def test_subset_is_seeded(cifar10: xl.data.CifarArrays) -> None:
    a = cifar10.subset(train=100, test=50, seed=3)
    b = cifar10.subset(train=100, test=50, seed=3)
    c = cifar10.subset(train=100, test=50, seed=4)
    assert a.train_images.shape == (100, 3, 32, 32) and a.test_labels.shape == (50,)
    assert torch.equal(a.train_images, b.train_images) and not torch.equal(a.train_images, c.train_images)
    assert len(a.test_labels.unique()) > 5  # a random choice, not the class-sorted first 50
    with pytest.raises(ValueError, match="1..50000"):
        cifar10.subset(train=0)


# ----------------------------------------------------------------------------- GpuLoader


def _coordinate_images(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose pixels say where they are: R = row + 1, G = column + 1, B = image id."""
    rows = torch.arange(1, 33, dtype=torch.uint8).view(1, 32, 1).expand(n, 32, 32)
    cols = torch.arange(1, 33, dtype=torch.uint8).view(1, 1, 32).expand(n, 32, 32)
    ids = torch.arange(n, dtype=torch.uint8).view(n, 1, 1).expand(n, 32, 32)
    return torch.stack([rows, cols, ids], 1).contiguous(), torch.arange(n)


def _unnormalize(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(xl.loader.CIFAR10_MEAN).view(1, 3, 1, 1) * 255
    std = torch.tensor(xl.loader.CIFAR10_STD).view(1, 3, 1, 1) * 255
    return (x * std + mean).round().to(torch.int64)


def test_loader_shapes_and_eval_order(cifar10: xl.data.CifarArrays) -> None:
    images, labels = cifar10.test_images[:1000], cifar10.test_labels[:1000]
    loader = xl.data.GpuLoader(images, labels, batch_size=300, train=False)
    assert len(loader) == 4  # 300 + 300 + 300 + 100: nothing dropped when evaluating
    batches = list(loader)
    assert [len(y) for _, y in batches] == [300, 300, 300, 100]
    x, y = batches[0]
    assert x.shape == (300, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.equal(torch.cat([y for _, y in batches]), labels)
    assert torch.equal(_unnormalize(torch.cat([x for x, _ in batches])), images.long())
    train = xl.data.GpuLoader(images, labels, batch_size=300, channels_last=True)
    assert len(train) == 3  # drop_last for training
    x, _ = next(iter(train))
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert abs(float(x.mean())) < 0.3 and 0.8 < float(x.std()) < 1.3  # roughly standardised


def test_augmentation_statistics() -> None:
    n, p = 256, 4
    images, labels = _coordinate_images(n)
    loader = xl.data.GpuLoader(images, labels, batch_size=64, crop_padding=p, seed=0)
    shifts_y, shifts_x, flipped = [], [], []
    for _ in range(8):  # 8 epochs x 256 images
        for x, y in loader:
            x = _unnormalize(x)
            assert x.min() >= 0 and x.max() <= 255
            for image, label in zip(x, y):
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
    loader = xl.data.GpuLoader(images, labels, batch_size=32, drop_last=False, seed=5)
    epoch0 = torch.cat([y for _, y in loader])
    epoch1 = torch.cat([y for _, y in loader])
    assert sorted(epoch0.tolist()) == list(range(100)) == sorted(epoch1.tolist())
    assert not torch.equal(epoch0, epoch1)
    again = xl.data.GpuLoader(images, labels, batch_size=32, drop_last=False, seed=5)
    again.set_epoch(1)
    assert torch.equal(torch.cat([y for _, y in again]), epoch1)
    assert again.epoch == 2  # iterating advances the epoch
    again.set_epoch(1)
    x1 = torch.cat([x for x, _ in again])
    again.set_epoch(1)
    assert torch.equal(torch.cat([x for x, _ in again]), x1)
    other_seed = torch.cat([y for _, y in xl.data.GpuLoader(images, labels, batch_size=32, drop_last=False, seed=6)])
    assert not torch.equal(other_seed, epoch0)


def test_shards_make_up_the_global_batch() -> None:
    images, labels = _coordinate_images(96)
    whole = list(xl.data.GpuLoader(images, labels, batch_size=32, seed=2))
    shards = [list(xl.data.GpuLoader(images, labels, batch_size=16, seed=2, rank=r, world_size=2)) for r in range(2)]
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
        xl.data.GpuLoader(images.float(), labels)
    with pytest.raises(ValueError, match="8 labels"):
        xl.data.GpuLoader(images, labels[:5])
    with pytest.raises(ValueError, match="batch_size"):
        xl.data.GpuLoader(images, labels, batch_size=0)
    with pytest.raises(ValueError, match="rank"):
        xl.data.GpuLoader(images, labels, rank=2, world_size=2)


def test_augment_views_stay_within_padding() -> None:
    images, labels = _coordinate_images(4)
    loader = xl.data.GpuLoader(images, labels, crop_padding=2)
    views = loader.augment(torch.tensor([1] * 16))
    assert views.shape == (16, 3, 32, 32) and views.dtype == torch.uint8
    assert torch.all(views[:, 2][(views[:, 0] > 0)] == 1)
    assert len({bytes(v.numpy()) for v in views}) > 4  # different crops and flips


def test_compare_loaders_reports_both_rates(cifar10: xl.data.CifarArrays) -> None:
    threads = torch.get_num_threads()
    result = xl.data.compare_loaders(
        cifar10.train_images[:2000], cifar10.train_labels[:2000], batch_size=100, num_batches=3, repeats=1, num_workers=2
    )
    assert result["gpu_loader"] > 0 and result["dataloader"] > 0
    assert result["ratio"] == pytest.approx(result["gpu_loader"] / result["dataloader"])
    assert result["threads"] == 1 and torch.get_num_threads() == threads  # restored
    with pytest.raises(ValueError, match="at least"):
        xl.data.compare_loaders(cifar10.train_images[:100], cifar10.train_labels[:100], batch_size=100)
