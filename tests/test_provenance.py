"""What is recorded beside a measurement: the commit, also without a git checkout."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

import xception_lib as xl


def test_commit_of_this_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XCEPTION_COMMIT", raising=False)
    commit = xl.provenance.git_commit()
    if commit is None:
        pytest.skip("this copy of the repository is not a git checkout")
    assert len(commit) == 40 and int(commit, 16) >= 0


def test_the_variable_names_the_commit_of_a_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XCEPTION_COMMIT", raising=False)
    monkeypatch.setenv("GIT_DIR", str(tmp_path))  # a copy of the files without git metadata
    assert xl.provenance.git_commit() is None
    monkeypatch.setenv("XCEPTION_COMMIT", "abc123")
    assert xl.provenance.git_commit() == "abc123"
    monkeypatch.delenv("GIT_DIR")
    assert xl.provenance.git_commit() == "abc123"  # a copy's git metadata may be stale: the variable wins


def test_environment_names_device_and_date() -> None:
    env = xl.provenance.environment("cpu")
    assert env.device == "cpu" and env.device_name and env.date.endswith("+00:00")
    assert env.cudnn_benchmark is None  # only recorded for CUDA runs
    assert xl.provenance.Environment.from_dict(json.loads(json.dumps(env.to_dict()))) == env


def test_check_keeps_nan_and_the_sign_of_infinity() -> None:
    """NaN stays NaN where NaN is allowed (an epoch not evaluated), -inf stays negative, 10**400 is +inf."""
    assert math.isnan(xl.provenance.check("x", float("nan"), float, nan=True))
    assert xl.provenance.check("x", -math.inf, float, nan=True) == -math.inf
    assert xl.provenance.check("x", 10**400, float, nan=True) == math.inf
    assert xl.provenance.check("x", [0.5, float("nan")], list[float], 0, 1, nan=True)[0] == 0.5
    with pytest.raises(ValueError, match="x: expected a finite number"):
        xl.provenance.check("x", float("nan"), float)
