"""Checkpoints that survive a crash mid-write: save to a temporary file, then rename it.

``os.replace`` is atomic on POSIX and Windows when source and target are on the same file
system, so a reader (or a resumed run after a Colab disconnect) finds either the previous
complete checkpoint or the new complete one, never half a file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

__all__ = ["CHECKPOINT_NAME", "atomic_save", "load_checkpoint"]

CHECKPOINT_NAME = "checkpoint.pt"
"""File name of the latest checkpoint inside a checkpoint directory."""


def atomic_save(obj: object, target: str | os.PathLike[str]) -> Path:
    """``torch.save(obj)`` to a temporary file beside ``target``, then rename it into place.

    Returns:
        The target path.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`atomic_save` (tensors and plain Python values only)."""
    return torch.load(path, map_location=map_location, weights_only=True)
