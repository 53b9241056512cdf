"""Where a training step's time goes: timing a whole model (:mod:`xception_lib.benchmark`) says *how fast*, a CPU
profile says *where*. :func:`op_profile` gives each operator's *self* time (its own work, not that of the operators
it calls); :func:`by_kind` adds those up into the layer kinds a reader thinks in."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch
from torch import nn

from xception_lib.benchmark import MODES, make_step
from xception_lib.provenance import check, expect

if TYPE_CHECKING:
    import pandas

#: Layer kinds and their ATen operators (an entry with ``::`` matches exactly, any other as a substring).
KINDS: dict[str, tuple[str, ...]] = {
    "convolution": ("convolution", "conv2d", "mkldnn_conv"),
    "batch norm": ("batch_norm",),
    "ReLU": ("relu", "clamp_min", "threshold_backward"),
    "max-pooling": ("max_pool", "gather", "scatter_add"),
    "addition": ("aten::add", "aten::add_"),
    "copies": ("copy_", "contiguous", "clone", "empty_like", "to_copy"),
}


def op_profile(model: nn.Module, *, input_size: int, mode: str = "train", steps: int = 2) -> pandas.DataFrame:
    """Self CPU time per operator and step of :func:`~xception_lib.benchmark.make_step` on one random image, after
    one unprofiled step; ``mode``: ``"train"`` or ``"forward"`` (eval mode). One row per operator, largest first:
    ``op`` (its ATen name), ``calls`` and ``self_ms`` (per step), ``share`` (of the total self time)."""
    import pandas as pd
    from torch.profiler import ProfilerActivity, profile

    expect(mode in MODES, "mode", f"one of {MODES}", mode)
    check("steps", steps, int, 1)
    check("input_size", input_size, int, 1)
    x = torch.randn(1, 3, input_size, input_size, generator=torch.Generator().manual_seed(0))
    step = make_step(model.cpu().train(mode == "train"), x, train=mode == "train")
    step()  # warm-up
    with _native_output_silenced(), profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    rows = pd.DataFrame(
        [(e.key, e.count / steps, e.self_cpu_time_total / 1000 / steps) for e in prof.key_averages()],
        columns=["op", "calls", "self_ms"],
    )
    rows = rows[rows.self_ms > 0].assign(share=rows.self_ms / rows.self_ms.sum())
    return rows.sort_values("self_ms", ascending=False, ignore_index=True)


@contextlib.contextmanager
def _native_output_silenced() -> Iterator[None]:
    """Send file descriptors 1 and 2 to /dev/null: the profiler's C++ backend logs there, under the cell."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = [(fd, os.dup(fd)) for fd in (1, 2)]
    with open(os.devnull, "w") as devnull:
        for fd, _ in saved:
            os.dup2(devnull.fileno(), fd)
        try:
            yield
        finally:
            for fd, copy in saved:
                os.dup2(copy, fd)
                os.close(copy)


def kind_of(op: str) -> str:
    """The layer kind of an ATen operator name (see :data:`KINDS`), or ``"other"``."""
    op = op.lower()
    return next((k for k, parts in KINDS.items() if any(op == p if "::" in p else p in op for p in parts)), "other")


def by_kind(rows: pandas.DataFrame) -> pandas.DataFrame:
    """:func:`op_profile`'s rows added up per layer kind (``self_ms``, ``share``), in :data:`KINDS` order."""
    kinds = rows.groupby(rows.op.map(kind_of))[["self_ms", "share"]].sum()
    return kinds.reindex([*KINDS, "other"], fill_value=0.0).rename_axis("layer kind")
