"""Tests of xception_lib.history: recording epochs, the JSON round trip, and what from_dict refuses."""

from __future__ import annotations

import json
import math

import pytest

from xception_lib.history import History

EPOCH = {
    "train_loss": 1.0,
    "train_acc": 0.5,
    "test_loss": math.nan,
    "test_acc": math.nan,
    "lr": 0.1,
    "images_per_sec": 100.0,
    "epoch_time": 2.0,
}


def test_round_trip_through_json() -> None:
    history = History(step_loss=[2.0, 1.5], step_lr=[0.1, 0.2], meta={"config": {"epochs": 1}})
    history.append_epoch(**EPOCH)
    history.append_epoch(**{**EPOCH, "test_acc": 0.6, "epoch_time": 3.0})
    restored = History.from_dict(json.loads(json.dumps(history.to_dict())))
    assert restored.meta == history.meta and restored.step_loss == history.step_loss
    assert restored.test_acc[1] == 0.6 and math.isnan(restored.test_acc[0])
    assert (restored.epochs, restored.steps, restored.train_time) == (2, 2, 5.0)
    assert restored.summary().startswith("2 epochs (2 steps): train acc 50.0%, test acc 60.0%")
    assert History().summary() == "no epoch completed"


def test_append_epoch_needs_every_metric() -> None:
    with pytest.raises(ValueError, match=r"missing \['epoch_time'\]"):
        History().append_epoch(**{k: v for k, v in EPOCH.items() if k != "epoch_time"})


@pytest.mark.parametrize(
    ("data", "error", "match"),
    [
        ({"loss": [1.0]}, ValueError, r"unknown History fields \['loss'\]"),
        ({"train_loss": 1.0}, TypeError, "History field train_loss must be a list of numbers, got float"),
        ({"train_loss": [1.0, "abc"]}, TypeError, r"History field train_loss\[1\] must be a number, got 'abc'"),
        ({"step_lr": [True]}, TypeError, r"step_lr\[0\]"),
        ({"meta": [1]}, TypeError, "History field meta must be a dict, got list"),
        ([1, 2], TypeError, "a History must be read from a dict, got list"),
    ],
)
def test_from_dict_names_the_bad_field(data: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        History.from_dict(data)  # type: ignore[arg-type]
