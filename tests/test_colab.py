"""Every chapter runs as in Colab: alone in an empty folder, with nothing but the installed library.

In Colab a chapter is a lone ``.ipynb`` in an empty ``/content``: nothing of the repository is
there, only ``xception_lib`` as pip installs it (its package data included). Each chapter is
executed that way here: the notebook is copied into an empty temporary folder and run from
there, with ``xception_lib`` installed (not in editable mode) into a folder of its own that
comes first on the kernel's path. The result is compared, cell by cell, with the same chapter
as the book's build executed it from ``book/`` (its outputs in the build's execution cache,
so that nothing runs twice). A cell that errors, that comes out empty, that loses a figure or
a table, that prints a different number of lines, or that prints a "not recorded" notice in
one run and not in the other fails the test.

The same runs check what the book's column can show: every figure's smallest text (recorded
as the figure is drawn for display), and every line of text output in the built book.

Needs a built book (``make book``): skipped without one (the run's last line then says so),
failed under ``XL_REQUIRE_BUILD=1`` (as in CI). The tests that take ``built_cache`` are marked
``book`` (``tests/conftest.py``). ``$XL_COLAB_OUT``, when set, keeps the notebooks executed alone.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import load_tool

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"
nbformat = pytest.importorskip("nbformat", reason="install xception_lib[test]")
# Words with which a chapter says that something it reads is missing; none may appear in one
# run and not in the other.
MISSING = re.compile(r"not (yet )?recorded|no \w+( \w+)? (is|are) recorded|nothing to compare|not found", re.I)
COLUMN_PX = 690  # the width of the book's text column; wider images are shrunk to it
COLUMN_IN = 7.0  # ... which the style treats as 7 in (a figure 7 in wide is shown at full size)
MIN_TEXT_PT = 9 * 7.0 / 7.5  # 9 pt on a figure 7.5 in wide, the style's limits, as shown in the column
MAX_CHARS = 80  # characters of text output per line (the column shows 83 at 1280 px: tests/test_pages.py)

# An IPython startup file for the kernel: note every figure drawn for display (its size, its dpi
# and its smallest text), keyed by the image's hash so that the test finds its cell.
FIGURE_RECORDER = """
import hashlib, json, os
from IPython.core import pylabtools

_print_figure = pylabtools.print_figure

def print_figure(fig, *args, **kwargs):
    data = _print_figure(fig, *args, **kwargs)
    if isinstance(data, str):
        from matplotlib.text import Text
        texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]
        smallest = min(texts, key=lambda t: t.get_fontsize(), default=None)
        with open(os.environ["XL_FIGURE_LOG"], "a") as log:
            log.write(json.dumps({
                "image": hashlib.sha1(data.encode()).hexdigest(),
                "dpi": fig.dpi,
                "min_pt": smallest.get_fontsize() if smallest else None,
                "min_text": smallest.get_text()[:40] if smallest else None,
            }) + "\\n")
    return data

pylabtools.print_figure = print_figure
"""


def _chapters() -> list[Path]:
    return [
        p
        for p in sorted(BOOK.glob("*.ipynb"))
        if any(c.cell_type == "code" for c in nbformat.read(p, as_version=4).cells)
    ]


def _cache_dir() -> Path:
    html = os.environ.get("XL_BUILD_DIR")
    return (Path(html).parent if html else ROOT / "_build") / ".jupyter_cache"


@pytest.fixture(scope="module")
def built_cache():  # -> jupyter_cache JupyterCacheBase
    """The build's execution cache, if it was made with today's library; else skip (or fail)."""

    def missing(message: str):
        if os.environ.get("XL_REQUIRE_BUILD") == "1":
            pytest.fail(message + " (XL_REQUIRE_BUILD=1)")
        pytest.skip(message)

    jupyter_cache = pytest.importorskip("jupyter_cache", reason="install xception_lib[book]")
    cache = _cache_dir()
    if not (cache / "global.db").exists():
        missing(f"no execution cache in {cache}: run `make book` first")
    tool = load_tool("build_book")
    try:
        import json

        recorded = json.loads((cache / tool.STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        recorded = None
    stale = tool.changes(recorded, tool.fingerprint())
    if stale:
        missing(f"the book was built from other code ({'; '.join(stale[:3])}): run `make book` first")
    return jupyter_cache.get_cache(str(cache))


@pytest.fixture(scope="module")
def installed_library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``xception_lib`` installed as pip installs it in Colab (no editable link to this folder)."""
    tmp = tmp_path_factory.mktemp("colab")
    source = tmp / "source"
    shutil.copytree(ROOT / "xception_lib", source / "xception_lib", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, source / name)
    site = tmp / "site-packages"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site), str(source)],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert (site / "xception_lib" / "__init__.py").exists()
    return site


_RUNS: dict[str, tuple] = {}


def _run_alone(path: Path, site: Path, tmp: Path) -> tuple[nbformat.NotebookNode, list[dict], float]:
    """The chapter executed alone (once per test session), the figures it drew, and the seconds it took."""
    if path.name not in _RUNS:
        start = time.perf_counter()
        nb, figures = _execute_alone(path, site, tmp)
        _RUNS[path.name] = (nb, figures, time.perf_counter() - start)
        keep = os.environ.get("XL_COLAB_OUT")
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, Path(keep) / path.name)
    return _RUNS[path.name]


def _execute_alone(path: Path, site: Path, tmp: Path) -> tuple[nbformat.NotebookNode, list[dict]]:
    """Run a copy of the chapter in an empty folder, importing ``xception_lib`` from ``site``."""
    from nbclient import NotebookClient

    workdir = tmp / "content"
    workdir.mkdir()
    notebook = workdir / path.name
    shutil.copy2(path, notebook)
    startup = tmp / "ipython" / "profile_default" / "startup"
    startup.mkdir(parents=True)
    (startup / "00-record-figures.py").write_text(FIGURE_RECORDER)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env |= {"PYTHONPATH": str(site), "IPYTHONDIR": str(tmp / "ipython"), "XL_FIGURE_LOG": str(tmp / "figures.jsonl")}
    if env.get("XCEPTION_DATA") and not Path(env["XCEPTION_DATA"]).expanduser().is_absolute():
        env["XCEPTION_DATA"] = str((ROOT / env["XCEPTION_DATA"]).resolve())  # as `make` passes it
    nb = nbformat.read(notebook, as_version=4)
    client = NotebookClient(
        nb, timeout=900, kernel_name="python3", allow_errors=True, resources={"metadata": {"path": str(workdir)}}
    )
    client.execute(env=env)
    log = tmp / "figures.jsonl"
    figures = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return nb, figures


def _text(output: dict) -> str:
    if output["output_type"] == "stream":
        return output["text"] if output["name"] == "stdout" else ""
    return output.get("data", {}).get("text/plain", "") if output["output_type"] == "execute_result" else ""


def summary(cell: dict) -> dict:
    """What a reader sees of a code cell's outputs, independent of timings and of how streams were split."""
    outputs = cell.get("outputs", [])
    data = [o.get("data", {}) for o in outputs if o["output_type"] in ("display_data", "execute_result")]
    text = "".join(_text(o) for o in outputs)
    lines = [line for line in text.splitlines() if line.strip()]
    return {
        "error": next((f"{o['ename']}: {o['evalue']}"[:200] for o in outputs if o["output_type"] == "error"), None),
        "figures": sum(any(k.startswith("image/") for k in d) for d in data),
        "tables": sum("text/html" in d for d in data),
        "empty": not outputs,
        "lines": len(lines),
        "missing": sorted({m.group(0).lower() for line in lines for m in [MISSING.search(line)] if m}),
    }


def _code(nb: nbformat.NotebookNode) -> list[dict]:
    """The code cells (the execution cache keeps only these), numbered from 1 in the reports."""
    return [c for c in nb.cells if c.cell_type == "code"]


def differences(alone: nbformat.NotebookNode, built: nbformat.NotebookNode) -> list[str]:
    """Code cell by code cell, how the Colab-like run differs from the build's (errors in either count)."""
    cells_alone, cells_built = _code(alone), _code(built)
    assert len(cells_alone) == len(cells_built)
    found = []
    for n, (a, b) in enumerate(zip(cells_alone, cells_built, strict=True), start=1):
        sa, sb = summary(a), summary(b)
        where = f"code cell {n} ({_first_line(a)})"
        if sa["error"] or sb["error"]:
            found.append(f"{where}: error alone: {sa['error']}; error in the build: {sb['error']}")
        elif sa != sb:
            keys = [k for k in sa if sa[k] != sb[k]]
            found.append(f"{where}: " + ", ".join(f"{k} alone {sa[k]} vs built {sb[k]}" for k in keys))
    return found


def _built(cache, path: Path) -> nbformat.NotebookNode:
    try:
        record = cache.match_cache_notebook(nbformat.read(path, as_version=4))
    except KeyError:
        pytest.fail(f"{path.name} is not in the build's execution cache: did its execution fail? run `make book`")
    return cache.get_cache_bundle(record.pk).nb


def _first_line(cell: dict) -> str:
    return cell.source.strip().splitlines()[0][:60] if cell.source.strip() else ""


@pytest.mark.slow
@pytest.mark.parametrize("path", _chapters(), ids=lambda p: p.name)
def test_chapter_runs_alone_as_in_colab(path: Path, built_cache, installed_library: Path, tmp_path: Path) -> None:
    built = _built(built_cache, path)
    alone, _, seconds = _run_alone(path, installed_library, tmp_path)
    found = differences(alone, built)
    assert not found, f"{path.name} alone ({seconds:.0f} s) differs from the built book:\n" + "\n".join(found)


@pytest.mark.slow
@pytest.mark.parametrize("path", _chapters(), ids=lambda p: p.name)
def test_figures_are_legible_in_the_column(path: Path, built_cache, installed_library: Path, tmp_path: Path) -> None:
    """The smallest text of every figure, as shown in the book's column, is at least 8.4 pt."""
    alone, figures, _ = _run_alone(path, installed_library, tmp_path)
    images = {
        hashlib.sha1(data[kind].encode()).hexdigest(): (i, cell, kind, data[kind])
        for i, cell in enumerate(_code(alone), start=1)
        for o in cell.outputs
        for data in [o.get("data", {})]
        for kind in ("image/png", "image/svg+xml")
        if kind in data
    }
    assert len(images) >= len([f for f in figures if f["image"] in images])
    small = []
    for figure in figures:
        if figure["min_pt"] is None or figure["image"] not in images:
            continue
        i, cell, kind, image = images[figure["image"]]
        if kind == "image/png":
            width_px = int.from_bytes(base64.b64decode(image[:44])[16:20], "big")  # the PNG header's width
            width_in = width_px / figure["dpi"]  # as drawn
        else:  # an SVG is shown at its own size: 96 CSS px per inch
            match = re.search(r'<svg[^>]*\swidth="([0-9.]+)pt"', image)
            assert match, f"code cell {i}: an SVG without a width in pt"
            width_in = float(match.group(1)) / 72
            width_px = round(width_in * 96)
        shown_pt = figure["min_pt"] * min(width_px, COLUMN_PX) / COLUMN_PX * COLUMN_IN / width_in
        if shown_pt < MIN_TEXT_PT - 0.05:
            small.append(
                f"code cell {i} ({_first_line(cell)}): {width_in:.1f} in wide ({width_px} px), smallest text "
                f"{figure['min_pt']:.1f} pt ({figure['min_text']!r}), shown at {shown_pt:.1f} pt"
            )
    assert not small, f"{path.name}: figures whose text is too small in the column:\n" + "\n".join(small)


def _lines(output: dict) -> list[str]:
    """The lines of text an output shows on the page (a table or a figure shows its richer form)."""
    if output["output_type"] == "stream" and output["name"] == "stdout":
        text = output["text"]
    elif output["output_type"] in ("execute_result", "display_data"):
        data = output.get("data", {})
        rich = any(k.startswith("image/") or k == "text/html" for k in data)
        text = "" if rich else data.get("text/plain", "")
    else:
        return []
    return [line.split("\r")[-1].expandtabs() for line in text.rstrip("\n").split("\n") if line]


@pytest.mark.parametrize("path", _chapters(), ids=lambda p: p.name)
def test_text_outputs_fit_the_column(path: Path, built_cache) -> None:
    built = _built(built_cache, path)
    wide = [
        f"code cell {i} ({_first_line(cell)}): {len(line)} characters: {line[:60]}..."
        for i, cell in enumerate(_code(built), start=1)
        for output in cell.outputs
        for line in _lines(output)
        if len(line) > MAX_CHARS
    ]
    assert not wide, f"{path.name}: text output lines wider than {MAX_CHARS} characters:\n" + "\n".join(wide)


# ------------------------------------------------------------------ the comparison itself


def _cell(*outputs: dict) -> dict:
    return nbformat.v4.new_code_cell("x", outputs=list(outputs))


def test_differences_sees_fallbacks_errors_and_lost_figures() -> None:
    out = nbformat.v4.new_output
    figure = out("display_data", data={"image/png": "iVBOR", "text/plain": "<Figure>"})
    stream = out("stream", name="stdout", text="accuracy 91.2%\n")
    same = nbformat.v4.new_notebook(cells=[_cell(stream, figure)])
    timings = nbformat.v4.new_notebook(
        cells=[
            _cell(out("stream", name="stdout", text="accuracy "), out("stream", name="stdout", text="90.7%\n"), figure)
        ]
    )
    assert differences(same, timings) == []  # other numbers, other stream chunks: the same page
    fallback = nbformat.v4.new_notebook(
        cells=[_cell(out("stream", name="stdout", text="GPU results are not yet recorded\n"))]
    )
    found = differences(fallback, same)
    assert (
        len(found) == 1
        and "figures alone 0 vs built 1" in found[0]
        and "missing alone ['not yet recorded']" in found[0]
    )
    error = nbformat.v4.new_notebook(
        cells=[_cell(out("error", ename="FileNotFoundError", evalue="cifar10.json", traceback=[]))]
    )
    assert "FileNotFoundError: cifar10.json" in differences(error, same)[0]
    empty = nbformat.v4.new_notebook(cells=[_cell()])
    assert "empty alone True" in differences(empty, same)[0]


def test_lines_are_what_the_page_shows() -> None:
    out = nbformat.v4.new_output
    assert _lines(out("stream", name="stdout", text="a\tb\n" + "x" * 89 + "\n")) == ["a       b", "x" * 89]
    assert _lines(out("stream", name="stderr", text="y" * 200)) == []  # warnings and progress bars
    table = out("execute_result", data={"text/html": "<table/>", "text/plain": "z" * 200}, execution_count=1)
    assert _lines(table) == []  # shown as HTML
    assert _lines(out("stream", name="stdout", text="10%\r" + "done\n")) == ["done"]
