"""The API reference covers the library: every module on exactly one page, every page in the book.

The reference is split into pages (``book/api_*.md``, one per layer of the library) so that no
page grows past what a reader scrolls; a module is added with one ``.. automodule::`` line on the
page of its layer. These tests catch a module that was added to the library and not to the
reference (or removed from the library and not from it), a page missing from ``_toc.yml``, and a
landing page (``book/api.md``) whose list of modules disagrees with the pages.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"
AUTOMODULE = re.compile(r"^\.\. automodule:: (xception_lib(?:\.\w+)*)\s*$", re.M)


def library_modules() -> set[str]:
    """Every module of xception_lib (packages' ``__init__`` and ``__main__`` aside)."""
    found = set()
    for path in (ROOT / "xception_lib").rglob("*.py"):
        if path.name in ("__init__.py", "__main__.py"):
            continue
        parts = path.relative_to(ROOT).with_suffix("").parts
        found.add(".".join(parts))
    return found


def api_pages() -> dict[str, list[str]]:
    """``api_core`` -> the modules its ``automodule`` lines document, in order."""
    return {p.stem: AUTOMODULE.findall(p.read_text()) for p in sorted(BOOK.glob("api_*.md"))}


def test_every_module_is_documented_on_exactly_one_page() -> None:
    pages = api_pages()
    assert pages, "no book/api_*.md pages"
    documented = [module for modules in pages.values() for module in modules]
    twice = sorted({m for m in documented if documented.count(m) > 1})
    assert not twice, f"documented on more than one page (or twice on one): {twice}"
    missing = sorted(library_modules() - set(documented))
    assert not missing, (
        f"modules of xception_lib on no API page (add `.. automodule:: <name>` to book/api_*.md): {missing}"
    )
    stale = sorted(set(documented) - library_modules())
    assert not stale, f"API pages document modules that do not exist: {stale}"
    for page, modules in pages.items():
        for module in modules:
            assert f"## `{module}`" in (BOOK / f"{page}.md").read_text(), f"{page}.md: {module} has no heading"


def test_every_page_is_in_the_table_of_contents() -> None:
    toc = (ROOT / "_toc.yml").read_text()
    listed = set(re.findall(r"file: book/(api_\w+)", toc))
    assert listed == set(api_pages()), f"_toc.yml lists {sorted(listed)}, book/ has {sorted(api_pages())}"


def test_the_landing_page_names_each_page_s_modules() -> None:
    landing = (BOOK / "api.md").read_text()
    for page, modules in api_pages().items():
        line = next((ln for ln in landing.splitlines() if f"]({page}.md)" in ln), None)
        assert line is not None, f"book/api.md does not link {page}.md"
        # The entry may continue on the next lines (an indented continuation of the list item).
        rest = landing[landing.index(line) :].split("\n  - ", 1)[0].split("\n\n", 1)[0]
        named = re.findall(r"`(\w+)`", rest)
        expected = [m.rsplit(".", 1)[-1] for m in modules]
        assert named == expected, f"book/api.md names {named} for {page}.md, which documents {expected}"
