"""The built pages as a reader's browser shows them (headless Chromium, driven by Playwright).

At the book's desktop width (1280 px) every page of the built book is loaded and measured:

- no code or output block scrolls sideways (its content is wider than its box);
- every image in the text is SVG, or a bitmap at least 1.5 times the width it is shown at;
- every figure of a chapter is numbered ("Fig. N") and has alt text that describes it (not a file name);
- no page is taller than 40,000 px;
- every chapter (``book/NN_*``, NN from 01) is titled with its number ("6. ...", as the prose says
  "chapter 6") and opens with an "Open in Colab" badge;
- no output shows a traceback, a network error or a placeholder such as ``± n/a``.

Needs a built book (``make book``; ``$XL_BUILD_DIR`` for another build) and Chromium
(``apt-get install chromium``) with the ``playwright`` Python package: skipped without them,
a missing build fails under ``XL_REQUIRE_BUILD=1``, a missing browser under ``XL_REQUIRE_BROWSER=1``
(``.ci/run`` installs Chromium and sets it once Chromium is there).

``python tests/test_pages.py [HTML_DIR]`` prints the same measurements for every page, as counts.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.book, pytest.mark.browser]

ROOT = Path(__file__).resolve().parent.parent
DESKTOP = {"width": 1280, "height": 900}
MAX_PAGE_PX = 40_000
MIN_BITMAP_SCALE = 1.5
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# What a reader must never see in an output: the build machine's troubles.
NOISE = ["Traceback (most recent call last)", "gaierror", "Name or service not known", "± n/a", "+/- n/a"]

# Runs in the page: everything the checks need, measured as the browser laid the page out.
MEASURE_JS = """
() => {
  const article = document.querySelector('main article') || document.querySelector('main') || document.body;
  const blocks = [...article.querySelectorAll('div.highlight pre, div.cell_output pre, .output pre')];
  const wide = blocks.filter(b => b.scrollWidth > b.clientWidth + 1).map(b => ({
      text: b.innerText.split('\\n').find(l => l.length > 0) || '', over: b.scrollWidth - b.clientWidth}));
  const images = [...article.querySelectorAll('img')].filter(i => i.clientWidth > 0).map(i => ({
      src: i.getAttribute('src') || '', alt: i.getAttribute('alt') || '',
      natural: i.naturalWidth, shown: i.clientWidth,
      inFigure: !!i.closest('figure'),
      caption: (i.closest('figure') && i.closest('figure').querySelector('figcaption'))
               ? i.closest('figure').querySelector('figcaption').textContent : ''}));
  const outputs = [...article.querySelectorAll('div.cell_output, .output')].map(o => o.innerText).join('\\n');
  const h1 = article.querySelector('h1');
  const badge = article.querySelector('a[href^="https://colab.research.google.com/github/"]');
  return {height: document.documentElement.scrollHeight, blocks: blocks.length, wide, images, outputs,
          title: h1 ? h1.innerText : '', colab: !!badge && badge.offsetHeight > 0};
}
"""


def built_html() -> Path:
    """The built book's html folder; skips (or fails, under XL_REQUIRE_BUILD=1) without one."""
    html = Path(os.environ.get("XL_BUILD_DIR", ROOT / "_build" / "html"))
    if not (html / "index.html").exists():
        _missing(f"no built book in {html}: run `make book` first")
    return html


def _missing(message: str, requirement: str = "XL_REQUIRE_BUILD") -> None:
    if os.environ.get(requirement) == "1":
        pytest.fail(f"{message} ({requirement}=1)")
    pytest.skip(message)


def pages(html: Path) -> list[Path]:
    """Every page of the book: the chapters, the API reference and the bibliography."""
    skip = {"genindex.html", "search.html", "py-modindex.html"}
    return sorted(
        p
        for p in html.rglob("*.html")
        if p.name not in skip
        and "_static" not in p.parts
        and "_modules" not in p.parts
        and "_sources" not in p.parts
        and not _is_redirect(p)
    )


def _is_redirect(path: Path) -> bool:
    """A stub that only sends the browser on (the root ``index.html`` -> the preface): nothing to measure.

    Measuring it would race the redirect (the page is replaced while it is read).
    """
    head = path.read_text(encoding="utf-8", errors="replace")[:300].lower()
    return head.lstrip().startswith("<meta") and 'http-equiv="refresh"' in head


def chromium() -> str | None:
    """The Chromium binary to drive: ``$XL_CHROMIUM``, else Debian's."""
    return os.environ.get("XL_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def measure(page: Any, path: Path) -> dict[str, Any]:
    """Load ``path`` in ``page`` (a Playwright page) and measure it (see MEASURE_JS)."""
    page.goto(path.as_uri(), wait_until="load")
    page.wait_for_timeout(100)  # let the theme finish its layout (sidebar, fonts)
    return page.evaluate(MEASURE_JS)


def chapter_number(name: str) -> int | None:
    """The chapter a page is, from its file name (``book/06_ablations.html`` -> 6); ``None`` for the rest.

    The preface (``00``) is the book's unnumbered root; the reference pages have no number.
    """
    import re

    match = re.fullmatch(r"book/(\d\d)_[^/]+\.html", name)
    if match is None or int(match.group(1)) == 0:
        return None
    return int(match.group(1))


def problems(report: dict[str, Any], chapter: bool, number: int | None = None) -> list[str]:
    """What a reader would see wrong on a measured page, one line each (``number``: the chapter's)."""
    found = [f"code/output block scrolls sideways by {w['over']} px: {w['text'][:70]!r}" for w in report["wide"]]
    if report["height"] > MAX_PAGE_PX:
        found.append(f"page is {report['height']:,} px tall (at most {MAX_PAGE_PX:,})")
    for image in report["images"]:
        name = image["src"].rsplit("/", 1)[-1]
        if not name.endswith(".svg") and image["natural"] < MIN_BITMAP_SCALE * image["shown"]:
            found.append(f"{name}: a {image['natural']}-px bitmap shown {image['shown']} px wide (blurry)")
        if chapter and image["inFigure"] is False and image["shown"] > 200:
            found.append(f"{name}: a figure without a numbered caption")
        if chapter and image["inFigure"] and not image["caption"].lstrip().startswith("Fig"):
            found.append(f"{name}: its caption has no figure number")
        alt = image["alt"].strip()
        path_like = " " not in alt or alt.endswith((".png", ".svg", ".jpg"))  # MyST-NB's default: the file
        if image["shown"] > 200 and (len(alt) < 15 or path_like):
            found.append(f"{name}: alt text {alt!r} does not describe the figure")
    found += [f"output shows {word!r}" for word in NOISE if word in report["outputs"]]
    if number is not None:
        title = report.get("title", "").strip()
        if not title.startswith(f"{number}. "):
            found.append(f"the title {title[:60]!r} does not start with the chapter number {number}")
        if not report.get("colab"):
            found.append("no visible 'Open in Colab' badge")
    return found


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for the whole module."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright package is not installed (pip install playwright)", "XL_REQUIRE_BROWSER")
    binary = chromium()
    if binary is None:
        _missing("no Chromium found (apt-get install chromium, or set XL_CHROMIUM)", "XL_REQUIRE_BROWSER")
    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=binary, args=CHROMIUM_ARGS, headless=True)
        yield instance
        instance.close()


def _page_ids() -> list[str]:
    html = Path(os.environ.get("XL_BUILD_DIR", ROOT / "_build" / "html"))
    found = [str(p.relative_to(html)) for p in pages(html)] if (html / "index.html").exists() else []
    return found or ["(no built book)"]


@pytest.mark.parametrize("name", _page_ids())
def test_page_reads_well_at_desktop_width(browser: Any, name: str) -> None:
    html = built_html()
    page = browser.new_page(viewport=DESKTOP)
    try:
        report = measure(page, html / name)
    finally:
        page.close()
    chapter = name.startswith("book/") and not name.startswith(("book/api", "book/bibliography"))
    found = problems(report, chapter, chapter_number(name))
    assert not found, f"{name}:\n  " + "\n  ".join(found)


def test_problems_are_found() -> None:
    """The checks themselves: each kind of problem is reported, a clean page passes."""
    clean = {
        "height": 5000,
        "blocks": 1,
        "wide": [],
        "outputs": "accuracy 0.91",
        "images": [
            {
                "src": "a.svg",
                "alt": "Learning curves of two runs",
                "natural": 600,
                "shown": 690,
                "inFigure": True,
                "caption": "Fig. 3 Learning curves",
            }
        ],
    }
    assert problems(clean, chapter=True) == []
    titled = {**clean, "title": "6. What the paper's experiments look like", "colab": True}
    assert problems(titled, chapter=True, number=6) == []
    assert chapter_number("book/06_ablations.html") == 6
    assert chapter_number("book/00_preface.html") is None
    assert chapter_number("book/api_core.html") is None
    unnumbered = "\n".join(problems({**clean, "title": "Ablations", "colab": False}, chapter=True, number=6))
    assert "chapter number 6" in unnumbered and "Open in Colab" in unnumbered
    assert "chapter number" in "\n".join(problems({**titled, "title": "16. X"}, chapter=True, number=6))
    bad = {
        "height": 50_000,
        "blocks": 2,
        "wide": [{"text": "x = 1", "over": 40}],
        "outputs": "Traceback (most recent call last)\nsocket.gaierror",
        "images": [
            {
                "src": "_images/abc.png",
                "alt": "_images/abc.png",
                "natural": 690,
                "shown": 690,
                "inFigure": False,
                "caption": "",
            }
        ],
    }
    found = "\n".join(problems(bad, chapter=True))
    for expected in (
        "scrolls sideways",
        "px tall",
        "blurry",
        "without a numbered caption",
        "alt text",
        "Traceback",
        "gaierror",
    ):
        assert expected in found, expected


def test_redirect_stubs_are_not_pages(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text('<meta http-equiv="Refresh" content="0; url=book/00_preface.html" />\n')
    (tmp_path / "book").mkdir()
    (tmp_path / "book" / "00_preface.html").write_text("<!DOCTYPE html><html><body><main></main></body></html>")
    assert [p.relative_to(tmp_path).as_posix() for p in pages(tmp_path)] == ["book/00_preface.html"]


def main(argv: list[str]) -> int:
    """Print every page's measurements and the totals (for a closing note or a quick look)."""
    from playwright.sync_api import sync_playwright

    html = Path(argv[0]) if argv else ROOT / "_build" / "html"
    totals = {
        "pages": 0,
        "blocks": 0,
        "wide": 0,
        "images": 0,
        "blurry": 0,
        "unnumbered": 0,
        "bad_alt": 0,
        "tall": 0,
        "noise": 0,
        "no_badge": 0,
        "unnumbered_title": 0,
    }
    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS, headless=True)
        page = instance.new_page(viewport={"width": DESKTOP["width"], "height": DESKTOP["height"]})
        for path in pages(html):
            name = str(path.relative_to(html))
            report = measure(page, path)
            chapter = name.startswith("book/") and not name.startswith(("book/api", "book/bibliography"))
            found = problems(report, chapter, chapter_number(name))
            totals["pages"] += 1
            totals["blocks"] += report["blocks"]
            totals["wide"] += len(report["wide"])
            totals["images"] += len(report["images"])
            totals["blurry"] += sum("blurry" in f for f in found)
            totals["unnumbered"] += sum("numbered caption" in f or "figure number" in f for f in found)
            totals["bad_alt"] += sum("alt text" in f for f in found)
            totals["tall"] += report["height"] > MAX_PAGE_PX
            totals["noise"] += sum("output shows" in f for f in found)
            totals["no_badge"] += sum("Open in Colab" in f for f in found)
            totals["unnumbered_title"] += sum("chapter number" in f for f in found)
            print(
                f"{name}: {report['height']:,} px, {len(report['wide'])}/{report['blocks']} blocks scroll, "
                f"{len(report['images'])} images, {len(found)} problems"
            )
        instance.close()
    print(json.dumps(totals))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
