#!/usr/bin/env python
"""Build the book so that every output on it comes from today's code.

MyST-NB's execution cache (jupyter-cache, ``_build/.jupyter_cache``) keys a chapter on its
own cells only: it knows nothing of ``xception_lib``. This script adds what the cache
cannot see. It fingerprints what can change a chapter's outputs besides its cells (the
library's files, including the records it ships; the Python version; the installed version
of every package that the chapters or the library import, and of everything those require;
the settings that name the data) and stores the fingerprint beside the cache. When the
fingerprint changed, the cache is emptied and every page is read again, so every chapter
executes again; when it did not, the cache is kept and only chapters whose cells changed
execute. Tools that no chapter imports (JupyterLab, ruff, pytest) are not part of it, so
installing one keeps the cache.

Before anything else it checks that CIFAR-10 can be found, so that missing data fails in
seconds: ``--check-data-only`` (what ``make book`` runs before the set-up, with the standard
library alone) and then the library's own check.

The chapters' kernels run with ``OMP_NUM_THREADS`` threads: half the CPUs this process may
use, at least one, unless ``OMP_NUM_THREADS`` is set. On a machine shared with other work,
PyTorch's default (one thread per core) makes every kernel wait at each barrier for a core
that another job holds: chapter 4 took 209 s with two threads beside a second job and 26 s
with one (22 s on a quiet machine with two).

The links to the repository (the Colab launch buttons, the repository and issue buttons)
name the repository the book is built from: ``$GITHUB_REPOSITORY`` in a GitHub workflow, else
the ``origin`` remote when it is on GitHub, else ``repository.url`` of ``_config.yml``, a
placeholder, which a banner on every page then says. ``_config.yml`` is not edited: the build
reads a copy with the repository replaced (``_build/_config.built.yml``).

Usage::

    python tools/build_book.py                      # what `make book` runs
    python tools/build_book.py --path-output /tmp/b # build into /tmp/b/_build
    python tools/build_book.py --check-data-only    # only the data check (seconds)
    python tools/build_book.py --lab                # JupyterLab on book/, with the same settings
    python tools/build_book.py --lab --no-browser   # ... arguments after --lab go to JupyterLab

Settings that ``make`` remembered (``settings.mk``) apply here too when the environment does
not set them. Any warning fails the build (``jupyter-book build . -W -n --keep-going``).
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, MutableMapping
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# What a chapter reads besides its own cells, relative to the book's root (folders recursively).
DEPENDENCIES = ("xception_lib",)
# Settings that change what the chapters show (the data they read, whether they may download).
SETTINGS = ("XCEPTION_DATA", "XCEPTION_OFFLINE", "HF_HUB_OFFLINE", "XCEPTION_CIFAR_CHECKPOINT")
# What executes the chapters and renders their outputs, besides what they import.
EXECUTION = ("ipykernel", "nbclient", "jupyter-cache", "myst-nb")
STAMP = "xl_dependencies.json"  # stored inside the cache folder, so it travels with the cache
SETTINGS_FILE = "settings.mk"  # written by make (`NAME ?= value` lines), git-ignored
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"  # torchvision's download
_SKIPPED = ("__pycache__", ".egg-info", ".ipynb_checkpoints", ".pytest_cache")


def _files(root: Path, dependencies: tuple[str, ...]) -> list[Path]:
    found: list[Path] = []
    for name in dependencies:
        path = root / name
        candidates = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        found += [p for p in candidates if not any(part.endswith(_SKIPPED) for part in p.relative_to(root).parts)]
    return found


# ------------------------------------------------------------------ which packages count


def _imports(source: str) -> set[str]:
    """Top-level module names that ``source`` imports anywhere (function-level imports included)."""
    lines = [line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))]  # IPython magics
    try:
        tree = ast.parse("\n".join(lines))
    except SyntaxError:
        return set(re.findall(r"^\s*(?:from|import)\s+(\w+)", source, flags=re.M))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def imported_modules(root: Path = ROOT) -> set[str]:
    """What the chapters (``book/*.ipynb``) and the library (``xception_lib/``) import."""
    names: set[str] = set()
    for path in sorted((root / "book").glob("*.ipynb")):
        cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
        for cell in cells:
            if cell.get("cell_type") == "code":
                source = cell.get("source", "")
                names |= _imports("".join(source) if isinstance(source, list) else source)
    for path in _files(root, DEPENDENCIES):
        if path.suffix == ".py":
            names |= _imports(path.read_text(encoding="utf-8"))
    return names


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed() -> dict[str, tuple[str, list[str]]]:
    """Every installed distribution: normalised name -> (version, its requirements)."""
    found: dict[str, tuple[str, list[str]]] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name and _normal(name) not in found:
            found[_normal(name)] = (dist.version, list(dist.requires or []))
    return found


def closure(roots: Iterable[str], packages: Mapping[str, tuple[str, list[str]]]) -> dict[str, str]:
    """``roots`` and everything they require (not their optional extras), installed: name -> version."""
    from packaging.requirements import InvalidRequirement, Requirement

    found: dict[str, str] = {}
    todo = [_normal(name) for name in roots]
    while todo:
        name = todo.pop()
        if name in found or name not in packages:
            continue
        version, requires = packages[name]
        found[name] = version
        for text in requires:
            try:
                requirement = Requirement(text)
            except InvalidRequirement:
                continue
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(_normal(requirement.name))
    return found


def chapter_packages(
    root: Path = ROOT,
    packages: Mapping[str, tuple[str, list[str]]] | None = None,
    modules: Mapping[str, list[str]] | None = None,
) -> dict[str, str]:
    """The installed packages that can change a chapter's outputs, with their versions.

    Those that provide a module the chapters or the library import, those that execute the
    chapters (:data:`EXECUTION`), and everything they require; not the library itself
    (its files are fingerprinted), and not tools that nothing imports.
    """
    packages = installed() if packages is None else packages
    modules = metadata.packages_distributions() if modules is None else modules
    roots = {dist for name in imported_modules(root) for dist in modules.get(name, [])}
    roots = {_normal(dist) for dist in roots} - {"xception-lib"}
    return closure(sorted(roots | set(EXECUTION)), packages)


def environment(root: Path = ROOT, packages: Mapping[str, tuple[str, list[str]]] | None = None) -> list[str]:
    """The Python version, the chapters' packages (``name==version``) and the settings."""
    dists = [f"{name}=={version}" for name, version in sorted(chapter_packages(root, packages).items())]
    settings = [
        f"{name}={data_path() if name == 'XCEPTION_DATA' else os.environ[name]}"
        for name in SETTINGS
        if os.environ.get(name)
    ]
    return [f"python=={sys.version.split()[0]}", *dists, *settings]


def fingerprint(root: Path = ROOT, dependencies: tuple[str, ...] = DEPENDENCIES, env: list[str] | None = None) -> dict:
    """What the chapters' outputs depend on besides their cells: a hash per file, and the environment."""
    files = {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in _files(root, dependencies)
    }
    return {"files": files, "environment": environment(root) if env is None else env}


def changes(old: dict | None, new: dict) -> list[str]:
    """What differs between two fingerprints, in words (empty: nothing)."""
    if old is None:
        return ["no record of what the cached outputs were computed with"]
    files_old, files_new = old.get("files", {}), new["files"]
    said = [
        f"{name} changed" for name in sorted(files_old.keys() & files_new.keys()) if files_old[name] != files_new[name]
    ]
    said += [f"{name} added" for name in sorted(files_new.keys() - files_old.keys())]
    said += [f"{name} removed" for name in sorted(files_old.keys() - files_new.keys())]
    env_old, env_new = set(old.get("environment", [])), set(new["environment"])
    if env_old != env_new:
        differ = sorted(env_old ^ env_new)
        said.append(
            f"installed packages or settings changed ({', '.join(differ[:4])}{', ...' if len(differ) > 4 else ''})"
        )
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


# ------------------------------------------------------------------ the repository the links name


def github_url(remote: str) -> str | None:
    """``https://github.com/owner/name`` for a GitHub remote (https or ssh), else None."""
    match = re.fullmatch(r"(?:https://|ssh://git@|git@)github\.com[/:]([\w.-]+)/([\w.-]+?)(?:\.git)?/?", remote.strip())
    return f"https://github.com/{match.group(1)}/{match.group(2)}" if match else None


def repository(
    root: Path = ROOT, configured: str | None = None, environ: Mapping[str, str] = os.environ
) -> tuple[str | None, bool]:
    """The repository the book is built from, and whether it is only ``_config.yml``'s placeholder.

    ``$GITHUB_REPOSITORY`` (set in GitHub's workflows), else the ``origin`` remote if it is
    on GitHub, else ``configured`` (``repository.url``), which is then a placeholder.
    """
    if environ.get("GITHUB_REPOSITORY"):
        server = environ.get("GITHUB_SERVER_URL", "https://github.com").rstrip("/")
        return f"{server}/{environ['GITHUB_REPOSITORY']}", False
    try:
        remote = subprocess.run(
            ["git", "-C", str(root), "remote", "get-url", "origin"], capture_output=True, text=True, timeout=10
        ).stdout
    except OSError:  # no git
        remote = ""
    url = github_url(remote) if remote else None
    return (url, False) if url else (configured, configured is not None)


def built_config(root: Path, build_dir: Path) -> Path | None:
    """A copy of ``root/_config.yml`` whose links name :func:`repository`; None without a repository."""
    import yaml

    config = yaml.safe_load((root / "_config.yml").read_text(encoding="utf-8")) or {}
    configured = (config.get("repository") or {}).get("url")
    if not configured:
        return None
    url, placeholder = repository(root, str(configured).rstrip("/"))
    config["repository"]["url"] = url
    # Jupyter Book finds local extensions relative to the configuration file: from the copy in the
    # build folder, name them by absolute path.
    extensions = (config.get("sphinx") or {}).get("local_extensions") or {}
    for name, where in extensions.items():
        extensions[name] = str((root / where).resolve())
    if placeholder:
        config.setdefault("html", {})["announcement"] = (
            f"Built without a GitHub remote: the repository, issue and Colab links on these pages point at "
            f"{url}, a placeholder."
        )
    path = build_dir / "_config.built.yml"
    build_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "# Written by tools/build_book.py from _config.yml, with the links naming the repository built from.\n"
        + yaml.safe_dump(config, sort_keys=False, allow_unicode=True),
        encoding="utf-8",
    )
    print(f"build_book: links name {url}{' (a placeholder: no GitHub remote)' if placeholder else ''}", flush=True)
    return path


# ------------------------------------------------------------------ the build


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
        print(
            "build_book: library, packages and settings unchanged: chapters whose cells did not change come from the cache.",
            flush=True,
        )
    command = [jupyter_book or _jupyter_book(), "build", str(root), "-W", "-n", "--keep-going"]
    config = built_config(root, build_dir) if (root / "_config.yml").exists() else None
    if config is not None:
        command += ["--config", str(config)]
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


def _beside_python(name: str) -> str | None:
    beside = Path(sys.executable).with_name(name)  # the same environment as this Python
    return str(beside) if beside.exists() else shutil.which(name)


def _jupyter_book() -> str:
    found = _beside_python("jupyter-book")
    if found is None:
        raise SystemExit(
            "build_book: jupyter-book is not installed; run `pip install -r requirements.txt` (make book does)"
        )
    return found


# ------------------------------------------------------------------ settings and threads


def remembered(path: Path = ROOT / SETTINGS_FILE) -> dict[str, str]:
    """The settings ``make`` remembered in ``settings.mk`` (``NAME ?= value`` lines)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return {}
    return {
        m.group(1): m.group(2).strip()
        for m in re.finditer(r"^(\w+)\s*\?=\s*(.*)$", text, flags=re.M)
        if m.group(2).strip()
    }


def use_remembered(environ: MutableMapping[str, str] = os.environ, path: Path = ROOT / SETTINGS_FILE) -> list[str]:
    """Set the chapters' settings that ``make`` remembered and ``environ`` lacks; return their names."""
    applied = [name for name, value in remembered(path).items() if name in SETTINGS and not environ.get(name)]
    for name in applied:
        environ[name] = remembered(path)[name]
    return applied


def kernel_threads() -> int:
    """Threads for the chapters' kernels: half the CPUs this process may use, at least one.

    On 2 cores, one: beside a second job, chapter 4 then took 26 s instead of 209 s (22 s on a
    quiet machine with PyTorch's default of two). Half, not all, leaves room for other work.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, cpus // 2)


def set_threads(environ: MutableMapping[str, str] = os.environ) -> str:
    """Set ``OMP_NUM_THREADS`` (and MKL's) for the kernels unless already set; return the value."""
    threads = environ.get("OMP_NUM_THREADS") or str(kernel_threads())
    environ["OMP_NUM_THREADS"] = threads
    environ.setdefault("MKL_NUM_THREADS", threads)
    return threads


# ------------------------------------------------------------------ checks


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


def check_data_quick(root: Path = ROOT, timeout: float = 10.0) -> str | None:
    """None if CIFAR-10 looks available; else why not. The standard library only, in seconds.

    ``XCEPTION_DATA`` must exist; without it, torchvision's download must be there already
    or its server reachable. Whether the copy is complete is :func:`check_data`'s job.
    """
    import urllib.error
    import urllib.request

    value = os.environ.get("XCEPTION_DATA")
    if value:
        path = Path(data_path(root) or value).expanduser()
        if path.exists():
            return None
        return (
            f"XCEPTION_DATA={value!r} does not exist{'' if str(path) == value else f' (resolved to {path})'}. "
            "Set it to the folder or archive that holds CIFAR-10 (a relative path is relative to the "
            "repository root), or unset it (`make book XCEPTION_DATA=`) to download the data (about 170 MB)."
        )
    cache = os.environ.get("XCEPTION_CACHE")
    cache_root = (
        (root / cache if cache and not Path(cache).is_absolute() else Path(cache))
        if cache
        else Path.home() / ".cache" / "xception_lib"
    )
    if (cache_root / "torchvision" / "cifar-10-batches-py").is_dir():
        return None
    try:
        urllib.request.urlopen(urllib.request.Request(CIFAR_URL, method="HEAD"), timeout=timeout).close()
    except urllib.error.HTTPError:
        return None  # the server answered: the network is there
    except OSError as error:
        return (
            f"XCEPTION_DATA is not set and CIFAR-10 cannot be downloaded from {CIFAR_URL} ({error}). "
            "Set XCEPTION_DATA to a local copy (`make book XCEPTION_DATA=../shared/data`; README, Data) "
            "or connect to the internet."
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
    value = data_path(root)
    if value:
        os.environ["XCEPTION_DATA"] = value


def lab(root: Path = ROOT, arguments: list[str] | None = None) -> int:
    """Replace this process by JupyterLab on ``book/``, with the build's settings and threads."""
    found = _beside_python("jupyter-lab")
    if found is None:
        print("build_book: JupyterLab is not installed: `make lab` installs it.", file=sys.stderr)
        return 2
    os.chdir(root / "book")  # the chapters' working directory, as in the build
    os.execv(found, [found, *lab_arguments(arguments or [], root_user=os.geteuid() == 0)])
    return 0  # not reached


def lab_arguments(arguments: list[str], root_user: bool) -> list[str]:
    """JupyterLab's arguments: as given, and ``--allow-root`` for the root user (a container, a cloud VM), where
    JupyterLab would otherwise refuse to start."""
    if root_user and "--allow-root" not in arguments:
        print("build_book: running as root (a container?): JupyterLab starts with --allow-root", file=sys.stderr)
        return [*arguments, "--allow-root"]
    return arguments


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path-output", type=Path, help="build into PATH/_build instead of ./_build")
    parser.add_argument(
        "--check-data-only", action="store_true", help="only check that CIFAR-10 can be found (seconds)"
    )
    parser.add_argument(
        "--lab",
        action="store_true",
        help="open the chapters in JupyterLab with the build's settings (other arguments go to it)",
    )
    args, rest = parser.parse_known_args(argv)
    if rest and not args.lab:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    start = time.perf_counter()
    use_remembered()
    if args.check_data_only:
        problem = check_data_quick()
        if problem:
            print(f"build_book: cannot build the book: {problem}", file=sys.stderr)
            return 2
        print("build_book: data found (or downloadable).", flush=True)
        return 0
    resolve_data_path()
    threads = set_threads()
    if args.lab:
        return lab(arguments=rest)
    for problem in (check_library(), check_data()):
        if problem:
            print(f"build_book: cannot build the book: {problem}", file=sys.stderr)
            return 2
    print(f"build_book: the chapters run with OMP_NUM_THREADS={threads} (set it to choose).", flush=True)
    returncode = build(path_output=args.path_output.resolve() if args.path_output else None)
    print(f"build_book: {'built' if returncode == 0 else 'FAILED'} in {time.perf_counter() - start:.0f} s", flush=True)
    return returncode


if __name__ == "__main__":
    sys.exit(main())
