"""The book as a product: clean notebooks, one setup cell, a Colab install that works, launch links.

The Colab install test (``test_setup_cell_installs_in_a_fresh_environment``) is the one that
matters most to readers: a broken install is the first thing they meet. It is never skipped.

The launch-link test needs a built book. It looks in ``_build/html`` (or ``$XL_BUILD_DIR``,
the ``html`` folder of a build made with ``--path-output``) and skips when there is none,
unless ``XL_REQUIRE_BUILD=1`` (set in CI, which builds the book first): then it fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap
import venv
from importlib import metadata
from pathlib import Path

import pytest
from conftest import load_tool

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"
BUILD_COMMAND = "make book"  # the README's; it runs tools/build_book.py (tests/test_build.py)
COLAB = "https://colab.research.google.com/github/{org_repo}/blob/{branch}/book/{chapter}.ipynb"

nbformat = pytest.importorskip("nbformat", reason="install xception_lib[test]")
yaml = pytest.importorskip("yaml", reason="install xception_lib[test]")


sync_tool = load_tool("sync_setup_cell")


def _config() -> dict:
    return yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))


def _toc_chapters() -> list[str]:
    """Chapter paths (``book/01_...``) in the order of ``_toc.yml``."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    files = [toc["root"]] + [c["file"] for part in toc.get("parts", []) for c in part["chapters"]]
    return [f.removesuffix(".ipynb").removesuffix(".md") for f in files]


def _notebooks() -> list[Path]:
    return sorted(BOOK.glob("*.ipynb"))


def _first_code_cell(path: Path) -> str | None:
    nb = nbformat.read(path, as_version=4)
    return next((c.source for c in nb.cells if c.cell_type == "code"), None)


# ------------------------------------------------------------------ committed notebooks


@pytest.mark.parametrize("path", _notebooks(), ids=lambda p: p.name)
def test_notebook_committed_without_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    dirty = [
        i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count is not None)
    ]
    assert not dirty, f"{path.name}: cells {dirty} carry outputs or execution counts; clear them before committing"


def test_every_toc_notebook_exists() -> None:
    for chapter in _toc_chapters():
        assert (ROOT / f"{chapter}.ipynb").exists() or (ROOT / f"{chapter}.md").exists(), chapter


@pytest.mark.parametrize("path", _notebooks(), ids=lambda p: p.name)
def test_no_code_cell_a_reader_can_see_is_over_25_lines(path: Path) -> None:
    """The page shows teaching code: a cell a reader can see (or unfold) fits one look; longer plumbing belongs in
    the library, and a cell that only glues numbers is removed from the page (``remove-input``)."""
    nb = nbformat.read(path, as_version=4)
    hidden = {"remove-input", "remove-cell"}
    long = [
        (i, len(cell.source.splitlines()))
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code" and not hidden & set(cell.metadata.get("tags", []))
        if len(cell.source.splitlines()) > 25
    ]
    assert not long, f"{path.name}: (cell index, lines) over 25: {long}"


@pytest.mark.parametrize("path", _notebooks(), ids=lambda p: p.name)
def test_first_code_cell_is_the_setup_cell(path: Path) -> None:
    first = _first_code_cell(path)
    if first is None:
        pytest.skip(f"{path.name} has no code cells (allowed: a prose-only chapter needs no setup)")
    assert first == sync_tool.setup_cell_source(sync_tool.repository_url()), (
        f"{path.name}: first code cell differs from the setup cell; run python tools/sync_setup_cell.py"
    )


def test_only_the_preface_may_lack_code() -> None:
    without_code = [p.name for p in _notebooks() if _first_code_cell(p) is None]
    assert set(without_code) <= {"00_preface.ipynb"}, without_code


def test_setup_cell_uses_the_configured_repository() -> None:
    url = _config()["repository"]["url"]
    source = sync_tool.setup_cell_source(url)
    assert f'REPO = "{url}"' in source
    assert "xception_lib[tools]@git+{REPO}" in source  # the library and the tools Colab lacks
    assert "--quiet" not in source  # pip's progress is shown
    assert source.startswith(sync_tool.SETUP_MARKER)
    compile(source, "<setup cell>", "exec")


def test_the_version_is_written_once() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" not in project["project"] and project["project"]["dynamic"] == ["version"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "xception_lib.__version__"}
    import xception_lib

    assert xception_lib.__version__ == metadata.version("xception_lib")


def test_setup_cell_is_as_ruff_formats_it() -> None:
    """`ruff format` over a chapter leaves the setup cell as the sync tool writes it (no drift)."""
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (pip install -e .[dev])")
    source = sync_tool.setup_cell_source(sync_tool.repository_url())
    config = str(BOOK / "ruff.toml")
    formatted = subprocess.run(
        [ruff, "format", "--config", config, "--stdin-filename", "cell.py", "-"],
        input=source + "\n",
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert formatted == source + "\n"
    lint = subprocess.run(
        [ruff, "check", "--config", config, "--stdin-filename", "cell.py", "-"],
        input=source + "\n",
        capture_output=True,
        text=True,
    )
    assert lint.returncode == 0, lint.stdout
    assert len(source.splitlines()) <= 12, "the setup cell stays short"
    assert max(map(len, source.splitlines())) <= 79, "the setup cell fits the book's column"


@pytest.mark.parametrize("path", _notebooks(), ids=lambda p: p.name)
def test_colab_opens_every_chapter_on_a_gpu(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    if _first_code_cell(path) is None:
        pytest.skip(f"{path.name} has no code: it needs no runtime, let alone a GPU")
    # What Colab saves for Runtime > Change runtime type > T4 GPU, and reads when it opens a notebook.
    assert nb.metadata.get("accelerator") == "GPU", f"{path.name}: run python tools/sync_setup_cell.py"
    assert nb.metadata.get("colab", {}).get("gpuType") == "T4", f"{path.name}: run python tools/sync_setup_cell.py"


def test_sync_tool_check_and_rewrite(tmp_path: Path) -> None:
    url = sync_tool.repository_url()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# T"), nbformat.v4.new_code_cell("import xception_lib as xl")]
    path = tmp_path / "chapter.ipynb"
    nbformat.write(nb, path)
    assert sync_tool.sync(path, url, check=True) is True  # missing: reported, not written
    assert _first_code_cell(path) == "import xception_lib as xl"
    assert sync_tool.sync(path, url) is True  # inserted before the first code cell
    written = nbformat.read(path, as_version=4)
    assert [c.source for c in written.cells[1:]] == [sync_tool.setup_cell_source(url), "import xception_lib as xl"]
    assert written.metadata["accelerator"] == "GPU" and written.metadata["colab"]["gpuType"] == "T4"
    assert sync_tool.sync(path, url) is False  # idempotent
    written.metadata.pop("accelerator")
    nbformat.write(written, path)
    assert sync_tool.sync(path, url, check=True) is True  # lost metadata detected
    assert sync_tool.sync(path, url) is True and sync_tool.sync(path, url) is False
    assert sync_tool.sync(path, "https://example.org/other", check=True) is True  # stale URL detected
    sync_tool.sync(path, "https://example.org/other")
    assert 'REPO = "https://example.org/other"' in _first_code_cell(path)
    assert len(nbformat.read(path, as_version=4).cells) == 3  # replaced, not inserted again


def test_sync_tool_check_passes_on_the_book() -> None:
    assert sync_tool.main(["--check"]) == 0


# ------------------------------------------------------------------ configuration and CI


def test_config_keeps_colab_links_and_cached_execution() -> None:
    config = _config()
    assert config["repository"]["path_to_book"] == ""
    assert config["repository"]["url"].startswith("https://github.com/")
    assert config["execute"]["execute_notebooks"] == "cache"
    assert config["launch_buttons"]["colab_url"] == "https://colab.research.google.com"


def test_workflow_builds_tests_and_publishes() -> None:
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "book.yml").read_text(encoding="utf-8"))
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as True
    assert "push" in triggers
    steps = [step for job in workflow["jobs"].values() for step in job["steps"]]
    runs = [step.get("run", "") for step in steps]
    uses = [step.get("uses", "") for step in steps]
    build = next(i for i, run in enumerate(runs) if run.startswith(BUILD_COMMAND))
    tests = next(i for i, run in enumerate(runs) if run.split()[:2] == ["make", "test"])
    assert build < tests, "the book must be built before the tests that check it"
    assert str(steps[tests].get("env", {}).get("XL_REQUIRE_BUILD")) == "1"
    upload = next(step for step in steps if step.get("uses", "").startswith("actions/upload-pages-artifact"))
    assert upload["with"]["path"] == "_build/html"
    assert any(u.startswith("actions/deploy-pages") for u in uses)


def test_preface_shows_the_build_command() -> None:
    preface = "\n".join(c.source for c in nbformat.read(BOOK / "00_preface.ipynb", as_version=4).cells)
    assert BUILD_COMMAND in preface, (
        "the preface must show the README's build command (a plain jupyter-book build can serve stale outputs)"
    )
    assert "jupyter-book build" not in preface
    assert sync_tool.repository_url() in preface  # the clone URL


# ------------------------------------------------------------------ the Colab install


def _preinstalled(roots: tuple[str, ...] = ("torch", "torchvision")) -> list[Path]:
    """Files and folders of ``roots`` and everything they require: what Colab has preinstalled."""
    from packaging.requirements import Requirement

    seen: set[tuple[str, frozenset[str]]] = set()
    todo: list[tuple[str, frozenset[str]]] = [(root, frozenset()) for root in roots]
    entries: dict[str, Path] = {}
    while todo:
        name, extras = todo.pop()
        dist = metadata.distribution(name)
        key = (dist.metadata["Name"].lower().replace("_", "-"), extras)
        if key in seen:
            continue
        seen.add(key)
        for requirement in map(Requirement, dist.requires or []):
            marker = requirement.marker
            if marker is None or any(marker.evaluate({"extra": extra}) for extra in {"", *extras}):
                todo.append((requirement.name, frozenset(requirement.extras)))
        for file in dist.files or []:
            top = file.parts[0]
            if top not in ("..", "__pycache__") and not top.endswith(".pth"):
                entries[top] = Path(dist.locate_file(top))
    return sorted(entries.values())


def _run(args: list[str], cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.mark.slow
def test_setup_cell_installs_in_a_fresh_environment(tmp_path: Path) -> None:
    """Run a chapter's setup cell as Colab would, in a new virtual environment, then build a model.

    The environment is a fresh ``venv`` (its own pip, nothing installed) in which PyTorch,
    torchvision and their dependencies are visible, as they are on Colab: their installed
    folders are linked into one directory that a ``.pth`` file adds to the path. Those
    packages are linked, not installed again, because reinstalling PyTorch takes minutes
    and is not what the test is about. Everything else (``xception_lib`` and its
    ``[tools]`` extra) must come from the setup cell's ``pip install``.

    The repository is a throw-away git repository made from the working tree's package
    files, so the cell's ``git+`` URL is exercised as written, with only the URL replaced.
    """
    # the repository, as the setup cell's pip will clone it
    repo = tmp_path / "repository"
    shutil.copytree(ROOT / "xception_lib", repo / "xception_lib", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, repo / name)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.org", "-c", "init.defaultBranch=main"]
    _run([*git, "init", "--quiet"], repo)
    _run([*git, "add", "."], repo)
    _run([*git, "commit", "--quiet", "-m", "snapshot"], repo)

    # a fresh environment in which only PyTorch and its dependencies are visible
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    python = env_dir / "bin" / "python"
    colab_site = tmp_path / "colab-preinstalled"
    colab_site.mkdir()
    for entry in _preinstalled():
        (colab_site / entry.name).symlink_to(entry)
    site = Path(
        _run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], tmp_path).stdout.strip()
    )
    (site / "colab_preinstalled.pth").write_text(f"{colab_site}\n")
    probe = (
        "import importlib.util as u, torch; print(u.find_spec('xception_lib') is None, u.find_spec('fvcore') is None)"
    )
    assert _run([str(python), "-c", probe], tmp_path).stdout.split() == ["True", "True"], "the environment is not fresh"

    # the setup cell, exactly as committed, with only the repository URL replaced
    cell = _first_code_cell(BOOK / "01_inception_hypothesis.ipynb")
    assert cell is not None
    url = sync_tool.repository_url()
    assert cell.count(f'"{url}"') == 1
    colab = "import sys, types\nsys.modules['google.colab'] = types.ModuleType('google.colab')  # what the cell checks for\n"

    # an unreachable repository: a message that names it and says what to try
    missing = f"file://localhost{tmp_path / 'no-such-repository'}"
    script = tmp_path / "colab_fails.py"
    script.write_text(colab + cell.replace(f'"{url}"', f'"{missing}"'))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    failed = subprocess.run(
        [str(python), str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert failed.returncode != 0
    assert "RuntimeError: pip failed (above): go online and run this again" in failed.stderr, failed.stderr[-2000:]
    assert "CalledProcessError" not in failed.stderr
    assert f"git+{missing}" in failed.stdout  # pip's own messages say what it tried

    # the real install, then the cell again (as after a runtime restart): nothing is installed twice
    cell = cell.replace(f'"{url}"', f'"file://localhost{repo}"')  # pip rejects git+file:/// (no host)
    check = textwrap.dedent(
        """
        import xception_lib as xl
        import torch
        import fvcore, torchinfo, timm, matplotlib, skimage  # the [tools] extra
        assert "site-packages" in xl.__file__, xl.__file__
        model = xl.xception_cifar().eval()
        with torch.no_grad():
            logits = model(torch.randn(2, 3, 32, 32))
        assert logits.shape == (2, 10), logits.shape
        print("OK", xl.__version__)
        """
    )
    script = tmp_path / "colab.py"
    script.write_text(colab + cell + "\n" + check + "\n" + cell + "\n")
    lines = _run([str(python), str(script)], tmp_path).stdout.strip().splitlines()
    version = metadata.version("xception_lib")
    assert sum(line.startswith("Successfully installed") for line in lines) == 1, "pip's progress is shown, once"
    assert lines[-1] == f"OK {version}", "the second run of the cell installs nothing and prints nothing"


# ------------------------------------------------------------------ the built book


def _built_html() -> Path:
    html = Path(os.environ.get("XL_BUILD_DIR", ROOT / "_build" / "html"))
    if not (html / "index.html").exists():
        message = f"no built book in {html}: run `{BUILD_COMMAND}` first"
        if os.environ.get("XL_REQUIRE_BUILD") == "1":
            pytest.fail(message + " (XL_REQUIRE_BUILD=1)")
        pytest.skip(message)
    return html


@pytest.mark.book
def test_colab_launch_links() -> None:
    """Every chapter links to Colab (its launch button and its badge), for the repository the book was built from.

    That is ``$GITHUB_REPOSITORY`` in a workflow, else the ``origin`` remote, else the
    placeholder in ``_config.yml``, which a banner then calls one (``tools/build_book.py``).
    """
    bs4 = pytest.importorskip("bs4", reason="install xception_lib[test]")
    html = _built_html()
    config = _config()
    url, placeholder = load_tool("build_book").repository(ROOT, config["repository"]["url"].rstrip("/"))
    org_repo = url.removeprefix("https://github.com/")
    branch = config["repository"]["branch"]
    for chapter in _toc_chapters():
        page = html / f"{chapter}.html"
        assert page.exists(), f"{page} was not built"
        soup = bs4.BeautifulSoup(page.read_text(encoding="utf-8"), "html.parser")
        links = [a["href"] for a in soup.find_all("a", href=True) if "colab.research.google.com" in a["href"]]
        if not (ROOT / f"{chapter}.ipynb").exists():
            assert links == [], f"{chapter} is not a notebook but links to Colab"
            continue
        expected = COLAB.format(org_repo=org_repo, branch=branch, chapter=Path(chapter).name)
        # the launch button and the badge under the title: both open this chapter
        assert links and set(links) == {expected}, (
            f"{chapter}: Colab links {links}, expected [{expected}] (built elsewhere? make book)"
        )
        assert "/./" not in expected and "book/book" not in expected
        banner = soup.select(".bd-header-announcement")
        assert len(banner) == (1 if placeholder else 0), f"{chapter}: {len(banner)} banners on placeholder links"
        assert not placeholder or "placeholder" in banner[0].get_text()


@pytest.mark.book
def test_one_search_field_per_page() -> None:
    """The search field is in the sidebar; no second one in a header above the page."""
    bs4 = pytest.importorskip("bs4", reason="install xception_lib[test]")
    html = _built_html()
    for chapter in _toc_chapters():
        soup = bs4.BeautifulSoup((html / f"{chapter}.html").read_text(encoding="utf-8"), "html.parser")
        fields = soup.select(".search-button-field")
        in_sidebar = soup.select(".bd-sidebar-primary .search-button-field")
        assert len(fields) == len(in_sidebar) == 1, (
            f"{chapter}: {len(fields)} search fields, {len(in_sidebar)} in the sidebar"
        )


# ------------------------------------------------------------------ numbers the chapters state


def test_chapter_1_numbers() -> None:
    pytest.importorskip("fvcore")
    pytest.importorskip("torchinfo")
    from xception_lib.chapters import figures

    c, hw = 728, 19 * 19
    points = {p.segments: p for p in figures.segment_spectrum(c, 19, segments=[1, 13, c])}
    for s, p in points.items():  # independent closed forms, biases included
        assert p.params == c * c + c + 9 * c * c // s + c
        assert p.macs == (c * c + 9 * c * c // s) * hw
    # "regular -> extreme: 9.9x fewer parameters, 9.9x fewer MACs"
    assert round(points[1].params / points[c].params, 1) == round(points[1].macs / points[c].macs, 1) == 9.9
    # exercise 1: the smallest segment count whose 3x3 step costs fewer MACs than the 1x1
    divisors = [s for s in range(1, c + 1) if c % s == 0]
    assert [s for s in divisors if 9 * c * c / s < c * c][0] == 13
    assert len(divisors) == 16


def test_chapter_2_numbers() -> None:
    pytest.importorskip("fvcore")
    pytest.importorskip("torchinfo")
    import xception_lib as xl
    from xception_lib import complexity as cx

    assert round(cx.separable_savings(728, 728, 3), 2) == 8.89  # "regular / separable: 8.89x the MACs"
    assert round(cx.separable_savings(16, 16, 3), 1) == 5.8  # "at 16 channels ... about 5.8x"
    # exercise 1
    layer = xl.SeparableConv2d(728, 1024)
    assert cx.torchinfo_params(layer, (1, 728, 19, 19)) == 752_024
    assert cx.count_macs(layer, (1, 728, 19, 19)) == 271_480_664
    # exercise 2: at least 2x from 3 channels, at least 8x from 72
    assert min(c for c in range(1, 200) if cx.separable_savings(c, c, 3) >= 2) == 3
    assert min(c for c in range(1, 200) if cx.separable_savings(c, c, 3) >= 8) == 72
