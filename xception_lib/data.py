"""CIFAR-10 and CIFAR-100 as uint8 tensors, decoded once, checked and cached.

:func:`load_cifar` finds the data in one of these places, in this order:

1. ``root`` (an argument) or, when it is ``None``, the environment variable
   ``XCEPTION_DATA``. Either may point at

   * an archive (``.tar``, ``.tar.gz``, ``.tar.xz``, ``.zip``) in ImageFolder layout,
     such as the offline copy ``cifar10-jpeg.tar.xz``;
   * an ImageFolder tree ``train/<class>/*.jpg`` and ``test/<class>/*.jpg``;
   * torchvision's extracted pickles (``cifar-10-batches-py`` or ``cifar-100-python``);
   * or a directory holding any of these (for example ``cifar10-jpeg.tar.xz``).

   A relative path in ``XCEPTION_DATA`` or ``XCEPTION_CACHE`` is taken from the root of
   the checkout when the working directory lies inside one (the nearest directory at or
   above it that holds ``_config.yml`` and ``xception_lib/``), else from the working
   directory. So ``export XCEPTION_DATA=../shared/data`` in the repository root names the
   same folder for the tests (run from the root) and for the notebooks (run from ``book/``).

2. Otherwise, torchvision's ``download=True`` into ``~/.cache/xception_lib/torchvision``.

The copy must be the whole data set, 10 classes of 5,000 training and 1,000 test images
(CIFAR-10) or 100 of 500 and 100 (CIFAR-100), unless ``images_per_class`` says it is a
reduced one: a truncated archive, a half-copied folder or the other CIFAR is a
:class:`DataError` naming the file, never a partial load. Hidden files (``._0001.jpg``,
``.DS_Store``) and ``Thumbs.db`` are skipped; any other file in a class folder must be a
32x32 ``.jpg``, ``.jpeg``, ``.png`` or ``.bmp`` image.

Decoding 60,000 JPEGs takes seconds; the decoded arrays are therefore stored once under
``~/.cache/xception_lib`` (or ``XCEPTION_CACHE``), keyed by the source's path, sizes and
modification times, and the next load memory-maps them in well under a second. An
unreadable cache file is reported and rebuilt; an unwritable cache (or a full disk) is
reported, and the data returned all the same. torchvision's pickled batches are read with an
unpickler that builds nothing but dicts, lists, strings, numbers and numpy arrays.
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
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from xception_lib.checkpoint import atomic_save
from xception_lib.loader import check_number

__all__ = [
    "CACHE_ENV_VAR", "DATASETS", "ENV_VAR", "CifarArrays", "DataError", "DataNotFoundError", "cache_dir", "load_cifar",
]  # fmt: skip

ENV_VAR = "XCEPTION_DATA"
"""Environment variable naming a local copy of the data (a directory or an archive)."""

CACHE_ENV_VAR = "XCEPTION_CACHE"
"""Environment variable overriding the cache directory (default ``~/.cache/xception_lib``)."""


# Per-dataset facts: size, torchvision's folder name and class, pickle keys, and the channel
# statistics of the training set (the usual normalisation constants).
def _cifar(
    classes: int,
    torchvision_dir: str,
    train_files: tuple[str, ...],
    test_files: tuple[str, ...],
    meta_file: str,
    fine: str,
    mean: tuple[float, ...],
    std: tuple[float, ...],
) -> dict[str, object]:
    """One entry of :data:`DATASETS`: 50,000 training and 10,000 test images spread evenly over ``classes``."""
    return {
        "title": f"CIFAR-{classes}",
        "num_classes": classes,
        "per_class": (50_000 // classes, 10_000 // classes),  # training and test images of each class
        "torchvision_dir": torchvision_dir,
        "torchvision_class": f"CIFAR{classes}",
        "train_files": train_files,
        "test_files": test_files,
        "meta_file": meta_file,
        "meta_key": f"{fine}label_names",
        "label_key": f"{fine}labels",
        "mean": mean,
        "std": std,
    }


DATASETS: dict[str, dict[str, object]] = {
    "cifar10": _cifar(
        10,
        "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        ("test_batch",),
        "batches.meta",
        "",
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
    ),
    "cifar100": _cifar(
        100,
        "cifar-100-python",
        ("train",),
        ("test",),
        "meta",
        "fine_",
        mean=(0.5071, 0.4865, 0.4409),
        std=(0.2673, 0.2564, 0.2762),
    ),
}

_ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.bz2", ".zip")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
_SKIPPED_NAMES = ("Thumbs.db", "desktop.ini")  # besides hidden files (".*")
_ARRAY_KEYS = ("train_images", "train_labels", "test_images", "test_labels")
_CACHE_VERSION = 1
_READ_ERRORS = (OSError, EOFError, tarfile.TarError, zipfile.BadZipFile, lzma.LZMAError, zlib.error)  # damaged archives


class DataNotFoundError(FileNotFoundError):
    """The dataset is neither at the given location nor downloadable."""


class DataError(ValueError):
    """The data was found but is truncated, corrupt, or not the data set asked for."""


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
            check_number("CifarArrays.subset", what, n, integer=True, low=1, high=len(labels))
            g = torch.Generator().manual_seed(int(seed))
            idx = torch.randperm(len(labels), generator=g)[: int(n)].sort().values
            return images[idx], labels[idx]

        tr_x, tr_y = pick(self.train_images, self.train_labels, train, "train")
        te_x, te_y = pick(self.test_images, self.test_labels, test, "test")
        source = f"subset (train={len(tr_y)}, test={len(te_y)}, seed={seed}) of {self.source}"
        return dataclasses.replace(
            self, train_images=tr_x, train_labels=tr_y, test_images=te_x, test_labels=te_y, source=source
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
    return _env_path(env) if env else Path.home() / ".cache" / "xception_lib"


def _env_path(value: str) -> Path:
    """An environment variable's path, absolute: a relative one is taken from the checkout's
    root when the working directory lies inside a checkout, else from the working directory."""
    path = Path(value).expanduser()
    if path.is_absolute():
        return path
    cwd = Path.cwd()
    is_root = lambda d: (d / "_config.yml").is_file() and (d / "xception_lib").is_dir()  # noqa: E731
    return Path(os.path.normpath(next(filter(is_root, (cwd, *cwd.parents)), cwd) / path))


def load_cifar(
    name: str = "cifar10",
    root: str | os.PathLike[str] | None = None,
    *,
    cache: str | os.PathLike[str] | None = None,
    download: bool = True,
    images_per_class: tuple[int, int] | None = None,
) -> CifarArrays:
    """Load CIFAR-10 or CIFAR-100 as uint8 tensors (decoded once, then cached).

    Args:
        name: ``"cifar10"`` or ``"cifar100"``.
        root: A local copy: an archive, an ImageFolder tree, torchvision's pickles, or a
            directory holding one of them. ``None``: the environment variable
            ``XCEPTION_DATA``, and if that is unset, torchvision's download.
        cache: Cache directory (default: :func:`cache_dir`).
        download: Whether torchvision may download the data when no local copy is given.
        images_per_class: ``(train, test)`` images that each class must have. ``None``: the
            whole data set's, ``(5000, 1000)`` for CIFAR-10 and ``(500, 100)`` for CIFAR-100.
            Smaller numbers only for a deliberately reduced copy (as in the tests).

    Returns:
        The train and test arrays, class names and where they came from.

    Raises:
        DataNotFoundError: Neither a local copy nor a download is available; the message
            says how to provide either.
        DataError: The copy is truncated, corrupt, holds files it should not, or is not the
            data set asked for (other classes, other counts); the message names the file.
    """
    key = name.lower().replace("-", "").replace("_", "") if isinstance(name, str) else name
    if key not in DATASETS:
        raise ValueError(f"name must be one of {sorted(DATASETS)}, got {name!r}")
    if not isinstance(download, bool):
        raise TypeError(f"download must be True or False, got {download!r}")
    per_class = DATASETS[key]["per_class"] if images_per_class is None else images_per_class
    if not isinstance(per_class, (tuple, list)) or len(per_class) != 2:
        raise ValueError(f"images_per_class must be two positive ints (train, test), got {images_per_class!r}")
    for what, n in zip(("train", "test"), per_class, strict=True):
        check_number("load_cifar", f"images_per_class ({what})", n, integer=True, low=1)
    per_class = tuple(int(n) for n in per_class)  # numpy integers too
    cache_root = cache_dir(cache)
    source: Path | None
    env = os.environ.get(ENV_VAR)
    if root is None and env:
        source = _env_path(env)
        where = f"{ENV_VAR}={env!r}" + ("" if source == Path(env).expanduser() else f" (resolved to {source})")
        if env.startswith("/path/to/"):
            raise DataNotFoundError(
                _missing_message(
                    key,
                    cache_root,
                    (
                        f"{where} is the README's placeholder: replace it with the folder that holds your "
                        f"copy, or unset {ENV_VAR} to let torchvision download the data"
                    ),
                )
            )
    else:
        source, where = (None, "") if root is None else (Path(root).expanduser(), f"root={str(root)!r}")
    if source is not None:
        found = _find_source(source, key)
        if found is None:
            state = "holds no copy of it" if source.exists() else "does not exist"
            raise DataNotFoundError(_missing_message(key, cache_root, f"{where} {state}"))
    else:
        download_root = cache_root / "torchvision"
        if _find_source(download_root, key) is None:
            if not download:
                raise DataNotFoundError(_missing_message(key, cache_root, "no local copy given and download=False"))
            _torchvision_download(key, download_root, cache_root)
        found = _find_source(download_root, key)
        if found is None:  # pragma: no cover - torchvision changed its layout
            raise DataNotFoundError(_missing_message(key, cache_root, "torchvision's download left no data"))
    kind, path = found
    return _load_cached(key, kind, path, cache_root, tuple(per_class))  # type: ignore[arg-type]


def _missing_message(name: str, cache_root: Path, reason: str) -> str:
    info = DATASETS[name]
    return (
        f"{info['title']} data not found: {reason}. Provide it in one of two ways:\n"
        f"  1. a local copy: pass root=... to load_cifar, or set the environment variable {ENV_VAR}, "
        f"to an archive or directory holding {name}-jpeg.tar.xz, an ImageFolder tree "
        f"(train/<class>/*.jpg and test/<class>/*.jpg) or torchvision's {info['torchvision_dir']};\n"
        f"  2. network access, so that torchvision can download it (download=True, {ENV_VAR} unset) "
        f"into {cache_root / 'torchvision'}."
    )


def _torchvision_download(name: str, download_root: Path, cache_root: Path) -> None:
    import torchvision

    dataset_class = getattr(torchvision.datasets, str(DATASETS[name]["torchvision_class"]))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset_class(root=str(download_root), train=True, download=True)
            dataset_class(root=str(download_root), train=False, download=True)
    except Exception as error:  # network errors come as URLError, HTTPError, RuntimeError, ...
        raise DataNotFoundError(
            _missing_message(name, cache_root, f"torchvision's download failed: {type(error).__name__}: {error}")
        ) from error


def _is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(_ARCHIVE_SUFFIXES)


def _find_source(root: Path, name: str) -> tuple[str, Path] | None:
    """``("archive" | "folder" | "pickles", path)`` for the first usable copy at ``root``."""
    if _is_archive(root):
        return "archive", root
    tv_dir = str(DATASETS[name]["torchvision_dir"])
    if root.is_dir() and root.name == tv_dir:
        return "pickles", root
    if (root / tv_dir).is_dir():
        return "pickles", root / tv_dir
    for stem in ("", f"{name}-jpeg", name):  # root itself, then what it holds
        if (root / stem / "train").is_dir() and (root / stem / "test").is_dir():
            return "folder", root / stem
        for archive in (root / f"{stem}{suffix}" for suffix in _ARCHIVE_SUFFIXES if stem):
            if _is_archive(archive):
                return "archive", archive
    return None


# ----------------------------------------------------------------------------- checking and caching


def _check(
    name: str, classes: tuple[str, ...], labels: tuple[torch.Tensor, ...], per_class: tuple[int, ...], source: str
) -> None:
    """Raise :class:`DataError` unless the classes and the (train, test) labels make the data set asked for."""
    info = DATASETS[name]
    if len(classes) != info["num_classes"]:
        like = [
            f"; it looks like {d['title']}: load it with name={k!r}"
            for k, d in DATASETS.items()
            if d["num_classes"] == len(classes)
        ]
        shown = ", ".join(classes[:12]) + (", ..." if len(classes) > 12 else "")
        raise DataError(
            f"{source} holds {len(classes)} classes ({shown}), but {info['title']} has "
            f"{info['num_classes']}{''.join(like)}"
        )
    for split, y, want in zip(("train", "test"), labels, per_class, strict=True):
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= len(classes)):
            raise DataError(f"{source}: {split} labels outside 0..{len(classes) - 1}: the copy is corrupt")
        counts = torch.bincount(y, minlength=len(classes)).tolist()
        if any(c != want for c in counts):
            wrong = ", ".join(f"{classes[i]}: {c:,}" for i, c in enumerate(counts) if c != want)
            what = (
                "if it is a deliberately reduced copy, pass images_per_class"
                if len(set(counts)) == 1
                else "it holds extra images: remove the files that do not belong"
                if max(counts) > want
                else "it is truncated or incomplete: copy or download it again"
            )
            raise DataError(
                f"{source}: the {split} split has {len(y):,} images, {want:,} per class expected "
                f"({info['title']}), but {wrong[:300]}; {what}"
            )


def _load_cached(name: str, kind: str, path: Path, cache_root: Path, per_class: tuple[int, int]) -> CifarArrays:
    path = path.resolve()
    # An archive is known by its size and time; a folder by those of every file in it.
    if path.is_file():
        state = f"{path.stat().st_size}|{path.stat().st_mtime_ns}"
    else:
        files = sorted(str(f) for f in _walk(path) if f.exists())  # a broken link is named when it is read
        state = "|".join(f"{f}:{s.st_size}:{s.st_mtime_ns}" for f in files for s in [os.stat(f)])
    fingerprint = f"v{_CACHE_VERSION}|{name}|{kind}|{path}|{state}"
    cache_file = cache_root / f"{name}-{hashlib.sha1(fingerprint.encode()).hexdigest()[:16]}.pt"
    try:
        arrays = _from_cache(name, torch.load(cache_file, map_location="cpu", mmap=True, weights_only=True), str(path))
        _check(name, arrays.classes, (arrays.train_labels, arrays.test_labels), per_class, str(path))
        return arrays
    except (FileNotFoundError, NotADirectoryError, DataError):
        pass  # no cache yet, or one that is not what was asked for: the source decides, below
    except Exception as error:  # truncated, corrupt or foreign: torch and pickle raise many kinds
        reason = str(error) if isinstance(error, ValueError) else f"{type(error).__name__} from torch.load"
        warnings.warn(
            f"The cache file {cache_file} is unreadable ({reason}); decoding {path} again to replace it.", stacklevel=3
        )
    arrays = _decode(name, kind, path, per_class)
    _check(name, arrays.classes, (arrays.train_labels, arrays.test_labels), per_class, str(path))  # pickles
    try:
        atomic_save({k: getattr(arrays, k) for k in _ARRAY_KEYS} | {"classes": list(arrays.classes)}, cache_file)
    except OSError as error:
        warnings.warn(
            f"Could not write the cache file {cache_file} ({error}); the data is returned but will "
            f"be decoded again next time. Pass cache= or set {CACHE_ENV_VAR} to a writable directory.",
            stacklevel=3,
        )
    return arrays


def _from_cache(name: str, stored: object, source: str) -> CifarArrays:
    """The arrays of a cache file, checked for keys, types and shapes (ValueError if wrong)."""
    if not isinstance(stored, dict) or set(stored) != {*_ARRAY_KEYS, "classes"}:
        raise ValueError("not a cache of decoded CIFAR arrays")
    for x, y in ((stored["train_images"], stored["train_labels"]), (stored["test_images"], stored["test_labels"])):
        if not (
            isinstance(x, torch.Tensor)
            and x.dtype == torch.uint8
            and x.dim() == 4
            and x.shape[1:] == (3, 32, 32)
            and isinstance(y, torch.Tensor)
            and y.dtype == torch.int64
            and y.shape == x.shape[:1]
        ):
            raise ValueError("its arrays have the wrong type or shape")
    if not all(isinstance(c, str) for c in stored["classes"]):
        raise ValueError("its class names are not strings")
    return CifarArrays(name, classes=tuple(stored["classes"]), source=source, **{k: stored[k] for k in _ARRAY_KEYS})


# ----------------------------------------------------------------------------- decoding


def _decode(name: str, kind: str, path: Path, per_class: tuple[int, int]) -> CifarArrays:
    info, pickled, member = DATASETS[name], {}, None
    wanted_pickles = {*info["train_files"], *info["test_files"], info["meta_file"]}  # type: ignore[misc]
    if kind == "pickles":
        try:
            files = {f: (path / f).read_bytes() for f in wanted_pickles if (path / f).is_file()}
        except OSError as error:
            raise DataError(f"{path}: {error.filename} cannot be read ({error.strerror or error})") from error
        return _arrays_from_pickles(name, files, str(path))
    found: dict[str, list[tuple[str, str, bytes]]] = {"train": [], "test": []}  # (class, member, bytes)
    try:
        for member, read in _archive_files(path) if kind == "archive" else _folder_files(path):
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
        if isinstance(error, OSError) and not isinstance(error, EOFError) and kind == "folder":
            raise DataError(f"{path}: {error.filename or member} cannot be read ({error.strerror or error})") from error
        at = f" at {member}" if member else " (it does not open)"
        detail = str(error).splitlines()[0].rstrip(":. ")
        raise DataError(
            f"{path} cannot be read{at}: {type(error).__name__}: {detail}. "
            f"The file is truncated, corrupt or of another kind; copy or download it again."
        ) from error
    if not found["train"] and pickled:  # torchvision's own cifar-*-python.tar.gz
        return _arrays_from_pickles(name, pickled, str(path))
    if not found["train"] or not found["test"]:
        raise DataError(f"{path} holds no ImageFolder layout: expected images under train/<class>/ and test/<class>/")
    classes = tuple(sorted({label for label, _, _ in found["train"]}))
    index = {c: i for i, c in enumerate(classes)}
    unknown = {label for label, _, _ in found["test"]} - set(index)
    if unknown:
        raise DataError(f"{path}: test classes {sorted(unknown)} do not occur in train/ ({list(classes)})")
    for items in found.values():  # ImageFolder order: class, then file name
        items.sort(key=lambda item: (index[item[0]], PurePosixPath(item[1]).name))
    labels = {split: torch.tensor([index[c] for c, _, _ in items], dtype=torch.int64) for split, items in found.items()}
    _check(name, classes, tuple(labels.values()), per_class, str(path))  # before the slow part: decoding
    images = {split: np.stack([_decode_image(raw, m, path) for _, m, raw in items]) for split, items in found.items()}
    x = {f"{split}_images": torch.from_numpy(v).permute(0, 3, 1, 2).contiguous() for split, v in images.items()}
    labels = {f"{split}_labels": y for split, y in labels.items()}
    return CifarArrays(name, classes=classes, source=str(path), **labels, **x)


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


def _archive_files(path: Path) -> Iterator[tuple[str, Callable[[], bytes]]]:
    """``(member name, read())`` for every regular file in a tar or zip archive, streamed."""
    if path.name.lower().endswith(".zip"):
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if not info.is_dir():
                    yield info.filename, functools.partial(archive.read, info)
        return
    with tarfile.open(path, "r:*") as archive:
        for member in archive:
            handle = archive.extractfile(member) if member.isfile() else None
            if handle is not None:
                yield member.name, handle.read
            elif member.issym() or member.islnk():  # refused when it matters, i.e. where an image or batch belongs
                yield member.name, _refuse_link(path, member)
        while archive.fileobj.read(1 << 20):  # to the end: a compressed stream checks its trailer
            pass


def _refuse_link(path: Path, member: tarfile.TarInfo) -> Callable[[], bytes]:
    def read() -> bytes:
        kind = "a symbolic link" if member.issym() else "a hard link"
        raise DataError(
            f"{path}: {member.name} is {kind} (to {member.linkname}), not a file; the loader reads only "
            f"regular files from an archive: pack the copy again without links (tar --dereference)"
        )

    return read


def _walk(root: Path) -> Iterator[Path]:
    """Every file under ``root``, following symbolic links to folders (a class folder may be one), each folder once."""
    seen: set[Path] = set()
    for directory, folders, names in os.walk(root, followlinks=True):
        real = Path(directory).resolve()
        if real in seen:
            folders.clear()  # a link back to a folder already read (a loop)
            continue
        seen.add(real)
        yield from (Path(directory) / name for name in sorted(names))


def _folder_files(root: Path) -> Iterator[tuple[str, Callable[[], bytes]]]:
    for full in _walk(root):
        yield full.relative_to(root).as_posix(), full.read_bytes


def _arrays_from_pickles(name: str, files: dict[str, bytes], source: str) -> CifarArrays:
    """Parse torchvision's pickled batches: ``data`` is N x 3072 uint8 in C, H, W order."""
    info = DATASETS[name]

    def load(file_name: str, *keys: str) -> list[np.ndarray]:
        if file_name not in files:
            raise DataError(f"{source} is incomplete: {file_name} is missing; download it again")
        try:
            batch = _BatchUnpickler(io.BytesIO(files[file_name]), encoding="latin1").load()
            return [np.asarray(batch[k]) for k in keys]
        except _RefusedGlobal as error:
            raise DataError(
                f"{source}: {file_name} was refused: {error}. A CIFAR batch holds only dicts, lists, "
                f"strings, numbers and numpy arrays; this file may be malicious: do not use it, download the "
                f"data again from its source"
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

    train_images, train_labels = split(info["train_files"])  # type: ignore[arg-type]
    test_images, test_labels = split(info["test_files"])  # type: ignore[arg-type]
    classes = tuple(load(str(info["meta_file"]), str(info["meta_key"]))[0].tolist())
    return CifarArrays(name, train_images, train_labels, test_images, test_labels, classes, source)


class _RefusedGlobal(pickle.UnpicklingError):
    """A pickle asked for a function or class that a CIFAR batch never needs."""


# What a numpy array (and its dtype) pickles to, under numpy 1's and numpy 2's module names, and the helper that
# pickles of bytes written by Python 3 with protocol 2 call. Nothing else can be built: no code runs.
_ARRAY_GLOBALS = {
    "_reconstruct": np.zeros(1).__reduce__()[0], "scalar": np.float64(0).__reduce__()[0],
    "_frombuffer": np.zeros(1).__reduce_ex__(5)[0], "ndarray": np.ndarray, "dtype": np.dtype,
}  # fmt: skip
_ALLOWED_GLOBALS = {("_codecs", "encode"): codecs.encode} | {
    (f"numpy{core}.{module}", name): _ARRAY_GLOBALS[name]
    for core in (".core", "._core") for module, names in (("multiarray", ("_reconstruct", "scalar")), ("numeric", ("_frombuffer",)))
    for name in names
} | {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}  # fmt: skip


class _BatchUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise _RefusedGlobal(f"its pickle calls {module}.{name}")
        return _ALLOWED_GLOBALS[module, name]
