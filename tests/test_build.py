"""The build: outputs are never stale, missing data fails fast, and the two commands exist.

``tools/build_book.py`` (what ``make book`` runs) executes every chapter again when the
library, its records, the requirements or the installed packages changed, and keeps the
execution cache otherwise. The round-trip test builds a one-page book with a one-cell
notebook three times (a few seconds each).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import load_tool, skip_summary

ROOT = Path(__file__).resolve().parent.parent
yaml = pytest.importorskip("yaml", reason="install xception_lib[test]")


build_book = load_tool("build_book")


def _tree(root: Path) -> Path:
    """A miniature repository: a library with a record, and requirements."""
    (root / "lib" / "records").mkdir(parents=True)
    (root / "lib" / "__init__.py").write_text("VALUE = 1\n")
    (root / "lib" / "records" / "run.json").write_text('{"accuracy": 0.9}\n')
    (root / "lib" / "__pycache__").mkdir()
    (root / "lib" / "__pycache__" / "x.pyc").write_bytes(b"\0")
    (root / "requirements.txt").write_text("torch>=2.3\n")
    return root


DEPS = ("lib", "requirements.txt")


# ------------------------------------------------------------------ the decision


def test_fingerprint_sees_every_dependency(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    env = ["python==3.11.7", "torch==2.14.1"]
    base = build_book.fingerprint(root, DEPS, env)
    assert set(base["files"]) == {"lib/__init__.py", "lib/records/run.json", "requirements.txt"}  # no caches
    assert build_book.changes(base, build_book.fingerprint(root, DEPS, env)) == []

    (root / "lib" / "__init__.py").write_text("VALUE = 2\n")
    assert build_book.changes(base, build_book.fingerprint(root, DEPS, env)) == ["lib/__init__.py changed"]
    (root / "lib" / "__init__.py").write_text("VALUE = 1\n")
    (root / "lib" / "records" / "run.json").write_text('{"accuracy": 0.8}\n')
    assert build_book.changes(base, build_book.fingerprint(root, DEPS, env)) == ["lib/records/run.json changed"]
    (root / "lib" / "records" / "new.json").write_text("{}\n")
    assert "lib/records/new.json added" in build_book.changes(base, build_book.fingerprint(root, DEPS, env))

    moved = build_book.fingerprint(root, DEPS, ["python==3.11.7", "torch==2.15.0"])
    assert any(
        "installed packages or settings changed" in c and "torch==2.15.0" in c for c in build_book.changes(base, moved)
    )
    assert build_book.changes(None, base) != []  # a cache of unknown provenance is not trusted


def test_the_book_depends_on_the_library_its_records_and_the_packages_it_imports() -> None:
    files = build_book.fingerprint(env=[])["files"]
    assert "xception_lib/complexity.py" in files
    records = [ROOT / "xception_lib" / "records", ROOT / "book" / "results"]
    shipped = [p.relative_to(ROOT).as_posix() for d in records if d.is_dir() for p in d.rglob("*") if p.is_file()]
    assert shipped and set(shipped) <= set(files), "every recorded result a chapter reads is a dependency"
    environment = build_book.environment()
    names = {e.split("==")[0] for e in environment if "==" in e}
    assert environment[0].startswith("python==")
    assert {"torch", "numpy", "matplotlib", "myst-nb", "ipykernel"} <= names  # imported, or executing the chapters
    assert not names & {"pytest", "ruff", "mypy", "jupyter-book", "playwright", "pip"}, "tools that no chapter imports"


# what `installed()` returns, for a small made-up environment
PACKAGES = {
    "torch": (
        "2.14.1",
        ["numpy>=1.24", "sympy", "opt-einsum>=3.3; extra == 'opt-einsum'", "triton; sys_platform == 'never'"],
    ),
    "numpy": ("2.4.6", []),
    "sympy": ("1.14", ["mpmath"]),
    "mpmath": ("1.3.0", []),
    "opt-einsum": ("3.4", []),
    "triton": ("3.5", []),
    "ipykernel": ("7.4.0", ["tornado"]),
    "tornado": ("6.5", []),
    "ruff": ("0.17.6", []),
}


def test_fingerprint_keeps_unrelated_installs_and_sees_a_new_torch(tmp_path: Path) -> None:
    (tmp_path / "book").mkdir()
    (tmp_path / "book" / "ch.ipynb").write_text(
        json.dumps(
            {
                "cells": [
                    {"cell_type": "code", "source": ["%matplotlib inline\n", "import torch\n"]},
                    {"cell_type": "markdown", "source": "import ruff"},
                ]
            }
        )
    )
    modules = {"torch": ["torch"], "ruff": ["ruff"], "jupyterlab": ["jupyterlab"], "numpy": ["numpy"]}
    before = build_book.chapter_packages(tmp_path, PACKAGES, modules)
    # what torch requires, and what executes the chapters; not extras, other platforms or unused tools
    assert before == {
        "torch": "2.14.1",
        "numpy": "2.4.6",
        "sympy": "1.14",
        "mpmath": "1.3.0",
        "ipykernel": "7.4.0",
        "tornado": "6.5",
    }
    with_lab = PACKAGES | {"jupyterlab": ("4.5", ["jupyter-server", "tornado>=6"]), "jupyter-server": ("2.17", [])}
    assert build_book.chapter_packages(tmp_path, with_lab, modules) == before  # `make lab` keeps the cache
    newer = PACKAGES | {"torch": ("2.15.0", PACKAGES["torch"][1])}
    assert build_book.chapter_packages(tmp_path, newer, modules)["torch"] == "2.15.0"
    deeper = PACKAGES | {"mpmath": ("1.4.0", [])}  # torch -> sympy -> mpmath
    assert build_book.chapter_packages(tmp_path, deeper, modules) != before


def test_imports_are_found_in_functions_and_beside_magics() -> None:
    source = "%time x = 1\n!pip list\nimport a.b as c, d\ndef f():\n    from e.f import g\n    from . import h\n"
    assert build_book._imports(source) == {"a", "d", "e"}
    assert build_book._imports("import x\nthis is ( not python") == {"x"}  # a broken cell: read line by line
    assert {"torch", "myst_nb", "timm"} <= build_book.imported_modules()  # timm: imported inside a function


@pytest.mark.slow
def test_the_data_and_offline_settings_are_dependencies(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XCEPTION_OFFLINE", raising=False)
    monkeypatch.setenv("XCEPTION_DATA", "../shared/data")
    before = build_book.environment()
    assert f"XCEPTION_DATA={(ROOT / '../shared/data').resolve()}" in before  # relative to the repository
    monkeypatch.setenv("XCEPTION_OFFLINE", "1")
    assert build_book.changes(
        {"files": {}, "environment": before}, {"files": {}, "environment": build_book.environment()}
    )


def test_prepare_cache_keeps_or_empties(tmp_path: Path) -> None:
    cache = tmp_path / "_build" / ".jupyter_cache"
    now = {"files": {"lib/a.py": "1"}, "environment": ["torch==2"]}
    assert build_book.prepare_cache(cache, now) == ["no execution cache yet"]
    (cache / "executed").mkdir()
    assert build_book.prepare_cache(cache, now) == []  # same dependencies: kept
    assert (cache / "executed").is_dir()
    later = {"files": {"lib/a.py": "2"}, "environment": ["torch==2"]}
    assert build_book.prepare_cache(cache, later) == ["lib/a.py changed"]
    assert not (cache / "executed").exists()  # emptied
    (cache / build_book.STAMP).unlink()
    (cache / "executed").mkdir()
    assert build_book.prepare_cache(cache, later) != []  # no stamp: not trusted
    assert not (cache / "executed").exists()


# ------------------------------------------------------------------ a real build, three times


@pytest.mark.slow
def test_a_library_or_record_change_executes_the_chapter_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A one-page book whose cell prints a library value, a record and a random number.

    Built without a git remote, its repository link is the configured placeholder, and its
    page says so once.
    """
    pytest.importorskip("myst_nb", reason="install xception_lib[book]")
    nbformat = pytest.importorskip("nbformat")
    monkeypatch.delenv("GITHUB_REPOSITORY", raising=False)
    book = _tree(tmp_path / "book")
    (book / "_config.yml").write_text(
        "title: t\nonly_build_toc_files: true\nexecute:\n  execute_notebooks: cache\n"
        "repository:\n  url: https://github.com/example/placeholder\nhtml:\n  use_repository_button: true\n"
    )
    (book / "_toc.yml").write_text("format: jb-book\nroot: page\n")
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Page"),
        nbformat.v4.new_code_cell(
            "import json, random, sys\nsys.path.insert(0, '.')\nimport lib\n"
            "record = json.load(open('lib/records/run.json'))\n"
            "print(f'value={lib.VALUE} accuracy={record[\"accuracy\"]} draw={random.random()}')"
        ),
    ]
    nbformat.write(nb, book / "page.ipynb")
    jupyter_book = shutil.which("jupyter-book", path=str(Path(sys.executable).parent)) or shutil.which("jupyter-book")
    assert jupyter_book, "jupyter-book is not installed"

    def build() -> str:
        assert build_book.build(book, dependencies=DEPS, jupyter_book=jupyter_book) == 0
        html = (book / "_build" / "html" / "page.html").read_text(encoding="utf-8")
        return re.search(r"value=\S+ accuracy=\S+ draw=\S+", html).group(0)

    first = build()
    assert first.startswith("value=1 accuracy=0.9 ")
    page = (book / "_build" / "html" / "page.html").read_text(encoding="utf-8")
    assert page.count("Built without a GitHub remote") == 1  # one banner
    assert 'href="https://github.com/example/placeholder"' in page
    assert "announcement" not in (book / "_config.yml").read_text(), "the committed configuration is not edited"
    assert build() == first  # nothing changed: the cached output, not a new draw
    (book / "lib" / "__init__.py").write_text("VALUE = 2\n")
    second = build()
    assert second.startswith("value=2 accuracy=0.9 ") and second != first
    (book / "lib" / "records" / "run.json").write_text('{"accuracy": 0.8}\n')
    assert build().startswith("value=2 accuracy=0.8 ")


@pytest.mark.slow
def test_a_failed_build_is_not_called_up_to_date_next_time(tmp_path: Path) -> None:
    book = _tree(tmp_path)
    (book / "_build" / ".doctrees").mkdir(parents=True)
    assert build_book.build(book, dependencies=DEPS, jupyter_book=shutil.which("false")) == 1
    assert not (book / "_build" / ".doctrees").exists()  # every page is read (and warns) again
    assert (book / "_build" / ".jupyter_cache" / build_book.STAMP).exists()  # what executed stays cached


# ------------------------------------------------------------------ missing data, commands


@pytest.mark.slow
def test_missing_data_fails_before_the_build(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("XCEPTION_")}
    env |= {"XCEPTION_DATA": str(tmp_path / "nothing-here"), "XCEPTION_CACHE": str(tmp_path / "cache")}
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "build_book.py"), "--path-output", str(tmp_path / "out")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "cannot build the book" in result.stderr
    assert "XCEPTION_DATA" in result.stderr and "download" in result.stderr  # both ways to provide it
    assert not (tmp_path / "out").exists(), "nothing was built"


def test_relative_data_path_is_relative_to_the_repository(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XCEPTION_DATA", "../shared/data")
    build_book.resolve_data_path()
    assert os.environ["XCEPTION_DATA"] == str((ROOT / "../shared/data").resolve())


def _make(*args: str, cwd: Path = ROOT, **variables: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    # as if typed: no settings from the environment, none from a make running these tests
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAKE", "XCEPTION_", "HF_HUB", "TORCH"))}
    command = ["make", "--no-print-directory", *args, *(f"{k}={v}" for k, v in variables.items())]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def _make_dry_run(*targets: str, **variables: str) -> str:
    result = _make("--dry-run", "--always-make", *targets, **variables)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_make_book_and_make_test_set_themselves_up(tmp_path: Path) -> None:
    venv, settings = tmp_path / "venv", str(tmp_path / "settings.mk")
    book = _make_dry_run("book", VENV=str(venv), SETTINGS_FILE=settings)
    assert f"-m venv {venv}" in book
    assert "pip install -r requirements.txt" in book
    lines = book.strip().splitlines()
    assert lines[-1] == f"{venv}/bin/python tools/build_book.py"
    check = next(i for i, line in enumerate(lines) if line.endswith("tools/build_book.py --check-data-only"))
    assert check < next(i for i, line in enumerate(lines) if "pip install" in line), "the data check comes first"
    test = _make_dry_run("test", VENV=str(venv), SETTINGS_FILE=settings)
    assert "pip install -r requirements.txt" in test
    assert test.strip().splitlines()[-1] == f"{venv}/bin/python -m pytest"
    cpu = _make_dry_run(
        "book", VENV=str(venv), SETTINGS_FILE=settings, TORCH_INDEX="https://download.pytorch.org/whl/cpu"
    )
    assert "pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu" in cpu
    assert f"cp tools/ipython_kernel_config.py {venv}/etc/ipython/" in book  # no TCP notice from every kernel


def test_make_lint_test_fast_lab_and_clean(tmp_path: Path) -> None:
    venv, settings = tmp_path / "venv", str(tmp_path / "settings.mk")
    lint = _make_dry_run("lint", VENV=str(venv), SETTINGS_FILE=settings).strip().splitlines()
    assert lint[-3:] == [f"{venv}/bin/ruff check .", f"{venv}/bin/ruff format --check .", f"{venv}/bin/mypy"]
    fast = _make_dry_run("test-fast", VENV=str(venv), SETTINGS_FILE=settings).strip().splitlines()[-1]
    assert fast == f'{venv}/bin/python -m pytest -m "not slow and not book and not browser"'
    lab = _make_dry_run("lab", VENV=str(venv), SETTINGS_FILE=settings)
    assert (
        "pip install jupyterlab -c" in lab
        and lab.strip().splitlines()[-1] == f"{venv}/bin/python tools/build_book.py --lab"
    )
    assert _make_dry_run("clean").strip() == "rm -rf _build"


def test_lab_starts_for_the_root_user_too() -> None:
    """JupyterLab refuses root unless told; ``make lab`` in a container (root) must still open the chapters."""
    assert build_book.lab_arguments(["--no-browser"], root_user=False) == ["--no-browser"]
    assert build_book.lab_arguments(["--no-browser"], root_user=True) == ["--no-browser", "--allow-root"]
    assert build_book.lab_arguments(["--allow-root"], root_user=True) == ["--allow-root"]


def test_a_setting_given_once_is_remembered_until_given_again(tmp_path: Path) -> None:
    settings = tmp_path / "settings.mk"
    data = tmp_path / "data"

    def shown(**variables: str) -> str:
        result = _make("settings", SETTINGS_FILE=str(settings), **variables)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip().splitlines()[-1]

    assert shown() == f"make: settings ({settings}): none"
    given = shown(XCEPTION_DATA=str(data), TORCH="torch==2.14.1 torchvision==0.29.1")
    assert f"XCEPTION_DATA={data}" in given and "TORCH=torch==2.14.1 torchvision==0.29.1" in given
    assert shown() == given  # remembered by the next command, for book, test and lab alike
    assert build_book.remembered(settings) == {"XCEPTION_DATA": str(data), "TORCH": "torch==2.14.1 torchvision==0.29.1"}
    assert f"XCEPTION_DATA={tmp_path / 'other'}" in shown(XCEPTION_DATA=str(tmp_path / "other"))  # given again
    assert "XCEPTION_DATA" not in shown(XCEPTION_DATA="")  # forgotten
    assert "XCEPTION_DATA" not in shown() and "TORCH=torch==2.14.1" in shown()
    relative = shown(XCEPTION_DATA="../shared/data")  # stored absolute: the same folder from anywhere
    assert f"XCEPTION_DATA={(ROOT / '../shared/data').resolve()}" in relative


def test_remembered_settings_reach_a_plain_pytest_or_build_book_run(tmp_path: Path) -> None:
    settings = tmp_path / "settings.mk"
    settings.write_text("# Written by make\nXCEPTION_DATA ?= /data/cifar\nTORCH ?= torch\nXCEPTION_OFFLINE ?= 1\n")
    environ = {"XCEPTION_OFFLINE": "0"}
    assert build_book.use_remembered(environ, settings) == ["XCEPTION_DATA"]
    assert environ == {"XCEPTION_OFFLINE": "0", "XCEPTION_DATA": "/data/cifar"}  # the environment wins; no TORCH


def test_make_book_without_data_fails_before_the_install(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    missing = tmp_path / "no-such-data"
    result = _make("book", VENV=str(venv), SETTINGS_FILE=str(tmp_path / "settings.mk"), XCEPTION_DATA=str(missing))
    assert result.returncode != 0
    assert f"XCEPTION_DATA={str(missing)!r} does not exist" in result.stderr
    assert "pip install" not in result.stdout and not venv.exists(), "nothing was installed"


def test_the_quick_data_check_needs_only_the_standard_library(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XCEPTION_", "PYTHON"))}
    check = [sys.executable, "-I", "-S", str(ROOT / "tools" / "build_book.py"), "--check-data-only"]  # no site-packages
    present = subprocess.run(
        check, env=env | {"XCEPTION_DATA": str(tmp_path)}, capture_output=True, text=True, timeout=60
    )
    assert present.returncode == 0, present.stderr
    env |= {"XCEPTION_DATA": "no-such-folder"}
    absent = subprocess.run(check, env=env, capture_output=True, text=True, timeout=60)
    assert absent.returncode == 2
    assert f"does not exist (resolved to {ROOT / 'no-such-folder'})" in absent.stderr  # relative to the repository


def test_threads_for_the_chapters_are_chosen_unless_set() -> None:
    assert build_book.kernel_threads() == max(1, len(os.sched_getaffinity(0)) // 2)
    environ: dict[str, str] = {}
    assert build_book.set_threads(environ) == str(build_book.kernel_threads())
    assert environ == {
        "OMP_NUM_THREADS": environ["MKL_NUM_THREADS"],
        "MKL_NUM_THREADS": str(build_book.kernel_threads()),
    }
    assert build_book.set_threads({"OMP_NUM_THREADS": "3"}) == "3"  # the reader's choice is kept


def test_a_make_in_book_points_at_the_repository_root() -> None:
    result = _make("test", cwd=ROOT / "book")
    assert result.returncode != 0 and "repository root" in result.stderr and "cd .." in result.stderr


@pytest.mark.slow
def test_a_run_that_skips_the_built_book_says_so_last(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("XL_REQUIRE_BUILD", "PYTEST_ADDOPTS")}
    env |= {"XL_BUILD_DIR": str(tmp_path / "_build" / "html")}  # no book built there
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "tests/test_colab.py", "-k", "fit_the_column"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    last = result.stdout.strip().splitlines()[-1]
    assert result.returncode == 0 and "skipped" in result.stdout, result.stdout[-2000:]
    assert last.startswith("NOT CHECKED: ") and "tests of the built book SKIPPED" in last, last
    assert "run `make book` first" in last  # why, and what to do


@pytest.mark.slow
def test_tests_of_the_built_book_are_marked_by_the_fixture_they_use() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "--collect-only",
            "-q",
            "-m",
            "not book",
            "tests/test_colab.py",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    kept = {line.split("::")[1] for line in result.stdout.splitlines() if "::" in line}
    assert kept == {"test_differences_sees_fallbacks_errors_and_lost_figures", "test_lines_are_what_the_page_shows"}, (
        result.stdout
    )


def test_skip_summary_counts_by_marker_and_names_the_commonest_reason() -> None:
    assert skip_summary({"book": [], "data": []}) is None
    line = skip_summary({"book": ["no book", "no book", "stale"], "data": ["no data"]})
    assert line == "3 tests of the built book SKIPPED (no book); 1 tests needing CIFAR-10 SKIPPED (no data)"


# ------------------------------------------------------------------ the repository the links name


def test_links_name_the_repository_the_book_is_built_from(tmp_path: Path) -> None:
    assert build_book.github_url("git@github.com:someone/fork.git") == "https://github.com/someone/fork"
    assert build_book.github_url("https://github.com/someone/fork.git\n") == "https://github.com/someone/fork"
    assert build_book.github_url("https://gitlab.com/someone/fork") is None
    placeholder = "https://github.com/xception-step-by-step/xception-step-by-step"
    ci = {"GITHUB_REPOSITORY": "someone/fork", "GITHUB_SERVER_URL": "https://github.com"}
    assert build_book.repository(tmp_path, placeholder, ci) == ("https://github.com/someone/fork", False)
    assert build_book.repository(tmp_path, placeholder, {}) == (placeholder, True)  # no git remote here


def test_the_built_config_names_the_repository_and_says_when_it_is_a_placeholder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copy2(ROOT / "_config.yml", tmp_path / "_config.yml")
    monkeypatch.delenv("GITHUB_REPOSITORY", raising=False)
    local = yaml.safe_load(build_book.built_config(tmp_path, tmp_path / "_build").read_text(encoding="utf-8"))
    configured = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    assert local["repository"] == configured["repository"]
    assert (
        "placeholder" in local["html"]["announcement"]
        and configured["repository"]["url"] in local["html"]["announcement"]
    )
    # local extensions are named by absolute path: the copy lives in the build folder
    extensions = local["sphinx"].pop("local_extensions")
    wanted = configured["sphinx"].pop("local_extensions")
    assert extensions == {name: str((tmp_path / where).resolve()) for name, where in wanted.items()}
    assert {k: v for k, v in local.items() if k not in ("repository", "html")} == {
        k: v for k, v in configured.items() if k not in ("repository", "html")
    }
    monkeypatch.setenv("GITHUB_REPOSITORY", "someone/fork")
    fork = yaml.safe_load(build_book.built_config(tmp_path, tmp_path / "_build").read_text(encoding="utf-8"))
    assert fork["repository"]["url"].endswith("github.com/someone/fork") and "announcement" not in fork["html"]
    assert (tmp_path / "_config.yml").read_text(encoding="utf-8") == (ROOT / "_config.yml").read_text(encoding="utf-8")


def test_ci_and_workflow_run_the_gate_then_the_readme_commands() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "make book" in readme and "make test" in readme
    assert re.search(r"^MAKE_ARGS=\(.*TORCH=\"torch==2\.14\.1 torchvision==0\.29\.1\"", ci, flags=re.M)
    order = [
        r"^make data-check\b",
        r"^\.venv-ci/bin/ruff check \. && \.venv-ci/bin/ruff format --check \.$",  # before the set-up
        r"^make .*\.venv-ci/\.installed",
        r"^make lint\b",
        r"^make test-fast\b",
        r"^make book\b",
        r"^XL_REQUIRE_BUILD=1 make test\b",
    ]
    where = [re.search(pattern, ci, flags=re.M) for pattern in order]
    assert all(where), [p for p, m in zip(order, where, strict=True) if not m]
    assert [m.start() for m in where] == sorted(m.start() for m in where), "data, ruff, set-up, gate, book, tests"
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "book.yml").read_text(encoding="utf-8"))
    steps = [step for job in workflow["jobs"].values() for step in job["steps"]]
    runs = [step.get("run", "") for step in steps]
    lint, fast, book, test = (
        next(i for i, run in enumerate(runs) if run.split()[:2] == c.split())
        for c in ("make lint", "make test-fast", "make book", "make test")
    )
    assert lint < fast < book < test and str(steps[test]["env"]["XL_REQUIRE_BUILD"]) == "1"


def test_workflow_never_restores_a_cache_of_other_library_code() -> None:
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "book.yml").read_text(encoding="utf-8"))
    steps = [step for job in workflow["jobs"].values() for step in job["steps"]]
    caches = [
        s for s in steps if s.get("uses", "").startswith("actions/cache") and ".jupyter_cache" in s["with"]["path"]
    ]
    assert len(caches) == 1
    options = caches[0]["with"]
    dependencies = re.search(r"hashFiles\(([^)]*)\)", options["key"]).group(1)
    for name in build_book.DEPENDENCIES:
        assert (f"'{name}/**'" if (ROOT / name).is_dir() or "." not in name else f"'{name}'") in dependencies, name
    for restore in str(options.get("restore-keys", "")).splitlines():
        assert f"hashFiles({dependencies})" in restore, f"restore-key {restore!r} ignores the library"


def test_readme_quickstart_pastes_as_is() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```bash\n(.*?)```", readme, flags=re.S)
    for line in (line for block in blocks for line in block.splitlines()):
        assert not re.search(r"/path/to|<[a-z-]+>", line), f"README command with a placeholder: {line}"
    assert re.search(r"outputs? (are|is) reused|reuses? (the )?(cached )?outputs", readme), (
        "say when outputs are reused"
    )
