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
    ("data", "match"),
    [
        ({"loss": [1.0]}, r"history: expected only the fields .* got \['loss'\]"),
        ({"train_loss": 1.0}, "history.train_loss: expected a list, got 1.0"),
        ({"train_loss": [1.0, "abc"]}, r"history.train_loss\[1\]: expected a number, got 'abc'"),
        ({"step_lr": [True]}, r"step_lr\[0\]: expected a number"),
        ({"meta": [1]}, r"history.meta: expected an object, got \[1\]"),
        ({"meta": {"x": {1, 2}}}, "history.meta: expected plain JSON values"),
        ([1, 2], r"history: expected a JSON object, got \[1, 2\]"),
    ],
)
def test_from_dict_names_the_bad_field(data: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        History.from_dict(data)  # type: ignore[arg-type]
