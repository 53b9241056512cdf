"""Grad-CAM: shapes, class dependence, agreement with the textbook hook-based computation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import xception_lib as xl
from xception_lib.chapters import gradcam
from xception_lib.chapters.images import CIFAR10

pytest.importorskip("matplotlib")


@pytest.fixture
def model(tiny_cfg: xl.XceptionConfig) -> xl.Xception:
    torch.manual_seed(0)
    return xl.Xception(tiny_cfg).eval()


def no_hooks(model: torch.nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks for m in model.modules())


def reference_grad_cam(model: xl.Xception, x: torch.Tensor, cls: int) -> torch.Tensor:
    """Grad-CAM as usually written: hooks on the last stage record activation and gradient."""
    store: dict[str, torch.Tensor] = {}

    def forward_hook(_m: torch.nn.Module, _args: object, out: torch.Tensor) -> None:
        store["a"] = out.detach().clone()
        out.register_hook(lambda g: store.__setitem__("g", g.detach().clone()))

    handle = model.exit_flow.register_forward_hook(forward_hook)
    try:
        model(x)[0, cls].backward()
    finally:
        handle.remove()
    cam = F.relu((store["g"].mean(dim=(2, 3), keepdim=True) * store["a"]).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    return cam / cam.max().clamp_min(1e-12)


def test_map_has_the_input_size_and_range(model: xl.Xception, image_71: torch.Tensor) -> None:
    cams = gradcam.grad_cam(model, image_71, 3)
    assert cams.shape == (2, 71, 71)
    assert float(cams.min()) >= 0.0
    for cam in cams:
        assert float(cam.max()) == pytest.approx(1.0) or float(cam.max()) == 0.0


def test_matches_the_hook_based_reference(model: xl.Xception, image_71: torch.Tensor) -> None:
    x = image_71[:1]
    ours = gradcam.grad_cam(model, x, 2)[0]
    torch.testing.assert_close(ours, reference_grad_cam(model, x, 2), atol=1e-5, rtol=1e-4)
    assert no_hooks(model)


def test_different_classes_give_different_maps(model: xl.Xception, image_71: torch.Tensor) -> None:
    a = gradcam.grad_cam(model, image_71[:1], 0)
    b = gradcam.grad_cam(model, image_71[:1], 1)
    assert not torch.allclose(a, b, atol=1e-3)


def test_none_explains_the_predicted_class(model: xl.Xception, image_71: torch.Tensor) -> None:
    predicted = model(image_71).argmax(dim=1).tolist()
    torch.testing.assert_close(gradcam.grad_cam(model, image_71), gradcam.grad_cam(model, image_71, predicted))


def test_a_batch_equals_images_one_by_one(model: xl.Xception, image_71: torch.Tensor) -> None:
    batch = gradcam.grad_cam(model, image_71, [4, 5])
    one = torch.cat([gradcam.grad_cam(model, image_71[:1], 4), gradcam.grad_cam(model, image_71[1:], 5)])
    torch.testing.assert_close(batch, one, atol=1e-5, rtol=1e-4)


def test_earlier_stage_gives_a_finer_map(model: xl.Xception, image_71: torch.Tensor) -> None:
    coarse = gradcam.grad_cam(model, image_71[:1], 0, stage="exit_flow")
    fine = gradcam.grad_cam(model, image_71[:1], 0, stage="entry_flow.block1")
    assert coarse.shape == fine.shape == (1, 71, 71)
    assert not torch.allclose(coarse, fine, atol=1e-3)


def test_restores_training_mode_and_leaves_no_gradients(tiny_cfg: xl.XceptionConfig, image_71: torch.Tensor) -> None:
    model = xl.Xception(tiny_cfg).train()
    gradcam.grad_cam(model, image_71, 0)
    assert model.training
    assert all(p.grad is None for p in model.parameters())


def test_rejects_bad_stage_and_class(model: xl.Xception, image_71: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="stage must be one of"):
        gradcam.grad_cam(model, image_71, 0, stage="head")
    with pytest.raises(ValueError, match=r"target classes must be in \[0, 6\]"):
        gradcam.grad_cam(model, image_71, 7)
    with pytest.raises(ValueError, match="one target per image"):
        gradcam.grad_cam(model, image_71, [1, 2, 3])


def test_plot_has_an_image_and_a_panel_per_target(model: xl.Xception, image_71: torch.Tensor) -> None:
    import matplotlib.pyplot as plt

    fig = gradcam.plot_grad_cam(model, image_71, ["top1", "top2", 3], spec=CIFAR10, image_names=["a", "b"])
    try:
        assert len(fig.axes) == 2 * (1 + 3)
        titles = [ax.get_title() for ax in fig.axes]
        assert titles[0] == "a" and titles[1].startswith("top1: class ")
        assert titles[3].startswith("class 3")
    finally:
        plt.close(fig)
    with pytest.raises(ValueError, match="'top1' or 'top2'"):
        gradcam.plot_grad_cam(model, image_71, ["best"], spec=CIFAR10)


def test_several_targets_from_one_pass_equal_single_calls(model: xl.Xception, image_71: torch.Tensor) -> None:
    cams, classes, probs = gradcam.grad_cams(model, image_71, ["top2", 3])
    ranked = model(image_71).argsort(dim=1, descending=True)
    assert classes == [ranked[:, 1].tolist(), [3, 3]]
    torch.testing.assert_close(cams[0], gradcam.grad_cam(model, image_71, ranked[:, 1].tolist()))
    torch.testing.assert_close(cams[1], gradcam.grad_cam(model, image_71, 3))
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(2))
