"""Looking inside Xception: feature maps, first-layer filters, separable convolutions, statistics.

Every plotting function returns its matplotlib ``Figure`` (matplotlib is imported inside
the functions), labels its panels, and runs on CPU; pass ``device`` to run elsewhere.
Stage outputs come from :meth:`~xception_lib.Xception.forward_intermediates`; the one
place that needs a hook (the input of a separable convolution deep inside a block) clones
what it captures and removes the hook in a ``finally`` clause.

This module is the one namespace the chapter needs: it re-exports the image helpers of
:mod:`xception_lib.chapters.images` and Grad-CAM from :mod:`xception_lib.chapters.gradcam`, and it knows how
to find the best model available (:func:`load_best_available_model`): pretrained ImageNet
weights when the network is there, else a CIFAR-10 checkpoint, else a clearly labelled
random initialisation.
"""

from __future__ import annotations

import os
import socket
import urllib.parse
import warnings
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import numpy as np
import torch

from xception_lib.config import XceptionConfig
from xception_lib.chapters.gradcam import _device_of, eval_mode, grad_cam, plot_grad_cam
from xception_lib.chapters.images import (
    CIFAR10,
    IMAGENET_XCEPTION,
    PHOTO_NAMES,
    Preprocessing,
    example_images,
    imagenet_categories,
    photo,
    photos,
    preprocess,
    preprocessing_for,
    to_display,
)
from xception_lib.layers import SeparableConv2d
from xception_lib.model import Xception

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "CIFAR10",
    "IMAGENET_XCEPTION",
    "PHOTO_NAMES",
    "AvailableModel",
    "Preprocessing",
    "activation_statistics",
    "class_names_for",
    "example_images",
    "grad_cam",
    "imagenet_categories",
    "load_best_available_model",
    "load_cifar_checkpoint",
    "load_pretrained_imagenet",
    "photo",
    "photos",
    "plot_activation_statistics",
    "plot_feature_maps",
    "plot_first_filters",
    "plot_grad_cam",
    "plot_separable_steps",
    "plot_stages",
    "plot_top_k",
    "preprocess",
    "preprocessing_for",
    "select_channels",
    "stage_outputs",
    "to_display",
    "top_k",
]

ModelKind = Literal["imagenet", "cifar10", "random"]

# --------------------------------------------------------------------------- stage outputs


def stage_outputs(
    model: Xception, images: torch.Tensor, *, device: torch.device | str | None = None
) -> OrderedDict[str, torch.Tensor]:
    """Every named stage's output for preprocessed images (eval mode, no gradients), on the CPU.

    Args:
        model: The model.
        images: N x 3 x H x W (or 3 x H x W) preprocessed images.
        device: Where to run (default: the model's device). The model is moved there.

    Returns:
        ``{"stem": ..., "entry_flow.block1": ..., ..., "exit_flow": ...}``, N x C x h x w each.
    """
    device = _device_of(model, device)
    model.to(device)
    x = images[None] if images.dim() == 3 else images
    with eval_mode(model), torch.no_grad():
        out = model.forward_intermediates(x.to(device))
    return OrderedDict((name, t.cpu()) for name, t in out.items())


def select_channels(activation: torch.Tensor, channels: str | Sequence[int] = "active", n: int = 16, *, seed: int = 0) -> list[int]:
    """Choose which channels of a C x h x w activation to show.

    Args:
        activation: One image's stage output, C x h x w.
        channels: ``"active"``: the ``n`` channels with the largest mean after ReLU (what
            the next layer lets through), most active first; ``"random"``: ``n`` channels
            drawn with ``seed``; or an explicit sequence of channel indices.
        n: How many channels (ignored for explicit indices).
        seed: Seed of the random choice.

    Returns:
        Channel indices.
    """
    if activation.dim() != 3:
        raise ValueError(f"expected one image's activation C x h x w, got shape {tuple(activation.shape)}")
    c = activation.shape[0]
    if isinstance(channels, str):
        if n < 1 or n > c:
            raise ValueError(f"n must be in [1, {c}] for this stage's {c} channels, got {n}")
        if channels == "active":
            score = activation.clamp_min(0).mean(dim=(1, 2))
            return [int(i) for i in torch.argsort(score, descending=True, stable=True)[:n]]
        if channels == "random":
            return sorted(int(i) for i in np.random.default_rng(seed).choice(c, size=n, replace=False))
        raise ValueError(f"channels must be 'active', 'random' or a list of indices, got {channels!r}")
    chosen = [int(i) for i in channels]
    bad = [i for i in chosen if not 0 <= i < c]
    if not chosen or bad:
        raise ValueError(f"channel indices must be in [0, {c - 1}], got {chosen}")
    return chosen


def _robust_range(x: torch.Tensor, q: float = 0.995) -> tuple[float, float]:
    """(low, high) from quantiles, so one hot pixel does not wash out a map."""
    flat = x.flatten().float()
    if flat.numel() > 1_000_000:
        flat = flat[torch.randperm(flat.numel(), generator=torch.Generator().manual_seed(0))[:1_000_000]]
    lo, hi = float(torch.quantile(flat, 1 - q)), float(torch.quantile(flat, q))
    return (lo, hi) if hi > lo else (lo, lo + 1e-6)


def _blank(ax: Axes) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def plot_feature_maps(
    model: Xception,
    image: torch.Tensor,
    stage: str,
    *,
    channels: str | Sequence[int] = "active",
    n: int = 16,
    ncols: int = 8,
    seed: int = 0,
    normalize: Literal["channel", "stage"] = "channel",
    device: torch.device | str | None = None,
    title: str | None = None,
) -> Figure:
    """A grid of one stage's feature maps for one image, after ReLU.

    Args:
        model: The model.
        image: One preprocessed image, 3 x H x W or 1 x 3 x H x W.
        stage: A key of ``model.stages()``: ``"stem"``, ``"entry_flow.block1"`` ... ``"exit_flow"``.
        channels: Which channels: ``"active"``, ``"random"`` or indices (see :func:`select_channels`).
        n: How many channels for ``"active"`` and ``"random"``.
        ncols: Panels per row.
        seed: Seed for ``"random"``.
        normalize: ``"channel"`` scales each map to its own range (shows the pattern of
            every channel); ``"stage"`` uses one range for all shown maps (shows which
            channels respond strongly).
        device: Where to run the model.
        title: The figure's title (default: the stage, its shape and the choice).

    Returns:
        A figure with one panel per chosen channel.
    """
    import matplotlib.pyplot as plt

    names = list(model.stages())
    if stage not in names:
        raise ValueError(f"stage must be one of {names}, got {stage!r}")
    if normalize not in ("channel", "stage"):
        raise ValueError(f"normalize must be 'channel' or 'stage', got {normalize!r}")
    x = image[None] if image.dim() == 3 else image
    if x.shape[0] != 1:
        raise ValueError(f"expected one image, got a batch of {x.shape[0]}")
    act = stage_outputs(model, x, device=device)[stage][0]  # C x h x w
    chosen = select_channels(act, channels, n, seed=seed)
    maps = act[chosen].clamp_min(0)  # what the next layer's ReLU lets through
    shared = _robust_range(maps) if normalize == "stage" else None
    ncols = max(1, min(ncols, len(chosen)))
    nrows = -(-len(chosen) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.15 * ncols, 1.3 * nrows + 0.5), squeeze=False, layout="constrained")
    for k, ax in enumerate(axes.flat):
        if k >= len(chosen):
            ax.remove()
            continue
        lo, hi = shared if shared is not None else _robust_range(maps[k])
        ax.imshow(maps[k].numpy(), cmap="viridis", vmin=max(lo, 0.0), vmax=hi, interpolation="nearest")
        ax.set_title(f"ch {chosen[k]}", fontsize=9)
        _blank(ax)
    how = {"active": "most active", "random": "random"}.get(channels, "chosen") if isinstance(channels, str) else "chosen"
    c, h, w = act.shape
    scale = "each map on its own scale" if normalize == "channel" else "one scale for all maps"
    fig.suptitle(title or f"{stage}: {len(chosen)} {how} of {c} channels ({h}x{w}, after ReLU, {scale})", fontsize=11)
    return fig


def plot_stages(
    model: Xception,
    image: torch.Tensor,
    *,
    n: int = 6,
    stages: Sequence[str] | None = None,
    device: torch.device | str | None = None,
    title: str | None = None,
) -> Figure:
    """The ``n`` most active channels of every stage for one image: one row per stage.

    Args:
        model: The model.
        image: One preprocessed image.
        n: Channels per stage.
        stages: Which stages (default: all of ``model.stages()``).
        device: Where to run the model.
        title: The figure's title.

    Returns:
        A figure with ``len(stages) * n`` panels.
    """
    import matplotlib.pyplot as plt

    x = image[None] if image.dim() == 3 else image
    outs = stage_outputs(model, x, device=device)
    names = list(outs) if stages is None else list(stages)
    unknown = [s for s in names if s not in outs]
    if unknown:
        raise ValueError(f"stages must be among {list(outs)}, got {unknown}")
    fig, axes = plt.subplots(len(names), n, figsize=(1.2 * n + 1.0, 1.3 * len(names) + 0.5), squeeze=False, layout="constrained")
    for row, name in enumerate(names):
        act = outs[name][0]
        chosen = select_channels(act, "active", n)
        for col, ch in enumerate(chosen):
            m = act[ch].clamp_min(0)
            lo, hi = _robust_range(m)
            ax = axes[row, col]
            ax.imshow(m.numpy(), cmap="viridis", vmin=max(lo, 0.0), vmax=hi, interpolation="nearest")
            ax.set_title(f"ch {ch}", fontsize=8)
            _blank(ax)
        c, h, w = act.shape
        axes[row, 0].set_ylabel(f"{name}\n{c} x {h}x{w}", fontsize=10)
    fig.suptitle(title or "Most active channels of each stage (ReLU, each map on its own scale)", fontsize=11)
    return fig


def plot_first_filters(model: Xception, *, ncols: int = 8, title: str | None = None) -> Figure:
    """The first convolution's filters (``model.stem.conv1``) as small RGB patches.

    Each 3 x k x k filter is scaled by its own largest absolute weight, so that grey is 0,
    and a colour shows which mix of R, G and B the filter responds to.

    Args:
        model: The model (its input must have 3 channels).
        ncols: Patches per row.
        title: The figure's title.

    Returns:
        A figure with one panel per filter (32 for Xception).
    """
    import matplotlib.pyplot as plt

    weight = model.stem.conv1.weight.detach().float().cpu()  # C_out x 3 x k x k
    if weight.shape[1] != 3:
        raise ValueError(f"expected a first convolution on 3 (RGB) channels, got {weight.shape[1]}")
    scale = weight.abs().amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)
    patches = (weight / (2 * scale) + 0.5).permute(0, 2, 3, 1).numpy()  # C_out x k x k x 3 in [0, 1]
    count = len(patches)
    ncols = max(1, min(ncols, count))
    nrows = -(-count // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.0 * ncols, 1.15 * nrows + 0.5), squeeze=False, layout="constrained")
    for k, ax in enumerate(axes.flat):
        if k >= count:
            ax.remove()
            continue
        ax.imshow(patches[k], interpolation="nearest")
        ax.set_title(f"filter {k}", fontsize=8)
        _blank(ax)
    k = weight.shape[-1]
    fig.suptitle(title or f"stem.conv1: {count} filters of 3 x {k} x {k} shown as RGB (grey = 0)", fontsize=11)
    return fig


# --------------------------------------------------------------------------- separable steps


def _separable_input(model: Xception, x: torch.Tensor, layer: str) -> torch.Tensor:
    """The input a named SeparableConv2d receives, captured by a pre-hook that is always removed."""
    try:
        module = model.get_submodule(layer)
    except AttributeError:
        module = None
    if not isinstance(module, SeparableConv2d):
        raise ValueError(f"expected the name of a SeparableConv2d (e.g. 'entry_flow.block1.layers.sep1'), got {layer!r}")
    captured: list[torch.Tensor] = []

    def keep_input(_module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        captured.append(args[0].detach().clone())  # clone: later in-place ops cannot change it

    handle = module.register_forward_pre_hook(keep_input)
    try:
        with eval_mode(model), torch.no_grad():
            model.forward_features(x)
    finally:
        handle.remove()
    return captured[0]


def plot_separable_steps(
    model: Xception,
    image: torch.Tensor,
    layer: str = "entry_flow.block1.layers.sep1",
    *,
    inputs: int = 4,
    outputs: int = 3,
    device: torch.device | str | None = None,
    title: str | None = None,
) -> Figure:
    """One separable convolution, step by step: depthwise per channel, then pointwise mixing.

    Top: ``inputs`` input channels, the 3x3 depthwise kernel of each, and what the kernel
    makes of its channel (the depthwise step never looks at other channels). Bottom: the
    pointwise weights from those channels to ``outputs`` output channels, and the output
    channels themselves, each a weighted sum of *all* depthwise outputs.

    Output channels are the most active ones (largest mean absolute value); input channels
    are those contributing most to them (pointwise weight x depthwise activity).
    Colours: red positive, blue negative, white zero; each panel on its own scale.

    Args:
        model: The model.
        image: One preprocessed image.
        layer: Name of a :class:`~xception_lib.SeparableConv2d` in the model, e.g.
            ``"entry_flow.block1.layers.sep1"`` or ``"middle_flow.block1.layers.sep2"``.
        inputs: Input channels to show.
        outputs: Output channels to show.
        device: Where to run the model.
        title: The figure's title.

    Returns:
        A figure with ``3 * inputs + 1 + outputs`` panels.
    """
    import matplotlib.pyplot as plt

    device = _device_of(model, device)
    model.to(device)
    x = (image[None] if image.dim() == 3 else image)[:1].to(device)
    x_in = _separable_input(model, x, layer)  # checks that ``layer`` is a SeparableConv2d
    sep = model.get_submodule(layer)
    with torch.no_grad():
        depthwise = sep.depthwise(x_in)  # 1 x C_in x h x w: each channel filtered on its own
        mixed_in = sep.intermediate(depthwise)
        pointwise = sep.pointwise(mixed_in)  # 1 x C_out x h x w: 1x1 mix of all channels
    c_in, c_out = depthwise.shape[1], pointwise.shape[1]
    if not 1 <= inputs <= c_in or not 1 <= outputs <= c_out:
        raise ValueError(f"inputs must be in [1, {c_in}] and outputs in [1, {c_out}], got {inputs} and {outputs}")
    p = sep.pointwise.weight.detach()[:, :, 0, 0].cpu()  # C_out x C_in
    outs = torch.argsort(pointwise[0].abs().mean(dim=(1, 2)).cpu(), descending=True)[:outputs].tolist()
    activity = mixed_in[0].abs().mean(dim=(1, 2)).cpu()  # C_in
    contribution = (p[outs].abs() * activity).sum(dim=0)
    ins = torch.argsort(contribution, descending=True)[:inputs].tolist()
    kernels = sep.depthwise.weight.detach().cpu()[:, 0]  # C_in x k x k (one kernel per channel)

    def show(ax: Axes, m: torch.Tensor, label: str) -> None:
        m = m.detach().float().cpu()
        lo, hi = _robust_range(m.abs())
        ax.imshow(m.numpy(), cmap="RdBu_r", vmin=-hi, vmax=hi, interpolation="nearest")
        ax.set_title(label, fontsize=9)
        _blank(ax)

    fig = plt.figure(figsize=(max(2.0 * inputs, 2.0 * (outputs + 1.6)), 2.0 * 4 + 1.4), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[3, 1.15])
    grid = top.subplots(3, inputs, squeeze=False)
    for col, i in enumerate(ins):
        show(grid[0, col], x_in[0, i], f"input ch {i}")
        show(grid[1, col], kernels[i], f"3x3 kernel of ch {i}")
        show(grid[2, col], depthwise[0, i], f"depthwise ch {i}")
    grid[0, 0].set_ylabel("input", fontsize=9)
    grid[1, 0].set_ylabel("depthwise\nkernel", fontsize=9)
    grid[2, 0].set_ylabel("after\ndepthwise", fontsize=9)
    top.suptitle(f"Step 1, depthwise: each of the {c_in} channels is filtered on its own", fontsize=10)

    lower = bottom.subplots(1, 1 + outputs, squeeze=False, width_ratios=[1.6] + [1.0] * outputs)[0]
    w = p[outs][:, ins].numpy()
    bound = float(np.abs(w).max()) or 1.0
    lower[0].imshow(w, cmap="RdBu_r", vmin=-bound, vmax=bound, aspect="auto")
    for (r, c), value in np.ndenumerate(w):
        colour = "white" if abs(value) > 0.6 * bound else "black"
        lower[0].text(c, r, f"{value:+.2f}", ha="center", va="center", fontsize=8, color=colour)
    lower[0].set_xticks(range(len(ins)), [f"in {i}" for i in ins], fontsize=8)
    lower[0].set_yticks(range(len(outs)), [f"out {o}" for o in outs], fontsize=8)
    lower[0].set_title("pointwise weights (shown channels)", fontsize=9)
    for col, o in enumerate(outs, start=1):
        show(lower[col], pointwise[0, o], f"output ch {o}")
    bottom.suptitle(
        f"Step 2, pointwise: each of the {c_out} outputs is a weighted sum of all {c_in} depthwise channels",
        fontsize=10,
    )
    fig.suptitle(title or f"{layer}: {c_in} -> {c_out} channels at {depthwise.shape[-2]}x{depthwise.shape[-1]}", fontsize=11)
    return fig


# --------------------------------------------------------------------------- statistics


def activation_statistics(
    model: Xception, images: torch.Tensor, *, device: torch.device | str | None = None
) -> list[dict[str, Any]]:
    """Per-stage statistics of a batch of images' activations.

    Args:
        model: The model.
        images: N x 3 x H x W preprocessed images.
        device: Where to run the model.

    Returns:
        One dict per stage, in forward order, with the keys ``stage``, ``channels``,
        ``height``, ``width``, ``mean`` (of the raw output), ``std``, ``mean_relu`` (mean
        after ReLU), ``sparsity`` (fraction of values that ReLU sets to zero) and ``dead_channels``
        (fraction of channels that are zero after ReLU for every image and position).
    """
    rows = []
    for name, act in stage_outputs(model, images, device=device).items():
        relu = act.clamp_min(0)
        rows.append(
            {
                "stage": name,
                "channels": act.shape[1],
                "height": act.shape[2],
                "width": act.shape[3],
                "mean": float(act.mean()),
                "std": float(act.std()),
                "mean_relu": float(relu.mean()),
                "sparsity": float((act <= 0).float().mean()),
                "dead_channels": float((relu.amax(dim=(0, 2, 3)) == 0).float().mean()),
            }
        )
    return rows


_SHORT_STAGE_NAMES = {
    "entry_flow.block1": "entry 1",
    "entry_flow.block2": "entry 2",
    "entry_flow.block3": "entry 3",
    "middle_flow": "middle",
    "exit_flow": "exit",
}


def plot_activation_statistics(
    stats: Sequence[Mapping[str, Any]] | Mapping[str, Sequence[Mapping[str, Any]]],
    *,
    title: str | None = None,
) -> Figure:
    """Mean after ReLU, standard deviation, sparsity and dead channels per stage, as four line plots.

    Args:
        stats: The output of :func:`activation_statistics`, or several of them keyed by a
            label (e.g. ``{"photos": ..., "noise": ...}``) to compare.
        title: The figure's title.

    Returns:
        A figure with 4 panels (2 x 2).
    """
    import matplotlib.pyplot as plt

    series = dict(stats) if isinstance(stats, Mapping) else {"": stats}
    fig, grid = plt.subplots(2, 2, figsize=(7.6, 6.0), layout="constrained")
    axes = list(grid.flat)
    panels = [
        ("mean_relu", "mean after ReLU", "Mean activation after ReLU"),
        ("std", "standard deviation", "Spread of the stage output"),
        ("sparsity", "fraction zero after ReLU", "Sparsity after ReLU"),
        ("dead_channels", "fraction of channels", "Channels that never fire"),
    ]
    for label, rows in series.items():
        names = [_SHORT_STAGE_NAMES.get(r["stage"], r["stage"]) for r in rows]
        for ax, (key, _, _) in zip(axes, panels):
            ax.plot(names, [r[key] for r in rows], marker="o", label=label or None)
    for ax, (key, ylabel, panel_title) in zip(axes, panels):
        ax.set_title(panel_title, fontsize=10)
        ax.set_xlabel("stage")
        ax.tick_params(axis="x", labelrotation=30, labelsize=9)
        ax.grid(alpha=0.3)
        if key in ("sparsity", "dead_channels"):
            ax.set_ylim(-0.02, 1.02)
        elif all(r[key] > 0 for rows in series.values() for r in rows):
            ax.set_yscale("log")  # values can span orders of magnitude across stages
            ylabel = f"{ylabel} (log scale)"
        ax.set_ylabel(ylabel)
    if any(series):
        axes[0].legend(fontsize=8)
    fig.suptitle(title or "Activation statistics per stage", fontsize=11)
    return fig


# --------------------------------------------------------------------------- predictions


def top_k(
    model: Xception,
    images: torch.Tensor,
    class_names: Sequence[str],
    *,
    k: int = 5,
    device: torch.device | str | None = None,
) -> list[list[tuple[str, float]]]:
    """The ``k`` most probable classes of each image, as (name, probability) pairs."""
    device = _device_of(model, device)
    model.to(device)
    x = images[None] if images.dim() == 3 else images
    with eval_mode(model), torch.no_grad():
        probs = model(x.to(device)).softmax(dim=1).cpu()
    if probs.shape[1] != len(class_names):
        raise ValueError(f"expected {probs.shape[1]} class names (one per model output), got {len(class_names)}")
    values, indices = probs.topk(min(k, probs.shape[1]), dim=1)
    return [[(class_names[int(i)], float(v)) for v, i in zip(vs, ids)] for vs, ids in zip(values, indices)]


def plot_top_k(
    model: Xception,
    images: torch.Tensor,
    class_names: Sequence[str],
    *,
    k: int = 5,
    image_names: Sequence[str] | None = None,
    spec: Preprocessing | None = None,
    device: torch.device | str | None = None,
    title: str | None = None,
) -> Figure:
    """Each image beside a bar chart of its top-``k`` predicted classes.

    Returns:
        A figure with one row per image, the image beside its bar chart (2 panels per image).
    """
    import matplotlib.pyplot as plt

    from matplotlib.ticker import MaxNLocator, PercentFormatter

    x = images[None] if images.dim() == 3 else images
    predictions = top_k(model, x, class_names, k=k, device=device)
    n = len(predictions)
    fig, axes = plt.subplots(n, 2, figsize=(7.0, 2.3 * n + 0.4), squeeze=False, layout="constrained", width_ratios=[1.0, 1.6])
    for j, pairs in enumerate(predictions):
        ax_img, ax_bar = axes[j, 0], axes[j, 1]
        ax_img.imshow(to_display(x[j], spec))
        ax_img.set_title(image_names[j] if image_names else f"image {j}", fontsize=10)
        _blank(ax_img)
        names, probs = zip(*pairs)
        rows = range(len(pairs))[::-1]
        ax_bar.barh(rows, probs, color="tab:blue")
        for r, p in zip(rows, probs):
            ax_bar.text(p, r, f" {p:.1%}", va="center", fontsize=9)
        ax_bar.set_yticks(rows, [s[:22] for s in names], fontsize=9)
        # Probabilities near 1/num_classes (an untrained model) would be invisible on [0, 1].
        ax_bar.set_xlim(0, 1 if max(probs) > 0.25 else 1.6 * max(probs))
        ax_bar.xaxis.set_major_locator(MaxNLocator(4))
        ax_bar.xaxis.set_major_formatter(PercentFormatter(xmax=1.0))
        ax_bar.set_xlabel("probability", fontsize=9)
        ax_bar.set_title(f"top-{len(pairs)} classes", fontsize=10)
        ax_bar.tick_params(axis="x", labelsize=8)
    fig.suptitle(title or f"Top-{k} predictions", fontsize=11)
    return fig


# --------------------------------------------------------------------------- which model


#: Environment variable naming a CIFAR-10 checkpoint (a state_dict, or a dict holding one).
CHECKPOINT_ENV = "XCEPTION_CIFAR_CHECKPOINT"
#: Where :func:`load_best_available_model` looks for a CIFAR-10 checkpoint by default.
DEFAULT_CHECKPOINT = Path("~/.cache/xception_lib/xception_cifar10.pt")
#: Environment variables that, when set to 1/true, forbid download attempts.
OFFLINE_ENVS = ("XCEPTION_OFFLINE", "HF_HUB_OFFLINE")


class AvailableModel(NamedTuple):
    """What :func:`load_best_available_model` found: unpack as ``model, description, kind``."""

    model: Xception
    description: str
    kind: ModelKind


def _offline_by_env() -> str | None:
    for name in OFFLINE_ENVS:
        if os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on"):
            return name
    return None


def _import_timm() -> Any:
    """Import timm quietly (it imports tqdm.auto, which warns in notebooks without ipywidgets)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import timm
    return timm


def _timm_weights_url() -> str:
    timm = _import_timm()
    cfg = timm.models.get_pretrained_cfg("legacy_xception")
    if cfg is not None and cfg.url:
        return str(cfg.url)
    return "https://huggingface.co"


def _cached_weights(url: str) -> Path | None:
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(urllib.parse.urlparse(url).path).name
    return path if path.is_file() else None


def _check_reachable(url: str, timeout_s: float) -> None:
    """Raise ``OSError`` fast when the weights' host cannot be reached (no network, no DNS)."""
    host = urllib.parse.urlparse(url).hostname or "huggingface.co"
    with socket.create_connection((host, 443), timeout=timeout_s):
        pass


def load_pretrained_imagenet(*, timeout_s: float = 3.0) -> Xception:
    """timm's pretrained ``legacy_xception`` converted with :func:`xception_lib.from_timm`.

    Weights already in torch's hub cache load without network. Otherwise, the host is
    probed first (``timeout_s``), so an offline machine fails in seconds instead of
    waiting for a download to time out; ``XCEPTION_OFFLINE=1`` or ``HF_HUB_OFFLINE=1``
    skips the attempt.

    Raises:
        OSError: The weights cannot be downloaded (offline, host unreachable).
        ImportError: timm is not installed.
    """
    from xception_lib.pretrained import from_timm

    timm = _import_timm()
    url = _timm_weights_url()
    if _cached_weights(url) is None:
        env = _offline_by_env()
        if env is not None:
            raise OSError(f"downloads disabled by {env}")
        _check_reachable(url, timeout_s)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        source = timm.create_model("legacy_xception", pretrained=True)
    return from_timm(source)


def load_cifar_checkpoint(path: str | Path, *, device: torch.device | str = "cpu") -> Xception:
    """An :func:`~xception_lib.xception_cifar` model from a checkpoint file.

    The file holds a ``state_dict``, or a dict with one under ``"model"``, ``"model_state"``,
    ``"model_state_dict"`` or ``"state_dict"`` (and optionally the ``"config"`` fields as a
    dict). Prefixes added by ``torch.compile`` (``_orig_mod.``) and ``DataParallel``
    (``module.``) are removed.
    """
    obj = torch.load(Path(path).expanduser(), map_location="cpu", weights_only=True)
    if not isinstance(obj, Mapping):
        raise ValueError(f"expected a state_dict or a dict holding one in {path}, got {type(obj).__name__}")
    state: Mapping[str, Any] = obj
    for key in ("model", "model_state", "model_state_dict", "state_dict"):
        if isinstance(obj.get(key), Mapping):
            state = obj[key]
            break
    clean = {k.removeprefix("_orig_mod.").removeprefix("module."): v for k, v in state.items()}
    if "head.fc.weight" not in clean:
        raise ValueError(f"expected an Xception state_dict with 'head.fc.weight' in {path}")
    fields = obj.get("config")
    if isinstance(fields, Mapping):
        config = XceptionConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})
    else:
        config = XceptionConfig.cifar(num_classes=int(clean["head.fc.weight"].shape[0]))
    model = Xception(config)
    model.load_state_dict(clean, strict=True)
    return model.to(device).eval()


def _home_relative(path: Path) -> str:
    """``path`` with the home directory written as ``~``, for short messages."""
    try:
        return str(Path("~") / path.relative_to(Path.home()))
    except ValueError:
        return str(path)


def load_best_available_model(
    *,
    checkpoint: str | Path | None = None,
    allow_download: bool = True,
    timeout_s: float = 3.0,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> AvailableModel:
    """The most informative Xception this machine can get, and one line saying which it is.

    In order: (1) the pretrained ImageNet Xception (:func:`load_pretrained_imagenet`;
    needs network access or the weights in torch's hub cache); (2) a CIFAR-10 checkpoint
    (``checkpoint``, else the file named by ``$XCEPTION_CIFAR_CHECKPOINT``, else
    ``~/.cache/xception_lib/xception_cifar10.pt``); (3) a randomly initialised ImageNet
    Xception (``seed``), labelled as such. Never raises for a missing source.

    Args:
        checkpoint: A CIFAR-10 checkpoint to use when the ImageNet weights are unavailable.
        allow_download: Whether to try the pretrained ImageNet weights at all.
        timeout_s: How long to wait for the weights' host before giving up.
        seed: Seed of the random initialisation (the global RNG is left untouched).
        device: Where the model lives.

    Returns:
        ``(model, description, kind)`` with ``kind`` one of ``"imagenet"``, ``"cifar10"``,
        ``"random"``; the model is in eval mode.
    """
    reasons = []
    if allow_download:
        try:
            model = load_pretrained_imagenet(timeout_s=timeout_s)
            description = "Pretrained ImageNet Xception (timm legacy_xception, the Keras weights) via xl.from_timm."
            return AvailableModel(model.to(device).eval(), description, "imagenet")
        except Exception as error:  # any failure to fetch/convert means: use the next source
            reasons.append(f"ImageNet weights not downloadable: {type(error).__name__}")
    else:
        reasons.append("downloads not allowed")

    path = Path(checkpoint or os.environ.get(CHECKPOINT_ENV) or DEFAULT_CHECKPOINT).expanduser()
    if path.is_file():
        try:
            model = load_cifar_checkpoint(path, device=device)
            description = f"Offline: the CIFAR-10 Xception from {_home_relative(path)} ({reasons[0]})."
            return AvailableModel(model, description, "cifar10")
        except Exception as error:  # a corrupt or foreign file must not stop the chapter
            reasons.append(f"checkpoint {_home_relative(path)} unreadable: {type(error).__name__}")
    else:
        reasons.append(f"no CIFAR-10 checkpoint at {_home_relative(path)}")

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Xception(XceptionConfig.timm_port())
    description = (
        f"Offline: a RANDOMLY INITIALISED Xception (seed {seed}), no class evidence in its predictions "
        f"or Grad-CAM ({'; '.join(reasons)})."
    )
    return AvailableModel(model.to(device).eval(), description, "random")


def class_names_for(kind: str, num_classes: int | None = None) -> list[str]:
    """Class names for a model kind: ImageNet's 1000 names, or CIFAR-10's 10.

    Args:
        kind: ``"imagenet"``, ``"random"`` (ImageNet architecture) or ``"cifar10"``.
        num_classes: The model's output count, checked against the names.
    """
    if kind in ("imagenet", "random"):
        names = imagenet_categories()
    elif kind == "cifar10":
        names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    else:
        raise ValueError(f"kind must be one of ('imagenet', 'random', 'cifar10'), got {kind!r}")
    if num_classes is not None and num_classes != len(names):
        raise ValueError(f"expected a model with {len(names)} outputs for kind {kind!r}, got {num_classes}")
    return names
