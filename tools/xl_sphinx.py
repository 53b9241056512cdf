"""Sphinx extension of the book: references to ``xception_lib``, the API pages, Colab badges, citations.

* Re-exports. Docstrings say :class:`xception_lib.XceptionConfig` or just
  :class:`XceptionConfig`, the names a reader types after ``import xception_lib as xl``; the
  API page documents each object once, in the module that defines it
  (``xception_lib.config.XceptionConfig``). Such references are resolved there.
* Type aliases. ``Activation = Literal["none", "relu", "elu"]`` is a variable, not a class,
  so the ``py:class`` references that type hints produce cannot resolve; a reference to a
  type alias defined in an ``xception_lib`` module is rendered as plain text.

Anything else that does not resolve still fails the build under ``-n``.

It also shapes what the reader sees:

* The API reference documents public names only: a module-level constant (an ALL_CAPS name)
  appears only where its module lists it in ``__all__``.
* A dataclass's fields appear once: where the docstring documents them (napoleon's
  ``Attributes:``), the "Parameters" list that type hints add for the constructor leaves them out.
* Every chapter page opens with an "Open in Colab" badge, linking to the chapter's notebook in the
  repository the book is built from (``html_theme_options``: ``repository_url``,
  ``repository_branch``, ``path_to_docs``, which ``tools/build_book.py`` may override).
* The bibliography labels entries as the text cites them ("Chollet, 2017", not pybtex's
  "[Cho17]"): ``bibtex_default_style: xl_author_year``.

Enabled from ``_config.yml`` (``sphinx.local_extensions``).
"""

from __future__ import annotations

from typing import Any


def _defining_target(module_name: str | None, target: str) -> str | None:
    """Where an xception_lib object named ``target`` is defined, as a dotted path.

    ``xception_lib.XceptionConfig.cifar``, or ``XceptionConfig.cifar`` seen from any module
    that imports it, -> ``xception_lib.config.XceptionConfig.cifar``.
    """
    import importlib

    parts = target.split(".")
    modules = []
    if parts[0] == "xception_lib":
        for i in range(len(parts) - 1, 0, -1):  # the longest importable module prefix
            try:
                modules = [importlib.import_module(".".join(parts[:i]))]
            except ImportError:
                continue
            parts = parts[i:]
            break
    else:
        for name in (module_name, "xception_lib"):
            if name and name.startswith("xception_lib"):
                try:
                    modules.append(importlib.import_module(name))
                except ImportError:
                    pass
    for module in modules:
        try:
            obj = getattr(module, parts[0], None)
        except ImportError:  # a lazily imported submodule that does not exist
            continue
        defined_in = getattr(obj, "__module__", None)
        qualname = getattr(obj, "__qualname__", None)
        if isinstance(defined_in, str) and defined_in.startswith("xception_lib") and qualname:
            return ".".join([defined_in, qualname, *parts[1:]])
    return None


def _is_type_alias(module_name: str | None, target: str) -> bool:
    """Whether ``target`` names a typing construct (``Literal[...]``, ``Union``, ...) of an xception_lib module."""
    import importlib
    import sys
    import typing

    if "." in target:
        module_name, target = target.rsplit(".", 1)
    if module_name:
        if not module_name.startswith("xception_lib"):
            return False
        try:
            candidates = [importlib.import_module(module_name)]
        except ImportError:
            return False
    else:  # type hints rendered into descriptions carry no module context: look in the library's modules
        candidates = [m for n, m in list(sys.modules.items()) if n.startswith("xception_lib") and m is not None]
    for module in candidates:
        try:
            obj = getattr(module, target, None)
        except ImportError:
            continue
        if obj is not None and not isinstance(obj, type) and typing.get_origin(obj) is not None:
            return True
    return False


def _is_undocumented_constant(module_name: str | None, target: str) -> bool:
    """Whether ``target`` is an ALL_CAPS constant of an xception_lib module that the API pages leave out.

    Such a reference (``:data:`FLOWS``` in a docstring) is rendered as text; a misspelt or
    missing constant still fails the build.
    """
    import importlib

    if "." in target:
        module_name, target = target.rsplit(".", 1)
    if not _is_constant(target) or not module_name or not module_name.startswith("xception_lib"):
        return False
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return False
    return target in vars(module) and target not in getattr(module, "__all__", ())


def resolve_reexport(app: Any, env: Any, node: Any, contnode: Any) -> Any:
    """``missing-reference`` handler: re-exports to their defining module, type aliases to text."""
    if node.get("refdomain") != "py":
        return None
    target = _defining_target(node.get("py:module"), node["reftarget"])
    if target is not None and target != node["reftarget"]:
        domain = env.get_domain("py")
        return domain.resolve_xref(env, node["refdoc"], app.builder, node["reftype"], target, node, contnode)
    if node["reftype"] == "class" and _is_type_alias(node.get("py:module"), node["reftarget"]):
        return contnode
    if node["reftype"] in ("data", "const", "obj") and _is_undocumented_constant(
        node.get("py:module"), node["reftarget"]
    ):
        return contnode
    return None


# ------------------------------------------------------------------ API reference: public names, fields once


def _is_constant(name: str) -> bool:
    """``FULL_EPOCHS``, ``ENV_VAR``: a module-level constant by the naming convention."""
    return name.isupper() and not name.startswith("_")


def skip_unlisted_constant(app: Any, what: str, name: str, obj: Any, skip: bool, options: Any) -> bool | None:
    """``autodoc-skip-member``: skip a module's ALL_CAPS constants unless its ``__all__`` lists them.

    Constants are implementation details (colours, file names, field lists) unless a module
    declares them public. A module with ``__all__`` is documented by it anyway; this also covers
    the modules without one. Returns ``None`` (autodoc decides) for everything else.
    """
    import sys

    if what != "module" or not _is_constant(name):
        return None
    for module_name, module in list(sys.modules.items()):
        if not module_name.startswith("xception_lib") or module is None:
            continue
        namespace = getattr(module, "__dict__", {})
        if name in namespace and namespace[name] is obj and name in getattr(module, "__all__", ()):
            return None
    return True


def drop_documented_fields(app: Any, domain: str, objtype: str, contentnode: Any) -> None:
    """``object-description-transform``: a dataclass's documented fields leave its "Parameters" list.

    With ``autodoc_typehints: description`` Sphinx lists every constructor argument under
    "Parameters"; for a dataclass those are its fields, which the docstring's ``Attributes:``
    already documents one by one (with their types). Each field is kept once, as the attribute.
    """
    import dataclasses
    import importlib

    from docutils import nodes
    from sphinx import addnodes

    if domain != "py" or objtype != "class":
        return
    signature = contentnode.parent[0] if len(contentnode.parent) else None
    if not isinstance(signature, addnodes.desc_signature):
        return
    try:
        obj: Any = importlib.import_module(signature.get("module", ""))
        for part in signature.get("fullname", "").split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError, ValueError):
        return
    if not (isinstance(obj, type) and dataclasses.is_dataclass(obj)):
        return
    documented = {
        desc_signature.get("fullname", "").rsplit(".", 1)[-1]
        for desc in contentnode.children
        if isinstance(desc, addnodes.desc) and desc.get("objtype") in ("attribute", "property")
        for desc_signature in desc.children
        if isinstance(desc_signature, addnodes.desc_signature)
    }
    if not documented:
        return
    for field_list in [c for c in contentnode.children if isinstance(c, nodes.field_list)]:
        for field in list(field_list.children):
            # Raw fields at this point: ":param name:" and ":type name:" (grouped into the
            # "Parameters" list later, by the DocFieldTransformer).
            words = field[0].astext().split()
            if len(words) == 2 and words[0] in ("param", "parameter", "arg", "type") and words[1] in documented:
                field_list.remove(field)
        if not field_list.children:
            contentnode.remove(field_list)


# ------------------------------------------------------------------ "Open in Colab" on every chapter

_COLAB_LOGO = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 14" width="24" height="14" aria-hidden="true" '
    'focusable="false" style="flex:none">'
    '<path d="M7 2a5 5 0 1 0 3.5 8.6" fill="none" stroke="#F9AB00" stroke-width="3" stroke-linecap="round"/>'
    '<path d="M17 12a5 5 0 1 0-3.5-8.6" fill="none" stroke="#F9AB00" stroke-width="3" stroke-linecap="round"/>'
    "</svg>"
)
# Styled inline, so that the badge needs no stylesheet and no image from the network.
_BADGE_STYLE = (
    "display:inline-flex;align-items:center;gap:.45em;padding:.3em .75em;border-radius:.35em;"
    "background:#3c4043;color:#fff;font-size:.9rem;font-weight:600;line-height:1.2;text-decoration:none"
)


def colab_url(theme_options: dict[str, Any], pagename: str) -> str | None:
    """The Colab link of the notebook behind ``pagename``, or ``None`` without a GitHub repository.

    Built as sphinx-book-theme builds its launch button:
    ``<colab>/github/<owner>/<name>/blob/<branch>/<path_to_docs>/<pagename>.ipynb``.
    """
    from urllib.parse import urlparse

    parsed = urlparse(str(theme_options.get("repository_url") or ""))
    parts = [p for p in parsed.path.split("/") if p]
    if parsed.netloc.lower() not in ("github.com", "www.github.com") or len(parts) < 2:
        return None
    owner, name = parts[0], parts[1].removesuffix(".git")
    branch = theme_options.get("repository_branch") or "main"
    colab = (theme_options.get("launch_buttons") or {}).get("colab_url") or "https://colab.research.google.com"
    book = str(theme_options.get("path_to_docs") or "").strip("/")
    path = f"{book}/{pagename}.ipynb" if book else f"{pagename}.ipynb"
    return f"{colab.rstrip('/')}/github/{owner}/{name}/blob/{branch}/{path}"


def colab_badge(url: str) -> str:
    """The badge's HTML: a link with an inline logo (the book renders offline)."""
    from html import escape

    return (
        f'<p class="xl-colab-badge"><a class="xl-colab-badge-link reference external" href="{escape(url)}" '
        f'style="{_BADGE_STYLE}" title="Run this chapter in Google Colab">{_COLAB_LOGO}'
        "<span>Open in Colab</span></a></p>\n"
    )


def add_colab_badge(app: Any, pagename: str, templatename: str, context: dict[str, Any], doctree: Any) -> None:
    """``html-page-context``: put the badge under the title of every chapter (a notebook that is not the root)."""
    if doctree is None or pagename == app.config.root_doc:
        return
    if not str(app.env.doc2path(pagename)).endswith(".ipynb"):
        return
    url = colab_url(app.config.html_theme_options, pagename)
    body = context.get("body", "")
    if url is None or "</h1>" not in body:
        return
    context["body"] = body.replace("</h1>", "</h1>\n" + colab_badge(url), 1)


def add_static_path(app: Any) -> None:
    """``builder-inited``: serve ``tools/xl_sphinx_static`` (the extension's stylesheet)."""
    from pathlib import Path

    static = str(Path(__file__).resolve().parent / "xl_sphinx_static")
    if static not in app.config.html_static_path:
        app.config.html_static_path.append(static)


def setup(app: Any) -> dict[str, Any]:
    app.connect("builder-inited", add_static_path)
    app.add_css_file("xl_sphinx.css")
    app.connect("missing-reference", resolve_reexport)
    app.connect("autodoc-skip-member", skip_unlisted_constant)
    # After sphinx.ext.autodoc.typehints has added the "Parameters" list (priority 500).
    app.connect("object-description-transform", drop_documented_fields, priority=600)
    app.connect("html-page-context", add_colab_badge)
    register_bibliography_style()
    return {"parallel_read_safe": True, "parallel_write_safe": True}


# ------------------------------------------------------------------ bibliography labels


def _author_year_style() -> type:
    """pybtex's ``unsrt`` entries, sorted by first author and year, labelled as the text cites them.

    The text cites author-year ("Chollet, 2017"); pybtex's default ``alpha`` labels ("[Cho17]",
    "[GDollarG+17]") match nothing a reader saw in the text.
    """
    from pybtex.richtext import Text
    from pybtex.style.formatting.unsrt import Style as Unsrt
    from pybtex.style.labels import BaseLabelStyle
    from pybtex.style.sorting.author_year_title import SortingStyle

    def surname(person: Any) -> str:
        return Text.from_latex(" ".join(person.prelast_names + person.last_names)).render_as("text")

    class AuthorYearLabels(BaseLabelStyle):
        def format_labels(self, sorted_entries: Any) -> Any:
            seen: dict[str, int] = {}
            labels = []
            for entry in sorted_entries:
                people = entry.persons.get("author") or entry.persons.get("editor") or []
                if not people:
                    names = entry.fields.get("key", entry.key)
                elif len(people) == 1:
                    names = surname(people[0])
                elif len(people) == 2:
                    names = f"{surname(people[0])} and {surname(people[1])}"
                else:
                    names = f"{surname(people[0])} et al."
                labels.append(f"{names}, {entry.fields.get('year', 'n.d.')}")
                seen[labels[-1]] = seen.get(labels[-1], 0) + 1
            counts: dict[str, int] = {}
            for label in labels:  # "He et al., 2016a", "He et al., 2016b" where two would read alike
                if seen[label] > 1:
                    counts[label] = counts.get(label, 0) + 1
                    yield label + "abcdefghij"[counts[label] - 1]
                else:
                    yield label

    class ByLabel(SortingStyle):
        """First author's surname, then year: the order of the labels ("Szegedy et al., 2015, 2016, 2017")."""

        def sorting_key(self, entry: Any) -> tuple[str, str, str, str]:
            people = entry.persons.get("author") or entry.persons.get("editor") or []
            first = surname(people[0]).lower() if people else entry.key.lower()
            return (first, entry.fields.get("year", ""), self.persons_key(people), entry.fields.get("title", ""))

    class AuthorYear(Unsrt):
        default_label_style = AuthorYearLabels
        default_sorting_style = ByLabel

    return AuthorYear


def register_bibliography_style() -> None:
    """Make ``bibtex_default_style: xl_author_year`` available to sphinxcontrib-bibtex."""
    from pybtex.plugin import register_plugin

    register_plugin("pybtex.style.formatting", "xl_author_year", _author_year_style())
