"""Bad input against the records (ledger runs, environments, benchmark records) and their command lines.

Each probe is a mistake a user or a damaged file can make; each must be refused with a message naming what is
wrong, before any work, and a command line must exit non-zero without a traceback.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_ledger import make_run

from xception_lib import ledger
from xception_lib.history import History
from xception_lib.provenance import Environment

REPO = Path(__file__).resolve().parents[1]
ENV = {"device": "cuda", "device_name": "GPU", "torch": "2.x", "date": "2026-11-29T00:00:00+00:00"}


def test_every_shipped_record_loads() -> None:
    """The package's records: the ledger line by line, each benchmark file's environment and rows."""
    from xception_lib import benchmark as bench

    runs = ledger.read()
    assert len(runs) >= 54 and all(r.final_test_acc == r.history.test_acc[-1] for r in runs)
    files = sorted(ledger.records_dir().glob("*.json"))
    assert files
    for path in files:
        results = bench.load(path)
        assert results.environment.device_name and results.models


# ---------------------------------------------------------------- a run must agree with itself


def _history(test_acc: list[float], speeds: list[float] | None = None) -> History:
    h = History()
    for i, acc in enumerate(test_acc):
        speed = (speeds or [1000.0] * len(test_acc))[i]
        h.append_epoch(
            train_loss=1, train_acc=0.4, test_loss=1, test_acc=acc, lr=0.1, images_per_sec=speed, epoch_time=1
        )
    return h


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"final_test_acc": 0.9}, r"final_test_acc: expected 0.5, the history's last"),  # contradicts its history
        ({"final_test_acc": True}, r"final_test_acc: expected a number"),  # a bool is not an accuracy
        ({"final_test_acc": math.nan}, r"final_test_acc: expected a finite number"),
        ({"wall_time_s": math.inf}, r"wall_time_s: expected a finite number"),
        ({"wall_time_s": 1.0}, r"wall_time_s: expected >= 2.0, the history's training time"),
        ({"images_per_sec": 5.0}, r"images_per_sec: expected 1000.0, the history's median"),
        ({"images_per_sec": -1.0}, r"images_per_sec: expected a finite number in"),
        ({"seed": -1}, r"seed: expected a finite number in \[0"),
        ({"seed": 1.5}, r"seed: expected an integer"),
        ({"params": 0}, r"params: expected a finite number in \[1"),
        ({"macs": -5}, r"macs: expected a finite number in \[1"),
        ({"step_time_s": 0.0}, r"step_time_s: expected a finite number"),
        ({"step_batch_size": 0}, r"step_batch_size: expected"),
        ({"metrics": {"tta_test_acc": 1.5}}, r"metrics.tta_test_acc: expected a finite number in \[0, 1\]"),
        ({"metrics": {"tta_test_acc": "0.5"}}, r"metrics.tta_test_acc: expected a number"),
        ({"model_config": {"width": np.int64(3)}}, r"model_config: expected plain JSON values"),
        ({"extras": {"flips": {1, 2}}}, r"extras: expected plain JSON values"),
        ({"notes": {"x": math.nan}}, r"notes: expected plain JSON values"),
        ({"data": {"name": "cifar10", "source": "x", "train_size": -5, "test_size": 10}}, r"data.train_size"),
        ({"data": {"name": "cifar10", "source": "x", "train_size": 10}}, r"data.test_size: expected an integer"),
        ({"preview": 1}, r"preview: expected true or false"),
        ({"preview": np.bool_(True)}, r"preview: expected true or false"),
        ({"command": None}, r"command: expected a string"),
        ({"history": _history([0.2, 2.0])}, r"history.test_acc\[1\]: expected a finite number in \[0, 1\]"),
        ({"history": _history([0.5])}, r"epochs: expected 1 \(the history's\)"),
    ],
)
def test_a_run_that_contradicts_itself_or_its_types_is_refused(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_run(acc=0.5, **fields)


def test_numpy_numbers_become_python_numbers_and_the_run_writes(tmp_path: Path) -> None:
    run = make_run(seed=np.int64(3), final_test_acc=np.float64(0.5), train_config={"epochs": 2, "seed": 3})
    assert type(run.seed) is int and type(run.final_test_acc) is float
    ledger.append(run, tmp_path / "runs.jsonl")
    assert ledger.read(tmp_path / "runs.jsonl") == [run]


def test_a_changed_copy_of_a_run_must_drop_its_id() -> None:
    run = make_run()
    with pytest.raises(ValueError, match="id: expected .*needs id=''"):
        dataclasses.replace(run, seed=1)
    assert dataclasses.replace(run, seed=1, id="").id != run.id


def test_summaries_never_see_a_contradicting_line(tmp_path: Path) -> None:
    path = tmp_path / "runs.jsonl"
    ledger.append(make_run(seed=0), path)
    line = make_run(seed=1, acc=0.5).to_dict()
    line["final_test_acc"], line["id"] = 0.95, ""  # the summary would report 95%
    path.write_text(path.read_text() + json.dumps(line) + "\n")
    with pytest.raises(ValueError, match=r"line 2: final_test_acc: expected 0.5"):
        ledger.summarize(ledger.read(path))


# ---------------------------------------------------------------- the environment


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"date": "yesterday"}, r"environment.date: expected an ISO 8601 date"),
        ({"cpu_count": 0}, r"environment.cpu_count: expected a finite number in \[1"),
        ({"cpu_count": "16"}, r"environment.cpu_count: expected an integer"),
        ({"device": ""}, r"environment.device: expected a non-empty string"),
        ({"cudnn_benchmark": "no"}, r"environment.cudnn_benchmark: expected true or false"),
        ({"gpu": "H100"}, r"environment: expected only the fields"),
        ({"torch": None}, r"environment.torch: expected a string"),
    ],
)
def test_a_bad_environment_is_refused(edit: dict[str, Any], message: str) -> None:
    data = {k: v for k, v in {**ENV, **edit}.items() if v is not None or k != "torch"} | (
        {"torch": None} if "torch" in edit else {}
    )
    with pytest.raises(ValueError, match=message):
        Environment.from_dict(data)


def test_a_missing_environment_field_is_named() -> None:
    with pytest.raises(ValueError, match="environment: expected every required field, got 'no date'"):
        Environment.from_dict({k: v for k, v in ENV.items() if k != "date"})


def test_environment_is_one_type_for_ledger_and_provenance() -> None:
    from xception_lib import provenance

    env = provenance.environment("cpu")
    assert isinstance(env, Environment) and ledger.Run.__dataclass_fields__["environment"].type in (
        "Environment",
        Environment,
    )
    assert Environment.from_dict(json.loads(json.dumps(env.to_dict()))) == env and type(env.torch) is str


# ---------------------------------------------------------------- reading damaged files


def test_read_refuses_a_folder_and_a_binary_file_naming_them(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="a ledger file"):
        ledger.read(tmp_path)
    path = tmp_path / "runs.jsonl"
    path.write_bytes(b"\xff\xfe\x00garbage\n")
    with pytest.raises(ValueError, match=rf"{path.name}, line 1"):
        ledger.read(path)


# ---------------------------------------------------------------- command lines


def test_ledger_command_line_refuses_what_is_not_there(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.jsonl"
    ledger.append(make_run(), good)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(good.read_text().replace('"kind": "ablation"', '"kind": "sweep"'))
    book = tmp_path / "book.jsonl"
    cases = [
        (["merge", str(tmp_path / "missing.jsonl"), "--into", str(book)], 2, "no such ledger file"),  # usage error
        (["merge", str(good), "--into", str(tmp_path)], 2, "no such ledger file"),
        (["merge", str(good), "--into", str(bad)], 1, "line 1: kind: expected one of"),
        (["merge", str(bad), "--into", str(book)], 1, "line 1: kind: expected one of"),
        (["check", str(good)], 2, "invalid choice"),
    ]
    for args, code, message in cases:
        try:
            status = ledger.main(args)
        except SystemExit as stop:
            status = stop.code
        assert status == code and message in capsys.readouterr().err, args
    assert not book.exists()  # a bad source appends nothing


@pytest.fixture(scope="module")
def gpu_session() -> Any:
    """``tools/gpu_session.py`` as a module (registered, so that its dataclasses resolve their annotations)."""
    spec = importlib.util.spec_from_file_location("gpu_session", REPO / "tools" / "gpu_session.py")
    assert spec is not None and spec.loader is not None
    module = sys.modules["gpu_session"] = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules["gpu_session"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--budget-s", "nan"], "--budget-s: expected a number of seconds > 0"),
        (["--budget-s", "inf"], "--budget-s: expected a number of seconds > 0"),
        (["--budget-s", "-5"], "--budget-s: expected a number of seconds > 0"),
        (["--budget-s", "60", "--race-share", "nan"], "--race-share: expected a fraction"),
        (["--budget-s", "60", "--phases", "smoke,warp"], "--phases: expected some of"),
        (["--budget-s", "60", "--out-is-a-file"], "cannot write results there"),
        (["--budget-s", "60", "--out-has-a-cut-ledger"], "line 1: not valid JSON"),
    ],
)
def test_gpu_session_refuses_bad_arguments_before_any_work(
    args: list[str], message: str, tmp_path: Path, gpu_session: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    if "--out-is-a-file" in args:
        args = args[:-1]
        out.write_text("not a folder")
    if "--out-has-a-cut-ledger" in args:
        args = args[:-1]
        out.mkdir()
        (out / "runs.jsonl").write_text(json.dumps(make_run().to_dict())[:-30])
    with pytest.raises(SystemExit) as stop:
        gpu_session.main(["--out", str(out), "--dry-run", *args])
    assert stop.value.code == 2 and message in capsys.readouterr().err
    assert not out.is_dir() or [p.name for p in out.iterdir()] == ["runs.jsonl"]  # nothing started, no log
