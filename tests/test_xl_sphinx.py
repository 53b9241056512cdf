"""The book's Sphinx extension (tools/xl_sphinx.py) and what it makes of the pages.

The fast tests call the extension's pieces directly; ``test_scratch_book`` builds a two-page
book in a temporary folder (a notebook with a captioned figure and a citation, an API page with
a dataclass and a constant) and reads the HTML, as a reader would see it.
"""

from __future__ import annotations

import base64
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import xl_sphinx  # noqa: E402


def _bibliography() -> dict[str, Any]:
    """references.bib formatted with the book's style: key -> (label, rendered text, rendered HTML)."""
    pybtex_database = pytest.importorskip("pybtex.database")
    entries = pybtex_database.parse_file(str(ROOT / "references.bib"))
    style = xl_sphinx._author_year_style()()
    formatted = list(style.format_entries(entries.entries.values()))
    return {e.key: (e.label, e.text.render_as("text"), e.text.render_as("html")) for e in formatted}


def test_labels_are_author_year_as_the_text_cites() -> None:
    bib = _bibliography()
    assert bib["chollet2017xception"][0] == "Chollet, 2017"
    assert bib["ioffe2015batch"][0] == "Ioffe and Szegedy, 2015"
    assert bib["goyal2017accurate"][0] == "Goyal et al., 2017"
    assert bib["devries2017cutout"][0] == "DeVries and Taylor, 2017"
    labels = [label for label, _, _ in bib.values()]
    assert len(set(labels)) == len(labels), "two entries share a label"
    for label in labels:
        assert re.fullmatch(r"[A-Z][\w' -]+( and [A-Z][\w' -]+| et al\.)?, (19|20)\d\d[a-z]?", label), label


def test_entries_are_sorted_as_their_labels_read() -> None:
    keys = list(_bibliography())
    # The three Szegedy et al. papers by year, whatever their co-authors' names.
    szegedy = [k for k in keys if k.startswith("szegedy")]
    assert szegedy == ["szegedy2015going", "szegedy2016rethinking", "szegedy2017inception"]
    assert keys.index("chollet2017xception") < keys.index("he2015delving") < keys.index("he2016deep")


def test_names_accents_and_arxiv_links_render() -> None:
    bib = _bibliography()
    assert "Piotr Dollár" in bib["goyal2017accurate"][1]
    assert "Piotr Dollár" in bib["xie2017aggregated"][1]
    assert "François Chollet" in bib["chollet2017xception"][1]
    assert "https://arxiv.org/abs/1610.02357" in bib["chollet2017xception"][2]
    # Every arXiv-only paper links its identifier and names no "arXiv preprint" journal.
    text = (ROOT / "references.bib").read_text()
    assert "arXiv preprint" not in text
    for key, ident in re.findall(r"@\w+\{(\w+),[^@]*?eprint\s*=\s*\{([\d.]+)\}", text):
        assert f'href="https://arxiv.org/abs/{ident}"' in bib[key][2], key


def test_colab_url_follows_the_repository_the_book_is_built_from() -> None:
    options = {
        "repository_url": "https://github.com/someone/xception-fork.git",
        "repository_branch": "dev",
        "path_to_docs": "",
        "launch_buttons": {"colab_url": "https://colab.research.google.com/"},
    }
    assert (
        xl_sphinx.colab_url(options, "book/05_training")
        == "https://colab.research.google.com/github/someone/xception-fork/blob/dev/book/05_training.ipynb"
    )
    docs = {**options, "path_to_docs": "/docs/"}
    assert str(xl_sphinx.colab_url(docs, "ch1")).endswith("/blob/dev/docs/ch1.ipynb")
    assert xl_sphinx.colab_url({**options, "repository_url": "https://gitlab.com/a/b"}, "x") is None
    assert xl_sphinx.colab_url({}, "x") is None
    badge = xl_sphinx.colab_badge("https://colab.research.google.com/github/a/b/blob/main/x.ipynb?a=1&b=2")
    assert "Open in Colab" in badge and "a=1&amp;b=2" in badge
    assert "<img" not in badge and "http://" not in badge.replace("http://www.w3.org/2000/svg", "")


def test_constants_are_documented_only_where_all_lists_them() -> None:
    import xception_lib.chapters.anatomy as anatomy
    import xception_lib.data as data

    skip = xl_sphinx.skip_unlisted_constant
    assert "FLOWS" not in getattr(anatomy, "__all__", ())
    assert skip(None, "module", "FLOWS", anatomy.FLOWS, False, {}) is True
    assert "ENV_VAR" in data.__all__
    assert skip(None, "module", "ENV_VAR", data.ENV_VAR, False, {}) is None
    assert skip(None, "module", "load_cifar", data.load_cifar, False, {}) is None
    assert skip(None, "class", "NAME", "x", False, {}) is None
    assert xl_sphinx._is_undocumented_constant("xception_lib.chapters.anatomy", "FLOWS")
    assert not xl_sphinx._is_undocumented_constant("xception_lib.data", "ENV_VAR")
    assert not xl_sphinx._is_undocumented_constant("xception_lib.chapters.anatomy", "NO_SUCH_NAME")


# ------------------------------------------------------------------ a scratch book

_PNG = base64.b64encode(
    base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")
).decode()


def _notebook() -> dict[str, Any]:
    def cell(kind: str, source: str, **extra: Any) -> dict[str, Any]:
        return {"cell_type": kind, "id": f"c{abs(hash(source)) % 10**8}", "metadata": {}, "source": source, **extra}

    figure = cell(
        "code",
        "plot()",
        execution_count=None,
        outputs=[
            {"output_type": "display_data", "data": {"image/png": _PNG, "text/plain": "<Figure>"}, "metadata": {}}
        ],
    )
    figure["metadata"] = {
        "mystnb": {
            "figure": {"caption": "Learning curves of the scratch run", "name": "fig-curves"},
            "image": {"alt": "Two falling loss curves"},
        }
    }
    return {
        "cells": [
            cell("markdown", "# Training\n\nAs {cite:t}`chollet2017xception` showed, and {numref}`fig-curves`."),
            figure,
        ],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }


@pytest.mark.slow
def test_scratch_book(tmp_path: Path) -> None:
    pytest.importorskip("myst_nb")
    pytest.importorskip("sphinxcontrib.bibtex")
    from sphinx.application import Sphinx

    src = tmp_path / "src"
    src.mkdir()
    (src / "references.bib").write_text((ROOT / "references.bib").read_text())
    (src / "conf.py").write_text(
        "extensions = ['myst_nb', 'sphinx.ext.autodoc', 'sphinx.ext.napoleon', 'sphinxcontrib.bibtex', 'xl_sphinx']\n"
        "numfig = True\n"
        "bibtex_bibfiles = ['references.bib']\n"
        "bibtex_reference_style = 'author_year'\n"
        "bibtex_default_style = 'xl_author_year'\n"
        "autodoc_typehints = 'description'\n"
        "autodoc_default_options = {'members': True, 'ignore-module-all': True}\n"
        "nb_execution_mode = 'off'\n"
        "html_theme_options = {'repository_url': 'https://github.com/someone/fork', 'repository_branch': 'dev'}\n"
        "suppress_warnings = ['config.cache']\n"
    )
    (src / "index.md").write_text("# Preface\n\n```{toctree}\n:numbered: 1\n\nchapter\napi\nbib\n```\n")
    (src / "chapter.ipynb").write_text(json.dumps(_notebook()))
    (src / "api.md").write_text(
        "# API\n\n```{eval-rst}\n.. automodule:: xception_lib.data\n.. automodule:: xception_lib.chapters.anatomy\n```\n"
    )
    (src / "bib.md").write_text("# Bibliography\n\n```{bibliography}\n```\n")
    out = tmp_path / "html"
    sys.path.insert(0, str(ROOT / "tools"))
    app = Sphinx(str(src), str(src), str(out), str(tmp_path / "doctrees"), "html", status=None, freshenv=True)
    app.build()

    chapter = (out / "chapter.html").read_text()
    # The Colab badge, under the numbered title, naming the repository of html_theme_options.
    title = chapter.index('<span class="section-number">1. </span>Training')
    badge = chapter.index("https://colab.research.google.com/github/someone/fork/blob/dev/chapter.ipynb")
    assert title < badge
    assert "Open in Colab" not in (out / "index.html").read_text()
    assert "Open in Colab" not in (out / "api.html").read_text()
    # The captioned figure is numbered, with its alt text.
    caption = re.search(r"<figcaption>(.*?)</figcaption>", chapter, re.S)
    assert caption is not None
    assert re.search(r"Fig\. 1\.1", re.sub(r"<[^>]+>", "", caption.group(1))), caption.group(1)
    assert 'alt="Two falling loss curves"' in chapter
    # The citation reads as its entry's label in the bibliography.
    assert "As Chollet [2017] showed" in re.sub(r"<[^>]+>", "", chapter)
    bib = re.sub(r"<[^>]+>", "", (out / "bib.html").read_text())
    assert "[Chollet, 2017]" in bib
    api = (out / "api.html").read_text()
    # A dataclass's documented fields appear once (as attributes), not again under "Parameters".
    cifar = api[api.index('id="xception_lib.data.CifarArrays"') :]
    cifar = cifar[: cifar.index('id="xception_lib.data.cache_dir"')]
    fields = re.sub(r"<[^>]+>", "", cifar[: cifar.index('id="xception_lib.data.CifarArrays.mean"')])
    assert fields.count("train_images") == 2, fields  # the signature and the attribute
    assert "Parameters" not in fields
    # Constants: those __all__ lists are documented, internal ones are not.
    assert 'id="xception_lib.data.ENV_VAR"' in api
    assert 'id="xception_lib.chapters.anatomy.FLOWS"' not in api
