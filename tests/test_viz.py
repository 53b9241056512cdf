"""Visualisations: panel counts, channel choice, hooks removed, statistics, and the model fallback."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import xception_lib as xl
from xception_lib.chapters import gradcam, images, style, viz

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
    assert viz.select_channels(act, 2) == [3, 1]


def test_channel_choice_errors() -> None:
    with pytest.raises(ValueError, match=r"n must be in \[1, 4\]"):
        viz.select_channels(torch.randn(4, 3, 3), 5)


def test_feature_maps_one_panel_per_channel(model: xl.Xception, image: torch.Tensor) -> None:
    fig = viz.plot_feature_maps(model, image, "entry_flow.block2", n=10)
    assert len(fig.axes) == 10
    assert fig.get_suptitle().startswith("entry_flow.block2: 10 most active of")
    fig = viz.plot_feature_maps(model, image, "stem", n=3)
    act = viz.stage_outputs(model, image)["stem"][0]
    assert [ax.get_title() for ax in fig.axes] == [f"ch {i}" for i in viz.select_channels(act, 3)]


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


def test_first_filters_one_patch_per_filter(model: xl.Xception) -> None:
    fig = viz.plot_first_filters(model)
    assert len(fig.axes) == model.stem.conv1.out_channels == 8
    patch = fig.axes[0].images[0].get_array()
    assert patch.shape == (3, 3, 3) and 0.0 <= patch.min() and patch.max() <= 1.0


# ----------------------------------------------------------------- the separable convolution


def test_separable_steps_panels_and_hook_removed(model: xl.Xception, image: torch.Tensor) -> None:
    fig = viz.plot_separable_steps(model, image, "middle_flow.block1.layers.sep2", inputs=3, outputs=2)
    assert len(fig.axes) == 3 * 3 + 1 + 2
    assert no_hooks(model)
    steps = {sub._suptitle.get_text().split(",")[0]: sub._suptitle.get_color() for sub in fig.subfigs}
    assert steps == {"Step 1": style.colour("depthwise"), "Step 2": style.colour("pointwise")}


def test_captured_input_is_what_the_layer_receives(model: xl.Xception, image_71: torch.Tensor) -> None:
    module, captured = viz._separable_input(model, image_71, "entry_flow.block1.layers.sep1")
    assert module is model.get_submodule("entry_flow.block1.layers.sep1")
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
    assert list(stats.index) == list(model.stages())
    with torch.no_grad():
        outs = model.forward_intermediates(image_71)
    for stage, row in stats.iterrows():
        act = outs[stage]
        assert row["channels"] == act.shape[1]
        assert row["sparsity"] == pytest.approx(float((act <= 0).float().mean()))
        assert row["mean_relu"] == pytest.approx(float(act.clamp_min(0).mean()), rel=1e-5)
        assert row["std"] == pytest.approx(float(act.flatten().std()), rel=1e-5)
        never_positive = [c for c in range(act.shape[1]) if not bool((act[:, c] > 0).any())]
        assert row["dead_channels"] == pytest.approx(len(never_positive) / act.shape[1])


def test_statistics_plot_has_four_panels_and_a_legend_when_comparing(
    model: xl.Xception, image_71: torch.Tensor
) -> None:
    stats = viz.activation_statistics(model, image_71)
    assert len(viz.plot_activation_statistics({"images": stats}).axes) == 4
    fig = viz.plot_activation_statistics({"images": stats, "again": stats})
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["images", "again"]
    first, second = fig.axes[0].lines
    assert first.get_color() == style.colour("xception")  # the book's colour for the model
    assert second.get_color() != first.get_color() and second.get_linestyle() != first.get_linestyle()
    with pytest.raises(ValueError, match="at most 4"):
        viz.plot_activation_statistics({str(i): stats for i in range(5)})


def test_top_k_is_sorted_probabilities(model: xl.Xception, image_71: torch.Tensor) -> None:
    names = [f"c{i}" for i in range(7)]
    preds = viz.top_k(model, image_71, names, k=3)
    assert len(preds) == 2 and all(len(p) == 3 for p in preds)
    for pairs in preds:
        probs = [p for _, p in pairs]
        assert probs == sorted(probs, reverse=True) and sum(probs) <= 1.0 + 1e-6
    with pytest.raises(ValueError, match="expected 7 class names"):
        viz.top_k(model, image_71, names[:5])


@pytest.mark.slow
def test_figures_fit_the_column_with_readable_text(
    model: xl.Xception, image: torch.Tensor, image_71: torch.Tensor
) -> None:
    from matplotlib.text import Text

    stats = viz.activation_statistics(model, image_71)
    figures = {
        "feature maps": viz.plot_feature_maps(model, image, "stem", n=16),
        "stages": viz.plot_stages(model, image, n=6),
        "filters": viz.plot_first_filters(model),
        "separable": viz.plot_separable_steps(model, image),
        "statistics": viz.plot_activation_statistics({"a": stats, "b": stats}),
        "grad-cam": gradcam.plot_grad_cam(model, image_71, ["top1", "top2"], spec=images.CIFAR10),
    }
    for name, fig in figures.items():
        fig.canvas.draw()  # tick labels exist only once drawn
        assert fig.get_figwidth() <= 7.5, name
        sizes = [t.get_fontsize() for t in fig.findobj(Text) if t.get_text().strip() and t.get_visible()]
        assert sizes and min(sizes) >= 9, (name, min(sizes))


# ----------------------------------------------------------------- which model is available


def fail_download(**_: object) -> xl.Xception:
    raise OSError("simulated: no network")


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.setattr(viz, "load_pretrained_imagenet", fail_download)
    monkeypatch.delenv(viz.CHECKPOINT_ENV, raising=False)
    return monkeypatch


SMALL_CIFAR = xl.XceptionConfig.cifar(width_multiplier=0.125, middle_blocks=1)


@pytest.fixture
def fit_checkpoint(tmp_path: Path, one_thread: object) -> tuple[Path, xl.Xception, xl.history.History]:
    """A checkpoint written by xl.train.fit: one epoch on 64 random images."""
    g = torch.Generator().manual_seed(0)
    data = xl.data.CifarArrays(
        name="cifar10",
        train_images=torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=g),
        train_labels=torch.randint(0, 10, (64,), generator=g),
        test_images=torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8, generator=g),
        test_labels=torch.randint(0, 10, (32,), generator=g),
        classes=images.CIFAR10_CLASSES,
        source="random test images",
    )
    torch.manual_seed(0)
    model = xl.Xception(SMALL_CIFAR)
    cfg = xl.train.TrainConfig(epochs=1, batch_size=32, amp="off", eval_batch_size=32)
    history = xl.train.fit(model, data, cfg, checkpoint_dir=tmp_path / "ck", progress=False)
    return tmp_path / "ck" / "checkpoint.pt", model, history


def load(path: Path) -> xl.Xception:
    return viz.read_checkpoint(path)[0]


def assert_same_weights(a: xl.Xception, b: xl.Xception) -> None:
    assert a.config == b.config
    for key, value in b.state_dict().items():
        torch.testing.assert_close(a.state_dict()[key], value)


def test_a_checkpoint_written_by_fit_loads(fit_checkpoint: tuple[Path, xl.Xception, xl.history.History]) -> None:
    path, trained, _ = fit_checkpoint
    assert_same_weights(load(path), trained)


def test_the_named_fit_checkpoint_is_the_model_shown(
    offline: pytest.MonkeyPatch, fit_checkpoint: tuple[Path, xl.Xception, xl.history.History]
) -> None:
    path, trained, history = fit_checkpoint
    offline.setenv(viz.CHECKPOINT_ENV, str(path))
    found = viz.load_best_available_model()
    assert found.kind == "cifar10" and found.test_accuracy == history.test_acc[-1]
    assert_same_weights(found.model, trained)
    assert not found.model.training
    assert str(path)[:40] in found.description.replace("\n", " ")


def test_the_checkpoint_contract_model_and_model_config(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = xl.Xception(SMALL_CIFAR)
    path = tmp_path / "contract.pt"
    torch.save(
        {"model": model.state_dict(), "model_config": dataclasses.asdict(SMALL_CIFAR), "train_config": {"epochs": 3}},
        path,
    )
    assert_same_weights(load(path), model)


def test_a_checkpoint_without_model_config_fails_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "trainconfig_only.pt"
    state = xl.Xception(SMALL_CIFAR).state_dict()
    torch.save({"model": state, "config": dataclasses.asdict(xl.train.TrainConfig())}, path)
    with pytest.raises(ValueError, match=r"trainconfig_only\.pt.*model_config.*architecture is unknown"):
        load(path)
    torch.save(state, path)  # a bare state dict
    with pytest.raises(ValueError, match=r"trainconfig_only\.pt holds no 'model' state dict"):
        load(path)


def test_weights_that_do_not_fit_their_config_fail_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "mismatch.pt"
    wider = dataclasses.replace(SMALL_CIFAR, width_multiplier=0.25)
    torch.save({"model": xl.Xception(SMALL_CIFAR).state_dict(), "model_config": dataclasses.asdict(wider)}, path)
    with pytest.raises(ValueError, match=r"mismatch\.pt: its weights do not fit its model_config"):
        load(path)


@pytest.mark.parametrize("kind", ["empty", "text", "truncated"])
def test_a_bad_named_checkpoint_raises_instead_of_showing_another_model(
    offline: pytest.MonkeyPatch, fit_checkpoint: tuple[Path, xl.Xception, xl.history.History], tmp_path: Path, kind: str
) -> None:
    good = fit_checkpoint[0].read_bytes()
    path = tmp_path / f"{kind}.pt"
    path.write_bytes({"empty": b"", "text": b"epochs: 30\n", "truncated": good[: len(good) // 2]}[kind])
    offline.setenv(viz.CHECKPOINT_ENV, str(path))
    with pytest.raises(ValueError, match=rf"{kind}\.pt is not a readable checkpoint.*xl\.train\.fit.*unset"):
        viz.load_best_available_model()


def test_a_missing_named_checkpoint_raises(offline: pytest.MonkeyPatch, tmp_path: Path) -> None:
    offline.setenv(viz.CHECKPOINT_ENV, str(tmp_path / "missing.pt"))
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        viz.load_best_available_model()


def test_offline_the_shipped_trained_model_is_shown(offline: pytest.MonkeyPatch) -> None:
    found = viz.load_best_available_model()
    info = viz.small_checkpoint_provenance()
    assert found.kind == "cifar10" and not found.model.training
    assert found.test_accuracy == info["test_accuracy"] and found.test_accuracy > 0.5
    text = found.description.replace("\n", " ")
    assert f"{info['test_accuracy']:.2%}" in text and "simulated: no network" in text and "Errno" not in text
    assert "CIFAR-10 (JPEG copy) test images" in text and info["data"] == "cifar10-jpeg.tar.xz"
    assert all(len(line) <= 79 for line in found.description.splitlines())
    assert sum(p.numel() for p in found.model.parameters()) == info["parameters"]


def test_the_shipped_checkpoint_is_what_its_provenance_says() -> None:
    import hashlib

    info = viz.small_checkpoint_provenance()
    data = viz.SMALL_CHECKPOINT.read_bytes()
    assert hashlib.sha256(data).hexdigest() == info["sha256"] and len(data) == info["bytes"] < 4_000_000
    model = load(viz.SMALL_CHECKPOINT)
    assert dataclasses.asdict(model.config) == {
        k: tuple(v) if isinstance(v, list) else v for k, v in info["model_config"].items()
    }
    assert info["test_images"] == 10_000 and info["epochs"] == info["train_config"]["epochs"]


@pytest.mark.slow
@pytest.mark.data
def test_the_shipped_accuracy_is_reproduced_on_a_thousand_test_images(one_thread: object) -> None:
    try:
        data = xl.data.load_cifar("cifar10", download=False)
    except Exception as error:  # no local copy
        pytest.skip(f"CIFAR-10 unavailable here: {error}")
    info = viz.small_checkpoint_provenance()
    model = load(viz.SMALL_CHECKPOINT)
    pick = torch.randperm(len(data.test_labels), generator=torch.Generator().manual_seed(0))[
        :1000
    ]  # the set is sorted by class
    accuracy = xl.evaluation.evaluate(
        model, data.test_images[pick], data.test_labels[pick], mean=data.mean, std=data.std
    )
    assert abs(accuracy - info["test_accuracy"]) < 0.045  # three binomial standard errors at n = 1000


def test_offline_environment_skips_the_download(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import timm

    def must_not_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("a download was attempted although HF_HUB_OFFLINE=1")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # no cached weights
    monkeypatch.setattr(timm, "create_model", must_not_run)
    monkeypatch.delenv("XCEPTION_OFFLINE", raising=False)  # CI sets it; this test is about HF_HUB_OFFLINE
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError, match="HF_HUB_OFFLINE"):
        viz.load_pretrained_imagenet()


def test_unreachable_host_fails_fast_with_one_plain_sentence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import timm

    cfg = SimpleNamespace(url="https://weights.invalid/xception.pth")
    monkeypatch.setattr(timm.models, "get_pretrained_cfg", lambda name: cfg)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    for name in viz.OFFLINE_ENVS:
        monkeypatch.delenv(name, raising=False)
    start = time.perf_counter()
    with pytest.raises(OSError, match=r"^weights\.invalid cannot be reached from this machine \(no network\?\)$"):
        viz.load_pretrained_imagenet(timeout_s=1.0)
    assert time.perf_counter() - start < 5.0


def test_a_checkpoint_of_another_class_count_is_not_called_cifar10(tmp_path: Path) -> None:
    """Issue 24: a 100-class checkpoint was described as "CIFAR-10 Xception"."""
    model = xl.Xception(dataclasses.replace(SMALL_CIFAR, num_classes=100))
    path = tmp_path / "cifar100.pt"
    torch.save({"model": model.state_dict(), "model_config": model.config.to_dict()}, path)
    with pytest.raises(ValueError, match="100-class Xception, not a CIFAR-10 one"):
        load(path)
