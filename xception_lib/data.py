"""CIFAR-10 and CIFAR-100 as uint8 tensors, decoded once, checked and cached.

A relative path in ``XCEPTION_DATA`` or ``XCEPTION_CACHE`` is taken from the root of the checkout holding the
working directory, so that ``../shared/data`` names one folder for the tests (run from the root) and the notebooks
(from ``book/``). A truncated archive, a half-copied folder or the other CIFAR is a :class:`DataError` naming the
file, never a partial load. Decoding 60,000 JPEGs takes seconds, so the arrays are cached under :func:`cache_dir`,
keyed by the source's path, sizes and modification times. Pickled batches are read by an unpickler that builds
nothing but dicts, lists, strings, numbers and numpy arrays: a pickle that would run code is refused.
"""

from __future__ import annotations

import codecs
import dataclasses
import functools
import hashlib
import io
import lzma
import os
import pickle
import tarfile
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch

from xception_lib.checkpoint import atomic_save
from xception_lib.loader import check_number

__all__ = [
    "DATASETS",
    "ENV_VAR",
    "CifarArrays",
    "DataError",
    "DataNotFoundError",
    "cache_dir",
    "load_cifar",
]

ENV_VAR = "XCEPTION_DATA"
"""Environment variable naming a local copy of the data (a directory or an archive)."""

# Per data set: the images of each class (train, test), torchvision's folder, pickled files and keys, and the
# channel statistics of the training set (the usual normalisation constants).
DATASETS: dict[str, dict[str, object]] = {
    "cifar10": {
        "num_classes": 10,
        "per_class": (5000, 1000),
        "torchvision_dir": "cifar-10-batches-py",
        "train_files": tuple(f"data_batch_{i}" for i in range(1, 6)),
        "test_files": ("test_batch",),
        "meta": ("batches.meta", "label_names"),  # file, key of the class names
        "label_key": "labels",
        "mean": (0.4914, 0.4822, 0.4465),
        "std": (0.2470, 0.2435, 0.2616),
    },
    "cifar100": {
        "num_classes": 100,
        "per_class": (500, 100),
        "torchvision_dir": "cifar-100-python",
        "train_files": ("train",),
        "test_files": ("test",),
        "meta": ("meta", "fine_label_names"),
        "label_key": "fine_labels",
        "mean": (0.5071, 0.4865, 0.4409),
        "std": (0.2673, 0.2564, 0.2762),
    },
}

_ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.bz2", ".zip")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
_SKIPPED_NAMES = ("Thumbs.db", "desktop.ini")  # besides hidden files (".*")
_ARRAY_KEYS = ("train_images", "train_labels", "test_images", "test_labels")
_READ_ERRORS = (OSError, EOFError, tarfile.TarError, zipfile.BadZipFile, lzma.LZMAError, zlib.error)  # damaged archives


class DataNotFoundError(FileNotFoundError):
    """The dataset is neither at the given location nor downloadable."""


class DataError(ValueError):
    """The data was found but is truncated, corrupt, or not the data set asked for."""


@dataclasses.dataclass(frozen=True, eq=False)
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
        """A random subset of the training and/or test split (``None``: whole). Each split's choice depends only on
        its size and ``seed``: ``subset(test=n)`` holds the test images of ``subset(train=m, test=n)``."""

        kept: dict[str, Any] = {}  # the tensors of each split
        for split, n in (("train", train), ("test", test)):
            x, y = getattr(self, f"{split}_images"), getattr(self, f"{split}_labels")
            if n is not None:
                check_number("CifarArrays.subset", split, n, integer=True, low=1, high=len(y))
                idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(int(seed)))[: int(n)].sort().values
                x, y = x[idx], y[idx]
            kept |= {f"{split}_images": x, f"{split}_labels": y}
        sizes = f"train={len(kept['train_labels'])}, test={len(kept['test_labels'])}"
        return dataclasses.replace(self, **kept, source=f"subset ({sizes}, seed={seed}) of {self.source}")

    def __repr__(self) -> str:
        shapes = f"train={tuple(self.train_images.shape)}, test={tuple(self.test_images.shape)}"
        return f"CifarArrays(name={self.name!r}, {shapes}, classes={len(self.classes)}, source={self.source!r})"


def cache_dir() -> Path:
    """The cache directory: ``$XCEPTION_CACHE``, else ``~/.cache/xception_lib``."""
    env = os.environ.get("XCEPTION_CACHE")
    return _env_path(env) if env else Path.home() / ".cache" / "xception_lib"


def _env_path(value: str) -> Path:
    """An environment variable's path, absolute: a relative one from the checkout's root, else the working folder."""
    path, cwd = Path(value).expanduser(), Path.cwd()
    checkouts = (d for d in (cwd, *cwd.parents) if (d / "_config.yml").is_file() and (d / "xception_lib").is_dir())
    return path if path.is_absolute() else Path(os.path.normpath(next(checkouts, cwd) / path))


def load_cifar(
    name: str = "cifar10",
    root: str | os.PathLike[str] | None = None,
    *,
    download: bool = True,
) -> CifarArrays:
    """Load CIFAR-10 or CIFAR-100 as uint8 tensors (decoded once, then cached).

    Args:
        name: ``"cifar10"`` or ``"cifar100"``.
        root: A local copy: an archive, an ImageFolder tree (``train/<class>/*.jpg``, ``test/<class>/*.jpg``),
            torchvision's pickles, or a directory holding one of them. ``None``: the environment variable
            ``XCEPTION_DATA``, and if that is unset, torchvision's download.
        download: Whether torchvision may download the data when no local copy is given.

    Raises:
        DataNotFoundError: Neither a local copy nor a download is available; the message says how to provide either.
        DataError: The copy is truncated, corrupt, holds files it should not (in a class folder, anything but 32x32
            images, hidden files and ``Thumbs.db``) or is not the data set asked for; the message names the file.
    """
    key = name.lower().replace("-", "").replace("_", "") if isinstance(name, str) else name
    if key not in DATASETS:
        raise ValueError(f"name must be one of {sorted(DATASETS)}, got {name!r}")
    if not isinstance(download, bool):
        raise TypeError(f"download must be True or False, got {download!r}")
    cache_root = cache_dir()
    env = os.environ.get(ENV_VAR) if root is None else None

    def missing(reason: str) -> DataNotFoundError:
        return DataNotFoundError(
            f"CIFAR-{key[5:]} data not found: {reason}. Provide it in one of two ways:\n  1. a local copy: pass "
            f"root=... to load_cifar, or set the environment variable {ENV_VAR}, to an archive or directory holding "
            f"{key}-jpeg.tar.xz, an ImageFolder tree (train/<class>/*.jpg and test/<class>/*.jpg) or torchvision's "
            f"{DATASETS[key]['torchvision_dir']};\n  2. network access, so that torchvision can download it "
            f"(download=True, {ENV_VAR} unset) into {cache_root / 'torchvision'}."
        )

    source = Path(root).expanduser() if root is not None else _env_path(env) if env else None
    if source is not None:
        where = f"root={str(root)!r}" if env is None else f"{ENV_VAR}={env!r}"
        if env and source != Path(env).expanduser():
            where += f" (resolved to {source})"
        if (found := _find_source(source, key)) is None:
            raise missing(f"{where} {'holds no copy of it' if source.exists() else 'does not exist'}")
    else:
        found = _find_source(cache_root / "torchvision", key)
        if found is None and not download:
            raise missing("no local copy given and download=False")
        if found is None:
            import torchvision

            try:  # one call: the archive holds both splits
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    getattr(torchvision.datasets, key.upper())(root=str(cache_root / "torchvision"), download=True)
            except Exception as error:  # network errors come as URLError, HTTPError, RuntimeError, ...
                raise missing(f"torchvision's download failed: {type(error).__name__}: {error}") from error
            found = _find_source(cache_root / "torchvision", key)
        if found is None:  # pragma: no cover - torchvision changed its layout
            raise missing("torchvision's download left no data")
    return _load_cached(key, found, cache_root)


def _find_source(root: Path, name: str) -> Path | None:
    """The first usable copy at or in ``root``: an archive, torchvision's folder or an ImageFolder tree."""
    tv_dir = str(DATASETS[name]["torchvision_dir"])
    inside = (root / f"{stem}{suffix}" for stem in (f"{name}-jpeg", name) for suffix in ("", *_ARCHIVE_SUFFIXES))
    for path in (root, root / tv_dir, *inside):
        archive = path.is_file() and path.name.lower().endswith(_ARCHIVE_SUFFIXES)
        tree = (path / "train").is_dir() and (path / "test").is_dir()
        if archive or tree or (path.is_dir() and path.name == tv_dir):
            return path
    return None


# ----------------------------------------------------------------------------- checking and caching


def _check(name: str, classes: tuple[str, ...], labels: tuple[torch.Tensor, ...], source: str) -> None:
    """Raise :class:`DataError` unless the classes and the (train, test) labels make the data set asked for."""
    title, n = f"CIFAR-{name[5:]}", len(classes)
    if n != DATASETS[name]["num_classes"]:
        like = "".join(f"; it looks like CIFAR-{k[5:]}: load it with name={k!r}" for k in DATASETS if k[5:] == str(n))
        shown = ", ".join(classes[:12]) + (", ..." if n > 12 else "")
        raise DataError(f"{source} holds {n} classes ({shown}), but {title} has {DATASETS[name]['num_classes']}{like}")
    for split, y, want in zip(("train", "test"), labels, DATASETS[name]["per_class"], strict=True):  # type: ignore[call-overload]
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= n):
            raise DataError(f"{source}: {split} labels outside 0..{n - 1}: the copy is corrupt")
        counts = torch.bincount(y, minlength=n).tolist()
        if any(c != want for c in counts):
            wrong = ", ".join(f"{classes[i]}: {c:,}" for i, c in enumerate(counts) if c != want)
            what = "it is truncated or incomplete: copy or download it again"
            if max(counts) > want:
                what = "it holds extra images: remove the files that do not belong"
            raise DataError(
                f"{source}: the {split} split has {len(y):,} images, {want:,} per class expected "
                f"({title}), but {wrong[:300]}; {what}"
            )


def _load_cached(name: str, path: Path, cache_root: Path) -> CifarArrays:
    path = path.resolve()
    # An archive is known by its size and time; a folder by those of every file in it.
    if path.is_file():
        state = f"archive|{path}|{path.stat().st_size}|{path.stat().st_mtime_ns}"
    else:
        files = sorted(str(f) for f in _walk(path) if f.exists())  # a broken link is named when it is read
        state = f"folder|{path}|" + "|".join(f"{f}:{s.st_size}:{s.st_mtime_ns}" for f in files for s in [os.stat(f)])
    fingerprint = f"v1|{name}|{state}"  # v1: the cache file's layout
    cache_file = cache_root / f"{name}-{hashlib.sha1(fingerprint.encode()).hexdigest()[:16]}.pt"
    try:
        stored = torch.load(cache_file, map_location="cpu", mmap=True, weights_only=True)
        arrays = CifarArrays(
            name, classes=tuple(stored["classes"]), source=str(path), **{k: stored[k] for k in _ARRAY_KEYS}
        )
        for x, y in ((arrays.train_images, arrays.train_labels), (arrays.test_images, arrays.test_labels)):
            if x.dtype != torch.uint8 or x.shape[1:] != (3, 32, 32) or y.dtype != torch.int64 or y.shape != x.shape[:1]:
                raise ValueError("its arrays have the wrong type or shape")  # damaged or foreign, as KeyError, ...
        if not all(isinstance(c, str) for c in arrays.classes):
            raise ValueError("its class names are not strings")
        _check(name, arrays.classes, (arrays.train_labels, arrays.test_labels), str(path))
        return arrays
    except (FileNotFoundError, NotADirectoryError, DataError):
        pass  # no cache yet, or one that is not what was asked for: the source decides, below
    except Exception as error:  # truncated, corrupt or foreign: torch and pickle raise many kinds
        warnings.warn(
            f"The cache file {cache_file} is unreadable ({type(error).__name__}: {error}); decoding {path} again to "
            f"replace it.",
            stacklevel=3,
        )
    arrays = _decode(name, path)
    _check(name, arrays.classes, (arrays.train_labels, arrays.test_labels), str(path))  # pickles
    try:
        atomic_save({k: getattr(arrays, k) for k in _ARRAY_KEYS} | {"classes": list(arrays.classes)}, cache_file)
    except OSError as error:
        warnings.warn(
            f"Could not write the cache file {cache_file} ({error}); the data is returned but will "
            f"be decoded again next time. Set XCEPTION_CACHE to a writable directory.",
            stacklevel=3,
        )
    return arrays


# ----------------------------------------------------------------------------- decoding


def _decode(name: str, path: Path) -> CifarArrays:
    info, pickled, member = DATASETS[name], {}, None
    wanted_pickles = {*info["train_files"], *info["test_files"], info["meta"][0]}  # type: ignore[index, misc]
    found: dict[str, list[tuple[str, str, bytes]]] = {"train": [], "test": []}  # (class, member, bytes)
    try:
        for member, read in _files(path):
            parts = PurePosixPath(member).parts
            if parts[-1] in wanted_pickles:
                pickled[parts[-1]] = read()
            elif len(parts) < 3 or parts[-3] not in found or parts[-1].startswith(".") or parts[-1] in _SKIPPED_NAMES:
                continue  # outside train/<class>/ and test/<class>/ (a README), or a stray file by its name
            elif not parts[-1].lower().endswith(_IMAGE_SUFFIXES):
                raise DataError(f"{path}: {member} is not an image ({', '.join(_IMAGE_SUFFIXES)}); remove it")
            else:
                found[parts[-3]].append((parts[-2], member, read()))
    except _READ_ERRORS as error:
        at = f" at {member}" if member else " (it does not open)"
        detail = str(error).splitlines()[0].rstrip(":. ")
        raise DataError(
            f"{path} cannot be read{at}: {type(error).__name__}: {detail}. "
            f"The file is truncated, corrupt, unreadable or of another kind; copy or download it again."
        ) from error
    if not found["train"] and (pickled or path.name == info["torchvision_dir"]):  # torchvision's folder or archive
        return _arrays_from_pickles(name, pickled, str(path))
    if not found["train"] or not found["test"]:
        raise DataError(f"{path} holds no ImageFolder layout: expected images under train/<class>/ and test/<class>/")
    classes = tuple(sorted({label for label, _, _ in found["train"]}))
    index = {c: i for i, c in enumerate(classes)}
    if unknown := {label for label, _, _ in found["test"]} - set(index):
        raise DataError(f"{path}: test classes {sorted(unknown)} do not occur in train/ ({list(classes)})")
    for items in found.values():  # ImageFolder order: class, then file name
        items.sort(key=lambda item: (index[item[0]], PurePosixPath(item[1]).name))
    y = {f"{s}_labels": torch.tensor([index[c] for c, _, _ in items], dtype=torch.int64) for s, items in found.items()}
    _check(name, classes, tuple(y.values()), str(path))  # before the slow part: decoding
    x = {s: np.stack([_decode_image(raw, m, path) for _, m, raw in items]) for s, items in found.items()}
    x_nchw = {f"{s}_images": torch.from_numpy(v).permute(0, 3, 1, 2).contiguous() for s, v in x.items()}
    return CifarArrays(name, classes=classes, source=str(path), **y, **x_nchw)


def _decode_image(raw: bytes, member: str, path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(raw)) as image:
            array = np.asarray(image.convert("RGB"))
    except Exception as error:  # PIL raises OSError, SyntaxError, ValueError, ... for a bad file
        raise DataError(
            f"{path}: {member} is not a readable image ({type(error).__name__}: {error}); "
            f"replace the file, or copy the data again"
        ) from error
    if array.shape != (32, 32, 3):
        raise DataError(f"{path}: {member} is {array.shape[1]}x{array.shape[0]} pixels, expected 32x32")
    return array


def _files(path: Path) -> Iterator[tuple[str, Callable[[], bytes]]]:
    """``(name, read())`` for every regular file in a folder, or in a tar or zip archive, streamed."""
    if path.is_dir():
        yield from ((f.relative_to(path).as_posix(), f.read_bytes) for f in _walk(path))
    elif path.name.lower().endswith(".zip"):
        with zipfile.ZipFile(path) as archive:
            yield from ((i.filename, functools.partial(archive.read, i)) for i in archive.infolist() if not i.is_dir())
    else:
        with tarfile.open(path, "r:*") as archive:
            for member in archive:
                if member.issym() or member.islnk():
                    raise DataError(
                        f"{path}: {member.name} is a {'symbolic' if member.issym() else 'hard'} link (to "
                        f"{member.linkname}), not a file; the loader reads only regular files from an archive: pack "
                        f"the copy again without links (tar --dereference)"
                    )
                handle = archive.extractfile(member) if member.isfile() else None
                if handle is not None:
                    yield member.name, handle.read
            while archive.fileobj.read(1 << 20):  # to the end: a compressed stream checks its trailer
                pass


def _walk(root: Path) -> Iterator[Path]:
    """Every file under ``root``, following symbolic links to folders (a class folder may be one), each folder once."""
    seen: set[Path] = set()
    for directory, folders, names in os.walk(root, followlinks=True):
        if (real := Path(directory).resolve()) in seen:
            folders.clear()  # a link back to a folder already read (a loop)
            continue
        seen.add(real)
        yield from (Path(directory) / name for name in sorted(names))


def _arrays_from_pickles(name: str, files: dict[str, bytes], source: str) -> CifarArrays:
    """Parse torchvision's pickled batches: ``data`` is N x 3072 uint8 in C, H, W order."""
    info = DATASETS[name]

    def load(file_name: str, *keys: str) -> list[np.ndarray]:
        if file_name not in files:
            raise DataError(f"{source} is incomplete: {file_name} is missing; download it again")
        try:
            batch = _BatchUnpickler(io.BytesIO(files[file_name]), encoding="latin1").load()
            return [np.asarray(batch[k]) for k in keys]
        except DataError as error:  # from find_class
            raise DataError(
                f"{source}: {file_name} was refused: {error}. A CIFAR batch holds only dicts, lists, strings, numbers "
                f"and numpy arrays; this file may be malicious: do not use it, download the data again from its source"
            ) from None
        except Exception as error:  # truncated (EOFError, UnpicklingError) or foreign (KeyError, ...)
            raise DataError(
                f"{source}: {file_name} is not a readable torchvision batch "
                f"({type(error).__name__}: {error}); download it again"
            ) from error

    def split(file_names: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = zip(*(load(f, "data", str(info["label_key"])) for f in file_names), strict=True)
        images, labels = np.concatenate(images).astype(np.uint8), np.concatenate(labels).astype(np.int64)
        if images.shape[1:] != (3072,) or len(images) != len(labels):
            raise DataError(f"{source}: data of shape {images.shape} with {len(labels)} labels; download it again")
        return torch.from_numpy(images.reshape(-1, 3, 32, 32)), torch.from_numpy(labels)

    classes = tuple(load(*info["meta"])[0].tolist())  # type: ignore[misc]
    return CifarArrays(name, *split(info["train_files"]), *split(info["test_files"]), classes, source)  # type: ignore[arg-type]


# What a numpy array (and its dtype) pickles to (the module named without numpy 1's "numpy.core." or numpy 2's
# "numpy._core."), and the helper that pickles of bytes written by Python 3 with protocol 2 call. Nothing else can be
# built: no code runs.
_ALLOWED_GLOBALS = {
    ("_codecs", "encode"): codecs.encode,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("multiarray", "_reconstruct"): np.zeros(1).__reduce__()[0],
    ("multiarray", "scalar"): np.float64(0).__reduce__()[0],
    ("numeric", "_frombuffer"): np.zeros(1).__reduce_ex__(5)[0],
}


class _BatchUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        key = (module.removeprefix("numpy.core.").removeprefix("numpy._core."), name)
        if key not in _ALLOWED_GLOBALS:
            raise DataError(f"its pickle calls {module}.{name}")  # refused: a CIFAR batch never needs it
        return _ALLOWED_GLOBALS[key]
