"""Tests of xception_lib.data: finding, checking, decoding and caching CIFAR.

The GpuLoader's tests are in test_loader.py.
"""

from __future__ import annotations

import lzma
import os
import pickle
import shutil
import tarfile
import time
import urllib.error
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import xception_lib as xl
from xception_lib.data import DataError, DataNotFoundError, load_cifar

REPO = Path(__file__).resolve().parents[1]
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
TINY = (2, 1)  # training and test images per class of the tiny copies below

pytestmark = pytest.mark.usefixtures("one_thread")


def real_data_root() -> Path:
    """Where the offline CIFAR-10 copy is: $XCEPTION_DATA, else ../shared/data (as in CI)."""
    root = Path(os.environ.get("XCEPTION_DATA") or REPO.parent / "shared" / "data")
    if not (root / "cifar10-jpeg.tar.xz").exists() and not root.is_file():
        pytest.skip(f"offline CIFAR-10 copy not found at {root} (set XCEPTION_DATA)")
    return root


def real_archive() -> Path:
    root = real_data_root()
    return root if root.is_file() else root / "cifar10-jpeg.tar.xz"


@pytest.fixture(scope="module")
def cifar10() -> xl.data.CifarArrays:
    return load_cifar("cifar10", real_data_root())


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh cache directory (XCEPTION_CACHE), not yet created."""
    monkeypatch.setenv("XCEPTION_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def expect(monkeypatch: pytest.MonkeyPatch, name: str, per_class: tuple[int, int]) -> None:
    """Make ``load_cifar(name)`` expect ``per_class`` (train, test) images of each class: a reduced copy."""
    monkeypatch.setitem(xl.data.DATASETS[name], "per_class", per_class)


@pytest.fixture
def tiny(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fresh cache, and CIFAR-10 of TINY images per class expected, as the copies below hold."""
    expect(monkeypatch, "cifar10", TINY)


def write_tree(root: Path, per_class: tuple[int, int] = TINY, seed: int = 0) -> dict[str, np.ndarray]:
    """A tiny CIFAR-10 ImageFolder tree of lossless PNGs; returns each split's N x 32 x 32 x 3
    images in ImageFolder order (class, then file name)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in zip(("train", "test"), per_class, strict=False):
        images = rng.integers(0, 256, (len(CIFAR10_CLASSES), n, 32, 32, 3), dtype=np.uint8)
        for c, name in enumerate(CIFAR10_CLASSES):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(images[c, i]).save(root / split / name / f"{i:04d}.png")
        arrays[split] = images.reshape(-1, 32, 32, 3)
    return arrays


def pack(tree: Path, archive: Path) -> Path:
    """``tree``'s files in a .tar, .tar.gz, .tar.xz or .zip, under ``tree.name``, in reverse
    order (the loader must sort)."""
    files = sorted((f for f in tree.rglob("*") if f.is_file()), reverse=True)
    names = [str(Path(tree.name) / f.relative_to(tree)) for f in files]
    if archive.suffix == ".zip":
        with zipfile.ZipFile(archive, "w") as z:
            for file, name in zip(files, names, strict=False):
                z.write(file, name)
    else:
        with tarfile.open(archive, {".tar": "w", ".gz": "w:gz", ".xz": "w:xz"}[archive.suffix]) as t:
            for file, name in zip(files, names, strict=False):
                t.add(file, name)
    return archive


def as_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2)


def cut(file: Path, size: int, to: Path) -> Path:
    """The first ``size`` bytes of ``file``, written to ``to``."""
    to.write_bytes(file.read_bytes()[:size])
    return to


# ----------------------------------------------------------------------------- loading


@pytest.mark.data
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
    assert data.classes == CIFAR10_CLASSES
    assert data.train_labels.bincount().tolist() == [5000] * 10
    assert data.test_labels.bincount().tolist() == [1000] * 10
    assert torch.equal(data.train_images[:100], cifar10.train_images[:100])
    # The usual CIFAR-10 channel means, recomputed from the JPEG copy.
    means = data.train_images[::10].double().mean((0, 2, 3)) / 255
    assert torch.allclose(means, torch.tensor(data.mean, dtype=torch.float64), atol=0.003)


def test_image_folder_tree_and_archives(tiny: None, cache: Path, tmp_path: Path) -> None:
    tree = tmp_path / "cifar10-jpeg"
    expected = write_tree(tree)
    loads = [
        load_cifar("cifar10", tree),
        load_cifar("cifar10", tmp_path),  # finds cifar10-jpeg/ inside
    ]
    for suffix in (".zip", ".tar", ".tar.xz"):
        archive = pack(tree, tmp_path / f"copy{suffix}")
        loads.append(load_cifar("cifar10", archive))
    for data in loads:
        assert data.classes == CIFAR10_CLASSES
        assert data.train_labels.tolist() == [c for c in range(10) for _ in range(2)]
        assert data.test_labels.tolist() == list(range(10))
        assert torch.equal(data.train_images, as_tensor(expected["train"]))
        assert torch.equal(data.test_images, as_tensor(expected["test"]))
    assert len(list(cache.glob("cifar10-*.pt"))) == 4  # the tree (found twice) and three archives
    again = load_cifar("cifar10", tmp_path / "copy.zip")  # from the cache
    assert torch.equal(again.train_images, loads[2].train_images)
    with pytest.raises(ValueError, match="cifar10"):
        load_cifar("mnist")


def write_fake_pickles(folder: Path, name: str, per_class: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """torchvision's pickle layout with random images, ``per_class`` of each class in every
    batch (for testing the parser only)."""
    folder.mkdir(parents=True)
    info = xl.data.DATASETS[name]
    num_classes = int(info["num_classes"])
    out: dict[str, list[np.ndarray]] = {"train_x": [], "train_y": [], "test_x": [], "test_y": []}
    for split, files in (("train", info["train_files"]), ("test", info["test_files"])):
        for file in files:
            labels = rng.permutation(np.repeat(np.arange(num_classes), per_class))
            data = rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8)
            with open(folder / file, "wb") as f:
                pickle.dump({"data": data, info["label_key"]: labels.tolist(), "batch_label": file}, f)
            out[f"{split}_x"].append(data)
            out[f"{split}_y"].append(labels)
    meta_file, meta_key = info["meta"]
    with open(folder / meta_file, "wb") as f:
        pickle.dump({meta_key: [f"class{i}" for i in range(num_classes)]}, f)
    return {k: np.concatenate(v) for k, v in out.items()}


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_torchvision_pickle_format(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    info = xl.data.DATASETS[name]
    folder = tmp_path / "data" / str(info["torchvision_dir"])
    expected = write_fake_pickles(folder, name, 1, np.random.default_rng(1))
    expect(monkeypatch, name, (len(info["train_files"]), 1))  # one image of each class in every batch
    data = load_cifar(name, tmp_path / "data")
    assert data.name == name and data.num_classes == info["num_classes"]
    assert data.train_images.shape == (len(expected["train_y"]), 3, 32, 32)
    # Pickled rows are 1024 red, then 1024 green, then 1024 blue values, row-major.
    assert torch.equal(data.train_images, torch.from_numpy(expected["train_x"]).view(-1, 3, 32, 32))
    assert data.train_images[0, 1, 0, 5].item() == expected["train_x"][0, 1024 + 5]
    assert data.test_labels.tolist() == expected["test_y"].tolist()

    # A truncated batch and a missing one name the file.
    batch = folder / str(info["test_files"][0])
    batch.write_bytes(batch.read_bytes()[:1000])
    with pytest.raises(DataError, match=f"{info['test_files'][0]} is not a readable torchvision batch"):
        load_cifar(name, folder)
    batch.unlink()
    with pytest.raises(DataError, match=f"incomplete: {info['test_files'][0]} is missing"):
        load_cifar(name, folder)


# ----------------------------------------------------------------------------- missing data


def test_missing_data_names_both_ways(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataNotFoundError) as info:
        load_cifar("cifar10", empty)
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
        load_cifar("cifar10")
    assert "XCEPTION_DATA" in str(info.value) and "download failed" in str(info.value)
    assert isinstance(info.value.__cause__, urllib.error.URLError)
    with pytest.raises(DataNotFoundError, match="download=False"):
        load_cifar("cifar10", download=False)


def test_environment_variable_pointing_nowhere_says_so(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XCEPTION_DATA", "no/such/dir")
    with pytest.raises(DataNotFoundError) as info:
        load_cifar("cifar10")
    message = str(info.value)
    assert "XCEPTION_DATA='no/such/dir'" in message and f"resolved to {tmp_path / 'no/such/dir'}" in message
    assert "does not exist" in message and "root=" in message and "download" in message


def test_relative_data_path_means_the_same_in_tests_and_notebooks(
    tiny: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A checkout (tests run in its root, notebooks in book/) beside the data, as in CI.
    repo = tmp_path / "repo"
    (repo / "xception_lib").mkdir(parents=True)
    (repo / "book").mkdir()
    (repo / "_config.yml").write_text("title: a book\n")
    data_dir = tmp_path / "shared" / "data"
    write_tree(data_dir / "cifar10-jpeg")
    monkeypatch.setenv("XCEPTION_DATA", "../shared/data")
    monkeypatch.setenv("XCEPTION_CACHE", "cache")
    for cwd in (repo, repo / "book"):
        monkeypatch.chdir(cwd)
        data = load_cifar("cifar10")
        assert data.source == str((data_dir / "cifar10-jpeg").resolve())
    assert len(list((repo / "cache").glob("cifar10-*.pt"))) == 1  # one cache, in the repository root
    # Outside a checkout, relative paths are taken from the working directory.
    monkeypatch.chdir(tmp_path / "shared")
    monkeypatch.setenv("XCEPTION_DATA", "data")
    assert load_cifar("cifar10").source == data.source
    assert xl.data.cache_dir() == tmp_path / "shared" / "cache"


# ----------------------------------------------------------------------------- the wrong or a partial data set


def test_other_cifar_is_refused(cache: Path, tmp_path: Path) -> None:
    write_tree(tmp_path / "tree")
    archive = pack(tmp_path / "tree", tmp_path / "cifar10-jpeg.tar")
    with pytest.raises(DataError) as info:
        load_cifar("cifar100", root=archive)
    message = str(info.value)
    assert str(archive) in message and "holds 10 classes (airplane, automobile" in message
    assert "CIFAR-100 has 100" in message and "name='cifar10'" in message
    assert not cache.exists()  # nothing decoded, nothing cached


@pytest.mark.data
@pytest.mark.slow
def test_other_cifar_is_refused_real_archive(cache: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="holds 10 classes .* but CIFAR-100 has 100"):
        load_cifar("cifar100", root=real_archive())


@pytest.mark.data
@pytest.mark.slow
def test_truncated_real_archive_never_loads_partly(cache: Path, tmp_path: Path) -> None:
    archive = real_archive()
    with lzma.open(archive) as source, open(tmp_path / "full.tar", "wb") as target:
        shutil.copyfileobj(source, target)
    with tarfile.open(tmp_path / "full.tar") as t:
        last = t.getmembers()[-3:]  # train/truck/4997.jpg, 4998.jpg, 4999.jpg
    at_boundary = cut(tmp_path / "full.tar", last[0].offset, tmp_path / "boundary.tar")
    with pytest.raises(DataError) as info:
        load_cifar("cifar10", at_boundary)
    assert str(at_boundary) in str(info.value)
    assert "train split has 49,997 images, 5,000 per class expected (CIFAR-10), but truck: 4,997" in str(info.value)
    assert "copy or download it again" in str(info.value)
    mid_member = cut(tmp_path / "full.tar", last[1].offset_data + 100, tmp_path / "mid.tar")
    with pytest.raises(
        DataError, match="mid.tar cannot be read at cifar10-jpeg/train/truck/4998.jpg: .*truncated, corrupt"
    ):
        load_cifar("cifar10", mid_member)
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("suffix", [".tar", ".tar.gz", ".tar.xz", ".zip"])
def test_truncated_archive_never_loads_partly(tiny: None, tmp_path: Path, suffix: str) -> None:
    write_tree(tmp_path / "cifar10-jpeg")
    archive = pack(tmp_path / "cifar10-jpeg", tmp_path / f"full{suffix}")
    size = archive.stat().st_size
    cuts = [size // 2, size - 10]  # the middle; a compressed stream's or a zip's trailer
    if suffix == ".tar":  # exactly before a member's header, and inside a member's data
        with tarfile.open(archive) as t:
            members = t.getmembers()
        cuts[1:] = [members[-1].offset, members[-1].offset_data + 5]
    for n in cuts:
        truncated = cut(archive, n, tmp_path / f"cut{suffix}")
        with pytest.raises(DataError, match=f"{truncated}"):
            load_cifar("cifar10", truncated)
        truncated.unlink()
    assert not (tmp_path / "cache").exists()


def test_full_set_expected(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_tree(tmp_path / "cifar10-jpeg")
    with pytest.raises(DataError, match="20 images, 5,000 per class expected.*truncated or incomplete"):
        load_cifar("cifar10", tmp_path)
    expect(monkeypatch, "cifar10", TINY)
    (tmp_path / "cifar10-jpeg" / "test" / "cat" / "0000.png").unlink()  # one class short
    with pytest.raises(DataError, match="test split has 9 images, 1 per class expected .*but cat: 0; it is truncated"):
        load_cifar("cifar10", tmp_path)
    shutil.copytree(tmp_path / "cifar10-jpeg" / "test" / "dog", tmp_path / "cifar10-jpeg" / "test" / "kitten")
    with pytest.raises(DataError, match=r"test classes \[.kitten.\] do not occur in train/"):
        load_cifar("cifar10", tmp_path)


# ----------------------------------------------------------------------------- stray and corrupt files


def test_stray_files_are_skipped_by_name(tiny: None, tmp_path: Path) -> None:
    tree = tmp_path / "cifar10-jpeg"
    expected = write_tree(tree)
    for folder in (tree, tree / "train", tree / "train" / "cat", tree / "test" / "dog"):
        (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
        (folder / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    (tree / "train" / "cat" / "._0000.png").write_bytes(b"\0\5\26\7AppleDouble")  # macOS's resource fork
    (tree / "README.txt").write_text("CIFAR-10 as JPEGs\n")
    for source in (tree, pack(tree, tmp_path / "copy.tar"), pack(tree, tmp_path / "copy.zip")):
        data = load_cifar("cifar10", source)
        assert torch.equal(data.train_images, as_tensor(expected["train"]))
    (tree / "train" / "cat" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match="train/cat/notes.txt is not an image .*remove it"):
        load_cifar("cifar10", tree)


def test_corrupt_image_is_named(tiny: None, tmp_path: Path) -> None:
    from PIL import Image

    tree = tmp_path / "cifar10-jpeg"
    write_tree(tree)
    good = tree / "train" / "dog" / "0001.png"
    good.write_bytes(good.read_bytes()[:100])  # a truncated PNG
    archive = pack(tree, tmp_path / "copy.tar.gz")
    with pytest.raises(DataError, match=r"copy.tar.gz: cifar10-jpeg/train/dog/0001.png is not a readable image"):
        load_cifar("cifar10", archive)
    Image.new("RGB", (31, 32)).save(good)
    with pytest.raises(DataError, match="train/dog/0001.png is 31x32 pixels, expected 32x32"):
        load_cifar("cifar10", tree)


# ----------------------------------------------------------------------------- the cache


@pytest.mark.parametrize("damage", ["truncated", "text", "empty", "foreign", "wrong dtype"])
def test_damaged_cache_is_reported_and_rebuilt(tiny: None, cache: Path, tmp_path: Path, damage: str) -> None:
    tree = tmp_path / "cifar10-jpeg"
    expected = write_tree(tree)
    load_cifar("cifar10", tree)
    (cache_file,) = cache.glob("cifar10-*.pt")
    if damage == "truncated":
        cache_file.write_bytes(cache_file.read_bytes()[:3000])
    elif damage == "text":
        cache_file.write_text("not a cache\n")
    elif damage == "empty":
        cache_file.write_bytes(b"")
    elif damage == "foreign":
        torch.save({"weights": torch.zeros(3)}, cache_file)
    else:
        stored = torch.load(cache_file)
        torch.save(stored | {"train_images": stored["train_images"].float()}, cache_file)
    with pytest.warns(UserWarning, match=f"cache file {cache_file} is unreadable.*decoding .* again to replace it"):
        data = load_cifar("cifar10", tree)
    assert torch.equal(data.train_images, as_tensor(expected["train"]))
    torch.load(cache_file, weights_only=True)  # rebuilt: readable again


def test_cache_that_disagrees_is_decided_by_the_source(
    tiny: None, cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = tmp_path / "cifar10-jpeg"
    write_tree(tree)
    load_cifar("cifar10", tree)
    (cache_file,) = cache.glob("cifar10-*.pt")
    stored = torch.load(cache_file)
    torch.save(stored | {"train_labels": torch.zeros_like(stored["train_labels"])}, cache_file)  # damaged labels
    data = load_cifar("cifar10", tree)  # decoded again: the source is whole
    assert data.train_labels.tolist() == [c for c in range(10) for _ in range(2)]
    assert torch.load(cache_file)["train_labels"].tolist() == data.train_labels.tolist()  # and the cache replaced
    expect(monkeypatch, "cifar10", (3, 1))
    with pytest.raises(DataError, match=f"{tree}: the train split has 20 images, 3 per class expected"):
        load_cifar("cifar10", tree)  # the source, not the cache, is named


def test_unwritable_cache_warns_and_returns_the_data(tiny: None, cache: Path, tmp_path: Path) -> None:
    tree = tmp_path / "cifar10-jpeg"
    expected = write_tree(tree)
    cache.write_text("a file where the cache directory should be")
    with pytest.warns(UserWarning, match=f"Could not write the cache file {cache}/.*data is returned"):
        data = load_cifar("cifar10", tree)
    assert torch.equal(data.test_images, as_tensor(expected["test"]))


@pytest.mark.data
def test_subset_is_seeded(cifar10: xl.data.CifarArrays) -> None:
    a = cifar10.subset(train=100, test=50, seed=3)
    b = cifar10.subset(train=100, test=50, seed=3)
    c = cifar10.subset(train=100, test=50, seed=4)
    assert a.train_images.shape == (100, 3, 32, 32) and a.test_labels.shape == (50,)
    assert torch.equal(a.train_images, b.train_images) and not torch.equal(a.train_images, c.train_images)
    assert len(a.test_labels.unique()) > 5  # a random choice, not the class-sorted first 50
    with pytest.raises(ValueError, match="train must be an integer >= 1 and <= 50000, got 0"):
        cifar10.subset(train=0)


# ----------------------------------------------------------------------------- files from outside (issue 24)


class _RunsACommand:
    """Pickles to ``os.system(command)``: what a malicious batch file holds."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[object, ...]:
        return (os.system, (self.command,))


def malicious_copy(folder: Path, marker: Path) -> Path:
    """torchvision's CIFAR-10 folder whose first training batch runs ``touch marker`` when unpickled."""
    write_fake_pickles(folder, "cifar10", 1, np.random.default_rng(0))
    with open(folder / "data_batch_1", "wb") as f:
        pickle.dump({"data": _RunsACommand(f"touch {marker}"), "labels": list(range(10))}, f, protocol=2)
    return folder


def test_a_batch_that_runs_code_is_refused(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "it-ran"
    folder = malicious_copy(tmp_path / "data" / "cifar-10-batches-py", marker)
    expect(monkeypatch, "cifar10", (5, 1))
    with pytest.raises(DataError, match=r"cifar-10-batches-py: data_batch_1 was refused: its pickle calls \w+\.system"):
        load_cifar("cifar10", folder)
    assert not marker.exists()


def test_a_batch_that_runs_code_is_refused_inside_the_archive(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "it-ran"
    folder = malicious_copy(tmp_path / "cifar-10-batches-py", marker)
    archive = pack(folder, tmp_path / "cifar-10-python.tar.gz")
    expect(monkeypatch, "cifar10", (5, 1))
    with pytest.raises(DataError, match=r"cifar-10-python.tar.gz: data_batch_1 was refused"):
        load_cifar("cifar10", archive)
    assert not marker.exists()


def test_batches_as_python_2_wrote_them_still_load(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real files: protocol 2, a numpy array, bytes file names (which Python 3 pickles via _codecs.encode)."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(2)
    for file in (*xl.data.DATASETS["cifar10"]["train_files"], "test_batch"):  # type: ignore[misc]
        pixels = rng.integers(0, 256, (10, 3072), dtype=np.uint8)
        names = [f"{i}.png".encode() for i in range(10)]
        batch = {"batch_label": b"batch", "labels": list(range(10)), "data": pixels, "filenames": names}
        (folder / file).write_bytes(pickle.dumps(batch, protocol=2))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": list(CIFAR10_CLASSES)}, protocol=2))
    expect(monkeypatch, "cifar10", (5, 1))
    data = load_cifar("cifar10", folder)
    assert data.classes == CIFAR10_CLASSES and data.train_images.shape == (50, 3, 32, 32)
    assert (
        data.test_images.flatten().tolist()
        == pickle.loads((folder / "test_batch").read_bytes())["data"].flatten().tolist()
    )


def test_a_class_folder_that_is_a_symlink_is_read(tiny: None, tmp_path: Path) -> None:
    tree = tmp_path / "cifar10-jpeg"
    expected = write_tree(tree)
    (tree / "train" / "cat").rename(tmp_path / "cats")
    (tree / "train" / "cat").symlink_to(tmp_path / "cats", target_is_directory=True)
    data = load_cifar("cifar10", tree)
    assert torch.equal(data.train_images, as_tensor(expected["train"]))


@pytest.mark.parametrize(("kind", "said"), [(tarfile.LNKTYPE, "a hard link"), (tarfile.SYMTYPE, "a symbolic link")])
def test_a_link_inside_an_archive_is_named_not_called_truncated(
    tiny: None, tmp_path: Path, kind: bytes, said: str
) -> None:
    tree = tmp_path / "cifar10-jpeg"
    write_tree(tree)
    archive = tmp_path / "cifar10-jpeg.tar"
    with tarfile.open(archive, "w") as t:
        for file in sorted(f for f in tree.rglob("*") if f.is_file()):
            name = str(Path(tree.name) / file.relative_to(tree))
            if name.endswith("train/cat/0001.png"):
                link = tarfile.TarInfo(name)
                link.type, link.linkname = kind, name.replace("0001", "0000")
                t.addfile(link)
            else:
                t.add(file, name)
    with pytest.raises(DataError, match=f"train/cat/0001.png is {said} .* not a file; .*without links"):
        load_cifar("cifar10", archive)


def test_an_extra_image_is_not_called_truncated(tiny: None, tmp_path: Path) -> None:
    tree = tmp_path / "cifar10-jpeg"
    write_tree(tree)
    shutil.copy(tree / "train" / "cat" / "0000.png", tree / "train" / "cat" / "copy.png")
    with pytest.raises(DataError, match="cat: 3; it holds extra images: remove the files that do not belong"):
        load_cifar("cifar10", tree)


def test_a_full_disk_under_the_cache_warns_and_returns_the_data(
    tiny: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = tmp_path / "cifar10-jpeg"
    expected = write_tree(tree)

    def full_disk(obj: object, f: object) -> None:  # what torch.save raises when a write comes up short
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 4096 vs 0")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.warns(UserWarning, match=r"Could not write the cache file .* an I/O error .* is the disk full"):
        data = load_cifar("cifar10", tree)
    assert torch.equal(data.test_images, as_tensor(expected["test"]))
    assert not list((tmp_path / "cache").iterdir())  # no temporary file left behind
