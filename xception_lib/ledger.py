"""The ledger: every recorded training run (a :class:`Run`), one line of a JSON Lines file, never rewritten.

GPU sessions are short and rare, so their runs add up instead of replacing each other. The book's ledger ships
inside the package (:func:`records_dir`), so a chapter opened alone (Colab) finds it.
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import functools
import hashlib
import json
import math
import os
import statistics
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xception_lib.history import EPOCH_FIELDS, History
from xception_lib.provenance import Environment, check, check_fields, expect, from_dict

FORMAT = "xception_lib.ledger/1"  # the ``format`` field of every line

LEDGER_NAME = "runs.jsonl"
KINDS = ("reference", "control", "recipe", "ablation", "smoke")
"""What a run is for (the training chapter's reference run, the ResNet-18 control, a candidate of
the recipe race, a point of the ablation queue, a smoke test); a CPU preview is any kind with ``preview``."""


def records_dir() -> Path:
    """The folder of recorded results inside the installed package (``xception_lib/records``)."""
    return Path(__file__).resolve().parent / "records"


@dataclass(frozen=True)
class Run:
    """One trained model, as the ledger stores it: what was trained, where, and all it measured."""

    kind: str  # one of KINDS
    study: str  # the experiment it belongs to: "ablations", "race", "reference", ...
    name: str  # the configuration's label in its study: "base", "residual=False", "resnet18", a recipe
    model: str  # "xception" (model_config is an XceptionConfig's fields) or "resnet18"
    model_config: dict[str, Any]
    changes: dict[str, Any]  # fields replaced in the study's base config ({} for the base)
    train_config: dict[str, Any]  # dataclasses.asdict(TrainConfig)
    seed: int  # initialisation, data order, augmentation
    epochs: int
    params: int
    macs: int | None  # of one image's forward pass (None: fvcore was missing)
    final_test_acc: float  # after the last epoch, a fraction
    wall_time_s: float  # the whole fit, evaluation included
    images_per_sec: float  # training throughput, median over epochs
    history: History  # everything per epoch and per step
    environment: Environment
    data: dict[str, Any]  # name, source, train_size, test_size
    command: str  # what produced it
    step_time_s: float | None = None  # median seconds per training step, measured before training
    step_batch_size: int | None = None
    extras: dict[str, Any] = field(default_factory=dict)  # the recipe beyond TrainConfig: Cutout, EMA, flips
    metrics: dict[str, float] = field(default_factory=dict)  # more evaluations: "tta_test_acc", "ema_test_acc"
    notes: dict[str, Any] = field(default_factory=dict)  # anything else: how a sweep was sized, ...
    preview: bool = False  # a CPU preview: never shown as a result
    id: str = ""  # a hash of all the above, unique in a ledger

    def __post_init__(self) -> None:
        """Every field checked, and against the rest of the run: a run that contradicts itself is refused."""
        ranges: dict[str, tuple[float, float]] = {"final_test_acc": (0, 1), "seed": (0, math.inf)}
        ranges |= dict.fromkeys(("params", "macs", "epochs", "step_batch_size"), (1, math.inf))  # counts
        ranges |= dict.fromkeys(("wall_time_s", "images_per_sec", "step_time_s"), (5e-324, math.inf))  # > 0
        check_fields(self, ranges)
        expect(self.kind in KINDS, "kind", f"one of {KINDS}", self.kind)
        for name, kind in (("name", str), ("source", str), ("train_size", int), ("test_size", int)):
            check(f"data.{name}", self.data.get(name), kind, *(1, math.inf) if kind is int else ())
        for name, value in self.metrics.items():
            check(f"metrics.{name}", value, float, 0, 1)
        h = self.history
        lengths = {k: len(getattr(h, k)) for k in EPOCH_FIELDS}
        expect(len(set(lengths.values())) == 1, "history", "per-epoch lists of one length", lengths)
        for name in ("train_acc", "test_acc"):
            check(f"history.{name}", getattr(h, name), list[float], 0, 1, nan=True)
        expect(self.epochs == h.epochs, "epochs", f"{h.epochs} (the history's)", self.epochs)
        acc, speeds = h.test_acc[-1], [s for s in h.images_per_sec if s > 0]
        agree = math.isclose(self.final_test_acc, acc, rel_tol=1e-9)
        expect(agree, "final_test_acc", f"{acc!r}, the history's last test accuracy", self.final_test_acc)
        median = statistics.median(speeds) if speeds else math.nan
        agree = math.isclose(self.images_per_sec, median, rel_tol=1e-9)
        expect(agree, "images_per_sec", f"{median!r}, the history's median", self.images_per_sec)
        slower = self.wall_time_s >= h.train_time * (1 - 1e-9)  # the fit includes the evaluation
        expect(slower, "wall_time_s", f">= {h.train_time!r}, the history's training time", self.wall_time_s)
        content = json.dumps({k: v for k, v in self.to_dict().items() if k != "id"}, sort_keys=True)
        content_id = hashlib.sha256(content.encode()).hexdigest()[:16]
        edited = "was it edited? A changed copy of a run needs id=''"
        expect(self.id in ("", content_id), "id", f"{content_id}, the hash of the run ({edited})", self.id)
        object.__setattr__(self, "id", content_id)

    @property
    def is_result(self) -> bool:
        """Whether the run was measured on a GPU and is not a preview (what the book shows as a result)."""
        return self.environment.device == "cuda" and not self.preview

    def to_dict(self) -> dict[str, Any]:
        """One JSON object (``id`` and ``format`` included)."""
        return {"format": FORMAT, **dataclasses.asdict(self)}  # the history and environment as objects

    @classmethod
    def from_dict(cls, data: Any) -> Run:
        """Validate one ledger line's object and build the run; errors name the field."""
        expect(isinstance(data, dict), "the line", "a JSON object", data)
        expect(data.get("format") == FORMAT, "format", repr(FORMAT), data.get("format"))
        history, environment = History.from_dict(data.get("history")), Environment.from_dict(data.get("environment"))
        values = {k: v for k, v in data.items() if k != "format"} | {"history": history, "environment": environment}
        return from_dict(cls, values, "the run")


def read_json(path: str | Path) -> Any:
    """``json.load`` whose errors name the file, the line and the column, and what to do."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{path}, line {error.lineno}, column {error.colno}: not valid JSON ({error.msg}); "
            "restore the file from version control or record it again"
        ) from error
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not a UTF-8 text file ({error}); is it the right file?") from error


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as strict JSON (no NaN) to ``path`` all at once: into a temporary file of the same folder,
    synced, then renamed over ``path``. A crash or a full disk leaves the old file whole, never half a new one."""
    path = Path(path)
    text = json.dumps(obj, indent=1, allow_nan=False) + "\n"  # a value JSON cannot hold fails before the disk
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)  # left only by a failure
    return path


def read(path: str | Path | None = None) -> list[Run]:
    """Every run of the ledger at ``path`` (default: the book's), in the order appended; no file: no runs.

    A line that is not JSON, not a valid run, or repeats an ``id`` raises a ValueError naming the file and line.
    """
    path = records_dir() / LEDGER_NAME if path is None else Path(path)
    if not path.exists():
        return []
    expect(path.is_file(), str(path), "a ledger file (JSON Lines)", "a folder")
    return list(_read(path, path.stat().st_mtime_ns, path.stat().st_size))


@functools.lru_cache(maxsize=16)
def _read(path: Path, mtime_ns: int, size: int) -> tuple[Run, ...]:
    """The validated runs, cached while the file's time and size stay the same (a chapter reads it often)."""
    runs: dict[str, tuple[int, Run]] = {}  # by id: the line number and the run
    for number, line in enumerate(path.read_bytes().split(b"\n"), start=1):
        if not line.strip():
            continue
        where = f"{path}, line {number}"
        try:
            run = Run.from_dict(json.loads(line))
        except json.JSONDecodeError as error:
            cut = f"if an interrupted write cut it short, delete line {number} (only that line)"
            raise ValueError(f"{where}: not valid JSON ({error.msg} at column {error.colno}); {cut}") from error
        except (TypeError, ValueError, OverflowError) as error:  # UnicodeDecodeError, float(10**400)
            raise ValueError(f"{where}: {error}") from error
        if run.id in runs:
            raise ValueError(f"{where}: run {run.id} already appended at line {runs[run.id][0]}")
        runs[run.id] = number, run
    return tuple(run for _, run in runs.values())


def append(run: Run, path: str | Path) -> None:
    """Append ``run`` as one line of the ledger at ``path`` (created if missing); a run already there: ValueError."""
    append_json_line(path, run.to_dict(), unique=True)


def append_json_line(path: str | Path, obj: dict[str, Any], unique: bool = False) -> None:
    """Append ``obj`` as one line of the JSON Lines file at ``path``, never damaging what is there.

    The line is whole or absent (a failed write, a full disk, is undone) and starts on a line of its own even after
    a line cut short; a file lock serialises concurrent writers. ``unique``: refuse a line that is already there
    (a run's line is all of its content, so the same line is the same ``id``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(obj, sort_keys=True, allow_nan=False).encode()
    with open(path, "a+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # released when the file is closed
        f.seek(0)
        existing = f.read()
        if unique and line in existing.splitlines():
            what = f"{obj.get('study')}/{obj.get('name')}, seed {obj.get('seed')}"
            raise ValueError(f"{path}: run {obj.get('id')} ({what}) is already in the ledger")
        data = memoryview(line + b"\n" if existing.endswith(b"\n") or not existing else b"\n" + line + b"\n")
        try:
            while data:
                data = data[os.write(f.fileno(), data) :]
            os.fsync(f.fileno())
        except OSError as error:
            f.truncate(len(existing))  # undo a partial line
            raise OSError(error.errno, f"{path}: nothing appended ({error.strerror}); the file is as it was") from error


def select(runs: Iterable[Run], **fields: Any) -> list[Run]:
    """The runs that are results (:attr:`Run.is_result`) and whose attributes equal ``fields`` (``kind="ablation"``)."""
    return [r for r in runs if r.is_result and all(getattr(r, k) == v for k, v in fields.items())]


def latest(runs: Iterable[Run], **fields: Any) -> Run | None:
    """The last appended run of :func:`select` (``None`` if there is none)."""
    return next(reversed(select(runs, **fields)), None)


@dataclass(frozen=True)
class Summary:
    """One configuration's final test accuracies over seeds: mean, ``se = stdev / sqrt(n)`` (NaN for one run), range."""

    name: str
    n: int
    mean: float
    se: float
    min: float
    max: float
    runs: tuple[Run, ...]

    @property
    def first(self) -> Run:
        return self.runs[0]


def summarize(runs: Sequence[Run]) -> list[Summary]:
    """One :class:`Summary` per configuration (everything trained, except the seed), in order of first appearance."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        train = {k: v for k, v in run.train_config.items() if k not in ("seed", "log_every")}
        what = [run.study, run.name, run.model, run.model_config, train, run.extras, run.data["name"]]
        groups.setdefault(json.dumps(what, sort_keys=True), []).append(run)
    out = []
    for group in groups.values():
        acc = [r.final_test_acc for r in group]
        se = statistics.stdev(acc) / math.sqrt(len(acc)) if len(acc) > 1 else math.nan
        out.append(Summary(group[0].name, len(acc), statistics.fmean(acc), se, min(acc), max(acc), tuple(group)))
    return out


@dataclass(frozen=True)
class Effect:
    """A configuration's mean accuracy minus the base's, ``se = sqrt(se_a^2 + se_b^2)``, and its cost ratios."""

    name: str
    n: int
    base_n: int
    delta: float
    se: float
    macs_ratio: float
    step_time_ratio: float


def effects(runs: Sequence[Run]) -> list[Effect]:
    """Every configuration of ``runs`` against the one named ``"base"``; ValueError if there is none, or if a name
    has several configurations."""
    rows = summarize(runs)
    by_name = {r.name: r for r in rows}
    if len(by_name) != len(rows):
        names = [r.name for r in rows]
        raise ValueError(f"expected one configuration per name, got {names}; select one number of epochs and recipe")
    if "base" not in by_name:
        raise ValueError(f"expected runs named 'base' to compare with, got {sorted(by_name)}")
    base = by_name.pop("base")

    def ratio(row: Summary, attr: str) -> float:  # NaN where a cost was not measured (None)
        return (getattr(row.first, attr) or math.nan) / (getattr(base.first, attr) or math.nan)

    costs = ("macs", "step_time_s")
    delta = [(r, r.mean - base.mean, math.hypot(r.se, base.se)) for r in by_name.values()]
    return [Effect(r.name, r.n, base.n, d, se, *(ratio(r, c) for c in costs)) for r, d, se in delta]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m xception_lib.ledger merge SOURCE [--into LEDGER]``: append the runs of SOURCE that LEDGER lacks."""
    parser = argparse.ArgumentParser(prog="python -m xception_lib.ledger", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["merge"], help="append the runs of SOURCE that the ledger lacks")
    parser.add_argument("source", type=Path, help="the runs.jsonl of a GPU session")
    parser.add_argument("--into", type=Path, default=records_dir() / LEDGER_NAME, help="default: the book's ledger")
    args = parser.parse_args(argv)
    for given in [args.source, *([args.into] if args.into.exists() else [])]:
        if not given.is_file():
            parser.error(f"{given}: no such ledger file")  # exit 2, before any work; --into may be a new file
    try:
        have = {run.id for run in read(args.into)}  # every line of both files checked before anything is appended
        new = [run for run in read(args.source) if run.id not in have]
        for run in new:
            append(run, args.into)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"{len(new)} run(s) appended to {args.into}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
