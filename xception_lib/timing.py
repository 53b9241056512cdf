"""The one timer of the book: :func:`interleaved` warms up (allocation, kernel choice), then times several cases in
turn (A, B, A, B, ...), so that a slow spell on a shared machine hits them all, synchronising the device around every
call (a GPU returns before its work is done), until a time budget runs out. :func:`measure` times one case."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from xception_lib.provenance import check, expect
from xception_lib.runtime import synchronize

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class Timing:
    """The seconds of repeated calls of one case, with their median and interquartile range (IQR)."""

    times: tuple[float, ...]  # seconds per call, in the order measured
    truncated: bool = False  # the budget ran out before every repeat was taken

    def __post_init__(self) -> None:
        expect(bool(self.times), "times", "at least one time", self.times)

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def quartiles(self) -> tuple[float, float]:  # the 25th and 75th percentiles
        times = self.times * 2 if len(self.times) == 1 else self.times  # statistics.quantiles needs two
        q1, _, q3 = statistics.quantiles(times, n=4, method="inclusive")
        return q1, q3

    @property
    def iqr(self) -> float:  # the spread of the middle half of the calls
        return self.quartiles[1] - self.quartiles[0]


def clock() -> Callable[[], float]:
    """A stopwatch started now: calling it returns the seconds elapsed (for wall times and budgets)."""
    start = time.perf_counter()
    return lambda: time.perf_counter() - start


def interleaved(
    cases: Mapping[K, Callable[[], object]],
    *,
    warmup: int = 1,
    repeats: int = 5,
    budget_s: float | None = None,
    device: torch.device | str | None = None,
) -> dict[K, Timing]:
    """Time several cases in rounds (A, B, A, B, ...), one call of each per round, after ``warmup`` untimed rounds.

    Args:
        budget_s: start no round after this many seconds (warm-up included); one round always runs, and the
            :class:`Timing` says ``truncated`` if rounds were left out.
        device: synchronised before and after every timed call (``None``: the CPU, whose calls are synchronous).
    """
    check("warmup", warmup, int, 0)
    check("repeats", repeats, int, 1)
    expect(budget_s is None or budget_s > 0, "budget_s", "> 0 seconds or None", budget_s)
    expect(bool(cases), "cases", "at least one case to time", cases)
    device = torch.device(device or "cpu")
    elapsed = clock()
    for _ in range(warmup):
        for fn in cases.values():
            fn()
    times: dict[K, list[float]] = {name: [] for name in cases}
    for i in range(repeats):
        if i > 0 and budget_s is not None and elapsed() > budget_s:
            break
        for name, fn in cases.items():
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return {name: Timing(tuple(ts), truncated=len(ts) < repeats) for name, ts in times.items()}


def measure(fn: Callable[[], object], *, warmup: int = 2, repeats: int = 10, **options: Any) -> Timing:
    """Time ``fn()`` like :func:`interleaved` (``budget_s``, ``device``); ``measure(lambda: model(x)).median`` (s)."""
    return interleaved({0: fn}, warmup=warmup, repeats=repeats, **options)[0]
