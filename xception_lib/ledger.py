"""The ledger: every recorded training run, appended to one JSON Lines file, never rewritten.

GPU sessions are short and rare, so their runs add up instead of replacing each other. Each line
is one :class:`Run`. The book's ledger ships inside the package (:func:`records_dir`), so a chapter
opened alone (Colab) finds it: ``ledger.latest(ledger.read(), kind="reference")``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xception_lib.history import History

try:
    import fcntl
except ImportError:  # Windows: one writer at a time is the caller's business
    fcntl = None

FORMAT = "xception_lib.ledger/1"
"""The ``format`` field of every line."""

LEDGER_NAME = "runs.jsonl"
KINDS = ("reference", "control", "recipe", "ablation", "smoke")
"""What a run is for (the training chapter's reference run, the ResNet-18 control, a candidate of
the recipe race, a point of the ablation queue, a smoke test); a CPU preview is any kind with ``preview``."""


def records_dir() -> Path:
    """The folder of recorded results inside the installed package (``xception_lib/records``)."""
    return Path(__file__).resolve().parent / "records"


def default_path() -> Path:
    """The book's ledger: ``records_dir() / "runs.jsonl"``."""
    return records_dir() / LEDGER_NAME


@dataclass(frozen=True)
class Environment:
    """Where and with what a run was measured (:func:`xception_lib.provenance.environment`).

    ``commit_note`` explains a commit corrected after the run.
    """

    device: str
    device_name: str
    torch: str
    date: str
    cuda: str | None = None
    python: str | None = None
    platform: str | None = None
    cpu_count: int | None = None
    commit: str | None = None
    cudnn_benchmark: bool | None = None
    commit_note: str | None = None

    def describe(self) -> str:
        """``NVIDIA H100 80GB HBM3, torch 2.11.0+cu130, commit 2c75ac8, 2026-11-27``."""
        commit = (self.commit or "unknown")[:7]
        return f"{self.device_name}, torch {self.torch}, commit {commit}, {self.date[:10]}"


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
        if self.kind not in KINDS:
            raise ValueError(f"kind: expected one of {KINDS}, got {self.kind!r}")
        if not (0.0 <= self.final_test_acc <= 1.0):
            raise ValueError(f"final_test_acc: expected a fraction in [0, 1], got {self.final_test_acc!r}")
        for name in ("wall_time_s", "images_per_sec"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: expected a positive number, got {getattr(self, name)!r}")
        if self.epochs < 1 or len(self.history.test_acc) != self.epochs:
            raise ValueError(f"epochs: expected {len(self.history.test_acc)} (the history's), got {self.epochs}")
        if not self.id:
            object.__setattr__(self, "id", _content_id(self.to_dict()))

    @property
    def is_result(self) -> bool:
        """Whether the run was measured on a GPU and is not a preview (what the book shows as a result)."""
        return self.environment.device == "cuda" and not self.preview

    @property
    def config_key(self) -> str:
        """What makes two runs the same configuration (everything trained, except the seed)."""
        train = {k: v for k, v in self.train_config.items() if k not in ("seed", "log_every")}
        what = [self.study, self.name, self.model, self.model_config, train, self.extras, self.data["name"]]
        return json.dumps(what, sort_keys=True)

    def to_dict(self) -> dict[str, Any]:
        """One JSON object (``id`` and ``format`` included)."""
        out = {"format": FORMAT, **dataclasses.asdict(self)}
        out["history"] = self.history.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Any) -> Run:
        """Validate one ledger line's object and build the run; errors name the field."""
        _expect(isinstance(data, dict), "the line", "a JSON object", data)
        _expect(data.get("format") == FORMAT, "format", repr(FORMAT), data.get("format"))
        values = {k: v for k, v in data.items() if k != "format"}
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(names))
        _expect(not unknown, "fields", f"only {sorted(names)}", unknown)
        for name, f in names.items():
            if name in values:
                _check_type(name, values[name], _TYPES[name], optional=name in _OPTIONAL)
            else:
                has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
                _expect(has_default, name, "a field", "nothing")
        values["history"] = _history(values["history"])
        env = values["environment"]
        env_fields = {f.name for f in dataclasses.fields(Environment)}
        _expect(set(env) <= env_fields, "environment", f"only {sorted(env_fields)}", sorted(set(env) - env_fields))
        for name in ("device", "device_name", "torch", "date"):
            _check_type(f"environment.{name}", env.get(name), str)
        values["environment"] = Environment(**env)
        for name, kind in (("name", str), ("source", str), ("train_size", int), ("test_size", int)):
            _check_type(f"data.{name}", values["data"].get(name), kind)
        stored_id = values.pop("id", "")
        run = cls(**values)  # its id is the hash of its content
        edited = stored_id and stored_id != run.id
        _expect(not edited, "id", f"{run.id} (the hash of the line: was it edited?)", stored_id)
        return run


_NUMBER = (int, float)
_TYPES: dict[str, Any] = {
    "kind": str, "study": str, "name": str, "model": str, "model_config": dict, "changes": dict,
    "train_config": dict, "seed": int, "epochs": int, "params": int, "macs": int,
    "final_test_acc": _NUMBER, "wall_time_s": _NUMBER, "images_per_sec": _NUMBER, "history": dict,
    "environment": dict, "data": dict, "command": str, "step_time_s": _NUMBER,
    "step_batch_size": int, "extras": dict, "metrics": dict, "notes": dict, "preview": bool, "id": str,
}
_OPTIONAL = {"macs", "step_time_s", "step_batch_size"}  # may be null
_KIND_NAMES = {str: "a string", bool: "true or false", dict: "an object", int: "an integer", _NUMBER: "a number"}


def _check_type(where: str, value: Any, kind: Any, optional: bool = False) -> None:
    ok = (optional and value is None) or (isinstance(value, kind) and (kind is bool or not isinstance(value, bool)))
    _expect(ok, where, _KIND_NAMES[kind] + (" or null" if optional else ""), value)


def _expect(condition: bool, where: str, expected: str, got: Any) -> None:
    if not condition:
        raise ValueError(f"{where}: expected {expected}, got {repr(got)[:120]}")


def _history(data: Any) -> History:
    """A :class:`History` whose every per-epoch and per-step value is a number (NaN allowed)."""
    _expect(isinstance(data, dict), "history", "an object", data)
    for key, values in data.items():
        if key == "meta":
            _check_type("history.meta", values, dict)
            continue
        _expect(isinstance(values, list), f"history.{key}", "a list of numbers", values)
        for i, value in enumerate(values):
            _check_type(f"history.{key}[{i}]", value, _NUMBER)
    history = History.from_dict(data)
    per_epoch = ("train_loss", "train_acc", "test_loss", "test_acc", "lr", "images_per_sec", "epoch_time")
    lengths = {k: len(getattr(history, k)) for k in per_epoch}
    one_length = len(set(lengths.values())) == 1 and lengths["test_acc"] > 0
    _expect(one_length, "history", "non-empty per-epoch lists of one length", lengths)
    return history


def _content_id(data: dict[str, Any]) -> str:
    content = {k: v for k, v in data.items() if k != "id"}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


def read_json(path: str | Path) -> Any:
    """``json.load`` whose errors name the file, the line and the column, and what to do."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}, line {error.lineno}, column {error.colno}: not valid JSON ({error.msg}); "
                         "restore the file from version control or record it again") from error
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not a UTF-8 text file ({error}); is it the right file?") from error


def read(path: str | Path | None = None) -> list[Run]:
    """Every run of the ledger at ``path`` (default: the book's), in the order appended; no file: no runs.

    A line that is not JSON, not a valid run, or repeats an ``id`` raises a ValueError naming the file and line.
    """
    path = default_path() if path is None else Path(path)
    if not path.exists():
        return []
    stamp = (path.stat().st_mtime_ns, path.stat().st_size)
    if _READ.get(path, (None,))[0] == stamp:  # unchanged since the last read: validated already
        return list(_READ[path][1])
    runs: list[Run] = []
    seen: dict[str, int] = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}, line {number}"
            try:
                run = Run.from_dict(json.loads(line))
            except json.JSONDecodeError as error:
                raise ValueError(f"{where}: not valid JSON ({error.msg} at column {error.colno}); "
                                 "a line cut short by an interrupted write can be deleted") from error
            except (TypeError, ValueError) as error:
                raise ValueError(f"{where}: {error}") from error
            if run.id in seen:
                raise ValueError(f"{where}: run {run.id} already appended at line {seen[run.id]}")
            seen[run.id] = number
            runs.append(run)
    _READ[path] = (stamp, runs)
    return list(runs)


_READ: dict[Path, tuple[tuple[int, int], list[Run]]] = {}


def append(run: Run, path: str | Path) -> None:
    """Append ``run`` as one line of the ledger at ``path`` (created if missing); a run already there: ValueError.

    Concurrent writers (the training processes of one GPU session) are serialised by a file lock.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(run.to_dict(), sort_keys=True) + "\n"
    with open(path, "a+", encoding="utf-8") as f:
        if fcntl is not None:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)  # released when the file is closed
        f.seek(0)
        if any(run.id in existing and Run.from_dict(json.loads(existing)).id == run.id for existing in f):
            raise ValueError(f"{path}: run {run.id} ({run.study}/{run.name}, seed {run.seed}) is already in the ledger")
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def merge(source: str | Path, path: str | Path | None = None) -> int:
    """Append to ``path`` (default: the book's ledger) the runs of ``source`` it lacks; return how many."""
    path = default_path() if path is None else Path(path)
    have = {run.id for run in read(path)}
    new = [run for run in read(source) if run.id not in have]
    for run in new:
        append(run, path)
    return len(new)


def select(runs: Iterable[Run], *, results_only: bool = True, **fields: Any) -> list[Run]:
    """The runs whose attributes equal ``fields`` (``kind="ablation"``); by default only :attr:`Run.is_result` ones."""
    return [r for r in runs if (r.is_result or not results_only) and all(getattr(r, k) == v for k, v in fields.items())]


def latest(runs: Iterable[Run], **fields: Any) -> Run | None:
    """The last appended run of :func:`select` (``None`` if there is none)."""
    chosen = select(runs, **fields)
    return chosen[-1] if chosen else None


@dataclass(frozen=True)
class Summary:
    """One configuration's runs over seeds: accuracy mean, sample ``std``, ``se = std / sqrt(n)`` (NaN for one run)."""

    name: str
    n: int
    mean: float
    std: float
    se: float
    min: float
    max: float
    runs: tuple[Run, ...]

    @property
    def first(self) -> Run:
        return self.runs[0]


def summarize(runs: Sequence[Run], metric: str = "final_test_acc") -> list[Summary]:
    """One :class:`Summary` per configuration (:attr:`Run.config_key`), in order of first appearance.

    ``metric``: ``"final_test_acc"`` or a key of ``Run.metrics`` (``"tta_test_acc"``).
    """
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.config_key, []).append(run)
    out = []
    for group in groups.values():
        values = [r.final_test_acc if metric == "final_test_acc" else r.metrics[metric] for r in group]
        std = statistics.stdev(values) if len(values) > 1 else math.nan
        out.append(Summary(group[0].name, len(values), statistics.fmean(values), std, std / math.sqrt(len(values)),
                           min(values), max(values), tuple(group)))
    return out


@dataclass(frozen=True)
class Effect:
    """A configuration's mean accuracy minus its study's base's, ``se = sqrt(se_a^2 + se_b^2)``, and cost ratios."""

    name: str
    n: int
    base_n: int
    delta: float
    se: float
    macs_ratio: float
    params_ratio: float
    step_time_ratio: float


def effects(runs: Sequence[Run], base: str = "base") -> list[Effect]:
    """Every configuration of ``runs`` against ``base``; ValueError if there is none, or if a name has several."""
    rows = summarize(runs)
    names = [r.name for r in rows]
    if len(set(names)) != len(names):
        raise ValueError(f"expected one configuration per name, got {names}; "
                         "select one number of epochs and one recipe first")
    by_name = {r.name: r for r in rows}
    if base not in by_name:
        raise ValueError(f"expected runs named {base!r} to compare with, got {sorted(by_name)}")
    b = by_name[base]

    def ratio(row: Summary, attr: str) -> float:
        a, c = getattr(row.first, attr), getattr(b.first, attr)
        return a / c if a is not None and c else math.nan

    return [Effect(r.name, r.n, b.n, r.mean - b.mean, math.hypot(r.se, b.se), ratio(r, "macs"), ratio(r, "params"),
                   ratio(r, "step_time_s")) for r in rows if r.name != base]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m xception_lib.ledger merge SOURCE [--into LEDGER]``, or ``check LEDGER``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m xception_lib.ledger", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("merge", help="append the runs of SOURCE that the ledger lacks")
    m.add_argument("source", type=Path)
    m.add_argument("--into", type=Path, default=None, help="default: the book's ledger in the package")
    c = sub.add_parser("check", help="validate every line of a ledger")
    c.add_argument("path", type=Path, nargs="?", default=None)
    args = parser.parse_args(argv)
    if args.command == "merge":
        print(f"{merge(args.source, args.into)} run(s) appended to {args.into or default_path()}")
    else:
        print(f"{len(read(args.path))} valid run(s) in {args.path or default_path()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
