"""Sphinx extension of the book: resolve references to ``xception_lib``'s own names.

* Re-exports. Docstrings say :class:`xception_lib.XceptionConfig` or just
  :class:`XceptionConfig`, the names a reader types after ``import xception_lib as xl``; the
  API page documents each object once, in the module that defines it
  (``xception_lib.config.XceptionConfig``). Such references are resolved there.
* Type aliases. ``Activation = Literal["none", "relu", "elu"]`` is a variable, not a class,
  so the ``py:class`` references that type hints produce cannot resolve; a reference to a
  type alias defined in an ``xception_lib`` module is rendered as plain text.

Anything else that does not resolve still fails the build under ``-n``. Enabled from
``_config.yml`` (``sphinx.local_extensions``).
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
    return None


def setup(app: Any) -> dict[str, Any]:
    app.connect("missing-reference", resolve_reexport)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
