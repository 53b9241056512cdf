"""Grad-CAM (Selvaraju et al., 2017): where in the image is the evidence for a class?

For a stage output :math:`A` (C x h x w) and a class score :math:`y_c` (the logit),
Grad-CAM weighs each channel by its average gradient and keeps the positive part:

.. math::

    \\alpha_k = \\frac{1}{hw} \\sum_{i,j} \\frac{\\partial y_c}{\\partial A_{k,ij}}, \\qquad
    L_c = \\mathrm{ReLU}\\Big(\\sum_k \\alpha_k A_k\\Big),

then upsamples :math:`L_c` to the input's size. No hooks are needed: the model's
``forward_intermediates`` returns every stage output inside the autograd graph, and
``torch.autograd.grad`` differentiates the score with respect to the chosen one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from xception_lib.chapters.images import Preprocessing, to_display
from xception_lib.chapters.viz import as_batch, panel_grid
from xception_lib.model import Xception
from xception_lib.runtime import eval_mode

if TYPE_CHECKING:
    from matplotlib.figure import Figure

Target = int | str | Sequence[int] | torch.Tensor | None


def grad_cam(model: Xception, images: torch.Tensor, target: Target = None, *, stage: str = "exit_flow") -> torch.Tensor:
    """Grad-CAM maps (N x H x W in [0, 1], on the CPU) of N preprocessed images, in eval mode. ``target``:
    one class index for every image, a list with one per image, ``"top1"`` (or ``None``) for each image's
    predicted class, ``"top2"`` for its runner-up... ``stage``: a key of ``model.stages()``, usually the most
    semantic, ``"exit_flow"``. Each map is divided by its maximum (all 0 if none is positive)."""
    return grad_cams(model, images, [target], stage=stage)[0][0]


def grad_cams(
    model: Xception, images: torch.Tensor, targets: Sequence[Target], *, stage: str = "exit_flow"
) -> tuple[list[torch.Tensor], list[list[int]], torch.Tensor]:
    """Grad-CAM for several targets from a single forward pass (see :func:`grad_cam`): the maps (one
    N x H x W tensor per target), the classes explained (a list of N per target) and the probabilities."""
    if stage not in model.stages():
        raise ValueError(f"stage must be one of {list(model.stages())}, got {stage!r}")
    x = as_batch(images, model)
    n = x.shape[0]
    cams, explained = [], []
    with eval_mode(model), torch.enable_grad():
        stages = model.forward_intermediates(x)
        logits = model.forward_head(stages["exit_flow"])  # N x num_classes
        ranked = logits.detach().argsort(dim=1, descending=True).cpu()
        activation = stages[stage]  # N x C x h x w
        for target in targets:
            classes = _target_classes(target, ranked)
            score = logits[torch.arange(n), torch.as_tensor(classes)].sum()  # images are independent in eval mode
            (gradient,) = torch.autograd.grad(score, activation, retain_graph=True)
            weights = gradient.mean(dim=(2, 3), keepdim=True)  # N x C x 1 x 1
            cam = F.relu((weights * activation.detach()).sum(dim=1, keepdim=True))  # N x 1 x h x w
            cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
            peak = cam.flatten(1).amax(dim=1).clamp_min(1e-12).view(n, 1, 1)
            cams.append((cam / peak).cpu())
            explained.append(classes)
    return cams, explained, logits.detach().softmax(dim=1).cpu()


def _target_classes(target: Target, ranked: torch.Tensor) -> list[int]:
    """One target's classes, one per image; ``ranked`` holds each image's classes by logit."""
    n, num_classes = ranked.shape
    target = "top1" if target is None else target.tolist() if isinstance(target, torch.Tensor) else target
    if isinstance(target, str):
        rank = target.removeprefix("top")
        if not target.startswith("top") or not rank.isdigit() or not 1 <= int(rank) <= num_classes:
            raise ValueError(f"expected a target like 'top1' or 'top2', got {target!r}")
        return ranked[:, int(rank) - 1].tolist()
    classes = [int(t) for t in target] if isinstance(target, Sequence) else [int(target)] * n
    if len(classes) != n:
        raise ValueError(f"expected one target per image ({n}), got {len(classes)}")
    bad = [c for c in classes if not 0 <= c < num_classes]
    if bad:
        raise ValueError(f"target classes must be in [0, {num_classes - 1}], got {bad}")
    return classes


def plot_grad_cam(
    model: Xception,
    images: torch.Tensor,
    targets: Sequence[Target],
    *,
    spec: Preprocessing,
    class_names: Sequence[str] | None = None,
    image_names: Sequence[str] | None = None,
    title: str | None = None,
) -> Figure:
    """A row per image: the image (preprocessed with ``spec``), then its exit flow's Grad-CAM map for each of
    ``targets`` (each one as ``target`` of :func:`grad_cam`) overlaid on it."""
    if not targets:
        raise ValueError("expected at least one target class (or None for the predicted class)")
    x = as_batch(images)
    cams, classes, probs = grad_cams(model, x, targets)
    fig, axes = panel_grid(x.shape[0], 1 + len(targets), height=2.3)
    for row, image in enumerate(x):
        shown = to_display(image, spec)
        axes[row, 0].imshow(shown)
        axes[row, 0].set_title(image_names[row] if image_names else f"image {row}", fontsize=9)
        for ax, target, maps, explained in zip(axes[row, 1:], targets, cams, classes, strict=True):
            cls, cam = explained[row], maps[row].numpy()
            ax.imshow(shown)
            ax.imshow(cam, cmap="jet", alpha=0.45, vmin=0.0, vmax=1.0)
            name = class_names[cls] if class_names is not None else f"class {cls}"
            kind = f"{target}: " if isinstance(target, str) else ("top1: " if target is None else "")
            empty = "\n(no positive evidence)" if cam.max() <= 0 else ""
            ax.set_title(f"{kind}{name[:18]}\np = {float(probs[row, cls]):.1%}{empty}", fontsize=9)
    fig.suptitle(title or "Grad-CAM at 'exit_flow' (red: strongest evidence for the class)", fontsize=11)
    return fig
