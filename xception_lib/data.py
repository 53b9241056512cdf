"""CIFAR-10 and CIFAR-100 as uint8 tensors, decoded once and cached.

:func:`load_cifar` finds the data in one of these places, in this order:

1. ``root`` (an argument) or, when it is ``None``, the environment variable
   ``XCEPTION_DATA``. Either may point at

   * an archive (``.tar``, ``.tar.gz``, ``.tar.xz``, ``.zip``) in ImageFolder layout,
     such as the offline copy ``cifar10-jpeg.tar.xz``;
   * an ImageFolder tree ``train/<class>/*.jpg`` and ``test/<class>/*.jpg``;
   * torchvision's extracted pickles (``cifar-10-batches-py`` or ``cifar-100-python``);
   * or a directory holding any of these (for example ``cifar10-jpeg.tar.xz``).

2. Otherwise, torchvision's ``download=True`` into ``~/.cache/xception_lib/torchvision``.

Decoding 60,000 JPEGs takes seconds; the decoded arrays are therefore stored once under
``~/.cache/xception_lib`` (or ``XCEPTION_CACHE``), keyed by the source's path, size and
modification time, and the next load memory-maps them in well under a second.

The GPU-resident loader lives in :mod:`xception_lib.loader` and is re-exported here as
:class:`GpuLoader`, with :func:`compare_loaders` that measures it against torchvision's
``DataLoader``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pickle
import tarfile
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from xception_lib.checkpoint import atomic_save
from xception_lib.loader import GpuLoader, compare_loaders

__all__ = [
    "CACHE_ENV_VAR",
    "DATASETS",
    "ENV_VAR",
    "CifarArrays",
    "DataNotFoundError",
    "GpuLoader",
    "cache_dir",
    "compare_loaders",
    "load_cifar",
]

ENV_VAR = "XCEPTION_DATA"
"""Environment variable naming a local copy of the data (a directory or an archive)."""

CACHE_ENV_VAR = "XCEPTION_CACHE"
"""Environment variable overriding the cache directory (default ``~/.cache/xception_lib``)."""

# Per-dataset facts: torchvision's folder name and class, pickle keys, and the channel
# statistics of the training set (the usual normalisation constants).
DATASETS: dict[str, dict[str, object]] = {
    "cifar10": {
        "title": "CIFAR-10",
        "torchvision_dir": "cifar-10-batches-py",
        "torchvision_class": "CIFAR10",
        "train_files": tuple(f"data_batch_{i}" for i in range(1, 6)),
        "test_files": ("test_batch",),
        "meta_file": "batches.meta",
        "meta_key": "label_names",
        "label_key": "labels",
        "mean": (0.4914, 0.4822, 0.4465),
        "std": (0.2470, 0.2435, 0.2616),
    },
    "cifar100": {
        "title": "CIFAR-100",
        "torchvision_dir": "cifar-100-python",
        "torchvision_class": "CIFAR100",
        "train_files": ("train",),
        "test_files": ("test",),
        "meta_file": "meta",
        "meta_key": "fine_label_names",
        "label_key": "fine_labels",
        "mean": (0.5071, 0.4865, 0.4409),
        "std": (0.2673, 0.2564, 0.2762),
    },
}

_ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.bz2", ".zip")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
_CACHE_VERSION = 1


class DataNotFoundError(FileNotFoundError):
    """The dataset is neither at the given location nor downloadable."""


@dataclass(frozen=True, eq=False)
class CifarArrays:
    """A CIFAR split pair held as tensors.

    Attributes:
        name: ``"cifar10"`` or ``"cifar100"``.
        train_images: ``N x 3 x 32 x 32`` uint8 training images.
        train_labels: ``N`` int64 training labels.
        test_images: ``M x 3 x 32 x 32`` uint8 test images.
        test_labels: ``M`` int64 test labels.
        classes: Class names, index = label.
        source: Where the arrays were decoded from (a path, or ``"subset of ..."``).
    """

    name: str
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    classes: tuple[str, ...]
    source: str

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def mean(self) -> tuple[float, float, float]:
        """Per-channel mean of the training images in [0, 1] (the usual constants)."""
        return DATASETS[self.name]["mean"]  # type: ignore[return-value]

    @property
    def std(self) -> tuple[float, float, float]:
        """Per-channel standard deviation of the training images in [0, 1]."""
        return DATASETS[self.name]["std"]  # type: ignore[return-value]

    def subset(self, train: int | None = None, test: int | None = None, *, seed: int = 0) -> CifarArrays:
        """A random subset (same ``seed``, same images) of the training and/or test split.

        Each split's choice depends only on its size and ``seed``, so ``subset(test=n)``
        gives the test images that ``subset(train=m, test=n)`` gives.

        Args:
            train: Number of training images to keep (``None``: all).
            test: Number of test images to keep (``None``: all).
            seed: Seed of the random choice.
        """

        def pick(images: torch.Tensor, labels: torch.Tensor, n: int | None, what: str) -> tuple[torch.Tensor, ...]:
            if n is None:
                return images, labels
            if not 0 < n <= len(labels):
                raise ValueError(f"{what} subset must be in 1..{len(labels)}, got {n}")
            # One generator per split: subset(test=n) picks the same test images as subset(train=m, test=n).
            g = torch.Generator().manual_seed(seed)
            idx = torch.randperm(len(labels), generator=g)[:n].sort().values
            return images[idx], labels[idx]

        tr_x, tr_y = pick(self.train_images, self.train_labels, train, "train")
        te_x, te_y = pick(self.test_images, self.test_labels, test, "test")
        return dataclasses.replace(
            self,
            train_images=tr_x,
            train_labels=tr_y,
            test_images=te_x,
            test_labels=te_y,
            source=f"subset (train={len(tr_y)}, test={len(te_y)}, seed={seed}) of {self.source}",
        )

    def __repr__(self) -> str:
        return (
            f"CifarArrays(name={self.name!r}, train={tuple(self.train_images.shape)}, "
            f"test={tuple(self.test_images.shape)}, classes={len(self.classes)}, source={self.source!r})"
        )


def cache_dir(path: str | os.PathLike[str] | None = None) -> Path:
    """The cache directory: ``path``, else ``$XCEPTION_CACHE``, else ``~/.cache/xception_lib``."""
    if path is not None:
        return Path(path).expanduser()
    env = os.environ.get(CACHE_ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "xception_lib"


def load_cifar(
    name: str = "cifar10",
    root: str | os.PathLike[str] | None = None,
    *,
    cache: str | os.PathLike[str] | None = None,
    download: bool = True,
) -> CifarArrays:
    """Load CIFAR-10 or CIFAR-100 as uint8 tensors (decoded once, then cached).

    Args:
        name: ``"cifar10"`` or ``"cifar100"``.
        root: A local copy: an archive, an ImageFolder tree, torchvision's pickles, or a
            directory holding one of them. ``None``: the environment variable
            ``XCEPTION_DATA``, and if that is unset, torchvision's download.
        cache: Cache directory (default: :func:`cache_dir`).
        download: Whether torchvision may download the data when no local copy is given.

    Returns:
        The train and test arrays, class names and where they came from.

    Raises:
        DataNotFoundError: Neither a local copy nor a download is available; the message
            says how to provide either.
    """
    key = name.lower().replace("-", "").replace("_", "")
    if key not in DATASETS:
        raise ValueError(f"name must be one of {sorted(DATASETS)}, got {name!r}")
    cache_root = cache_dir(cache)
    if root is None and os.environ.get(ENV_VAR):
        root = os.environ[ENV_VAR]

    if root is not None:
        found = _find_source(Path(root).expanduser(), key)
        if found is None:
            raise DataNotFoundError(_missing_message(key, cache_root, f"nothing usable at {str(root)!r}"))
    else:
        download_root = cache_root / "torchvision"
        found = _find_source(download_root, key)
        if found is None:
            if not download:
                raise DataNotFoundError(_missing_message(key, cache_root, "no local copy given and download=False"))
            _torchvision_download(key, download_root, cache_root)
            found = _find_source(download_root, key)
            if found is None:  # pragma: no cover - torchvision changed its layout
                raise DataNotFoundError(_missing_message(key, cache_root, "torchvision's download left no data"))
    kind, path = found
    return _load_cached(key, kind, path, cache_root)


def _missing_message(name: str, cache_root: Path, reason: str) -> str:
    info = DATASETS[name]
    return (
        f"{info['title']} data not found ({reason}). Provide it in one of two ways:\n"
        f"  1. a local copy: pass root=... to load_cifar, or set the environment variable {ENV_VAR}, "
        f"to an archive or directory holding {name}-jpeg.tar.xz, an ImageFolder tree "
        f"(train/<class>/*.jpg and test/<class>/*.jpg) or torchvision's {info['torchvision_dir']};\n"
        f"  2. network access, so that torchvision can download it (download=True) "
        f"into {cache_root / 'torchvision'}."
    )


def _torchvision_download(name: str, download_root: Path, cache_root: Path) -> None:
    import warnings

    import torchvision

    dataset_class = getattr(torchvision.datasets, str(DATASETS[name]["torchvision_class"]))
    try:
        download_root.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset_class(root=str(download_root), train=True, download=True)
            dataset_class(root=str(download_root), train=False, download=True)
    except Exception as error:  # network errors come as URLError, HTTPError, RuntimeError, ...
        raise DataNotFoundError(
            _missing_message(name, cache_root, f"torchvision's download failed: {type(error).__name__}: {error}")
        ) from error


# ----------------------------------------------------------------------------- finding


def _is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(_ARCHIVE_SUFFIXES)


def _is_image_folder(path: Path) -> bool:
    return (path / "train").is_dir() and (path / "test").is_dir()


def _find_source(root: Path, name: str) -> tuple[str, Path] | None:
    """``("archive" | "folder" | "pickles", path)`` for the first usable copy at ``root``."""
    if root.is_file():
        return ("archive", root) if _is_archive(root) else None
    if not root.is_dir():
        return None
    tv_dir = str(DATASETS[name]["torchvision_dir"])
    if root.name == tv_dir:
        return "pickles", root
    if (root / tv_dir).is_dir():
        return "pickles", root / tv_dir
    if _is_image_folder(root):
        return "folder", root
    for stem in (f"{name}-jpeg", name):
        if _is_image_folder(root / stem):
            return "folder", root / stem
        for suffix in _ARCHIVE_SUFFIXES:
            if _is_archive(root / f"{stem}{suffix}"):
                return "archive", root / f"{stem}{suffix}"
    return None


# ----------------------------------------------------------------------------- caching


def _load_cached(name: str, kind: str, path: Path, cache_root: Path) -> CifarArrays:
    path = path.resolve()
    stat = path.stat()
    fingerprint = f"v{_CACHE_VERSION}|{name}|{kind}|{path}|{stat.st_size}|{stat.st_mtime_ns}"
    digest = hashlib.sha1(fingerprint.encode()).hexdigest()[:16]
    cache_file = cache_root / f"{name}-{digest}.pt"
    if cache_file.exists():
        try:
            stored = torch.load(cache_file, map_location="cpu", mmap=True, weights_only=True)
            return _arrays_from_dict(name, stored, str(path))
        except Exception:  # a truncated or foreign file: decode again and overwrite it
            pass
    arrays = _decode(name, kind, path)
    atomic_save(
        {
            "train_images": arrays.train_images,
            "train_labels": arrays.train_labels,
            "test_images": arrays.test_images,
            "test_labels": arrays.test_labels,
            "classes": list(arrays.classes),
        },
        cache_file,
    )
    return arrays


def _arrays_from_dict(name: str, stored: dict[str, object], source: str) -> CifarArrays:
    return CifarArrays(
        name=name,
        train_images=stored["train_images"],  # type: ignore[arg-type]
        train_labels=stored["train_labels"],  # type: ignore[arg-type]
        test_images=stored["test_images"],  # type: ignore[arg-type]
        test_labels=stored["test_labels"],  # type: ignore[arg-type]
        classes=tuple(stored["classes"]),  # type: ignore[arg-type]
        source=source,
    )


# ----------------------------------------------------------------------------- decoding


def _decode(name: str, kind: str, path: Path) -> CifarArrays:
    if kind == "pickles":
        return _decode_pickles(name, path)
    files = _archive_files(path) if kind == "archive" else _folder_files(path)
    pickled: dict[str, bytes] = {}
    samples: dict[str, list[tuple[str, str, np.ndarray]]] = {"train": [], "test": []}
    wanted_pickles = _pickle_names(name)
    for member, read in files:
        parts = PurePosixPath(member).parts
        if parts and parts[-1] in wanted_pickles:
            pickled[parts[-1]] = read()
            continue
        if not member.lower().endswith(_IMAGE_SUFFIXES):
            continue
        located = _split_and_class(parts)
        if located is not None:
            split, label_name = located
            samples[split].append((label_name, parts[-1], _decode_image(read(), member)))
    if not samples["train"] and pickled:  # torchvision's own cifar-*-python.tar.gz
        return _arrays_from_pickles(name, pickled, str(path))
    if not samples["train"] or not samples["test"]:
        raise DataNotFoundError(
            f"{path} holds no ImageFolder layout: expected images under train/<class>/ and test/<class>/"
        )
    classes = tuple(sorted({label for label, _, _ in samples["train"]}))
    index = {c: i for i, c in enumerate(classes)}
    arrays = {}
    for split, items in samples.items():
        unknown = {label for label, _, _ in items} - set(index)
        if unknown:
            raise ValueError(f"{path}: {split} classes {sorted(unknown)} do not occur in train/ ({list(classes)})")
        items.sort(key=lambda item: (index[item[0]], item[1]))  # ImageFolder order: class, then file name
        arrays[f"{split}_images"] = torch.from_numpy(np.stack([img for _, _, img in items])).permute(0, 3, 1, 2)
        arrays[f"{split}_labels"] = torch.tensor([index[label] for label, _, _ in items], dtype=torch.int64)
    return CifarArrays(name=name, classes=classes, source=str(path), **{k: v.contiguous() for k, v in arrays.items()})


def _split_and_class(parts: tuple[str, ...]) -> tuple[str, str] | None:
    """``("train" | "test", class)`` of ``.../train/<class>/<file>``, or ``None``."""
    if len(parts) >= 3 and parts[-3] in ("train", "test"):
        return parts[-3], parts[-2]
    return None


def _decode_image(raw: bytes, member: str) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(raw)) as image:
        array = np.asarray(image.convert("RGB"))
    if array.shape != (32, 32, 3):
        raise ValueError(f"{member}: expected a 32x32 RGB image, got shape {array.shape}")
    return array


def _archive_files(path: Path) -> Iterator[tuple[str, object]]:
    """``(member name, read())`` for every regular file in a tar or zip archive, streamed."""
    if path.name.lower().endswith(".zip"):
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if not info.is_dir():
                    yield info.filename, (lambda info=info: archive.read(info))
        return
    with tarfile.open(path, "r:*") as archive:
        for member in archive:
            if member.isfile():
                handle = archive.extractfile(member)
                if handle is not None:
                    yield member.name, handle.read


def _folder_files(root: Path) -> Iterator[tuple[str, object]]:
    for directory, _, names in os.walk(root):
        for file_name in names:
            full = Path(directory) / file_name
            yield full.relative_to(root).as_posix(), full.read_bytes


# ----------------------------------------------------------------------------- torchvision pickles


def _pickle_names(name: str) -> set[str]:
    info = DATASETS[name]
    return {*info["train_files"], *info["test_files"], str(info["meta_file"])}  # type: ignore[misc]


def _decode_pickles(name: str, folder: Path) -> CifarArrays:
    files = {}
    for file_name in _pickle_names(name):
        if not (folder / file_name).is_file():
            raise DataNotFoundError(f"{folder} is incomplete: {file_name} is missing")
        files[file_name] = (folder / file_name).read_bytes()
    return _arrays_from_pickles(name, files, str(folder))


def _arrays_from_pickles(name: str, files: dict[str, bytes], source: str) -> CifarArrays:
    """Parse torchvision's pickled batches: ``data`` is N x 3072 uint8 in C, H, W order."""
    info = DATASETS[name]

    def load(file_name: str) -> dict[str, object]:
        if file_name not in files:
            raise DataNotFoundError(f"{source} is incomplete: {file_name} is missing")
        return pickle.loads(files[file_name], encoding="latin1")

    def split(file_names: Iterable[str]) -> tuple[torch.Tensor, torch.Tensor]:
        batches = [load(f) for f in file_names]
        images = np.concatenate([np.asarray(b["data"], dtype=np.uint8) for b in batches])
        labels = np.concatenate([np.asarray(b[info["label_key"]], dtype=np.int64) for b in batches])
        return torch.from_numpy(images.reshape(-1, 3, 32, 32).copy()), torch.from_numpy(labels)

    train_images, train_labels = split(info["train_files"])  # type: ignore[arg-type]
    test_images, test_labels = split(info["test_files"])  # type: ignore[arg-type]
    classes = tuple(load(str(info["meta_file"]))[str(info["meta_key"])])  # type: ignore[arg-type]
    return CifarArrays(name, train_images, train_labels, test_images, test_labels, classes, source)
