"""Where, when and on what a result was measured: recorded beside every stored number."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

COMMIT_ENV_VAR = "XCEPTION_COMMIT"
"""Names the commit where there is no git checkout (a copy of the tree sent to a GPU machine)."""


def git_commit(path: str | Path | None = None) -> str | None:
    """``$XCEPTION_COMMIT`` if set, else the git HEAD of ``path``'s checkout (default: this package's), else ``None``.

    The variable comes first: a copy of the files can carry git metadata that does not match them.
    """
    if os.environ.get(COMMIT_ENV_VAR):
        return os.environ[COMMIT_ENV_VAR]
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10,
                             check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def device_name(device: torch.device | str) -> str:
    """A human-readable name of the device: the GPU's name, or the CPU's."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple MPS"
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else platform.processor() or platform.machine() or "CPU"


def environment(device: torch.device | str = "cpu") -> dict[str, Any]:
    """Hardware and software facts to store with a measurement: :class:`xception_lib.ledger.Environment`'s fields."""
    device = torch.device(device)
    cuda = device.type == "cuda"
    return {
        "device": device.type,
        "device_name": device_name(device),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda if cuda else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "commit": git_commit(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **({"cudnn_benchmark": bool(torch.backends.cudnn.benchmark)} if cuda else {}),
    }
