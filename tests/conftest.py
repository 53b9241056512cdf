"""Shared fixtures (small, fast model configs, the CIFAR-10 copy), markers, and the run's last line.

Markers (registered in ``pyproject.toml``; ``make test-fast`` deselects slow, book and browser)
are applied here where they follow from what a test uses, so that no test file has to repeat
them: a test that takes the ``cifar10`` fixture is marked ``data``, one that takes the
``built_cache`` fixture (the built book's execution cache) is marked ``book``.

Before any test module imports torch, the settings ``make`` remembered (``settings.mk``) and
the thread count of the book's build are applied (``tools/build_book.py``), so that
``python -m pytest`` checks the book as ``make book`` built it. When tests of the built book
or of the data were skipped, the run's last line says so.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import torch

    import xception_lib as xl
    from xception_lib.data import CifarArrays

REPO = Path(__file__).resolve().parents[1]
# fixture -> the marker that a test using it gets
MARKED_BY_FIXTURE = {"cifar10": "data", "built_cache": "book"}


def load_tool(name: str) -> ModuleType:
    """The script ``tools/<name>.py`` imported as a module (``tools/`` is not a package)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------ settings, markers, last line


def pytest_configure() -> None:
    build_book = load_tool("build_book")
    build_book.use_remembered()
    build_book.set_threads()  # before torch is imported (OpenMP reads it once, at load time)


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for fixture, marker in MARKED_BY_FIXTURE.items():
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(marker)


_SKIPPED: dict[str, list[str]] = {"book": [], "data": []}  # marker -> the skip reasons of its tests


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and isinstance(report.longrepr, tuple):
        for marker, reasons in _SKIPPED.items():
            if marker in report.keywords:
                reasons.append(str(report.longrepr[2]).removeprefix("Skipped: "))


def skip_summary(skips: dict[str, list[str]]) -> str | None:
    """One line on the skipped tests of the built book and of the data, or None if none were skipped."""
    what = {"book": "of the built book", "data": "needing CIFAR-10"}
    parts = [
        f"{len(reasons)} tests {what[marker]} SKIPPED ({max(set(reasons), key=reasons.count)})"
        for marker, reasons in skips.items()
        if reasons
    ]
    return "; ".join(parts) if parts else None


def pytest_unconfigure(config: pytest.Config) -> None:
    """After pytest's own summary: the skipped tests of the built book and of the data, last."""
    line = skip_summary(_SKIPPED)
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if line and reporter is not None:
        reporter.write_line(f"NOT CHECKED: {line}", yellow=True, bold=True)


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="session")
def cifar10() -> CifarArrays:
    """The whole CIFAR-10 copy (``XCEPTION_DATA``, else ``../shared/data``); skipped where it is missing."""
    from xception_lib.data import load_cifar

    root = Path(os.environ.get("XCEPTION_DATA") or REPO.parent / "shared" / "data")
    if not (root / "cifar10-jpeg.tar.xz").exists() and not root.is_file():
        pytest.skip(f"offline CIFAR-10 copy not found at {root} (set XCEPTION_DATA)")
    return load_cifar("cifar10", root)


@pytest.fixture
def tiny_cfg() -> xl.XceptionConfig:
    """The paper's layout at a quarter of its width and 2 middle blocks: fast on a CPU."""
    import xception_lib as xl

    return xl.XceptionConfig.imagenet(width_multiplier=0.25, middle_blocks=2, num_classes=7)


@pytest.fixture
def image_71() -> torch.Tensor:
    """Two 71x71 RGB images (71 is the smallest size timm's Xception is usually run at)."""
    import torch

    return torch.randn(2, 3, 71, 71, generator=torch.Generator().manual_seed(0))


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Run single-threaded: on a CPU shared with other jobs, two intra-op threads can be
    ten times slower than one (each waits for the other at every kernel's barrier)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def n_params(model: torch.nn.Module) -> int:
    """The number of parameters of ``model`` (shared by the tests of runs and experiments)."""
    return sum(p.numel() for p in model.parameters())


def conv_macs(config: xl.XceptionConfig) -> int:
    """fvcore's convolution MACs for one 32x32 image (the counter, not the formulas)."""
    import xception_lib as xl
    from xception_lib.complexity import fvcore_analysis

    pytest.importorskip("fvcore", reason="the MAC counter; install xception_lib[tools]")
    analysis = fvcore_analysis(xl.Xception(config), (1, 3, 32, 32))
    return int(analysis.by_operator()["conv"])
