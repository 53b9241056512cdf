"""Bad input against training, evaluation, the loader, checkpoints and the data reader (issue 24's classes).

Each case is a call and what it must do: raise a named error whose message says what was wrong, or work (on a
memory format, a numpy integer or a layout that is valid though unusual). The data files and the full-disk cases
are in test_data.py and test_checkpoint.py.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import xception_lib as xl
from xception_lib.checkpoint import load_checkpoint
from xception_lib.evaluation import confusion_matrix, evaluate, predict
from xception_lib.loader import GpuLoader
from xception_lib.runtime import resolve_amp
from xception_lib.train import TrainConfig, fit, lr_at, train_step

pytestmark = pytest.mark.usefixtures("one_thread")

NORM = {"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}
CFG = TrainConfig(epochs=1, batch_size=8, lr=0.05, amp="off", eval_batch_size=16, log_every=1, channels_last=False)


def images(n: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def labels(n: int = 16) -> torch.Tensor:
    return torch.arange(n) % 10


def small_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))


def data(train: int = 16, test: int = 16, **replace: object) -> xl.data.CifarArrays:
    arrays = xl.data.CifarArrays(
        "cifar10", images(train), labels(train), images(test, 1), labels(test), tuple("abcdefghij"), "synthetic"
    )
    return dataclasses.replace(arrays, **replace)


def batch(n: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(n, 3, 32, 32), labels(n)


def step(x: torch.Tensor, y: torch.Tensor) -> object:
    model = small_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    return train_step(model, x, y, optimizer, torch.amp.GradScaler("cpu", enabled=False), None)


def run_fit(arrays: xl.data.CifarArrays, cfg: object = CFG) -> xl.history.History:
    return fit(small_model(), arrays, cfg, device="cpu", progress=False)  # type: ignore[arg-type]


# (id, call, expected error or None for "must work", regular expression the message must match)
Case = tuple[str, Callable[[], object], "type[BaseException] | None", str]
CASES: list[Case] = [
    # TrainConfig: types (numpy numbers decided on purpose: converted), finiteness, ranges
    (
        "config-numpy-int",
        lambda: json.dumps(dataclasses.asdict(TrainConfig(epochs=np.int64(2), seed=np.uint8(3)))),
        None,
        "",
    ),
    ("config-numpy-float", lambda: json.dumps(dataclasses.asdict(TrainConfig(lr=np.float32(0.5)))), None, ""),
    ("config-numpy-bool", lambda: TrainConfig(flip=np.bool_(True)), TypeError, "flip must be True or False"),
    ("config-lr-nan", lambda: TrainConfig(lr=math.nan), ValueError, "lr must be a finite number > 0"),
    ("config-lr-inf", lambda: TrainConfig(lr=math.inf), ValueError, "lr must be"),
    ("config-epochs-0", lambda: TrainConfig(epochs=0), ValueError, "epochs must be an integer >= 1"),
    ("config-batch-float", lambda: TrainConfig(batch_size=2.0), TypeError, "batch_size must be an integer"),
    ("config-warmup-1", lambda: TrainConfig(warmup=1.0), ValueError, "warmup must be"),
    ("config-optimizer-case", lambda: TrainConfig(optimizer="SGD"), ValueError, "optimizer must be one of"),
    ("config-grad-clip-0", lambda: TrainConfig(grad_clip=0), ValueError, "grad_clip must be"),
    ("config-seed-negative", lambda: TrainConfig(seed=-1), ValueError, "seed must be an integer >= 0"),
    ("config-smoothing-bool", lambda: TrainConfig(label_smoothing=True), TypeError, "label_smoothing"),
    ("config-momentum-1", lambda: TrainConfig(momentum=1.0), ValueError, "momentum must be"),
    ("config-eval-every-str", lambda: TrainConfig(eval_every="1"), TypeError, "eval_every"),
    # the schedule and the precision
    ("lr-at-negative", lambda: lr_at(CFG, -1, 10), ValueError, "step must be an integer >= 0 and < 10, got -1"),
    ("lr-at-no-steps", lambda: lr_at(CFG, 0, 0), ValueError, "total_steps must be an integer >= 1"),
    ("lr-at-float-step", lambda: lr_at(CFG, 1.5, 10), TypeError, "step must be an integer"),
    ("amp-unknown", lambda: resolve_amp("fp32", "cpu"), ValueError, "amp must be 'auto', 'bf16', 'fp16' or 'off'"),
    # train_step: dtypes, shapes, empty batches
    ("step-uint8-images", lambda: step(images(4), labels(4)), TypeError, "floating-point batch"),
    ("step-3d-images", lambda: step(torch.randn(4, 32, 32), labels(4)), ValueError, "B x C x H x W"),
    ("step-float-labels", lambda: step(batch()[0], labels(4).float()), TypeError, "integer tensor of class indices"),
    ("step-labels-short", lambda: step(batch()[0], labels(3)), ValueError, r"and labels \(3,\)"),
    ("step-empty-batch", lambda: step(torch.randn(0, 3, 32, 32), labels(0)), ValueError, "non-empty batch"),
    ("step-channels-last", lambda: step(batch()[0].contiguous(memory_format=torch.channels_last), labels(4)), None, ""),
    # fit: checked before any training
    ("fit-empty-test-set", lambda: run_fit(data(test=0)), ValueError, "data.test_images is empty"),
    (
        "fit-channels-last",
        lambda: run_fit(data(train_images=images().contiguous(memory_format=torch.channels_last))),
        None,
        "",
    ),
    ("fit-strided-images", lambda: run_fit(data(train_images=images(32)[::2])), None, ""),
    (
        "fit-numpy-config",
        lambda: json.dumps(run_fit(data(), dataclasses.replace(CFG, epochs=np.int64(1))).meta),
        None,
        "",
    ),
    ("fit-dict-config", lambda: run_fit(data(), dataclasses.asdict(CFG)), TypeError, "cfg must be a TrainConfig"),
    (
        "fit-callback-not-callable",
        lambda: fit(small_model(), data(), CFG, device="cpu", progress=False, callbacks=[1]),
        TypeError,
        "callbacks must be functions",
    ),
    (
        "fit-3d-images",
        lambda: run_fit(data(train_images=images()[:, 0])),
        TypeError,
        r"data.train_images must be uint8 images N x C x H x W",
    ),
    (
        "fit-labels-short",
        lambda: run_fit(data(train_labels=labels(15))),
        ValueError,
        "one label for each of the 16 images",
    ),
    ("fit-labels-2d", lambda: run_fit(data(test_labels=labels().view(4, 4))), ValueError, r"got shape \(4, 4\)"),
    ("fit-labels-float", lambda: run_fit(data(train_labels=labels().float())), TypeError, "integer tensor"),
    (
        "fit-label-out-of-range",
        lambda: run_fit(data(test_labels=labels() + 10)),
        ValueError,
        r"class indices in \[0, 10\)",
    ),
    # evaluate, predict, confusion_matrix
    (
        "evaluate-one-label",
        lambda: evaluate(small_model(), images(10), labels(1), **NORM),
        ValueError,
        r"labels: expected one label for each of the 10 images, got shape \(1,\)",
    ),
    (
        "evaluate-labels-2d",
        lambda: evaluate(small_model(), images(4), labels(4).view(2, 2), **NORM),
        ValueError,
        r"got shape \(2, 2\)",
    ),
    ("evaluate-empty", lambda: evaluate(small_model(), images(0), labels(0), **NORM), ValueError, "images is empty"),
    (
        "evaluate-float-images",
        lambda: evaluate(small_model(), images(4).float(), labels(4), **NORM),
        TypeError,
        "must be uint8",
    ),
    ("predict-empty", lambda: predict(small_model(), images(0), **NORM), ValueError, "images is empty"),
    ("predict-3d", lambda: predict(small_model(), images(4)[:, 0], **NORM), TypeError, "N x C x H x W"),
    (
        "predict-one-channel",
        lambda: predict(small_model(), images(4)[:, :1], **NORM),
        ValueError,
        "images of 1 channels need mean and std of 1 values",
    ),
    (
        "predict-channels-last",
        lambda: predict(small_model(), images(4).contiguous(memory_format=torch.channels_last), **NORM),
        None,
        "",
    ),
    (
        "predict-strided",
        lambda: predict(small_model(), images(4)[..., ::2, ::2].repeat_interleave(2, 2)[..., ::2], **NORM),
        None,
        "",
    ),
    (
        "predict-batch-0",
        lambda: predict(small_model(), images(4), **NORM, batch_size=0),
        ValueError,
        "batch_size must be",
    ),
    ("predict-amp-unknown", lambda: predict(small_model(), images(4), **NORM, amp="half"), ValueError, "amp must be"),
    (
        "confusion-classes-0",
        lambda: confusion_matrix(labels(4), labels(4), 0),
        ValueError,
        "num_classes must be an integer >= 1",
    ),
    (
        "confusion-classes-float",
        lambda: confusion_matrix(labels(4), labels(4), 10.0),
        TypeError,
        "num_classes must be an integer",
    ),
    ("confusion-2d", lambda: confusion_matrix(labels(4).view(2, 2), labels(4).view(2, 2), 10), ValueError, "1-D"),
    (
        "confusion-float",
        lambda: confusion_matrix(labels(4).float(), labels(4), 10),
        TypeError,
        "predictions must be an integer",
    ),
    ("confusion-empty", lambda: confusion_matrix(labels(0), labels(0), 3).sum().item(), None, ""),
    # the loader: memory formats and sizes
    (
        "loader-channels-last-crop",
        lambda: list(GpuLoader(images().contiguous(memory_format=torch.channels_last), labels(), **NORM, batch_size=4)),
        None,
        "",
    ),
    (
        "loader-channels-last-no-crop",
        lambda: list(
            GpuLoader(
                images().contiguous(memory_format=torch.channels_last), labels(), **NORM, batch_size=4, crop_padding=0
            )
        ),
        None,
        "",
    ),
    ("loader-strided", lambda: list(GpuLoader(images(32)[::2], labels(), **NORM, batch_size=4)), None, ""),
    ("loader-numpy-batch", lambda: len(GpuLoader(images(), labels(), **NORM, batch_size=np.int64(4))), None, ""),
    (
        "loader-labels-bool",
        lambda: GpuLoader(images(), labels() > 3, **NORM),
        TypeError,
        "integer tensor of class indices",
    ),
    (
        "loader-mean-nan",
        lambda: GpuLoader(images(), labels(), mean=(math.nan, 0.5, 0.5), std=NORM["std"]),
        ValueError,
        r"mean\[0\]",
    ),
    (
        "loader-augment-out-of-range",
        lambda: GpuLoader(images(), labels(), **NORM).augment(torch.tensor([16])),
        ValueError,
        r"idx must be 1-D image indices in \[0, 16\), got \[16\]",
    ),
    (
        "loader-augment-float",
        lambda: GpuLoader(images(), labels(), **NORM).augment(torch.tensor([1.5])),
        TypeError,
        "idx must be integer image indices",
    ),
    ("loader-augment-list", lambda: GpuLoader(images(), labels(), **NORM).augment([0, 0, 3]).shape, None, ""),
    (
        "loader-set-epoch-float",
        lambda: GpuLoader(images(), labels(), **NORM).set_epoch(1.5),
        TypeError,
        "epoch must be an integer",
    ),
    (
        "loader-set-epoch-negative",
        lambda: GpuLoader(images(), labels(), **NORM).set_epoch(-1),
        ValueError,
        "epoch must be an integer >= 0",
    ),
    # data and checkpoints
    (
        "load-cifar-download-str",
        lambda: xl.data.load_cifar("cifar10", download="no"),
        TypeError,
        "download must be True or False",
    ),
    ("subset-float", lambda: data().subset(train=2.5), TypeError, "train must be an integer"),
    ("subset-numpy", lambda: data().subset(train=np.int64(4)).train_labels.shape, None, ""),
    ("subset-too-many", lambda: data().subset(test=17), ValueError, "test must be an integer >= 1 and <= 16"),
    (
        "load-cifar-missing-root",
        lambda: xl.data.load_cifar("cifar10", "/nonexistent"),
        xl.data.DataNotFoundError,
        "does not exist",
    ),
    ("load-cifar-name", lambda: xl.data.load_cifar(10), ValueError, "name must be one of"),
    (
        "checkpoint-folder",
        lambda: load_checkpoint(Path(__file__).parent),
        IsADirectoryError,
        "is a folder, not a checkpoint file",
    ),
]


@pytest.mark.parametrize(("call", "error", "match"), [pytest.param(*case[1:], id=case[0]) for case in CASES])
def test_bad_input(call: Callable[[], object], error: type[BaseException] | None, match: str) -> None:
    if error is None:
        call()
        return
    with pytest.raises(error, match=match):
        call()


def test_numpy_numbers_in_a_config_become_python_numbers() -> None:
    cfg = TrainConfig(epochs=np.int64(2), lr=np.float32(0.5), seed=np.uint8(3))
    assert (type(cfg.epochs), type(cfg.lr), type(cfg.seed)) == (int, float, int) and cfg.epochs == 2
    assert json.loads(json.dumps(dataclasses.asdict(cfg)))["lr"] == pytest.approx(0.5)


def test_channels_last_images_give_the_same_batches() -> None:
    x, y = images(), labels()
    plain = list(GpuLoader(x, y, **NORM, batch_size=4, seed=1))
    nhwc = list(GpuLoader(x.contiguous(memory_format=torch.channels_last), y, **NORM, batch_size=4, seed=1))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(plain, nhwc, strict=False))
