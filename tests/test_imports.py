"""The library's imports run one way: core -> library -> chapters, with no cycle.

Every ``import`` statement of every module is read from its source, those inside functions
included (a function-level import is an import all the same: it only happens later), and
resolved to the ``xception_lib`` module it loads. The package's ``__init__`` counts with what it
imports when the package is imported; its lazy ``xl.<name>`` attributes (``importlib`` on first
use) are the one door from the top, through which a chapter reaches any module by name.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "xception_lib"
CORE = {"config", "layers", "pooling", "model", "pretrained"}


def _module_name(path: Path) -> str:
    if not path.is_relative_to(PACKAGE.parent):  # a probe outside the package
        return path.stem
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    relative = Path(*name.split("."))
    return (PACKAGE.parent / relative).with_suffix(".py").exists() or (
        PACKAGE.parent / relative / "__init__.py"
    ).exists()


def imports_of(path: Path) -> set[str]:
    """The ``xception_lib`` modules that ``path`` imports, anywhere in its source."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "xception_lib"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x / from .x import y
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            if base.split(".")[0] != "xception_lib":
                continue
            for alias in node.names:  # `from xception_lib import train` imports a module
                candidate = f"{base}.{alias.name}"
                found.add(candidate if _is_module(candidate) else base)
    found.discard(_module_name(path))
    return found


def graph() -> dict[str, set[str]]:
    return {_module_name(p): imports_of(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_nothing_outside_the_chapters_imports_them() -> None:
    offenders = {
        module: sorted(m for m in imported if m == "xception_lib.chapters" or m.startswith("xception_lib.chapters."))
        for module, imported in graph().items()
        if not module.startswith("xception_lib.chapters")
    }
    assert not {m: i for m, i in offenders.items() if i}, offenders


def test_the_core_imports_only_the_core() -> None:
    core = {f"xception_lib.{name}" for name in CORE}
    wrong = {m: sorted(graph()[m] - core) for m in core if graph()[m] - core}
    assert not wrong, f"the core reaches into the library: {wrong}"


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``edges`` as a path (its first module repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle_anywhere() -> None:
    cycle = find_cycle(graph())
    assert cycle is None, " -> ".join(cycle or [])


def test_the_checks_find_what_they_look_for(tmp_path: Path) -> None:
    """The cycle finder finds a cycle (also through a function-level import), and only then."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    source = tmp_path / "probe.py"
    source.write_text("def f():\n    from xception_lib.chapters import viz\n    import xception_lib.train\n")
    assert imports_of(source) >= {"xception_lib.chapters.viz", "xception_lib.train"}


@pytest.mark.parametrize("module", ["xception_lib.train", "xception_lib.evaluation", "xception_lib.data"])
def test_importing_the_library_loads_no_chapter(module: str) -> None:
    import subprocess
    import sys

    code = f"import sys, {module}; print(sorted(m for m in sys.modules if m.startswith('xception_lib.chapters')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
