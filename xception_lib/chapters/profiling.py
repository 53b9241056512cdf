"""Where a training step's time goes, operator by operator: a CPU profile grouped into layer kinds.

Timing a whole model (:mod:`xception_lib.chapters.bench`) says *how fast*; a profile says *where*.
:func:`op_profile` runs a few steps under :mod:`torch.profiler` and returns each operator's
*self* time (its own work, not that of the operators it calls), largest first;
:func:`by_kind` adds those up into the kinds a reader thinks in: convolutions, batch norm,
ReLU, max-pooling, residual additions, copies.

This is how the library's Xception was made faster than timm's on a CPU: the profile of both
showed max-pooling, an operation with no multiply-accumulates, taking several percent of a
training step (chapter "FLOPs are not speed").
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

#: Layer kinds, each with the ATen operator names that belong to it. An entry with ``::``
#: (``"aten::add"``) matches that operator exactly; any other entry is a substring (the first
#: match wins).
KINDS: dict[str, tuple[str, ...]] = {
    "convolution": ("convolution", "conv2d", "mkldnn_conv"),
    "batch norm": ("batch_norm",),
    "ReLU": ("relu", "clamp_min", "threshold_backward"),
    "max-pooling": ("max_pool", "gather", "scatter_add"),
    "addition": ("aten::add", "aten::add_"),
    "copies": ("copy_", "contiguous", "clone", "empty_like", "to_copy"),
}


def op_profile(
    model: nn.Module,
    *,
    input_size: int,
    batch_size: int = 1,
    mode: str = "train",
    steps: int = 2,
    warmup: int = 1,
) -> list[dict[str, Any]]:
    """Self CPU time per operator of ``steps`` forward (+ backward) passes, largest first.

    Args:
        model: The network; run on the CPU, in train mode for ``"train"`` and eval mode for ``"forward"``.
        input_size: Height and width of the random input images.
        batch_size: Images per step.
        mode: ``"train"`` (forward, cross-entropy, backward; no optimiser step) or ``"forward"``
            (inference mode).
        steps: Profiled steps; times are per step.
        warmup: Unprofiled steps first (allocation, oneDNN's kernel choice).

    Returns:
        A list with one dict per operator, with keys ``op`` (its ATen name), ``calls`` (per
        step), ``self_ms`` (per step) and ``share`` (of the total self time, so the shares
        add up to 1).
    """
    from torch.profiler import ProfilerActivity, profile

    if mode not in ("train", "forward"):
        raise ValueError(f"mode must be 'train' or 'forward', got {mode!r}")
    if steps < 1 or warmup < 0 or batch_size < 1 or input_size < 1:
        raise ValueError(
            f"expected steps >= 1, warmup >= 0, batch_size >= 1, input_size >= 1; "
            f"got {steps}, {warmup}, {batch_size}, {input_size}"
        )
    model = model.cpu().train(mode == "train")
    x = torch.randn(batch_size, 3, input_size, input_size, generator=torch.Generator().manual_seed(0))
    target = torch.zeros(batch_size, dtype=torch.long)

    def step() -> None:
        if mode == "forward":
            with torch.inference_mode():
                model(x)
            return
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), target).backward()

    for _ in range(warmup):
        step()
    with _native_output_silenced(), profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    rows = [
        {
            "op": e.key,
            "calls": e.count / steps,
            "self_ms": e.self_cpu_time_total / 1000 / steps,
            "share": e.self_cpu_time_total / total,
        }
        for e in events
    ]
    return sorted(rows, key=lambda row: -row["self_ms"])


@contextlib.contextmanager
def _native_output_silenced() -> Iterator[None]:
    """Send what C++ code writes to file descriptors 1 and 2 to /dev/null for the block.

    The profiler's C++ backend (Kineto) logs its start and stop, and on a machine without a
    GPU an error about counting GPUs, straight to the process's output; in a notebook those
    lines would land under the cell. Python-level output and exceptions are unaffected.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    saved = []
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        yield
        return
    try:
        for fd in (1, 2):
            try:
                saved.append((fd, os.dup(fd)))
                os.dup2(devnull, fd)
            except OSError:
                pass
        yield
    finally:
        for fd, copy in saved:
            os.dup2(copy, fd)
            os.close(copy)
        os.close(devnull)


def kind_of(op: str) -> str:
    """The layer kind of an ATen operator name (see :data:`KINDS`), or ``"other"``."""
    name = op.lower()
    for kind, parts in KINDS.items():
        for part in parts:
            part = part.lower()
            if name == part if "::" in part else part in name:
                return kind
    return "other"


def by_kind(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """:func:`op_profile`'s rows added up per layer kind: ``{kind: {"self_ms", "share"}}``, in :data:`KINDS` order."""
    out: dict[str, dict[str, float]] = {kind: {"self_ms": 0.0, "share": 0.0} for kind in (*KINDS, "other")}
    for row in rows:
        entry = out[kind_of(row["op"])]
        entry["self_ms"] += row["self_ms"]
        entry["share"] += row["share"]
    return out
