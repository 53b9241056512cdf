"""The build: outputs are never stale, missing data fails fast, and the two commands exist.

``tools/build_book.py`` (what ``make book`` runs) executes every chapter again when the
library, its records, the requirements or the installed packages changed, and keeps the
execution cache otherwise. The round-trip test builds a one-page book with a one-cell
notebook three times (a few seconds each).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import load_tool

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
    assert any("installed packages or settings changed" in c and "torch==2.15.0" in c for c in build_book.changes(base, moved))
    assert build_book.changes(None, base) != []  # a cache of unknown provenance is not trusted


def test_the_book_depends_on_the_library_records_and_requirements() -> None:
    files = build_book.fingerprint(env=[])["files"]
    assert "xception_lib/complexity.py" in files
    assert {"requirements.txt", "pyproject.toml"} <= set(files)
    records = [ROOT / "xception_lib" / "records", ROOT / "book" / "results"]
    shipped = [p.relative_to(ROOT).as_posix() for d in records if d.is_dir() for p in d.rglob("*") if p.is_file()]
    assert shipped and set(shipped) <= set(files), "every recorded result a chapter reads is a dependency"
    environment = build_book.environment()
    assert environment[0].startswith("python==") and any(e.startswith("torch==") for e in environment)


def test_the_data_and_offline_settings_are_dependencies(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XCEPTION_OFFLINE", raising=False)
    monkeypatch.setenv("XCEPTION_DATA", "../shared/data")
    before = build_book.environment()
    assert f"XCEPTION_DATA={(ROOT / '../shared/data').resolve()}" in before  # relative to the repository
    monkeypatch.setenv("XCEPTION_OFFLINE", "1")
    assert build_book.changes({"files": {}, "environment": before}, {"files": {}, "environment": build_book.environment()})


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


def test_a_library_or_record_change_executes_the_chapter_again(tmp_path: Path) -> None:
    """A one-page book whose cell prints a library value, a record and a random number."""
    pytest.importorskip("myst_nb", reason="install xception_lib[book]")
    nbformat = pytest.importorskip("nbformat")
    book = _tree(tmp_path / "book")
    (book / "_config.yml").write_text(
        "title: t\nonly_build_toc_files: true\nexecute:\n  execute_notebooks: cache\n"
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
    assert build() == first  # nothing changed: the cached output, not a new draw
    (book / "lib" / "__init__.py").write_text("VALUE = 2\n")
    second = build()
    assert second.startswith("value=2 accuracy=0.9 ") and second != first
    (book / "lib" / "records" / "run.json").write_text('{"accuracy": 0.8}\n')
    assert build().startswith("value=2 accuracy=0.8 ")


def test_a_failed_build_is_not_called_up_to_date_next_time(tmp_path: Path) -> None:
    book = _tree(tmp_path)
    (book / "_build" / ".doctrees").mkdir(parents=True)
    assert build_book.build(book, dependencies=DEPS, jupyter_book=shutil.which("false")) == 1
    assert not (book / "_build" / ".doctrees").exists()  # every page is read (and warns) again
    assert (book / "_build" / ".jupyter_cache" / build_book.STAMP).exists()  # what executed stays cached


# ------------------------------------------------------------------ missing data, commands


def test_missing_data_fails_before_the_build(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("XCEPTION_")}
    env |= {"XCEPTION_DATA": str(tmp_path / "nothing-here"), "XCEPTION_CACHE": str(tmp_path / "cache")}
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "build_book.py"), "--path-output", str(tmp_path / "out")],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "cannot build the book" in result.stderr
    assert "XCEPTION_DATA" in result.stderr and "download" in result.stderr  # both ways to provide it
    assert not (tmp_path / "out").exists(), "nothing was built"


def test_relative_data_path_is_relative_to_the_repository(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XCEPTION_DATA", "../shared/data")
    build_book.resolve_data_path()
    assert os.environ["XCEPTION_DATA"] == str((ROOT / "../shared/data").resolve())


def _make_dry_run(*targets: str, **variables: str) -> str:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    args = ["make", "--dry-run", "--always-make", "--no-print-directory", *targets, *(f"{k}={v}" for k, v in variables.items())]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}  # as if typed, also under `make test`
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout


def test_make_book_and_make_test_set_themselves_up(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    book = _make_dry_run("book", VENV=str(venv))
    assert f"-m venv {venv}" in book
    assert "pip install -r requirements.txt" in book
    assert book.strip().splitlines()[-1] == f"{venv}/bin/python tools/build_book.py"
    test = _make_dry_run("test", VENV=str(venv))
    assert "pip install -r requirements.txt" in test
    assert test.strip().splitlines()[-1] == f"{venv}/bin/python -m pytest"
    cpu = _make_dry_run("book", VENV=str(venv), TORCH_INDEX="https://download.pytorch.org/whl/cpu")
    assert "pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu" in cpu


def test_ci_and_workflow_run_the_readme_commands() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "make book" in readme and "make test" in readme
    assert re.search(r"^make book\b.*TORCH=\"torch==2\.14\.1 torchvision==0\.29\.1\"", ci, flags=re.M)
    assert re.search(r"^XL_REQUIRE_BUILD=1 make test\b", ci, flags=re.M)
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "book.yml").read_text(encoding="utf-8"))
    steps = [step for job in workflow["jobs"].values() for step in job["steps"]]
    runs = [step.get("run", "") for step in steps]
    book = next(i for i, run in enumerate(runs) if run.startswith("make book"))
    test = next(i for i, run in enumerate(runs) if run.startswith("make test"))
    assert book < test and str(steps[test]["env"]["XL_REQUIRE_BUILD"]) == "1"


def test_workflow_never_restores_a_cache_of_other_library_code() -> None:
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "book.yml").read_text(encoding="utf-8"))
    steps = [step for job in workflow["jobs"].values() for step in job["steps"]]
    caches = [s for s in steps if s.get("uses", "").startswith("actions/cache") and ".jupyter_cache" in s["with"]["path"]]
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
    assert re.search(r"outputs? (are|is) reused|reuses? (the )?(cached )?outputs", readme), "say when outputs are reused"
