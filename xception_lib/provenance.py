"""Where, when and on what a result was measured (:class:`Environment`), and how every record is checked.

:func:`check_fields` validates every record type (:class:`Environment`, ``ledger.Run``, the benchmark rows): a bad
value is a ``ValueError`` naming the field, what was expected and what came. Numbers are finite (NaN only where a
field allows it), ``True`` is not a number, numpy numbers become Python ones: a checked record writes as JSON.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import numbers
import os
import platform
import subprocess
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


def expect(condition: bool, where: str, expected: str, got: Any) -> None:
    """A ``ValueError`` ``"{where}: expected {expected}, got {got!r}"`` unless ``condition``."""
    if not condition:
        raise ValueError(f"{where}: expected {expected}, got {repr(got)[:120]}")


def check(where: str, value: Any, hint: Any, low: float = -math.inf, high: float = math.inf, nan: bool = False) -> Any:
    """``value`` checked against a type ``hint`` (``str``, ``int``, ``float``, ``bool``, ``dict[...]``, ``list[float]``,
    a class, ``X | None``) and the range ``[low, high]``; numpy numbers come back as Python ones (numpy bools are
    refused). ``nan``: NaN and, within the range, infinity are values (a loss that diverged)."""
    if type(None) in typing.get_args(hint):  # X | None
        if value is None:
            return None
        hint = typing.get_args(hint)[0]
    origin = typing.get_origin(hint) or hint
    if origin is list:
        expect(isinstance(value, list), where, "a list", value)
        return [check(f"{where}[{i}]", v, typing.get_args(hint)[0], low, high, nan) for i, v in enumerate(value)]
    if hint in (int, float):
        number = isinstance(value, numbers.Integral if hint is int else numbers.Real) and not isinstance(value, bool)
        expect(number, where, "an integer" if hint is int else "a number", value)
        if hint is float and not abs(value) < 1e308:  # 10**400 and infinities (no OverflowError); NaN stays NaN
            value = value if value != value else (math.inf if value > 0 else -math.inf)
        value = hint(value)
        ok = (nan and math.isnan(value)) or ((hint is int or math.isfinite(value) or nan) and low <= value <= high)
        expect(ok, where, f"a finite number in [{low:g}, {high:g}]", value)
        return value
    if origin is dict:
        expect(isinstance(value, dict) and all(isinstance(k, str) for k in value), where, "an object", value)
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as error:
            expect(False, where, "plain JSON values (str, int, float, bool, list, dict)", str(error))
        return dict(value)
    expect(isinstance(value, origin), where, {str: "a string", bool: "true or false"}.get(origin, str(hint)), value)
    return value


def check_fields(record: Any, ranges: dict[str, tuple[float, float]] | None = None, where: str = "") -> None:
    """Check every field of the dataclass ``record`` against its annotation (and ``ranges``), in place."""
    hints = typing.get_type_hints(type(record))
    for f in dataclasses.fields(record):
        value = check(f"{where}{f.name}", getattr(record, f.name), hints[f.name], *(ranges or {}).get(f.name, ()))
        object.__setattr__(record, f.name, value)


def from_dict(cls: Any, data: Any, where: str) -> Any:
    """``cls(**data)`` once ``data`` is an object holding ``cls``'s fields and no others (the class checks values)."""
    expect(isinstance(data, dict), where, "a JSON object", data)
    fields = dataclasses.fields(cls)
    unknown = sorted(set(data) - {f.name for f in fields})
    expect(not unknown, where, f"only the fields {sorted(f.name for f in fields)}", unknown)
    missing = [f.name for f in fields if f.default is f.default_factory is dataclasses.MISSING and f.name not in data]
    expect(not missing, where, "every required field", f"no {', '.join(sorted(missing))}")
    return cls(**data)


@dataclass(frozen=True)
class Environment:
    """Where and with what a result was measured (:func:`environment`); ``commit_note`` explains a commit
    corrected after the run. Stored as :meth:`to_dict` in the ledger and in benchmark results."""

    device: str  # a torch device type: "cuda", "cpu", "mps"
    device_name: str
    torch: str
    date: str  # ISO 8601, UTC
    cuda: str | None = None
    python: str | None = None
    platform: str | None = None
    cpu_count: int | None = None
    commit: str | None = None
    cudnn_benchmark: bool | None = None
    commit_note: str | None = None

    def __post_init__(self) -> None:
        check_fields(self, {"cpu_count": (1, math.inf)}, "environment.")
        for name in ("device", "device_name", "torch"):
            expect(bool(getattr(self, name)), f"environment.{name}", "a non-empty string", getattr(self, name))
        try:
            _dt.datetime.fromisoformat(self.date)
        except ValueError:
            expect(False, "environment.date", "an ISO 8601 date (2026-11-27T21:21:14+00:00)", self.date)

    def describe(self) -> str:
        """``NVIDIA H100 80GB HBM3, torch 2.11.0+cu130, commit 2c75ac8, 2026-11-27``."""
        return f"{self.device_name}, torch {self.torch}, commit {(self.commit or 'unknown')[:7]}, {self.date[:10]}"

    def to_dict(self) -> dict[str, Any]:
        """Every field, ``None`` included (a ledger run's ``id`` hashes exactly this)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> Environment:
        """Validate a stored environment (missing optional fields are ``None``); errors name the field."""
        return from_dict(cls, data, "environment")


def git_commit() -> str | None:
    """``$XCEPTION_COMMIT`` if set, else the git HEAD of this package's checkout, else ``None``.

    The variable comes first: a copy of the files sent to a GPU machine can carry git metadata that does not match.
    """
    if commit := os.environ.get("XCEPTION_COMMIT"):
        return commit
    git = ["git", "rev-parse", "HEAD"]
    try:
        out = subprocess.run(git, cwd=Path(__file__).parent, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):  # no git, or not a checkout
        return None
    return out.stdout.strip() or None


def device_name(device: torch.device | str) -> str:
    """A human-readable name of the device: the GPU's name, or the CPU's (``/proc/cpuinfo`` on Linux)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple MPS"
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else platform.processor() or platform.machine() or "CPU"


def environment(device: torch.device | str = "cpu") -> Environment:
    """The hardware and software a measurement on ``device`` runs with, and the commit and date."""
    device = torch.device(device)
    cuda = device.type == "cuda"
    return Environment(
        device=device.type,
        device_name=device_name(device),
        torch=str(torch.__version__),  # a str subclass: plain, so that checkpoints load with weights_only
        date=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        cuda=torch.version.cuda if cuda else None,
        python=platform.python_version(),
        platform=platform.platform(),
        cpu_count=os.cpu_count(),
        commit=git_commit(),
        cudnn_benchmark=bool(torch.backends.cudnn.benchmark) if cuda else None,
    )
