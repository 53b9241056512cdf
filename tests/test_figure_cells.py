"""The figure convention (issue 20): chapters 5 and 7 call the book's figure settings once and
give every figure cell a numbered caption, a name and alt text in its metadata.

Read from the notebooks as stored (no execution): a cell that draws a figure is one that assigns ``fig =``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

BOOK = Path(__file__).resolve().parent.parent / "book"
CHAPTERS = [
    "05_training.ipynb",
    "07_looking_inside.ipynb",
    "09_transfer_learning.ipynb",
]  # the rendered figures of every chapter: test_pages


def code_cells(chapter: str) -> list[dict]:
    cells = json.loads((BOOK / chapter).read_text())["cells"]
    return [c for c in cells if c["cell_type"] == "code"]


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_the_imports_cell_uses_the_books_style(chapter: str) -> None:
    imports = "".join(code_cells(chapter)[1]["source"])  # the first cell after the Colab setup cell
    assert re.search(r"from xception_lib.chapters import .*\bstyle\b", imports) and "style.use()" in imports


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_every_figure_cell_has_a_caption_a_name_and_alt_text(chapter: str) -> None:
    number = chapter[:2]
    names = []
    for cell in code_cells(chapter):
        source = "".join(cell["source"])
        draws = len(re.findall(r"^fig = ", source, flags=re.M))
        if not draws:
            assert "mystnb" not in cell["metadata"], f"{cell['id']}: a caption without a figure"
            continue
        assert draws == 1, f"{cell['id']} draws {draws} figures: one per cell"
        figure = cell["metadata"].get("mystnb", {}).get("figure", {})
        alt = cell["metadata"].get("mystnb", {}).get("image", {}).get("alt", "")  # MyST-NB reads it there
        assert len(figure.get("caption", "")) > 40, f"{cell['id']}: no caption"
        assert "{glue" not in figure["caption"], f"{cell['id']}: a glue role in a caption may not resolve"
        assert figure.get("name", "").startswith(f"fig-ch{number}-"), f"{cell['id']}: name {figure.get('name')!r}"
        assert len(alt) > 40 and "/" not in alt, f"{cell['id']}: alt text {alt!r} does not describe the figure"
        names.append(figure["name"])
    assert names and len(set(names)) == len(names), names
