"""Checkpoints that survive a crash mid-write, and the check that a resume continues the same run.

:func:`xception_lib.train.fit`'s checkpoint is a dict: ``model`` (state dict), ``model_config`` (``None`` unless an
``XceptionConfig``), ``model_class``, ``train_config``, ``data`` (:func:`data_fingerprint`), ``format``, ``epoch``,
``step``, ``optimizer``, ``scaler`` and ``history``, written by :func:`atomic_save` and read back by :func:`restore`.
"""

from __future__ import annotations

import errno
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_NAME = "checkpoint.pt"  #: the latest checkpoint in a checkpoint directory
FORMAT = 2  #: version of the checkpoint's layout
# How torch's file writer reports a failed write (a full disk) as a RuntimeError.
_WRITER_FAILURES = ("file write failed", "unexpected pos", "inline_container", "PytorchStreamWriter")
_AFRESH = "pass resume=False (or another checkpoint_dir) to start afresh"


class CheckpointError(ValueError):
    """A checkpoint cannot be used: unreadable, not a training checkpoint, or of another run."""


def atomic_save(obj: object, target: str | os.PathLike[str]) -> None:
    """``torch.save(obj)`` to a temporary file beside ``target``, then rename it into place (atomic on one file
    system, so a reader finds the previous complete file or the new one, never half a file).

    A failed write (a full disk, a folder that is not writable) leaves ``target`` as it was and raises an
    ``OSError`` naming ``target`` and the cause; torch reports such failures as a ``RuntimeError``.
    """
    target = Path(target)
    tmp = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except (OSError, RuntimeError) as error:
        if not isinstance(error, OSError) and not any(m in str(error) for m in _WRITER_FAILURES):
            raise  # not a write: an object that cannot be saved
        code = getattr(error, "errno", None) or errno.EIO
        cause = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else os.strerror(code)}"
        kind = type(error) if isinstance(error, OSError) else OSError  # a PermissionError stays one
        message = f"writing {target} failed, an I/O error ({cause}); is the disk full or the folder not writable?"
        raise kind(code, message) from error
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint dict of tensors and plain values, or raise a :class:`CheckpointError` naming the file
    (empty, truncated, not a ``torch.save`` file, or not a dict)."""
    if Path(path).is_dir():
        raise IsADirectoryError(f"{path} is a folder, not a checkpoint file (fit writes {CHECKPOINT_NAME} inside it)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as error:  # torch and pickle raise many kinds here (EOFError, UnpicklingError, ...)
        empty = Path(path).stat().st_size == 0
        reason = "it is empty" if empty else f"{type(error).__name__}: {str(error).splitlines()[0]}"
        raise CheckpointError(
            f"{path} is not a readable checkpoint ({reason}); it may be truncated or another kind of file"
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a checkpoint dictionary")
    return state


def data_fingerprint(data: Any) -> dict[str, Any]:
    """Split sizes and a hash of the labels and 16 images of each split: cheap, and different for another
    data set or subset."""
    digest = hashlib.sha256()
    for images, labels in ((data.train_images, data.train_labels), (data.test_images, data.test_labels)):
        digest.update(labels.cpu().numpy().astype("int64").tobytes())
        rows = torch.linspace(0, len(images) - 1, min(16, len(images))).long()
        digest.update(images[rows].cpu().contiguous().numpy().tobytes())
    sizes = {"train_images": len(data.train_labels), "test_images": len(data.test_labels)}
    return sizes | {"sha256": digest.hexdigest()[:16]}


def checkpoint_file(checkpoint_dir: str | os.PathLike[str] | None, *, create: bool = True) -> Path | None:
    """``checkpoint_dir/checkpoint.pt`` (``None`` for ``None``), after making the folder if ``create``: before any
    training, so that a folder that cannot be one fails at once."""
    if checkpoint_dir is None:
        return None
    folder = Path(checkpoint_dir)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"checkpoint_dir {folder} is a file, not a folder; pass a folder (made if missing)")
    if create:
        folder.mkdir(parents=True, exist_ok=True)
    return folder / CHECKPOINT_NAME


def restore(path: Path, expected: dict[str, Any], trained: dict[str, Any]) -> tuple[Any, int]:
    """Load the checkpoint ``path`` into ``trained`` (``{"model": model, "optimizer": ..., "scaler": ...}``: each
    ``load_state_dict``'s its entry) and return its history (a dict) and epoch, or raise a :class:`CheckpointError`
    (naming every differing field) unless it is a training checkpoint of the run whose values are ``expected``."""
    try:
        state = load_checkpoint(path, map_location=next(trained["model"].parameters()).device)
    except CheckpointError as error:
        raise CheckpointError(f"{error}; {_AFRESH}") from None
    if missing := sorted({"history", "epoch", *trained, *expected} - set(state)):
        raise CheckpointError(
            f"{path} is not a training checkpoint of xception_lib.train.fit (it has no {missing}); {_AFRESH}"
        )
    differences = []
    for key, want in expected.items():
        pairs = [(key, have := state[key], want)]
        if isinstance(want, dict) and isinstance(have, dict):
            pairs = [(f"{key}.{k}", have.get(k), want.get(k)) for k in sorted(set(have) | set(want))]
        differences += [f"{name}: {h!r} -> {w!r}" for name, h, w in pairs if h != w]
    if differences:
        raise CheckpointError(
            f"{path} was written by a different run ({'; '.join(differences)}), so resuming would not continue it. "
            f"Use the same model, TrainConfig and data, or {_AFRESH}."
        )
    try:
        for key, obj in trained.items():
            obj.load_state_dict(state[key])
    except (RuntimeError, ValueError, KeyError) as error:
        raise CheckpointError(f"{path} does not fit this model ({str(error).splitlines()[0]}); {_AFRESH}") from None
    return state["history"], int(state["epoch"])
