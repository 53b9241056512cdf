"""Tests of xception_lib.checkpoint: atomic writes, the checkpoint `fit` writes, and what resuming refuses."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
import torch

import xception_lib as xl
from xception_lib.checkpoint import CHECKPOINT_NAME, CheckpointError, atomic_save, load_checkpoint
from xception_lib.train import TrainConfig, fit

pytestmark = pytest.mark.usefixtures("one_thread")

CFG = TrainConfig(epochs=2, batch_size=16, lr=0.05, amp="off", eval_batch_size=32, log_every=2, channels_last=False)


def synthetic(train: int = 64, test: int = 32, seed: int = 0) -> xl.data.CifarArrays:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (train + test, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (train + test,), generator=g)
    classes = tuple(f"class {i}" for i in range(10))
    return xl.data.CifarArrays(
        "cifar10", images[:train], labels[:train], images[train:], labels[train:], classes, "synthetic"
    )


def tiny(**overrides: object) -> xl.Xception:
    torch.manual_seed(0)
    return xl.xception_cifar(width_multiplier=0.125, middle_blocks=1, **overrides)


class _Stop(Exception):
    pass


def _stop_after_first_epoch(epoch: int, history: xl.history.History) -> None:
    raise _Stop


def interrupted_run(folder: Path, **model_overrides: object) -> Path:
    """A run stopped after its first epoch: its checkpoint."""
    with pytest.raises(_Stop):
        fit(
            tiny(**model_overrides),
            synthetic(),
            CFG,
            device="cpu",
            checkpoint_dir=folder,
            progress=False,
            callbacks=[_stop_after_first_epoch],
        )
    return folder / CHECKPOINT_NAME


# ----------------------------------------------------------------------------- writing


class _Unpicklable:
    def __reduce__(self) -> tuple[object, ...]:
        raise RuntimeError("cannot pickle")


def test_atomic_save_keeps_the_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "ckpt.pt"
    atomic_save({"epoch": 1}, target)
    with pytest.raises(RuntimeError, match="cannot pickle"):
        atomic_save({"epoch": 2, "bad": _Unpicklable()}, target)
    assert load_checkpoint(target) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_fit_writes_the_model_and_both_configs(tmp_path: Path) -> None:
    """Issue 14, 1: the checkpoint loads as a model (chapter 7 reads it so) without the trainer."""
    model = tiny(dropout=0.1)
    fit(model, synthetic(), dataclasses.replace(CFG, epochs=1), device="cpu", checkpoint_dir=tmp_path, progress=False)
    state = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    assert {"model", "model_config", "train_config", "data", "epoch", "optimizer", "scaler", "history"} <= set(state)
    assert "config" not in state and state["format"] == xl.checkpoint.FORMAT
    assert state["train_config"] == dataclasses.asdict(dataclasses.replace(CFG, epochs=1))
    config = xl.XceptionConfig(**state["model_config"])
    assert config == model.config
    rebuilt = xl.Xception(config)
    rebuilt.load_state_dict(state["model"])
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(rebuilt.eval()(x), model.eval()(x))


def test_a_model_without_a_config_stores_none(tmp_path: Path) -> None:
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 10)
    )
    fit(model, synthetic(), dataclasses.replace(CFG, epochs=1), device="cpu", checkpoint_dir=tmp_path, progress=False)
    state = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    assert state["model_config"] is None and state["model_class"] == "Sequential"


# ----------------------------------------------------------------------------- resuming another run


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"intermediate_activation": "relu"}, "model_config.intermediate_activation"),
        ({"dropout": 0.3}, "model_config.dropout"),
    ],
)
def test_resume_refuses_another_model_of_the_same_shapes(
    tmp_path: Path, overrides: dict[str, object], field: str
) -> None:
    """Issue 14, 2: an ablation with identical tensor shapes does not continue the old run."""
    path = interrupted_run(tmp_path)
    with pytest.raises(CheckpointError, match=field) as caught:
        fit(tiny(**overrides), synthetic(), CFG, device="cpu", checkpoint_dir=tmp_path, progress=False)
    message = str(caught.value)
    assert str(path) in message and "resume=False" in message and "another checkpoint_dir" in message
    history = fit(
        tiny(**overrides), synthetic(), CFG, device="cpu", checkpoint_dir=tmp_path, progress=False, resume=False
    )
    assert (
        history.epochs == 2
        and history.meta["model_config"]["intermediate_activation"] == tiny(**overrides).config.intermediate_activation
    )


def test_resume_refuses_other_data_and_another_recipe(tmp_path: Path) -> None:
    path = interrupted_run(tmp_path)
    with pytest.raises(CheckpointError, match=r"data\.sha256") as caught:
        fit(tiny(), synthetic(seed=1), CFG, device="cpu", checkpoint_dir=tmp_path, progress=False)
    assert str(path) in str(caught.value)
    with pytest.raises(CheckpointError, match=r"data\.train_images: 64 -> 48"):
        fit(tiny(), synthetic(train=48), CFG, device="cpu", checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match=r"train_config\.lr: 0\.05 -> 0\.1"):  # CheckpointError is a ValueError
        fit(
            tiny(), synthetic(), dataclasses.replace(CFG, lr=0.1), device="cpu", checkpoint_dir=tmp_path, progress=False
        )
    history = fit(
        tiny(), synthetic(), CFG, device="cpu", checkpoint_dir=tmp_path, progress=False
    )  # the same run continues
    assert history.epochs == 2


# ----------------------------------------------------------------------------- unreadable files


def _truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:1000])


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (_truncated, "not a readable checkpoint"),
        (lambda p: p.write_text("epoch: 3\n"), "not a readable checkpoint"),
        (lambda p: p.write_bytes(b""), "it is empty"),
        (lambda p: torch.save(tiny().state_dict(), p), r"not a training checkpoint of xception_lib.train.fit"),
        (lambda p: torch.save([1, 2], p), "holds a list"),
    ],
    ids=["truncated", "text", "empty", "state-dict", "list"],
)
def test_an_unreadable_checkpoint_names_the_file(tmp_path: Path, damage: object, match: str) -> None:
    """Issue 14, 5: a clear error naming the file and how to start afresh, never a raw pickle error."""
    path = interrupted_run(tmp_path)
    damage(path)  # type: ignore[operator]
    with pytest.raises(CheckpointError, match=match) as caught:
        fit(tiny(), synthetic(), CFG, device="cpu", checkpoint_dir=tmp_path, progress=False)
    message = str(caught.value)
    assert str(path) in message and "resume=False" in message and "weights_only" not in message
    assert (
        fit(tiny(), synthetic(), CFG, device="cpu", checkpoint_dir=tmp_path, progress=False, resume=False).epochs == 2
    )


def test_a_checkpoint_dir_that_is_a_file_fails_before_training(tmp_path: Path) -> None:
    target = tmp_path / "runs"
    target.write_text("not a folder")
    epochs: list[int] = []
    with pytest.raises(NotADirectoryError, match=f"checkpoint_dir {target} is a file"):
        fit(
            tiny(),
            synthetic(),
            CFG,
            device="cpu",
            checkpoint_dir=target,
            progress=False,
            callbacks=[lambda e, h: epochs.append(e)],
        )
    assert epochs == []


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs a non-root POSIX user for permissions")
def test_an_unwritable_checkpoint_dir_fails_before_training(tmp_path: Path) -> None:
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(PermissionError):
            fit(tiny(), synthetic(), CFG, device="cpu", checkpoint_dir=tmp_path / "new", progress=False)
    finally:
        tmp_path.chmod(0o700)


# ----------------------------------------------------------------------------- a full disk (issue 24)


@pytest.mark.parametrize(
    "failure",
    [
        RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 4096 vs 0"),
        OSError(28, "No space left on device"),
    ],
    ids=["torch-writer", "enospc"],
)
def test_a_failed_write_is_an_io_error_naming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: Exception
) -> None:
    target = tmp_path / "ckpt.pt"
    atomic_save({"epoch": 1}, target)

    def full_disk(obj: object, f: object) -> None:
        raise failure

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match=f"writing {target} failed, an I/O error .*is the disk full") as raised:
        atomic_save({"epoch": 2}, target)
    assert raised.value.errno == (28 if isinstance(failure, OSError) else 5)
    monkeypatch.undo()
    assert load_checkpoint(target) == {"epoch": 1} and [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]
