"""Visualisations: panel counts, channel choice, hooks removed, statistics, and the model fallback."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest
import torch

import xception_lib as xl
from xception_lib.chapters import viz

plt = pytest.importorskip("matplotlib.pyplot")


@pytest.fixture(autouse=True)
def close_figures() -> None:
    yield
    plt.close("all")


@pytest.fixture
def model(tiny_cfg: xl.XceptionConfig) -> xl.Xception:
    torch.manual_seed(0)
    return xl.Xception(tiny_cfg).eval()


@pytest.fixture
def image(image_71: torch.Tensor) -> torch.Tensor:
    return image_71[0]


def no_hooks(model: torch.nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


# ----------------------------------------------------------------- channels and feature maps


def test_active_channels_are_ranked_by_mean_after_relu() -> None:
    act = torch.zeros(5, 4, 4)
    act[3] = 2.0
    act[1] = 1.0
    act[0] = -10.0  # large but negative: ReLU removes it
    assert viz.select_channels(act, "active", 2) == [3, 1]


def test_random_channels_depend_on_the_seed_only() -> None:
    act = torch.randn(64, 3, 3)
    a = viz.select_channels(act, "random", 8, seed=1)
    assert a == viz.select_channels(act, "random", 8, seed=1)
    assert a != viz.select_channels(act, "random", 8, seed=2)
    assert len(set(a)) == 8 and all(0 <= i < 64 for i in a)


def test_channel_choice_errors() -> None:
    act = torch.randn(4, 3, 3)
    with pytest.raises(ValueError, match=r"\[0, 3\]"):
        viz.select_channels(act, [1, 4])
    with pytest.raises(ValueError, match=r"n must be in \[1, 4\]"):
        viz.select_channels(act, "active", 5)
    with pytest.raises(ValueError, match="'active', 'random'"):
        viz.select_channels(act, "brightest", 2)


def test_feature_maps_one_panel_per_channel(model: xl.Xception, image: torch.Tensor) -> None:
    fig = viz.plot_feature_maps(model, image, "entry_flow.block2", n=10, ncols=4)
    assert len(fig.axes) == 10
    assert fig.get_suptitle().startswith("entry_flow.block2")
    chosen = [0, 5, 7]
    fig = viz.plot_feature_maps(model, image, "stem", channels=chosen, normalize="stage")
    assert [ax.get_title() for ax in fig.axes] == [f"ch {i}" for i in chosen]


def test_feature_maps_reject_an_unknown_stage(model: xl.Xception, image: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="stage must be one of"):
        viz.plot_feature_maps(model, image, "middle_flow.block9")


def test_stage_outputs_match_forward_intermediates(model: xl.Xception, image_71: torch.Tensor) -> None:
    outs = viz.stage_outputs(model, image_71)
    with torch.no_grad():
        expected = model.forward_intermediates(image_71)
    assert list(outs) == list(expected)
    for name in outs:
        torch.testing.assert_close(outs[name], expected[name])


def test_stages_grid_has_a_row_per_stage(model: xl.Xception, image: torch.Tensor) -> None:
    fig = viz.plot_stages(model, image, n=3)
    assert len(fig.axes) == len(model.stages()) * 3
    assert fig.axes[0].get_ylabel().startswith("stem")
    fig = viz.plot_stages(model, image, n=2, stages=["stem", "exit_flow"])
    assert len(fig.axes) == 4


def test_first_filters_one_patch_per_filter(model: xl.Xception) -> None:
    fig = viz.plot_first_filters(model, ncols=3)
    assert len(fig.axes) == model.stem.conv1.out_channels == 8
    patch = fig.axes[0].images[0].get_array()
    assert patch.shape == (3, 3, 3) and 0.0 <= patch.min() and patch.max() <= 1.0


# ----------------------------------------------------------------- the separable convolution


def test_separable_steps_panels_and_hook_removed(model: xl.Xception, image: torch.Tensor) -> None:
    fig = viz.plot_separable_steps(model, image, "middle_flow.block1.layers.sep2", inputs=3, outputs=2)
    assert len(fig.axes) == 3 * 3 + 1 + 2
    assert no_hooks(model)


def test_captured_input_is_what_the_layer_receives(model: xl.Xception, image_71: torch.Tensor) -> None:
    captured = viz._separable_input(model, image_71, "entry_flow.block1.layers.sep1")
    stem = viz.stage_outputs(model, image_71)["stem"]  # block1 starts without a ReLU
    torch.testing.assert_close(captured, stem)
    assert no_hooks(model)


def test_hook_is_removed_when_the_forward_pass_fails(model: xl.Xception) -> None:
    with pytest.raises(ValueError, match="input channels"):
        viz._separable_input(model, torch.zeros(1, 1, 71, 71), "entry_flow.block1.layers.sep1")
    assert no_hooks(model)


def test_separable_steps_reject_a_layer_that_is_not_separable(model: xl.Xception, image: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="SeparableConv2d"):
        viz.plot_separable_steps(model, image, "stem.conv1")
    with pytest.raises(ValueError, match="SeparableConv2d"):
        viz.plot_separable_steps(model, image, "middle_flow.block9.layers.sep1")


# ----------------------------------------------------------------- statistics and predictions


def test_activation_statistics(model: xl.Xception, image_71: torch.Tensor) -> None:
    stats = viz.activation_statistics(model, image_71)
    assert [r["stage"] for r in stats] == list(model.stages())
    with torch.no_grad():
        outs = model.forward_intermediates(image_71)
    for row in stats:
        act = outs[row["stage"]]
        assert row["channels"] == act.shape[1]
        assert row["sparsity"] == pytest.approx(float((act <= 0).float().mean()))
        assert row["mean_relu"] == pytest.approx(float(act.clamp_min(0).mean()), rel=1e-5)
        never_positive = [c for c in range(act.shape[1]) if not bool((act[:, c] > 0).any())]
        assert row["dead_channels"] == pytest.approx(len(never_positive) / act.shape[1])
    stem = stats[0]  # the stem ends with a ReLU: its output is its own ReLU
    assert stem["mean"] == pytest.approx(stem["mean_relu"], rel=1e-5)


def test_statistics_plot_has_four_panels_and_a_legend_when_comparing(model: xl.Xception, image_71: torch.Tensor) -> None:
    stats = viz.activation_statistics(model, image_71)
    assert len(viz.plot_activation_statistics(stats).axes) == 4
    fig = viz.plot_activation_statistics({"images": stats, "again": stats})
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["images", "again"]


def test_top_k_is_sorted_probabilities(model: xl.Xception, image_71: torch.Tensor) -> None:
    names = [f"c{i}" for i in range(7)]
    preds = viz.top_k(model, image_71, names, k=3)
    assert len(preds) == 2 and all(len(p) == 3 for p in preds)
    for pairs in preds:
        probs = [p for _, p in pairs]
        assert probs == sorted(probs, reverse=True) and sum(probs) <= 1.0 + 1e-6
    with pytest.raises(ValueError, match="expected 7 class names"):
        viz.top_k(model, image_71, names[:5])


def test_top_k_plot_two_panels_per_image(model: xl.Xception, image_71: torch.Tensor) -> None:
    fig = viz.plot_top_k(model, image_71, [f"c{i}" for i in range(7)], k=4)
    assert len(fig.axes) == 4


# ----------------------------------------------------------------- which model is available


def fail_download(**_: object) -> xl.Xception:
    raise OSError("simulated: no network")


def test_falls_back_to_a_labelled_random_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(viz, "load_pretrained_imagenet", fail_download)
    rng = torch.get_rng_state()
    model, description, kind = viz.load_best_available_model(checkpoint=tmp_path / "missing.pt")
    assert kind == "random"
    assert description.startswith("Offline:") and "RANDOMLY INITIALISED" in description
    assert "OSError" in description and "missing.pt" in description
    assert "\n" not in description
    assert model.config == xl.XceptionConfig.timm_port() and not model.training
    assert torch.equal(torch.get_rng_state(), rng)  # the seed did not touch the global RNG


def test_falls_back_to_a_cifar_checkpoint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = xl.XceptionConfig.cifar(width_multiplier=0.125, middle_blocks=1)
    trained = xl.Xception(cfg)
    path = tmp_path / "ckpt.pt"
    torch.save({"model": trained.state_dict(), "config": dataclasses.asdict(cfg), "epoch": 3}, path)
    monkeypatch.setattr(viz, "load_pretrained_imagenet", fail_download)
    monkeypatch.setenv(viz.CHECKPOINT_ENV, str(path))
    model, description, kind = viz.load_best_available_model()
    assert kind == "cifar10" and str(path) in description
    assert model.config == cfg
    for key, value in trained.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value)


def test_unreadable_checkpoint_falls_back_to_random(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "broken.pt"
    path.write_bytes(b"not a checkpoint")
    monkeypatch.setattr(viz, "load_pretrained_imagenet", fail_download)
    _, description, kind = viz.load_best_available_model(checkpoint=path)
    assert kind == "random" and "unreadable" in description


def test_offline_environment_skips_the_download(monkeypatch: pytest.MonkeyPatch) -> None:
    import timm

    def must_not_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("a download was attempted although HF_HUB_OFFLINE=1")

    monkeypatch.setattr(viz, "_cached_weights", lambda url: None)
    monkeypatch.setattr(timm, "create_model", must_not_run)
    monkeypatch.delenv("XCEPTION_OFFLINE", raising=False)  # CI sets it; this test is about HF_HUB_OFFLINE
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError, match="HF_HUB_OFFLINE"):
        viz.load_pretrained_imagenet()


def test_unreachable_host_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(viz, "_timm_weights_url", lambda: "https://weights.invalid/xception.pth")
    for name in viz.OFFLINE_ENVS:
        monkeypatch.delenv(name, raising=False)
    start = time.perf_counter()
    with pytest.raises(OSError):
        viz.load_pretrained_imagenet(timeout_s=1.0)
    assert time.perf_counter() - start < 5.0


def test_class_names_for_each_kind() -> None:
    assert len(viz.class_names_for("imagenet", 1000)) == 1000
    assert viz.class_names_for("cifar10")[3] == "cat"
    with pytest.raises(ValueError, match="expected a model with 10 outputs"):
        viz.class_names_for("cifar10", 100)
