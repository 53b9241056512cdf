#!/usr/bin/env python
"""Write the setup cell and the Colab metadata of every chapter from ``_config.yml``.

The first code cell of each ``book/*.ipynb`` installs ``xception_lib`` when the notebook
runs in Colab and does nothing elsewhere. Its text is generated here from
``repository.url`` in ``_config.yml``, so that moving the repository means editing one line
and running this script. In Colab the cell shows pip's progress as it comes, says what to try
when the install fails, and skips the install when the library is already there (a cell run
twice, or a chapter opened after another in the same runtime). It is twelve lines: a reader
meets it first, in every chapter.

Every chapter with code also gets the notebook metadata with which Colab opens it on a GPU
runtime (``accelerator`` and ``colab.gpuType``, what Colab itself saves for "T4 GPU").

Usage::

    python tools/sync_setup_cell.py          # rewrite the notebooks that differ
    python tools/sync_setup_cell.py --check  # exit 1 and list the notebooks that differ

A chapter whose first code cell is not a setup cell gets one inserted before it; a chapter
without code cells (the preface) is left alone.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SETUP_MARKER = "# Setup: in Colab, install xception_lib"
# In the built book the cell's source is folded away: it does nothing there.
SETUP_METADATA = {"tags": ["hide-input"]}
COLAB_METADATA = {"accelerator": "GPU", "colab": {"gpuType": "T4", "provenance": []}}

SETUP_TEMPLATE = """# Setup: in Colab, install xception_lib and the tools Colab lacks.
import sys
from importlib.util import find_spec
from subprocess import PIPE, STDOUT, Popen

REPO = "{url}"
if "google.colab" in sys.modules and find_spec("xception_lib") is None:
    pip = f"{{sys.executable}} -m pip install xception_lib[tools]@git+{{REPO}}"
    with Popen(pip.split(), stdout=PIPE, stderr=STDOUT, text=True) as run:
        sys.stdout.writelines(run.stdout)  # pip's progress, as it comes
    if run.returncode:
        raise RuntimeError("pip failed (above): go online and run this again")"""


def repository_url(config: Path = ROOT / "_config.yml") -> str:
    """``repository.url`` from the book's ``_config.yml``, without a trailing slash."""
    import yaml

    data = yaml.safe_load(config.read_text(encoding="utf-8"))
    try:
        url = str(data["repository"]["url"]).rstrip("/")
    except (KeyError, TypeError) as err:
        raise ValueError(f"{config} has no repository.url") from err
    if not url.startswith("https://"):
        raise ValueError(f"repository.url must start with https://, got {url!r}")
    return url


def setup_cell_source(url: str) -> str:
    """The exact source of the setup cell for a repository URL."""
    return SETUP_TEMPLATE.format(url=url)


def chapters(book: Path = ROOT / "book") -> list[Path]:
    """The chapter notebooks, in file-name order."""
    return sorted(book.glob("*.ipynb"))


def sync(path: Path, url: str, check: bool = False) -> bool:
    """Bring one notebook's setup cell and metadata in line; return whether it was (or would be) changed."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    code = [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code"]
    if not code:
        return False
    source = setup_cell_source(url)
    first = nb.cells[code[0]]
    if not first.source.startswith(SETUP_MARKER):
        first = nbformat.v4.new_code_cell(source)
        nb.cells.insert(code[0], first)
        changed = True
    else:
        changed = first.source != source
        first.source = source
    for key, value in SETUP_METADATA.items():
        changed |= first.metadata.get(key) != value
        first.metadata[key] = value
    for key, wanted in COLAB_METADATA.items():
        changed |= nb.metadata.get(key) != wanted
        nb.metadata[key] = wanted
    if changed and not check:
        nbformat.write(nb, path)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a notebook differs")
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: book/*.ipynb")
    args = parser.parse_args(argv)
    url = repository_url()
    changed = [p for p in (args.notebooks or chapters()) if sync(p, url, check=args.check)]
    for path in changed:
        print(f"{'out of sync' if args.check else 'rewrote'}: {path}")
    return 1 if (args.check and changed) else 0


if __name__ == "__main__":
    sys.exit(main())
