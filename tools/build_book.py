#!/usr/bin/env python
"""Build the book so that every output on it comes from today's code.

MyST-NB's execution cache (jupyter-cache, ``_build/.jupyter_cache``) keys a chapter on its
own cells only: it knows nothing of ``xception_lib``. This script adds what the cache
cannot see. It fingerprints everything a chapter depends on besides its cells (the
library's files, including the records it ships; the requirements; the installed
packages) and stores the fingerprint beside the cache. When the fingerprint changed, the
cache is emptied and every page is read again, so every chapter executes again; when it did
not, the cache is kept and only chapters whose cells changed execute.

Before the build starts, it checks that CIFAR-10 can be found, so that missing data fails
in seconds with the library's message instead of after minutes of execution.

Usage::

    python tools/build_book.py                      # what `make book` runs
    python tools/build_book.py --path-output /tmp/b # build into /tmp/b/_build

Any warning fails the build (``jupyter-book build . -W -n --keep-going``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# What a chapter reads besides its own cells, relative to the book's root (folders recursively).
DEPENDENCIES = ("xception_lib", "requirements.txt", "pyproject.toml")
# Settings that change what the chapters show (the data they read, whether they may download).
SETTINGS = ("XCEPTION_DATA", "XCEPTION_OFFLINE", "HF_HUB_OFFLINE", "XCEPTION_CIFAR_CHECKPOINT")
STAMP = "xl_dependencies.json"  # stored inside the cache folder, so it travels with the cache
_SKIPPED = ("__pycache__", ".egg-info", ".ipynb_checkpoints", ".pytest_cache")


def _files(root: Path, dependencies: tuple[str, ...]) -> list[Path]:
    found: list[Path] = []
    for name in dependencies:
        path = root / name
        candidates = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        found += [p for p in candidates if not any(part.endswith(_SKIPPED) for part in p.relative_to(root).parts)]
    return found


def environment() -> list[str]:
    """The Python version, every installed distribution (``name==version``) and the settings."""
    dists = {f"{d.metadata['Name'].lower()}=={d.version}" for d in metadata.distributions() if d.metadata["Name"]}
    dists -= {d for d in dists if d.startswith("pip==")}  # pip does not change an output
    settings = [f"{name}={data_path() if name == 'XCEPTION_DATA' else os.environ[name]}" for name in SETTINGS if os.environ.get(name)]
    return [f"python=={sys.version.split()[0]}", *sorted(dists), *settings]


def fingerprint(root: Path = ROOT, dependencies: tuple[str, ...] = DEPENDENCIES, env: list[str] | None = None) -> dict:
    """What the chapters' outputs depend on besides their cells: a hash per file, and the environment."""
    files = {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in _files(root, dependencies)}
    return {"files": files, "environment": environment() if env is None else env}


def changes(old: dict | None, new: dict) -> list[str]:
    """What differs between two fingerprints, in words (empty: nothing)."""
    if old is None:
        return ["no record of what the cached outputs were computed with"]
    files_old, files_new = old.get("files", {}), new["files"]
    said = [f"{name} changed" for name in sorted(files_old.keys() & files_new.keys()) if files_old[name] != files_new[name]]
    said += [f"{name} added" for name in sorted(files_new.keys() - files_old.keys())]
    said += [f"{name} removed" for name in sorted(files_old.keys() - files_new.keys())]
    env_old, env_new = set(old.get("environment", [])), set(new["environment"])
    if env_old != env_new:
        differ = sorted(env_old ^ env_new)
        said.append(f"installed packages or settings changed ({', '.join(differ[:4])}{', ...' if len(differ) > 4 else ''})")
    return said


def prepare_cache(cache: Path, current: dict) -> list[str]:
    """Keep the execution cache if it was made with ``current``; else empty it.

    Returns why every chapter must execute again (the cache was emptied or did not exist);
    an empty list means the cache was kept. Either way the cache folder then holds a stamp
    of ``current``, so that what the build adds is recorded as made with it.
    """
    try:
        recorded = json.loads((cache / STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        recorded = None
    if not cache.exists():
        reasons = ["no execution cache yet"]
    else:
        reasons = changes(recorded, current)
        if reasons:
            shutil.rmtree(cache)
    cache.mkdir(parents=True, exist_ok=True)
    (cache / STAMP).write_text(json.dumps(current, indent=1, sort_keys=True), encoding="utf-8")
    return reasons


def build(
    root: Path = ROOT,
    path_output: Path | None = None,
    dependencies: tuple[str, ...] = DEPENDENCIES,
    jupyter_book: str | None = None,
) -> int:
    """Build the book at ``root``: execute every chapter again if a dependency changed."""
    build_dir = (path_output or root) / "_build"
    cache = build_dir / ".jupyter_cache"
    current = fingerprint(root, dependencies)
    reasons = prepare_cache(cache, current)
    if reasons:
        shown = "; ".join(reasons[:5]) + (f"; and {len(reasons) - 5} more" if len(reasons) > 5 else "")
        print(f"build_book: {shown}: executing every chapter again.", flush=True)
    else:
        print("build_book: library, records and packages unchanged: chapters whose cells did not change come from the cache.", flush=True)
    command = [jupyter_book or _jupyter_book(), "build", str(root), "-W", "-n", "--keep-going"]
    if path_output is not None:
        command += ["--path-output", str(path_output)]
    if reasons:
        command.append("--all")  # else Sphinx keeps the old outputs of pages whose source did not change
    returncode = subprocess.run(command, cwd=root).returncode
    if fingerprint(root, dependencies) != current:  # edited during the build: trust nothing next time
        (cache / STAMP).unlink(missing_ok=True)
    if returncode != 0:
        # Sphinx would call the failed pages up to date next time and succeed without a word;
        # read every page again instead (the chapters that executed come from the cache).
        shutil.rmtree(build_dir / ".doctrees", ignore_errors=True)
    return returncode


def _jupyter_book() -> str:
    beside = Path(sys.executable).with_name("jupyter-book")  # the same environment as this Python
    found = str(beside) if beside.exists() else shutil.which("jupyter-book")
    if found is None:
        raise SystemExit("build_book: jupyter-book is not installed; run `pip install -r requirements.txt` (make book does)")
    return found


def check_library(root: Path = ROOT) -> str | None:
    """None if ``import xception_lib`` finds this repository's copy; else what is wrong."""
    import importlib.util

    spec = importlib.util.find_spec("xception_lib")
    if spec is None or spec.origin is None:
        return "xception_lib is not installed: run `pip install -r requirements.txt` (make book does)."
    if not Path(spec.origin).resolve().is_relative_to(root / "xception_lib"):
        return (
            f"the chapters would import xception_lib from {Path(spec.origin).parent}, not from this repository; "
            "install this copy with `pip install -e .` (make book does)."
        )
    return None


def check_data() -> str | None:
    """None if CIFAR-10 can be loaded (this also fills the decoded cache the chapters use); else why not."""
    from xception_lib import data

    try:
        data.load_cifar("cifar10")
    except data.DataNotFoundError as error:
        return str(error)
    return None


def data_path(root: Path = ROOT) -> str | None:
    """``XCEPTION_DATA``, a relative path taken relative to the repository root.

    The chapters execute with ``book/`` as their working directory; the tests run from the root.
    """
    value = os.environ.get("XCEPTION_DATA")
    if value and not Path(value).expanduser().is_absolute():
        return str((root / value).resolve())
    return value


def resolve_data_path(root: Path = ROOT) -> None:
    """Make a relative ``XCEPTION_DATA`` absolute for the build (see :func:`data_path`)."""
    if os.environ.get("XCEPTION_DATA"):
        os.environ["XCEPTION_DATA"] = data_path(root)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path-output", type=Path, help="build into PATH/_build instead of ./_build")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    resolve_data_path()
    for problem in (check_library(), check_data()):
        if problem:
            print(f"build_book: cannot build the book: {problem}", file=sys.stderr)
            return 2
    returncode = build(path_output=args.path_output.resolve() if args.path_output else None)
    print(f"build_book: {'built' if returncode == 0 else 'FAILED'} in {time.perf_counter() - start:.0f} s", flush=True)
    return returncode


if __name__ == "__main__":
    sys.exit(main())
