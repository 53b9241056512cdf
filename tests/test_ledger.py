"""The ledger: append-only, validated line by line, found inside the installed package, aggregated over seeds."""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from xception_lib import ledger
from xception_lib.history import History
from xception_lib.provenance import Environment

REPO = Path(__file__).resolve().parents[1]


def make_run(
    name: str = "base", seed: int = 0, acc: float = 0.5, *, device: str = "cuda", epochs: int = 2, **fields
) -> ledger.Run:
    history = History()
    for e in range(epochs):
        history.append_epoch(
            train_loss=1.0,
            train_acc=0.4,
            test_loss=1.1,
            test_acc=acc if e == epochs - 1 else acc / 2,
            lr=0.1,
            images_per_sec=1000.0,
            epoch_time=1.0,
        )
    values = dict(
        kind="ablation",
        study="ablations",
        name=name,
        model="xception",
        model_config={"segments": None},
        changes={},
        train_config={"epochs": epochs, "seed": seed},
        seed=seed,
        epochs=epochs,
        params=100,
        macs=1000,
        final_test_acc=acc,
        wall_time_s=3.0,
        images_per_sec=1000.0,
        history=history,
        environment=Environment(
            device=device,
            device_name="GPU" if device == "cuda" else "CPU",
            torch="2.x",
            date="2026-11-29T00:00:00+00:00",
            commit="abc",
        ),
        data={"name": "cifar10", "source": "test", "train_size": 10, "test_size": 10},
        command="pytest",
        step_time_s=0.01,
    )
    return ledger.Run(**{**values, **fields})


def test_append_never_rewrites_and_reads_back_equal(tmp_path: Path) -> None:
    path = tmp_path / "runs.jsonl"
    first, second = make_run(seed=0), make_run(seed=1, acc=0.6)
    ledger.append(first, path)
    before = path.read_bytes()
    ledger.append(second, path)
    assert path.read_bytes().startswith(before)  # the first line is untouched
    assert ledger.read(path) == [first, second]
    with pytest.raises(ValueError, match="already in the ledger"):
        ledger.append(first, path)
    assert len(ledger.read(path)) == 2
    assert ledger.read(tmp_path / "missing.jsonl") == []  # no file: an empty ledger


def test_merge_adds_only_what_is_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    session, book = tmp_path / "session.jsonl", tmp_path / "book.jsonl"
    runs = [make_run(seed=s) for s in range(3)]
    ledger.append(runs[0], book)
    for run in runs:
        ledger.append(run, session)
    assert ledger.main(["merge", str(session), "--into", str(book)]) == 0
    assert "2 run(s) appended" in capsys.readouterr().out
    assert ledger.main(["merge", str(session), "--into", str(book)]) == 0
    assert "0 run(s) appended" in capsys.readouterr().out  # twice adds nothing
    assert [r.seed for r in ledger.read(book)] == [0, 1, 2]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda line: line[:-20], r"line 2: not valid JSON"),
        (
            lambda line: line.replace('"final_test_acc": 0.5', '"final_test_acc": "0.5"'),
            r"line 2: final_test_acc: expected a number",
        ),
        (
            lambda line: line.replace('"test_acc": [0.25, 0.5]', '"test_acc": [0.25, "x"]'),
            r"line 2: history.test_acc\[1\]: expected a number",
        ),
        (
            lambda line: line.replace('"test_acc": [0.25, 0.5]', '"test_acc": [0.25, true]'),
            r"line 2: history.test_acc\[1\]: expected a number",
        ),
        (
            lambda line: line.replace('"train_loss": [1.0, 1.0]', '"train_loss": [1.0]'),
            r"line 2: history: expected per-epoch lists of one length",
        ),
        (lambda line: line.replace('"kind": "ablation"', '"kind": "sweep"'), r"line 2: kind: expected one of"),
        (lambda line: line.replace('"seed": 1,', '"seed": 1.5,'), r"line 2: seed: expected an integer"),
        (
            lambda line: line.replace('"device_name": "GPU"', '"device_name": 3'),
            r"line 2: environment.device_name: expected a string",
        ),
        (
            lambda line: line.replace('"wall_time_s": 3.0', '"wall_time_s": 4.0'),
            r"line 2: id: expected .*was it edited",
        ),
        (lambda line: line.replace('"format": "xception_lib.ledger/1"', '"format": "other"'), r"line 2: format"),
        (lambda line: line.replace('"lr": [0.1, 0.1]', '"lr": [0.1, 1' + "0" * 400 + "]"), r"line 2: .*too large"),
    ],
)
def test_a_bad_line_names_the_file_and_the_line(tmp_path: Path, edit, message: str) -> None:
    path = tmp_path / "runs.jsonl"
    ledger.append(make_run(seed=0), path)
    good = json.dumps(make_run(seed=1).to_dict(), sort_keys=True)
    assert edit(good) != good, "the edit must apply"
    path.write_text(path.read_text() + edit(good) + "\n")
    with pytest.raises(ValueError, match=message) as error:
        ledger.read(path)
    assert str(path) in str(error.value)


def test_the_records_ship_with_the_package() -> None:
    """Readers find the records next to the module; pyproject's package data ships every one of them."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    folder = ledger.records_dir()
    assert folder == Path(ledger.__file__).parent / "records" and (folder / ledger.LEDGER_NAME).exists()
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"][
        "xception_lib"
    ]
    files = [p for p in folder.iterdir() if p.is_file()]
    assert files and all(any(p.match(pattern) for pattern in patterns) for p in files)


@pytest.mark.slow  # a fresh interpreter imports torch
def test_the_book_ledger_reads_from_an_empty_directory(tmp_path: Path) -> None:
    """As in Colab: another working directory, nothing but the importable package."""
    code = (
        "from xception_lib import ledger; rs = ledger.read(); print(len(rs), len(ledger.select(rs, kind='reference')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(REPO), "PATH": ""},
    )
    total, references = map(int, done.stdout.split())
    assert total == len(ledger.read()) > 0 and references >= 1


def test_the_first_sessions_runs_keep_their_provenance() -> None:
    runs = ledger.read()
    gpu = [r for r in runs if r.is_result]
    assert gpu and all(r.environment.commit and r.environment.date and r.environment.device_name for r in gpu)
    moved = [r for r in gpu if r.notes.get("source_record")]
    assert {r.notes["source_record"] for r in moved} == {"cifar10.json", "ablations.json", "ablations_4epochs.json"}
    assert all(r.environment.commit_note and r.environment.commit[:7] in r.environment.commit_note for r in moved)


def test_summaries_count_runs_and_give_mean_and_standard_error() -> None:
    runs = [make_run("base", s, a) for s, a in enumerate((0.50, 0.52, 0.54))] + [
        make_run("x", 0, 0.6, changes={"residual": False})
    ]
    rows = {s.name: s for s in ledger.summarize(runs)}
    base = rows["base"]
    assert base.n == 3 and base.mean == pytest.approx(0.52)
    assert base.se == pytest.approx(statistics.stdev([0.50, 0.52, 0.54]) / math.sqrt(3))
    assert rows["x"].n == 1 and math.isnan(rows["x"].se)
    other_epochs = make_run("base", 5, 0.9, epochs=3)
    assert len(ledger.summarize([*runs, other_epochs])) == 3  # another number of epochs is another configuration
    effect = ledger.effects(runs)[0]
    assert effect.name == "x" and effect.delta == pytest.approx(0.08) and math.isnan(effect.se)
    with pytest.raises(ValueError, match="one configuration per name"):
        ledger.effects([*runs, other_epochs])
    with pytest.raises(ValueError, match="'base'"):
        ledger.effects(runs[3:])


def test_select_shows_only_gpu_results_by_default() -> None:
    runs = [
        make_run(seed=0),
        make_run(seed=1, device="cpu"),
        make_run(seed=2, preview=True),
        make_run(seed=3, kind="control"),
    ]
    assert [r.seed for r in ledger.select(runs)] == [0, 3]
    assert ledger.latest(runs, kind="control").seed == 3 and ledger.latest(runs, kind="reference") is None


def test_a_run_checks_itself_when_made() -> None:
    with pytest.raises(ValueError, match="final_test_acc"):
        make_run(acc=1.5)
    with pytest.raises(ValueError, match="epochs"):
        dataclasses.replace(make_run(), epochs=3)


# ---------------------------------------------------------------- appends never damage the ledger (issue 24, item 2)


def test_an_append_after_a_last_line_without_newline_starts_a_line_of_its_own(tmp_path: Path) -> None:
    path = tmp_path / "runs.jsonl"
    first, second = make_run(seed=0), make_run(seed=1)
    path.write_text(json.dumps(first.to_dict(), sort_keys=True))  # written by hand, no final newline
    ledger.append(second, path)
    assert ledger.read(path) == [first, second]


def test_an_append_after_a_cut_line_keeps_the_new_run_apart(tmp_path: Path) -> None:
    path = tmp_path / "runs.jsonl"
    ledger.append(make_run(seed=0), path)
    cut = json.dumps(make_run(seed=1).to_dict(), sort_keys=True)[:-40]  # an interrupted write
    path.write_text(path.read_text() + cut)
    ledger.append(make_run(seed=2), path)
    lines = path.read_text().splitlines()
    assert len(lines) == 3 and lines[1] == cut and ledger.Run.from_dict(json.loads(lines[2])).seed == 2
    with pytest.raises(ValueError, match=r"line 2: not valid JSON.*delete line 2 \(only that line\)"):
        ledger.read(path)
    path.write_text("\n".join(lines[::2]) + "\n")  # what the message says: delete line 2, and only it
    assert [r.seed for r in ledger.read(path)] == [0, 2]


def test_an_append_that_meets_a_full_disk_leaves_the_file_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno
    import os

    path = tmp_path / "runs.jsonl"
    ledger.append(make_run(seed=0), path)
    before = path.read_bytes()
    real_write = os.write

    def full_disk(fd: int, data: bytes) -> int:
        if len(data) > 100:
            return real_write(fd, bytes(data[:100]))  # some bytes go through...
        raise OSError(errno.ENOSPC, "No space left on device")  # ...then the disk is full

    monkeypatch.setattr(os, "write", full_disk)
    with pytest.raises(OSError, match="nothing appended.*No space left"):
        ledger.append(make_run(seed=1), path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    ledger.append(make_run(seed=1), path)  # and the next append, with space again, is whole
    assert [r.seed for r in ledger.read(path)] == [0, 1]


def test_a_cut_copy_of_a_run_does_not_stop_it_being_appended(tmp_path: Path) -> None:
    """The duplicate check compares whole lines: a damaged copy is no run, and does not stop the run."""
    path = tmp_path / "runs.jsonl"
    run = make_run(seed=0)
    line = json.dumps(run.to_dict(), sort_keys=True)
    path.write_text(line[: line.index(run.id) + 20] + "\n")  # cut after its id
    ledger.append(run, path)
    assert ledger.Run.from_dict(json.loads(path.read_text().splitlines()[1])) == run


def test_write_json_atomic_replaces_whole_or_not_at_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import os

    path = tmp_path / "bench.json"
    ledger.write_json_atomic(path, {"a": [1, 2]})
    assert json.loads(path.read_text()) == {"a": [1, 2]}
    before = path.read_bytes()

    def full_disk(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        ledger.write_json_atomic(path, {"a": [3]})
    monkeypatch.undo()
    for bad in ({"a": math.nan}, {"a": {1, 2}}):  # refused before the disk is touched
        with pytest.raises((ValueError, TypeError)):
            ledger.write_json_atomic(path, bad)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["bench.json"]  # no leftovers


def _append_seeds(path: str, seeds: range) -> None:
    for seed in seeds:
        ledger.append(make_run(seed=seed), path)


def test_concurrent_appends_lose_nothing(tmp_path: Path) -> None:
    import multiprocessing

    path = tmp_path / "runs.jsonl"
    ctx = multiprocessing.get_context("fork")
    writers = [ctx.Process(target=_append_seeds, args=(str(path), range(10 * w, 10 * w + 10))) for w in range(4)]
    for w in writers:
        w.start()
    for w in writers:
        w.join(timeout=60)
    assert all(w.exitcode == 0 for w in writers)
    assert sorted(r.seed for r in ledger.read(path)) == list(range(40))


def test_read_json_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bench.json"
    path.write_text('{\n "a": 1,\n "b": \n}')
    with pytest.raises(ValueError, match=r"bench.json, line 4, column 1: not valid JSON"):
        ledger.read_json(path)
