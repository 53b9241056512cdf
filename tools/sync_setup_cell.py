#!/usr/bin/env python
"""Write the setup cell of every chapter from the one repository URL in ``_config.yml``.

The first code cell of each ``book/*.ipynb`` installs ``xception_lib`` when the notebook
runs in Colab and does nothing elsewhere. Its text is generated here from
``repository.url`` in ``_config.yml``, so that moving the repository means editing one
line and running this script.

Usage::

    python tools/sync_setup_cell.py          # rewrite the cells that differ
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

SETUP_TEMPLATE = '''# Setup: in Colab, install xception_lib and the tools Colab lacks; elsewhere, do nothing.
import sys

REPOSITORY = "{url}"
if "google.colab" in sys.modules:
    import subprocess

    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", f"xception_lib[tools] @ git+{{REPOSITORY}}"], check=True)'''


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
    """Bring one notebook's setup cell in line; return whether it was (or would be) changed."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    source = setup_cell_source(url)
    code = [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code"]
    if not code:
        return False
    first = nb.cells[code[0]]
    if first.source.startswith(SETUP_MARKER):
        if first.source == source:
            return False
        if not check:
            first.source = source
    elif not check:
        nb.cells.insert(code[0], nbformat.v4.new_code_cell(source))
    if not check:
        nbformat.write(nb, path)
    return True


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
