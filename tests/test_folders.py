"""Your own images (xception_lib.folders): good and bad folders and zips."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import xception_lib as xl
from xception_lib.folders import ImageArrays, arrays_from_datasets, load_folder


def write_image(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (40, 24)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def make_folder(root: Path, classes: dict[str, int]) -> Path:
    for i, (name, n) in enumerate(classes.items()):
        for j in range(n):
            suffix = ".png" if j % 2 else ".jpg"
            write_image(root / name / f"{j}{suffix}", (60 * i, 100, 20 * j))
    return root


def zip_folder(folder: Path, target: Path, *, top: str | None = None) -> Path:
    with zipfile.ZipFile(target, "w") as archive:
        for p in sorted(folder.rglob("*")):
            rel = p.relative_to(folder).as_posix()
            archive.write(p, f"{top}/{rel}" if top else rel)
    return target


def test_folder_gives_uint8_arrays_that_fit_takes(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "pets", {"cat": 5, "dog": 5, "fish": 5})
    (root / "cat" / ".DS_Store").write_bytes(b"junk")  # hidden files are skipped
    data = load_folder(root, image_size=16, test_fraction=0.2)
    assert isinstance(data, ImageArrays) and isinstance(data, xl.data.CifarArrays)
    assert data.classes == ("cat", "dog", "fish")
    assert data.train_images.dtype == torch.uint8 and data.train_images.shape == (12, 3, 16, 16)
    assert data.test_images.shape == (3, 3, 16, 16)
    assert torch.bincount(data.test_labels).tolist() == [1, 1, 1]
    # the red channel says the class: 0, 60, 120
    assert data.train_images[data.train_labels == 2][:, 0].float().mean().item() == pytest.approx(120, abs=2)
    assert data.mean == pytest.approx((0.4914, 0.4822, 0.4465))


@pytest.mark.slow
def test_fit_trains_on_a_folder(tmp_path: Path) -> None:
    data = load_folder(make_folder(tmp_path / "pets", {"cat": 4, "dog": 4}), image_size=16)
    model = xl.xception_cifar(2, width_multiplier=0.125, middle_blocks=1)
    history = xl.train.fit(
        model, data, xl.train.TrainConfig(epochs=1, batch_size=4, amp="off"), device="cpu", progress=False
    )
    assert history.epochs == 1 and history.train_loss[0] > 0


def test_same_images_from_a_zip_with_or_without_top_folder(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "pets", {"cat": 3, "dog": 4})
    folder = load_folder(root, image_size=8, seed=3)
    for top in (None, "pets"):
        zipped = load_folder(zip_folder(root, tmp_path / f"p{top}.zip", top=top), image_size=8, seed=3)
        assert zipped.classes == folder.classes
        assert torch.equal(zipped.train_images, folder.train_images)
        assert torch.equal(zipped.test_labels, folder.test_labels)


def test_train_and_test_subfolders_are_the_splits(tmp_path: Path) -> None:
    make_folder(tmp_path / "d" / "train", {"a": 3, "b": 2})
    make_folder(tmp_path / "d" / "test", {"a": 1, "b": 1})
    data = load_folder(tmp_path / "d", image_size=8)
    assert data.classes == ("a", "b") and len(data.train_labels) == 5 and len(data.test_labels) == 2
    make_folder(tmp_path / "d" / "test", {"c": 1})
    with pytest.raises(ValueError, match="make them the same"):
        load_folder(tmp_path / "d", image_size=8)


def test_resize_crops_the_centre(tmp_path: Path) -> None:
    array = np.zeros((20, 60, 3), np.uint8)
    array[:, 20:40] = 255  # a white square in the middle of a wide black image
    for name in ("a", "b"):
        (tmp_path / "x" / name).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(array).save(tmp_path / "x" / name / f"{i}.png")
    data = load_folder(tmp_path / "x", image_size=10)
    assert data.train_images.float().mean().item() > 240  # squashed, not cropped, it would be about 85


def test_missing_and_empty(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_folder(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="is empty"):
        load_folder(tmp_path / "empty")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ValueError, match="neither a folder nor a .zip"):
        load_folder(tmp_path / "file.txt")


def test_class_without_images_and_single_class(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "p", {"cat": 3, "dog": 3})
    (root / "bird").mkdir()
    with pytest.raises(ValueError, match="no images: bird"):
        load_folder(root)
    zipped = zip_folder(root, tmp_path / "p.zip")
    with pytest.raises(ValueError, match="no images: bird"):
        load_folder(zipped)
    single = make_folder(tmp_path / "s", {"cat": 3})
    with pytest.raises(ValueError, match="only one class"):
        load_folder(single)
    few = make_folder(tmp_path / "f", {"cat": 3, "dog": 1})
    with pytest.raises(ValueError, match="'dog' has 1 image"):
        load_folder(few)


def test_files_that_are_not_images_are_named(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "p", {"cat": 3, "dog": 3})
    (root / "dog" / "notes.txt").write_text("not a picture")
    (root / "cat" / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(ValueError, match=r"cat/broken.jpg, dog/notes.txt") as error:
        load_folder(root)
    assert "remove these files" in str(error.value)
    (root / "loose.jpg").write_bytes((root / "cat" / "0.jpg").read_bytes())
    with pytest.raises(ValueError, match="outside a class folder: loose.jpg"):
        load_folder(root)


@pytest.mark.parametrize("member", ["../evil/x.jpg", "/etc/evil.jpg", "a/../../x.jpg", "C:/x.jpg"])
def test_zip_path_traversal_is_refused(tmp_path: Path, member: str) -> None:
    root = make_folder(tmp_path / "p", {"cat": 2, "dog": 2})
    target = zip_folder(root, tmp_path / "evil.zip")
    with zipfile.ZipFile(target, "a") as archive:
        archive.writestr(member, (root / "cat" / "0.jpg").read_bytes())
    with pytest.raises(ValueError, match="would land outside"):
        load_folder(target)
    assert not (tmp_path / "evil").exists()


def test_not_a_zip(tmp_path: Path) -> None:
    (tmp_path / "x.zip").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable zip"):
        load_folder(tmp_path / "x.zip")


def test_arrays_from_datasets_like_torchvision(tmp_path: Path) -> None:
    pairs = [(Image.new("RGB", (50, 30), (10 * i, 0, 0)), i % 2) for i in range(6)]
    data = arrays_from_datasets(pairs[:4], pairs[4:], ["a", "b"], image_size=12, mean=(0.5,) * 3, std=(0.5,) * 3)
    assert data.train_images.shape == (4, 3, 12, 12) and data.test_labels.tolist() == [0, 1]
    assert data.mean == (0.5, 0.5, 0.5) and data.subset(train=2).std == (0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match="label 2 is not in 0..1"):
        arrays_from_datasets([(pairs[0][0], 2)], pairs, ["a", "b"], image_size=8, mean=(0.5,) * 3, std=(0.5,) * 3)


def test_repr_is_short(tmp_path: Path) -> None:
    data = load_folder(make_folder(tmp_path / "p", {"cat": 2, "dog": 2}), image_size=8)
    assert repr(data) == (
        f"ImageArrays(name='p', train=(2, 3, 8, 8), test=(2, 3, 8, 8), classes=('cat', 'dog'), "
        f"source={str(tmp_path / 'p')!r})"
    )


def test_str_is_a_few_short_lines(tmp_path: Path) -> None:
    """``print(data)`` on a page: the class names shortened to fit the column, the sizes, the source."""
    data = load_folder(make_folder(tmp_path / "p", {"cat": 2, "dog": 2}), image_size=8)
    assert str(data).splitlines() == [
        "p: 2 classes: cat, dog",
        "train (2, 3, 8, 8), test (2, 3, 8, 8)",
        f"from {tmp_path / 'p'}",
    ]
    pairs = [(Image.new("RGB", (20, 20)), i) for i in range(102)]
    names = [f"flower number {i}" for i in range(102)]
    many = arrays_from_datasets(pairs, pairs, names, image_size=8, mean=(0.5,) * 3, std=(0.5,) * 3, name="flowers")
    first = str(many).splitlines()[0]
    assert first.startswith("flowers: 102 classes: flower number 0, ") and first.endswith(", ...")
    assert all(len(line) <= 80 for line in str(many).splitlines()[:2])
