"""The library stays small enough to read: line budgets, and one timer.

The budgets are those the "one house" issue set: the chapters' apparatus at most 3,000 lines,
the whole library at most 6,500 (not counting the exercise checks, the transfer-learning
chapter's module and its folder loader, which came with their own issues), the trainer at most
350, and ``time.perf_counter`` called from at most two modules (the timer, and one other).
Lines are counted as ``wc -l`` counts them; ``ruff format`` decides the layout.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "xception_lib"
OWN_ISSUES = {"exercises.py", "transfer.py", "folders.py"}  # budgeted by their own issues


def lines(paths: list[Path]) -> int:
    """Lines in these files, as ``wc -l`` counts them."""
    return sum(path.read_text(encoding="utf-8").count("\n") for path in paths)


def test_line_budgets() -> None:
    modules = sorted(PACKAGE.rglob("*.py"))
    chapters = [p for p in modules if p.parent.name == "chapters"]
    library = [p for p in modules if p.name not in OWN_ISSUES or p.parent != PACKAGE]
    assert chapters and len(library) > len(chapters)
    assert lines(chapters) <= 3000, f"xception_lib/chapters: {lines(chapters)} lines (budget 3,000)"
    assert lines(library) <= 6500, f"xception_lib without {sorted(OWN_ISSUES)}: {lines(library)} lines (budget 6,500)"
    assert lines([PACKAGE / "train.py"]) <= 350, f"train.py: {lines([PACKAGE / 'train.py'])} lines (budget 350)"


def test_at_most_two_modules_read_the_clock() -> None:
    clocks = [p.name for p in sorted(PACKAGE.rglob("*.py")) if "perf_counter" in p.read_text(encoding="utf-8")]
    assert "timing.py" in clocks and len(clocks) <= 2, clocks
