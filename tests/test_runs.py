"""Training runs for the ledger (``xception_lib.runs``): the models, their costs and step times, the
recipes' Cutout, EMA and test-time flips, and the estimate chapter 5 prints."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import conv_macs, n_params
from torch import nn

import xception_lib as xl
from xception_lib import complexity as cx
from xception_lib import runs as xr
from xception_lib import timing
from xception_lib.chapters import experiments as ex

pytestmark = pytest.mark.usefixtures("one_thread")  # behaviour, not speed: one thread (conftest)


@pytest.fixture(scope="module")
def small_base() -> xl.XceptionConfig:
    """A quarter-width CIFAR base with one middle block: every layer kind, fast on a CPU."""
    return xl.XceptionConfig.cifar(width_multiplier=0.25, middle_blocks=1)


@pytest.fixture(scope="module")
def cifar(cifar10):
    """The CIFAR-10 copy (skipped where it is missing)."""
    return cifar10


def test_complexity_counts_the_built_model(small_base: xl.XceptionConfig) -> None:
    pytest.importorskip("fvcore", reason="the MAC counter; install xception_lib[tools]")
    cost = xr.complexity(small_base)
    assert cost["params"] == n_params(xl.Xception(small_base))
    assert xr.complexity("resnet18")["params"] == n_params(xr.build_model("resnet18"))
    assert cost["macs"] == cx.count_macs(xl.Xception(small_base), (1, 3, 32, 32))
    assert cost["macs"] > conv_macs(small_base)  # fvcore adds batch norm and pooling


def test_measure_step_time_is_positive_and_leaves_global_rng_alone(small_base: xl.XceptionConfig) -> None:
    state = torch.random.get_rng_state()
    t = xr.measure_step_time(small_base, batch_size=4, warmup=1, steps=2)
    assert t.median > 0 and len(t.times) == 2 and not t.truncated
    assert len(xr.measure_step_time(small_base, batch_size=4, warmup=0, steps=50, budget_s=1e-9).times) == 1
    assert torch.equal(state, torch.random.get_rng_state())
    with pytest.raises(ValueError, match=r"batch_size: expected a finite number in \[1"):
        xr.measure_step_time(small_base, batch_size=0)


def test_recipes_are_distinct_and_valid() -> None:
    names = [r.name for r in xr.RECIPES]
    assert len(set(names)) == len(names) and xr.recipe(names[0]) is xr.RECIPES[0]
    for r in xr.RECIPES:
        xl.train.recommended_config("cuda", **r.train)  # every override is a TrainConfig field with a valid value
        dataclasses.replace(xl.XceptionConfig.cifar(), **r.model)
    with pytest.raises(ValueError, match="unknown recipe"):
        xr.recipe("fastest")


def test_cutout_zeroes_one_square_per_training_image_and_eval_is_the_model() -> None:
    torch.manual_seed(0)
    inner = nn.Identity()
    wrapped = xr.WithExtras(inner, cutout=8).train()
    x = torch.ones(64, 3, 32, 32)
    zeroed = (wrapped(x) == 0).all(1)  # N x H x W: the pixels zeroed in every channel
    per_image = zeroed.sum((1, 2))
    assert per_image.max() == 64 and per_image.min() > 0  # an 8x8 square, cut where it crosses the border
    rows, cols = zeroed.any(2), zeroed.any(1)
    assert torch.equal(rows.sum(1) * cols.sum(1), per_image)  # a rectangle, not scattered pixels
    assert torch.equal(wrapped.eval()(x), x)


def test_ema_follows_the_weights_and_is_not_trained() -> None:
    model = nn.Linear(2, 2)
    wrapped = xr.WithExtras(model, ema=0.5)
    assert [id(p) for p in wrapped.parameters()] == [id(p) for p in model.parameters()]
    wrapped.train()(torch.zeros(1, 2))  # the first training forward copies the weights
    old = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    assert torch.allclose(wrapped.update_ema().weight, old + 0.5)  # halfway, with decay 0.5
    assert [id(p) for p in wrapped.parameters()] == [id(p) for p in model.parameters()]


def test_control_is_a_cifar_resnet18() -> None:
    model = xr.build_model("resnet18")
    assert 11.1e6 < n_params(model) < 11.2e6
    features: dict = {}
    model.layer1.register_forward_hook(lambda m, i, o: features.update(layer1=o.shape))
    with torch.no_grad():
        assert model.eval()(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert features["layer1"] == (2, 64, 32, 32)  # full resolution in the first stage


@pytest.mark.data
def test_flip_evaluation_agrees_with_the_trainer(cifar) -> None:
    cfg = ex.preview_train_config("cpu", train_subset=64, test_subset=64, batch_size=32)
    recipe = xr.Recipe("t", cutout=8, ema=0.9, tta_flip=True)
    run = xr.train_run(
        "t", ex.preview_base(), cfg, cifar, device="cpu", kind="recipe", study="race", extras=recipe, step_time=False
    )
    assert set(run.metrics) == {"tta_test_acc", "ema_test_acc", "ema_tta_test_acc"}
    assert run.extras == {"cutout": 8, "ema": 0.9, "tta_flip": True}
    model = xr.build_model(ex.preview_base())
    test = cifar.subset(test=64, seed=0)
    # the public pieces agree: accuracy without flips is the trainer's evaluate
    assert xr.test_accuracy(model, test, device="cpu") == pytest.approx(
        xl.evaluation.evaluate(model, test.test_images, test.test_labels, mean=test.mean, std=test.std)
    )


def test_estimate_multiplies_the_measured_step() -> None:
    text = xr.estimate(timing.Timing((0.1, 0.2, 0.3)), 600)
    assert "200 ms per step (median of 3; fastest 100 ms, slowest 300 ms)" in text
    assert "2.0 min (fastest to slowest step: 1.0-3.0 min)" in text and "cut" not in text
    assert "budget cut" in xr.estimate(timing.Timing((0.1,), truncated=True), 600)
