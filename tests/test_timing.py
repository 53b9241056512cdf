"""The one timer: order of calls, warm-up, quartiles, the budget and the device synchronisation."""

from __future__ import annotations

import itertools

import pytest

from xception_lib import timing


def test_timing_has_median_and_quartiles() -> None:
    t = timing.Timing((4.0, 1.0, 3.0, 2.0, 5.0))
    assert (t.median, t.quartiles, t.iqr) == (3.0, (2.0, 4.0), 2.0)
    one = timing.Timing((0.5,))
    assert (one.median, one.iqr, one.truncated) == (0.5, 0.0, False)
    with pytest.raises(ValueError, match="at least one time"):
        timing.Timing(())


def test_measure_warms_up_then_repeats(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    ticks = itertools.count(0.0, 0.5)  # every clock reading is 0.5 s after the previous one
    monkeypatch.setattr(timing.time, "perf_counter", lambda: next(ticks))
    t = timing.measure(lambda: calls.append(1), warmup=2, repeats=4)
    assert len(calls) == 6 and len(t.times) == 4 and not t.truncated
    assert set(t.times) == {0.5}  # start and stop are consecutive readings


def test_interleaved_runs_the_cases_in_turn() -> None:
    calls: list[str] = []
    out = timing.interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, warmup=1, repeats=3)
    assert calls == ["a", "b"] * 4  # warm-up included: A B A B ...
    assert set(out) == {"a", "b"} and all(len(t.times) == 3 and t.median >= 0 for t in out.values())


def test_budget_stops_early_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    ticks = itertools.count(0.0, 1.0)  # one second per clock reading
    monkeypatch.setattr(timing.time, "perf_counter", lambda: next(ticks))
    t = timing.measure(lambda: None, warmup=0, repeats=100, budget_s=5)
    assert t.truncated and 1 <= len(t.times) < 100
    unlimited = timing.measure(lambda: None, warmup=0, repeats=5)
    assert not unlimited.truncated and len(unlimited.times) == 5


def test_budget_always_leaves_one_timed_call(monkeypatch: pytest.MonkeyPatch) -> None:
    ticks = itertools.count(0.0, 100.0)  # the warm-up alone spends the budget
    monkeypatch.setattr(timing.time, "perf_counter", lambda: next(ticks))
    t = timing.measure(lambda: None, warmup=1, repeats=10, budget_s=1)
    assert len(t.times) == 1 and t.truncated


def test_device_is_synchronised_around_every_timed_call(monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []
    monkeypatch.setattr(timing, "synchronize", lambda device: events.append(f"sync {device.type}"))
    timing.measure(lambda: events.append("call"), warmup=1, repeats=2, device="cpu")
    assert events == ["call"] + ["sync cpu", "call", "sync cpu"] * 2


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"repeats": 0}, r"repeats: expected a finite number in \[1, inf\], got 0"),
        ({"warmup": -1}, r"warmup: expected a finite number in \[0, inf\], got -1"),
        ({"repeats": 1.5}, "repeats: expected an integer, got 1.5"),
        ({"budget_s": 0}, "budget_s: expected > 0 seconds or None, got 0"),
    ],
)
def test_bad_arguments_say_what_was_expected(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        timing.measure(lambda: None, **kwargs)


def test_clock_counts_up() -> None:
    elapsed = timing.clock()
    first = elapsed()
    assert 0 <= first <= elapsed()
