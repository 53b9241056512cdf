"""Tests of xception_lib.train (the recipe and its checks, train_step, fit) and xception_lib.evaluation."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
from torch import nn

import xception_lib as xl
from xception_lib.checkpoint import CHECKPOINT_NAME, load_checkpoint
from xception_lib.evaluation import confusion_matrix, evaluate, predict
from xception_lib.history import NonFiniteLossError
from xception_lib.loader import GpuLoader
from xception_lib.train import TrainConfig, fit, lr_at, recommended_config, train_step

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def small(cifar10: xl.data.CifarArrays) -> xl.data.CifarArrays:
    """512 real training and 200 real test images."""
    return cifar10.subset(train=512, test=200, seed=0)


def tiny_model(seed: int = 0, dropout: float = 0.0) -> xl.Xception:
    """An eighth-width Xception with one middle block: the real layout, fast on a CPU."""
    torch.manual_seed(seed)
    return xl.xception_cifar(width_multiplier=0.125, middle_blocks=1, dropout=dropout)


def quick_config(**overrides: object) -> TrainConfig:
    base = recommended_config("cpu", epochs=3, batch_size=32, train_subset=None, test_subset=None, lr=0.05)
    return dataclasses.replace(base, **overrides)


# ----------------------------------------------------------------------------- the recipe


def test_schedules_warm_up_then_decay() -> None:
    cfg = TrainConfig(lr=0.4, warmup=0.2, schedule="onecycle")
    lrs = [lr_at(cfg, s, 100) for s in range(100)]
    assert lrs[0] == pytest.approx(0.4 / 20) and max(lrs) == pytest.approx(0.4) and lrs.index(max(lrs)) == 19
    assert all(a < b for a, b in zip(lrs[:19], lrs[1:20], strict=False)) and all(
        a > b for a, b in zip(lrs[19:], lrs[20:], strict=False)
    )
    assert 0 < lrs[-1] < 0.4 * 0.02
    cos = [lr_at(dataclasses.replace(cfg, schedule="cosine"), s, 100) for s in range(100)]
    assert cos[:20] == lrs[:20] and cos[20 + 40] == pytest.approx(0.4 * 0.5 * (1 + math.cos(math.pi * 41 / 81)))
    with pytest.raises(ValueError, match="step must be an integer >= 0 and < 100, got 100"):
        lr_at(cfg, 100, 100)


@pytest.mark.parametrize(
    ("field", "value", "error", "match"),
    [
        ("lr", math.nan, ValueError, "lr must be a finite number > 0, got nan"),
        ("lr", -0.1, ValueError, "lr must be"),
        ("epochs", 1.5, TypeError, r"epochs must be an integer >= 1, got 1.5 \(float\)"),
        ("epochs", "3", TypeError, "epochs must be an integer"),
        ("batch_size", 0, ValueError, "batch_size must be an integer >= 1, got 0"),
        ("batch_size", True, TypeError, "batch_size"),
        ("label_smoothing", 2, ValueError, "label_smoothing must be a finite number >= 0 and < 1, got 2"),
        ("warmup", 1.0, ValueError, "warmup"),
        ("momentum", math.inf, ValueError, "momentum"),
        ("weight_decay", -1e-4, ValueError, "weight_decay"),
        ("train_subset", 0, ValueError, "train_subset must be an integer >= 1 or None"),
        ("max_steps", 2.0, TypeError, "max_steps"),
        ("grad_clip", math.nan, ValueError, "grad_clip"),
        ("crop_padding", -1, ValueError, "crop_padding"),
        ("seed", -1, ValueError, "seed"),
        ("nesterov", 1, TypeError, "nesterov must be True or False"),
        ("optimizer", "lamb", ValueError, "optimizer must be one of"),
        ("amp", "fp8", ValueError, "amp must be one of"),
    ],
)
def test_config_names_the_bad_field(field: str, value: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match) as caught:
        TrainConfig(**{field: value})
    assert str(caught.value).startswith("TrainConfig: ")


def test_presets() -> None:
    full = recommended_config("cuda")
    short = recommended_config("cuda", full=False)
    preview = recommended_config("cpu")
    assert (
        not full.is_preview
        and full.train_subset is None
        and full == TrainConfig()
        and full.epochs == xl.train.FULL_EPOCHS
    )
    assert short == dataclasses.replace(full, epochs=10) and short.epochs < full.epochs
    assert preview.is_preview and preview.train_subset is not None and preview.epochs < full.epochs
    assert recommended_config("cpu", full=False) == preview  # a CPU always gets the preview
    assert preview.describe().startswith("PREVIEW") and full.describe().startswith("Full schedule")
    assert short.describe().startswith("Short schedule (10 of the full 30 epochs)")
    assert all(len(line) <= 88 for cfg in (full, short, preview) for line in cfg.describe().splitlines())
    assert recommended_config("cpu", epochs=7).epochs == 7
    assert recommended_config("cuda", is_preview=True, epochs=1).describe().startswith("PREVIEW")


@pytest.mark.slow
def test_no_weight_decay_on_norms_and_biases() -> None:
    model = tiny_model()
    decay, no_decay = xl.train._make_optimizer(model, TrainConfig(weight_decay=5e-4)).param_groups
    decayed = {id(p) for p in decay["params"]}
    for name, module in model.named_modules():
        if isinstance(module, nn.BatchNorm2d):
            assert id(module.weight) not in decayed and id(module.bias) not in decayed, name
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            assert id(module.weight) in decayed, name
    assert id(model.head.fc.bias) not in decayed
    assert no_decay["weight_decay"] == 0 and decay["weight_decay"] == 5e-4
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


# ----------------------------------------------------------------------------- fit


@pytest.mark.data
@pytest.mark.slow
def test_loss_falls_on_real_images(small: xl.data.CifarArrays) -> None:
    model = tiny_model()
    history = fit(model, small, quick_config(epochs=4, lr=0.1), device="cpu", progress=False)
    assert history.epochs == 4 and history.steps == 4 * (512 // 32)
    first, last = sum(history.step_loss[:8]) / 8, sum(history.step_loss[-8:]) / 8
    assert last < first - 0.1, (first, last)
    assert history.train_loss[-1] < history.train_loss[0]
    assert all(0 <= a <= 1 for a in history.test_acc) and all(r > 0 for r in history.images_per_sec)
    assert history.meta["config"]["epochs"] == 4 and history.meta["parameters"] == sum(
        p.numel() for p in model.parameters()
    )
    assert history.step_lr[0] < max(history.step_lr) and history.step_lr[-1] < max(history.step_lr) / 5


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class _Interrupt(Exception):
    pass


@pytest.mark.data
@pytest.mark.slow
def test_resume_is_exact(small: xl.data.CifarArrays, tmp_path: Path) -> None:
    data = small.subset(train=128, test=64, seed=1)
    cfg = quick_config(epochs=3, batch_size=16)

    full = tiny_model(seed=0, dropout=0.2)  # dropout: random numbers must be replayed too
    full_history = fit(full, data, cfg, device="cpu", checkpoint_dir=tmp_path / "a", progress=False)

    def stop_after_first_epoch(epoch: int, history: xl.history.History) -> None:
        if epoch == 0:
            raise _Interrupt

    interrupted = tiny_model(seed=0, dropout=0.2)
    with pytest.raises(_Interrupt):
        fit(
            interrupted,
            data,
            cfg,
            device="cpu",
            checkpoint_dir=tmp_path / "b",
            progress=False,
            callbacks=[stop_after_first_epoch],
        )
    assert load_checkpoint(tmp_path / "b" / CHECKPOINT_NAME)["epoch"] == 1

    resumed = tiny_model(seed=123, dropout=0.2)  # a fresh session: different initial weights
    history = fit(resumed, data, cfg, device="cpu", checkpoint_dir=tmp_path / "b", progress=False)
    want, got = _state(full), _state(resumed)
    assert want.keys() == got.keys()
    for key in want:
        assert torch.equal(want[key], got[key]), f"{key} differs after resuming"
    assert history.step_loss == full_history.step_loss and history.test_acc == full_history.test_acc
    assert history.epochs == 3
    assert not list((tmp_path / "b").glob("*.tmp"))  # no leftovers of the atomic writes

    # Resuming a finished run does nothing; a different config is refused.
    again = fit(resumed, data, cfg, device="cpu", checkpoint_dir=tmp_path / "b", progress=False)
    assert again.epochs == 3 and torch.equal(_state(resumed)["head.fc.weight"], got["head.fc.weight"])
    with pytest.raises(ValueError, match="lr"):
        fit(
            resumed, data, dataclasses.replace(cfg, lr=0.2), device="cpu", checkpoint_dir=tmp_path / "b", progress=False
        )


@pytest.mark.data
def test_seeded_runs_are_reproducible(small: xl.data.CifarArrays) -> None:
    data = small.subset(train=64, test=32, seed=2)
    cfg = quick_config(epochs=1, batch_size=16)
    a, b = tiny_model(seed=0), tiny_model(seed=0)
    torch.manual_seed(999)
    before = torch.rand(1)
    torch.manual_seed(999)
    fit(a, data, cfg, device="cpu", progress=False)
    assert torch.equal(torch.rand(1), before)  # fit leaves the caller's random state alone
    fit(b, data, cfg, device="cpu", progress=False)
    assert all(torch.equal(x, y) for x, y in zip(_state(a).values(), _state(b).values(), strict=False))
    c = tiny_model(seed=0)
    fit(c, data, dataclasses.replace(cfg, seed=1), device="cpu", progress=False)
    assert not torch.equal(_state(a)["head.fc.weight"], _state(c)["head.fc.weight"])


class _NanAfter(nn.Module):
    """Wraps a model and returns NaN logits from the ``bad_call``-th forward pass on (0-based)."""

    def __init__(self, model: nn.Module, bad_call: int) -> None:
        super().__init__()
        self.model, self.bad_call, self.calls = model, bad_call, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        self.calls += 1
        return out * float("nan") if self.calls > self.bad_call else out


@pytest.mark.data
def test_non_finite_loss_names_the_step(small: xl.data.CifarArrays, tmp_path: Path) -> None:
    data = small.subset(train=128, test=32, seed=3)
    model = _NanAfter(tiny_model(), bad_call=5)
    cfg = quick_config(epochs=2, batch_size=16, log_every=4)  # found at a flush, named exactly
    with pytest.raises(NonFiniteLossError, match=r"at step 5 \(epoch 1, batch 6"):
        fit(model, data, cfg, device="cpu", progress=False, checkpoint_dir=tmp_path)
    assert not (tmp_path / CHECKPOINT_NAME).exists()  # no checkpoint of a diverged epoch
    assert issubclass(NonFiniteLossError, FloatingPointError)


@pytest.mark.data
def test_progress_bar_and_channels_last(small: xl.data.CifarArrays, capsys: pytest.CaptureFixture[str]) -> None:
    data = small.subset(train=32, test=16, seed=4)
    model = tiny_model()
    cfg = quick_config(epochs=1, batch_size=16, channels_last=True, is_preview=True)
    fit(model, data, cfg, device="cpu", progress=True)
    captured = capsys.readouterr()
    assert "preview epoch 1/1" in captured.out + captured.err
    assert model.stem.conv1.weight.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.data
def test_max_steps_fits_the_schedule(small: xl.data.CifarArrays) -> None:
    data = small.subset(train=64, test=16, seed=5)
    history = fit(tiny_model(), data, quick_config(epochs=5, batch_size=16, max_steps=6), device="cpu", progress=False)
    assert history.steps == 6 and history.epochs == 2  # 4 steps, then 2 of the next epoch
    assert history.meta["total_steps"] == 6 and history.step_lr[-1] < max(history.step_lr) / 2


# ----------------------------------------------------------------------------- evaluation


@pytest.mark.data
def test_evaluate_predict_and_confusion_matrix(small: xl.data.CifarArrays) -> None:
    model = tiny_model()
    images, labels = small.test_images[:50], small.test_labels[:50]
    norm = {"mean": small.mean, "std": small.std}
    probabilities = predict(model, images, **norm, batch_size=20)
    assert probabilities.shape == (50, 10) and torch.allclose(probabilities.sum(1), torch.ones(50), atol=1e-5)
    accuracy = evaluate(model, images, labels, **norm, batch_size=20)
    assert accuracy == pytest.approx(float((probabilities.argmax(1) == labels).double().mean()))
    assert model.training  # restored
    matrix = confusion_matrix(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 2, 2]), 3)
    assert matrix.tolist() == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]
    with pytest.raises(ValueError, match="same shape"):
        confusion_matrix(torch.zeros(3), torch.zeros(4), 3)
    with pytest.raises(ValueError, match=r"labels must be class indices in \[0, 3\), got values from 0 to 3"):
        confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, 3]), 3)


@pytest.mark.data
def test_inputs_must_be_uint8_images_and_labels_of_the_model(small: xl.data.CifarArrays) -> None:
    model = tiny_model()
    images, labels = small.test_images[:8], small.test_labels[:8]
    norm = {"mean": small.mean, "std": small.std}
    normalised = (images.float() / 255 - torch.tensor(small.mean).view(1, 3, 1, 1)) / torch.tensor(small.std).view(
        1, 3, 1, 1
    )
    for call in (lambda: predict(model, normalised, **norm), lambda: evaluate(model, normalised, labels, **norm)):
        with pytest.raises(TypeError, match=r"images must be uint8 images N x C x H x W \(0-255.*normalises them"):
            call()
    with pytest.raises(ValueError, match=r"labels must be class indices in \[0, 10\), got values from .* to 10"):
        evaluate(model, images, torch.cat([labels[:-1], torch.tensor([10])]), **norm)
    with pytest.raises(TypeError, match="labels must be an integer tensor"):
        evaluate(model, images, labels.float(), **norm)
    # fit: float images, and labels beyond the model's classes (CIFAR-100 labels for a 10-class model)
    floats = dataclasses.replace(small, train_images=small.train_images.float())
    with pytest.raises(TypeError, match=r"data.train_images must be uint8"):
        fit(model, floats, quick_config(epochs=1), device="cpu", progress=False)
    hundred = dataclasses.replace(small, test_labels=small.test_labels * 10)
    with pytest.raises(ValueError, match=r"data.test_labels must be class indices in \[0, 10\)"):
        fit(model, hundred, quick_config(epochs=1), device="cpu", progress=False)
    with pytest.raises(TypeError, match="data must be a CifarArrays"):
        fit(model, {"train_images": images}, quick_config(epochs=1), device="cpu", progress=False)
    with pytest.raises(ValueError, match="batch_size 1024 exceeds the 512 training images"):
        fit(model, small, quick_config(epochs=1, batch_size=1024), device="cpu", progress=False)


@pytest.mark.data
def test_fit_is_train_step_in_a_loop(small: xl.data.CifarArrays) -> None:
    """One epoch of fit equals a plain loop of train_step over the same batches, bit for bit."""
    data = small.subset(train=64, test=16, seed=6)
    cfg = quick_config(epochs=1, batch_size=16, channels_last=False, amp="off")
    by_fit, by_hand = tiny_model(), tiny_model()
    history = fit(by_fit, data, cfg, device="cpu", progress=False)
    loader = GpuLoader(data.train_images, data.train_labels, batch_size=16, seed=cfg.seed, mean=data.mean, std=data.std)
    optimizer = xl.train._make_optimizer(by_hand, cfg)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    losses = []
    by_hand.train()
    for step, (images, labels) in enumerate(loader):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(cfg, step, len(loader))
        loss, logits = train_step(by_hand, images, labels, optimizer, scaler, None, label_smoothing=cfg.label_smoothing)
        assert logits.shape == (16, 10) and not loss.requires_grad and not logits.requires_grad
        losses.append(loss.item())
    assert losses == history.step_loss
    assert all(torch.equal(a, b) for a, b in zip(_state(by_fit).values(), _state(by_hand).values(), strict=False))


# ----------------------------------------------------------------------------- history, checkpoint, plots


@pytest.mark.data
def test_no_text_bar_in_a_notebook_without_widgets(
    small: xl.data.CifarArrays, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import sys
    import types

    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # importing it raises ImportError
    assert xl.runtime.progress_bar(10, 0, "x", True).disable
    fit(
        tiny_model(),
        small.subset(train=32, test=16),
        quick_config(epochs=1, batch_size=16),
        device="cpu",
        progress=True,
    )
    captured = capsys.readouterr()
    assert "epoch 1/1: train loss" in captured.out and "\r" not in captured.out + captured.err
