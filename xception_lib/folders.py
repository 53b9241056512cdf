"""Your own images: a folder (or a zip of one) with one sub-folder per class, as the arrays the library takes.

:func:`load_folder` reads the ImageFolder layout that torchvision and Keras use::

    pets/                      or a zip of it (pets.zip), with or without the top folder
        cat/  1.jpg  2.png ...
        dog/  ...

or, with a test split of your own, ``pets/train/<class>/...`` and ``pets/test/<class>/...``. Every image is
centre-cropped to a square and resized to ``image_size`` pixels, and the result is an :class:`ImageArrays`: a
:class:`~xception_lib.data.CifarArrays` (uint8 ``N x 3 x H x W`` tensors and class names, what ``fit``,
``GpuLoader``, ``evaluate`` and ``predict`` take) that carries the mean and standard deviation to normalise
with: those of the data the network was *trained* on, which is the preprocessing its weights expect.
:func:`arrays_from_datasets` makes the same from torchvision data sets (pairs of a PIL image and a label).
"""

from __future__ import annotations

import functools
import io
import os
import textwrap
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import torch

from xception_lib.data import DATASETS, CifarArrays

__all__ = ["ImageArrays", "arrays_from_datasets", "load_folder"]

_SKIPPED = ("Thumbs.db", "desktop.ini", "__MACOSX")  # besides hidden files (".*"), which are skipped too
_CIFAR10_STATS: tuple[tuple[float, ...], tuple[float, ...]] = (
    tuple(DATASETS["cifar10"]["mean"]),  # type: ignore[arg-type]
    tuple(DATASETS["cifar10"]["std"]),  # type: ignore[arg-type]
)


@dataclass(frozen=True, eq=False, repr=False)
class ImageArrays(CifarArrays):
    """:class:`~xception_lib.data.CifarArrays` of any images, with the normalisation to use.

    Attributes:
        normalisation: ``(mean, std)``, three values each in [0, 1]: the statistics of the images the network
            was trained on (CIFAR-10's for the book's small networks, ``(0.5,) * 3`` twice for the ImageNet
            Xception).
    """

    normalisation: tuple[tuple[float, ...], tuple[float, ...]] = _CIFAR10_STATS

    @property
    def mean(self) -> tuple[float, float, float]:
        return self.normalisation[0]  # type: ignore[return-value]

    @property
    def std(self) -> tuple[float, float, float]:
        return self.normalisation[1]  # type: ignore[return-value]

    def __repr__(self) -> str:
        return (
            f"ImageArrays(name={self.name!r}, train={tuple(self.train_images.shape)}, "
            f"test={tuple(self.test_images.shape)}, classes={self.classes}, source={self.source!r})"
        )

    def __str__(self) -> str:
        """Short lines for a page (``print(data)``): the classes (shortened), the sizes, the source."""
        classes = textwrap.shorten(", ".join(self.classes), width=60, placeholder=", ...")
        return (
            f"{self.name}: {len(self.classes)} classes: {classes}\n"
            f"train {tuple(self.train_images.shape)}, test {tuple(self.test_images.shape)}\n"
            f"from {self.source}"
        )


def load_folder(
    path: str | os.PathLike[str],
    *,
    image_size: int = 32,
    test_fraction: float = 0.2,
    seed: int = 0,
    mean: Sequence[float] = _CIFAR10_STATS[0],
    std: Sequence[float] = _CIFAR10_STATS[1],
) -> ImageArrays:
    """Read a folder of images, one sub-folder per class (or a zip of such a folder), as uint8 arrays.

    Args:
        path: The folder or ``.zip``. Its own ``train/`` and ``test/`` sub-folders, if it has both, are the
            splits; otherwise ``test_fraction`` of each class (at least one image) is held out at random.
        image_size: Side of the square images returned (centre crop, then bicubic resize).
        test_fraction: Share of each class held out for testing, in (0, 1).
        seed: Of the random hold-out.
        mean, std: The normalisation the network you will adapt expects (default CIFAR-10's).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: The folder is empty or not in this layout; a class has no images (or too few to split);
            there is only one class; a file is not an image (each is named); a zip member would land outside
            the folder it is extracted into (an absolute path or ``..``).
    """
    path = Path(path).expanduser()
    if not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a positive int, got {image_size!r}")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be between 0 and 1, got {test_fraction!r}")
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: pass a folder with one sub-folder per class, or a .zip of one")
    if path.is_dir():
        files = {p.relative_to(path).as_posix(): p.read_bytes for p in sorted(path.rglob("*")) if p.is_file()}
        folders = {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_dir()}
    elif path.suffix.lower() == ".zip":
        files, folders = _zip_files(path)
    else:
        raise ValueError(f"{path} is neither a folder nor a .zip file")
    files = {name: read for name, read in files.items() if not _skipped(name)}
    folders = {name for name in folders | {str(PurePosixPath(n).parent) for n in files} if not _skipped(name)} - {"."}
    files, folders = _strip_common_folder(files, folders)
    tops = {PurePosixPath(name).parts[0] for name in files if len(PurePosixPath(name).parts) > 1}
    if {"train", "test"} <= tops:
        train, test = (
            _classes(
                path / split,
                {n.split("/", 1)[1]: r for n, r in files.items() if n.startswith(f"{split}/")},
                {n.split("/", 1)[1] for n in folders if n.startswith(f"{split}/")},
            )
            for split in ("train", "test")
        )
        if sorted(train) != sorted(test):
            raise ValueError(
                f"{path}: train/ has the classes {sorted(train)} but test/ has {sorted(test)}; make them the same"
            )
    else:
        train, test = _split(path, _classes(path, files, folders), test_fraction, seed)
    classes = tuple(sorted(train))

    def decode(split: dict[str, list[tuple[str, Callable[[], bytes]]]]) -> tuple[torch.Tensor, torch.Tensor]:
        pairs = [(read, label) for label, c in enumerate(classes) for _, read in split[c]]
        names = [name for c in classes for name, _ in split[c]]
        images, bad = [], []
        for name, (read, _) in zip(names, pairs, strict=True):
            try:
                images.append(_to_uint8(_open_image(read()), image_size))
            except (OSError, ValueError):
                bad.append(name)
        if bad:
            shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
            raise ValueError(
                f"{path}: not readable as images: {shown}; remove these files or convert them to JPEG or PNG"
            )
        return torch.stack(images), torch.tensor([label for _, label in pairs], dtype=torch.int64)

    train_images, train_labels = decode(train)
    test_images, test_labels = decode(test)
    return ImageArrays(
        path.stem,
        train_images,
        train_labels,
        test_images,
        test_labels,
        classes,
        str(path),
        normalisation=_stats(mean, std),
    )


def arrays_from_datasets(
    train: Iterable[tuple[Any, int]],
    test: Iterable[tuple[Any, int]],
    classes: Sequence[str],
    *,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    name: str = "images",
) -> ImageArrays:
    """:class:`ImageArrays` from two data sets of ``(PIL image, label)`` pairs, as torchvision's data sets
    (``Flowers102``, ``OxfordIIITPet``, ...) give them without a transform: centre-cropped and resized to
    ``image_size``."""

    def split(pairs: Iterable[tuple[Any, int]], what: str) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = [], []
        for image, label in pairs:
            if not 0 <= int(label) < len(classes):
                raise ValueError(f"{what}: label {label} is not in 0..{len(classes) - 1} ({len(classes)} classes)")
            images.append(_to_uint8(image, image_size))
            labels.append(int(label))
        if not images:
            raise ValueError(f"{what} holds no images")
        return torch.stack(images), torch.tensor(labels, dtype=torch.int64)

    train_images, train_labels = split(train, "train")
    test_images, test_labels = split(test, "test")
    return ImageArrays(
        name,
        train_images,
        train_labels,
        test_images,
        test_labels,
        tuple(classes),
        name,
        normalisation=_stats(mean, std),
    )


def _stats(mean: Sequence[float], std: Sequence[float]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if len(mean) != 3 or len(std) != 3 or not all(0 <= m <= 1 for m in mean) or not all(s > 0 for s in std):
        raise ValueError(f"mean and std must be three values each (mean in [0, 1], std > 0), got {mean} and {std}")
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def _zip_files(path: Path) -> tuple[dict[str, Callable[[], bytes]], set[str]]:
    """The zip's files by name and its folders, after checking that none would be extracted outside its folder."""
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as error:
        raise ValueError(f"{path} is not a readable zip file ({error})") from None
    files: dict[str, Callable[[], bytes]] = {}
    folders: set[str] = set()
    for info in archive.infolist():
        name = info.filename.replace("\\", "/")
        parts = PurePosixPath(name).parts
        if name.startswith("/") or ".." in parts or (parts and ":" in parts[0]):
            raise ValueError(
                f"{path}: member {info.filename!r} would land outside the folder it is extracted into "
                "(an absolute path or '..'); refusing to read this zip"
            )
        if info.is_dir():
            folders.add(name.rstrip("/"))
        else:
            files[name] = functools.partial(archive.read, info)
    return files, folders


def _skipped(name: str) -> bool:
    return any(part.startswith(".") or part in _SKIPPED for part in PurePosixPath(name).parts)


def _strip_common_folder(
    files: dict[str, Callable[[], bytes]],
    folders: set[str],
) -> tuple[dict[str, Callable[[], bytes]], set[str]]:
    """Drop one top folder that holds everything (``pets/cat/1.jpg`` in ``pets.zip``), if there is one."""
    tops = {PurePosixPath(n).parts[0] for n in [*files, *folders]}
    if len(tops) == 1 and files and all(len(PurePosixPath(n).parts) >= 3 for n in files):
        return {n.split("/", 1)[1]: read for n, read in files.items()}, {
            n.split("/", 1)[1] for n in folders if "/" in n
        }
    return files, folders


def _classes(
    path: Path,
    files: dict[str, Callable[[], bytes]],
    folders: set[str],
) -> dict[str, list[tuple[str, Callable[[], bytes]]]]:
    """Files grouped by their top folder (the class); checks the layout."""
    example = f"{path}/<class name>/<image>.jpg, for example {path}/cat/1.jpg and {path}/dog/1.jpg"
    loose = sorted(n for n in files if "/" not in n)
    if loose:
        raise ValueError(f"{path}: files outside a class folder: {', '.join(loose[:5])}; expected {example}")
    if not files and not folders:
        raise ValueError(f"{path} is empty: expected {example}")
    by_class: dict[str, list[tuple[str, Callable[[], bytes]]]] = {c: [] for c in folders if "/" not in c}
    for name, read in sorted(files.items()):
        by_class.setdefault(name.split("/", 1)[0], []).append((name, read))
    empty = sorted(c for c, items in by_class.items() if not items)
    if empty:
        raise ValueError(f"{path}: class folder(s) with no images: {', '.join(empty)}; add images or remove the folder")
    if len(by_class) < 2:
        raise ValueError(f"{path}: only one class ({next(iter(by_class))}); a classifier needs at least two: {example}")
    return dict(sorted(by_class.items()))


def _split(
    path: Path,
    by_class: dict[str, list[tuple[str, Callable[[], bytes]]]],
    test_fraction: float,
    seed: int,
) -> tuple[dict[str, list[tuple[str, Callable[[], bytes]]]], dict[str, list[tuple[str, Callable[[], bytes]]]]]:
    train, test = {}, {}
    g = torch.Generator().manual_seed(seed)
    for c, items in sorted(by_class.items()):
        if len(items) < 2:
            raise ValueError(
                f"{path}: class {c!r} has {len(items)} image(s); it needs at least 2, one to train on "
                "and one to test on"
            )
        n_test = min(max(1, round(test_fraction * len(items))), len(items) - 1)
        order = torch.randperm(len(items), generator=g).tolist()
        test[c] = [items[i] for i in sorted(order[:n_test])]
        train[c] = [items[i] for i in sorted(order[n_test:])]
    return train, test


def _open_image(data: bytes) -> Any:
    from PIL import Image

    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def _to_uint8(image: Any, size: int) -> torch.Tensor:
    """A PIL image as a ``3 x size x size`` uint8 tensor: centre-cropped to a square, resized (bicubic)."""
    import numpy as np
    from PIL import Image, ImageOps

    square = ImageOps.fit(image.convert("RGB"), (size, size), Image.Resampling.BICUBIC)
    return torch.from_numpy(np.asarray(square, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()
