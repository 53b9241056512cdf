"""The operator profile: per-step self times that add up, grouped into the right layer kinds."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

import xception_lib as xl
from xception_lib.chapters import profiling


def tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(3, 2, 1),
        nn.Flatten(),
        nn.Linear(8 * 8 * 8, 10),
    )


def test_train_profile_adds_up_and_names_the_backward_pass() -> None:
    rows = profiling.op_profile(tiny(), input_size=16, steps=2)
    assert rows.share.sum() == pytest.approx(1.0)
    assert list(rows.self_ms) == sorted(rows.self_ms, reverse=True)
    ops = rows.set_index("op")
    assert "aten::convolution_backward" in ops.index and "aten::max_pool2d_with_indices" in ops.index
    assert ops.calls["aten::max_pool2d_with_indices"] == 1  # per step, not per profile
    kinds = profiling.by_kind(rows)
    assert list(kinds.index) == [*profiling.KINDS, "other"]
    assert kinds.share.sum() == pytest.approx(1.0)
    assert kinds.self_ms.sum() == pytest.approx(rows.self_ms.sum())
    for kind in ("convolution", "batch norm", "ReLU", "max-pooling"):
        assert kinds.self_ms[kind] > 0, kind


def test_forward_profile_has_no_backward_and_leaves_output_working(capfd: pytest.CaptureFixture[str]) -> None:
    rows = profiling.op_profile(tiny(), input_size=16, mode="forward", steps=1)
    assert not rows.op.str.lower().str.contains("backward").any()
    os.write(1, b"fd 1 still works\n")
    print("so does print")
    out = capfd.readouterr().out
    assert "fd 1 still works" in out and "so does print" in out


def test_library_pooling_shows_as_pooling() -> None:
    assert profiling.kind_of("aten::max_pool2d_with_indices_backward") == "max-pooling"
    assert profiling.kind_of("aten::gather") == "max-pooling"  # xl.pooling.max_pool2d's output step
    assert profiling.kind_of("aten::mkldnn_convolution") == "convolution"
    assert profiling.kind_of("aten::clamp_min") == "ReLU"
    assert profiling.kind_of("aten::addmm") == "other"  # the linear layer, not a residual addition
    rows = profiling.op_profile(nn.Sequential(xl.MaxPool2dSame(3, 2)), input_size=10, mode="forward", steps=1)
    assert profiling.by_kind(rows).self_ms["max-pooling"] > 0


def test_bad_arguments_say_what_was_expected() -> None:
    with pytest.raises(ValueError, match=r"mode: expected one of \('forward', 'train'\), got 'backward'"):
        profiling.op_profile(tiny(), input_size=16, mode="backward")
    with pytest.raises(ValueError, match=r"steps: expected a finite number in \[1, inf\], got 0"):
        profiling.op_profile(tiny(), input_size=16, steps=0)
    with pytest.raises(ValueError, match=r"input_size: expected a finite number in \[1, inf\], got 0"):
        profiling.op_profile(tiny(), input_size=0)
