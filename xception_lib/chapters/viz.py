"""Looking inside Xception: feature maps, first-layer filters, separable convolutions, statistics.

Figures are 7 in wide (the book's column) with text of 9 pt or more; stage outputs come from
:meth:`~xception_lib.Xception.forward_intermediates`. Re-exports what chapter 7 needs of images and Grad-CAM.
"""

from __future__ import annotations

import json
import os
import socket
import textwrap
import urllib.parse
import warnings
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import numpy as np
import torch

from xception_lib.chapters.gradcam import _device_of, grad_cam, plot_grad_cam
from xception_lib.chapters.images import (  # re-exported: the chapter needs only xl.viz
    CIFAR10, Preprocessing, example_images, imagenet_categories, preprocess, preprocessing_for, to_display,
)
from xception_lib.config import XceptionConfig
from xception_lib.layers import SeparableConv2d
from xception_lib.model import Xception
from xception_lib.runtime import eval_mode

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "CHECKPOINT_ENV", "SMALL_CHECKPOINT", "AvailableModel", "activation_statistics", "class_names_for",
    "example_images", "grad_cam", "load_best_available_model", "load_cifar_checkpoint", "load_pretrained_imagenet",
    "panel_grid", "plot_activation_statistics", "plot_feature_maps", "plot_first_filters", "plot_grad_cam",
    "plot_separable_steps", "plot_stages", "plot_top_k", "preprocess", "preprocessing_for", "select_channels",
    "small_checkpoint_provenance", "stage_outputs", "top_k",
]

WIDTH = 7.0  # figure width in inches: the book's text column

# --------------------------------------------------------------------------- stage outputs
def stage_outputs(model: Xception, images: torch.Tensor, *, device: torch.device | str | None = None) -> OrderedDict[str, torch.Tensor]:
    """Every named stage's output (N x C x h x w, on the CPU) for preprocessed images, in eval mode."""
    device = _device_of(model, device)
    x = images[None] if images.dim() == 3 else images
    with eval_mode(model.to(device)), torch.no_grad():
        out = model.forward_intermediates(x.to(device))
    return OrderedDict((name, t.cpu()) for name, t in out.items())


def select_channels(activation: torch.Tensor, channels: str | Sequence[int] = "active", n: int = 16, *, seed: int = 0) -> list[int]:
    """Which channels of one image's C x h x w activation to show: ``"active"``, the ``n`` with the largest
    mean after ReLU, most active first; ``"random"``, ``n`` drawn with ``seed``; or a list of indices."""
    if activation.dim() != 3:
        raise ValueError(f"expected one image's activation C x h x w, got shape {tuple(activation.shape)}")
    c = activation.shape[0]
    if isinstance(channels, str):
        if not 1 <= n <= c:
            raise ValueError(f"n must be in [1, {c}] for this stage's {c} channels, got {n}")
        if channels == "active":
            score = activation.clamp_min(0).mean(dim=(1, 2))
            return torch.argsort(score, descending=True, stable=True)[:n].tolist()
        if channels == "random":
            return sorted(np.random.default_rng(seed).choice(c, size=n, replace=False).tolist())
        raise ValueError(f"channels must be 'active', 'random' or a list of indices, got {channels!r}")
    chosen = [int(i) for i in channels]
    if not chosen or any(not 0 <= i < c for i in chosen):
        raise ValueError(f"channel indices must be in [0, {c - 1}], got {chosen}")
    return chosen


# --------------------------------------------------------------------------- drawing
def panel_grid(nrows: int, ncols: int, *, height: float | None = None, title_room: float = 0.45) -> tuple[Figure, np.ndarray]:
    """A ``WIDTH``-inch-wide figure and its ``nrows x ncols`` axes without ticks; ``height``: of a row."""
    import matplotlib.pyplot as plt

    row = height if height is not None else WIDTH / ncols + 0.3
    fig, axes = plt.subplots(nrows, ncols, figsize=(WIDTH, row * nrows + title_room), squeeze=False, layout="constrained")
    for ax in axes.flat:
        ax.set(xticks=[], yticks=[])
    return fig, axes


def _panels(count: int, ncols: int, *, height: float | None = None) -> tuple[Figure, list[Axes]]:
    """The first ``count`` axes of a :func:`panel_grid` of ``ncols`` columns; the others are removed."""
    ncols = max(1, min(ncols, count))
    fig, axes = panel_grid(-(-count // ncols), ncols, height=height)
    for ax in axes.flat[count:]:
        ax.remove()
    return fig, list(axes.flat[:count])


def _robust_range(x: torch.Tensor, q: float = 0.995) -> tuple[float, float]:
    """(low, high) from quantiles, so one hot pixel does not wash out a map."""
    flat = x.flatten().float()
    lo, hi = float(torch.quantile(flat, 1 - q)), float(torch.quantile(flat, q))
    return (lo, hi) if hi > lo else (lo, lo + 1e-6)


def _show_map(ax: Axes, m: torch.Tensor, label: str, scale: tuple[float, float] | None = None, *, signed: bool = False) -> None:
    """One feature map: viridis from 0 after ReLU, or red/blue around 0 when ``signed``."""
    m = m.detach().float().cpu()
    if signed:
        hi = _robust_range(m.abs())[1]
        ax.imshow(m.numpy(), cmap="RdBu_r", vmin=-hi, vmax=hi, interpolation="nearest")
    else:
        lo, hi = scale if scale is not None else _robust_range(m)
        ax.imshow(m.numpy(), cmap="viridis", vmin=max(lo, 0.0), vmax=hi, interpolation="nearest")
    ax.set_title(label, fontsize=9)
    ax.set(xticks=[], yticks=[])


def _one_image(image: torch.Tensor) -> torch.Tensor:
    x = image[None] if image.dim() == 3 else image
    if x.dim() != 4 or x.shape[0] != 1:
        raise ValueError(f"expected one image (3 x H x W or 1 x 3 x H x W), got shape {tuple(image.shape)}")
    return x


def plot_feature_maps(
    model: Xception, image: torch.Tensor, stage: str, *, channels: str | Sequence[int] = "active", n: int = 16,
    ncols: int = 8, seed: int = 0, normalize: Literal["channel", "stage"] = "channel",
    device: torch.device | str | None = None, title: str | None = None,
) -> Figure:
    """A grid of one stage's feature maps for one image, after ReLU.

    Args:
        image: One preprocessed image, 3 x H x W or 1 x 3 x H x W.
        stage: A key of ``model.stages()``: ``"stem"``, ``"entry_flow.block1"`` ... ``"exit_flow"``.
        channels, n, seed: Which channels (see :func:`select_channels`).
        normalize: ``"channel"`` scales each map to its own range (the pattern of every
            channel); ``"stage"`` uses one range for all (which channels respond strongly).
        title: The figure's title (default: the stage, its shape and the choice).
    """
    if stage not in model.stages():
        raise ValueError(f"stage must be one of {list(model.stages())}, got {stage!r}")
    if normalize not in ("channel", "stage"):
        raise ValueError(f"normalize must be 'channel' or 'stage', got {normalize!r}")
    act = stage_outputs(model, _one_image(image), device=device)[stage][0]  # C x h x w
    chosen = select_channels(act, channels, n, seed=seed)
    maps = act[chosen].clamp_min(0)  # what the next layer's ReLU lets through
    shared = _robust_range(maps) if normalize == "stage" else None
    fig, axes = _panels(len(chosen), ncols)
    for ax, ch, m in zip(axes, chosen, maps):
        _show_map(ax, m, f"ch {ch}", shared)
    how = {"active": "most active", "random": "random"}[channels] if isinstance(channels, str) else "chosen"
    c, h, w = act.shape
    scale = "own scale each" if normalize == "channel" else "one scale"
    fig.suptitle(title or f"{stage}: {len(chosen)} {how} of {c} channels ({h}x{w}, ReLU, {scale})", fontsize=11)
    return fig


def plot_stages(
    model: Xception, image: torch.Tensor, *, n: int = 6, stages: Sequence[str] | None = None,
    device: torch.device | str | None = None, title: str | None = None,
) -> Figure:
    """The ``n`` most active channels of every stage (or of ``stages``) for one image, a row each."""
    outs = stage_outputs(model, _one_image(image), device=device)
    names = list(outs) if stages is None else list(stages)
    unknown = [s for s in names if s not in outs]
    if unknown:
        raise ValueError(f"stages must be among {list(outs)}, got {unknown}")
    fig, axes = panel_grid(len(names), n)
    for row, name in enumerate(names):
        act = outs[name][0]
        for col, ch in enumerate(select_channels(act, "active", n)):
            _show_map(axes[row, col], act[ch].clamp_min(0), f"ch {ch}")
        c, h, w = act.shape
        axes[row, 0].set_ylabel(f"{name.replace('_flow', '').replace('.block', ' ')}\n{c} x {h}x{w}", fontsize=9)
    fig.suptitle(title or "Most active channels of each stage (after ReLU, each on its own scale)", fontsize=11)
    return fig


def plot_first_filters(model: Xception, *, ncols: int = 8, title: str | None = None) -> Figure:
    """The first convolution's filters (``model.stem.conv1``) as small RGB patches, each scaled by its own
    largest absolute weight: grey is 0, a colour shows the mix of R, G and B the filter responds to."""
    weight = model.stem.conv1.weight.detach().float().cpu()  # C_out x 3 x k x k
    if weight.shape[1] != 3:
        raise ValueError(f"expected a first convolution on 3 (RGB) channels, got {weight.shape[1]}")
    scale = weight.abs().amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)
    patches = (weight / (2 * scale) + 0.5).permute(0, 2, 3, 1).numpy()  # C_out x k x k x 3 in [0, 1]
    fig, axes = _panels(len(patches), ncols)
    for k, (ax, patch) in enumerate(zip(axes, patches)):
        ax.imshow(patch, interpolation="nearest")
        ax.set_title(f"{k}", fontsize=9)
    k = weight.shape[-1]
    fig.suptitle(title or f"stem.conv1: {len(patches)} filters of 3 x {k} x {k} as RGB (grey = 0)", fontsize=11)
    return fig


# --------------------------------------------------------------------------- separable steps
def _separable_input(model: Xception, x: torch.Tensor, layer: str) -> torch.Tensor:
    """The input a named SeparableConv2d receives, captured by a pre-hook that is always removed."""
    module = dict(model.named_modules()).get(layer)
    if not isinstance(module, SeparableConv2d):
        raise ValueError(f"expected the name of a SeparableConv2d (e.g. 'entry_flow.block1.layers.sep1'), got {layer!r}")
    captured: list[torch.Tensor] = []
    handle = module.register_forward_pre_hook(lambda _m, args: captured.append(args[0].detach().clone()))
    try:
        with eval_mode(model), torch.no_grad():
            model.forward_features(x)
    finally:
        handle.remove()
    return captured[0]


def plot_separable_steps(
    model: Xception, image: torch.Tensor, layer: str = "entry_flow.block1.layers.sep1", *, inputs: int = 4,
    outputs: int = 3, device: torch.device | str | None = None, title: str | None = None,
) -> Figure:
    """One separable convolution (``layer`` names a :class:`~xception_lib.SeparableConv2d`), step by step.

    Top: ``inputs`` input channels, the 3x3 depthwise kernel of each and its output. Bottom: the
    pointwise weights to the ``outputs`` most active output channels, and those outputs. Inputs are
    those contributing most to them (pointwise weight x depthwise activity). Red positive, blue negative.
    """
    import matplotlib.pyplot as plt

    device = _device_of(model, device)
    x_in = _separable_input(model.to(device), _one_image(image).to(device), layer)
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
    ins = torch.argsort((p[outs].abs() * activity).sum(dim=0), descending=True)[:inputs].tolist()
    kernels = sep.depthwise.weight.detach().cpu()[:, 0]  # C_in x k x k (one kernel per channel)

    fig = plt.figure(figsize=(WIDTH, 8.6), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[3, 1.2])
    grid = top.subplots(3, inputs, squeeze=False)
    for col, i in enumerate(ins):
        for row, (m, label) in enumerate([(x_in[0, i], "input"), (kernels[i], "kernel"), (depthwise[0, i], "depthwise")]):
            _show_map(grid[row, col], m, f"{label}, ch {i}", signed=True)
    for ax, label in zip(grid[:, 0], ("input", "3x3 kernel", "after\ndepthwise")):
        ax.set_ylabel(label, fontsize=9)
    top.suptitle(f"Step 1, depthwise: each of the {c_in} channels is filtered on its own", fontsize=10)

    lower = bottom.subplots(1, 1 + outputs, squeeze=False, width_ratios=[1.6] + [1.0] * outputs)[0]
    w = p[outs][:, ins].numpy()
    bound = float(np.abs(w).max()) or 1.0
    lower[0].imshow(w, cmap="RdBu_r", vmin=-bound, vmax=bound, aspect="auto")
    for (r, c), value in np.ndenumerate(w):
        lower[0].text(c, r, f"{value:+.2f}", ha="center", va="center", fontsize=9, color="white" if abs(value) > 0.6 * bound else "black")
    lower[0].set_xticks(range(len(ins)), [f"in {i}" for i in ins], fontsize=9, rotation=45)
    lower[0].set_yticks(range(len(outs)), [f"out {o}" for o in outs], fontsize=9)
    lower[0].set_title("pointwise weights", fontsize=9)
    for col, o in enumerate(outs, start=1):
        _show_map(lower[col], pointwise[0, o], f"output ch {o}", signed=True)
    bottom.suptitle(f"Step 2, pointwise: each of the {c_out} outputs sums all {c_in} depthwise channels", fontsize=10)
    h, w_ = depthwise.shape[-2:]
    fig.suptitle(title or f"{layer}: {c_in} -> {c_out} channels at {h}x{w_}", fontsize=11)
    return fig


# --------------------------------------------------------------------------- statistics
def activation_statistics(model: Xception, images: torch.Tensor, *, device: torch.device | str | None = None) -> pd.DataFrame:
    """Per-stage statistics of a batch of images' activations, one row per stage (the index).

    Columns: ``channels``, ``height``, ``width``, ``mean`` and ``std`` of the raw output, ``mean_relu``,
    ``sparsity`` (fraction that ReLU sets to zero), ``dead_channels`` (fraction zero everywhere after ReLU).
    """
    import pandas as pd

    rows = {}
    for name, act in stage_outputs(model, images, device=device).items():
        relu = act.clamp_min(0)
        rows[name] = dict(
            channels=act.shape[1], height=act.shape[2], width=act.shape[3], mean=float(act.mean()), std=float(act.std()),
            mean_relu=float(relu.mean()), sparsity=float((act <= 0).float().mean()),
            dead_channels=float((relu.amax(dim=(0, 2, 3)) == 0).float().mean()),
        )
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("stage")


def plot_activation_statistics(stats: pd.DataFrame | Mapping[str, pd.DataFrame], *, title: str | None = None) -> Figure:
    """Mean after ReLU, spread, sparsity and dead channels per stage: four line plots of
    :func:`activation_statistics`, or of several of them keyed by a label to compare."""
    import matplotlib.pyplot as plt

    series = dict(stats) if isinstance(stats, Mapping) else {"": stats}
    fig, grid = plt.subplots(2, 2, figsize=(WIDTH, 5.6), layout="constrained")
    panels = [("mean_relu", "mean after ReLU"), ("std", "standard deviation"),
              ("sparsity", "fraction zero after ReLU"), ("dead_channels", "channels never firing")]
    for ax, (key, label) in zip(grid.flat, panels):
        for name, frame in series.items():
            short = [s.replace("_flow", "").replace(".block", " ") for s in frame.index]
            ax.plot(short, frame[key], marker="o", label=name or None)
        if key in ("sparsity", "dead_channels"):
            ax.set_ylim(-0.02, 1.02)
        elif all((frame[key] > 0).all() for frame in series.values()):
            ax.set_yscale("log")  # values can span orders of magnitude across stages
            label += " (log)"
        ax.set_ylabel(label, fontsize=9)
        ax.tick_params(labelsize=9)
        ax.tick_params(axis="x", labelrotation=30)
        ax.grid(alpha=0.3)
    if any(series):
        grid[0, 0].legend(fontsize=9)
    fig.suptitle(title or "Activation statistics per stage", fontsize=11)
    return fig


# --------------------------------------------------------------------------- predictions
def top_k(model: Xception, images: torch.Tensor, class_names: Sequence[str], *, k: int = 5, device: torch.device | str | None = None) -> list[list[tuple[str, float]]]:
    """The ``k`` most probable classes of each image, as (name, probability) pairs."""
    device = _device_of(model, device)
    x = images[None] if images.dim() == 3 else images
    with eval_mode(model.to(device)), torch.no_grad():
        probs = model(x.to(device)).softmax(dim=1).cpu()
    if probs.shape[1] != len(class_names):
        raise ValueError(f"expected {probs.shape[1]} class names (one per model output), got {len(class_names)}")
    values, indices = probs.topk(min(k, probs.shape[1]), dim=1)
    return [[(class_names[i], v) for v, i in zip(vs.tolist(), ids.tolist())] for vs, ids in zip(values, indices)]


def plot_top_k(
    model: Xception, images: torch.Tensor, class_names: Sequence[str], *, k: int = 5,
    image_names: Sequence[str] | None = None, spec: Preprocessing | None = None,
    device: torch.device | str | None = None, title: str | None = None,
) -> Figure:
    """Each image beside a bar chart of its top-``k`` classes (two images per row)."""
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    x = images[None] if images.dim() == 3 else images
    predictions = top_k(model, x, class_names, k=k, device=device)
    fig, axes = _panels(2 * len(predictions), 4, height=1.9)  # image, bars, image, bars, ...
    for i, pairs in enumerate(predictions):
        image_ax, ax = axes[2 * i], axes[2 * i + 1]
        image_ax.imshow(to_display(x[i], spec))
        image_ax.set_title(image_names[i] if image_names else f"image {i}", fontsize=9)
        names, probs = zip(*pairs)
        ranks = range(len(pairs))[::-1]
        ax.barh(ranks, probs, color="tab:blue")
        ax.set_yticks(ranks, [s[:14] for s in names], fontsize=9)
        ax.set_xlim(0, 1)
        ax.xaxis.set_major_locator(MaxNLocator(2))
        ax.xaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
        ax.tick_params(axis="x", labelsize=9)
        ax.set_title(f"top-{len(pairs)}: {probs[0]:.0%}", fontsize=9)
    fig.suptitle(title or f"Top-{k} predictions", fontsize=11)
    return fig


# --------------------------------------------------------------------------- which model

#: Environment variable naming a CIFAR-10 checkpoint (written by ``xl.train.fit``) to show.
CHECKPOINT_ENV = "XCEPTION_CIFAR_CHECKPOINT"
#: The small CIFAR-10 Xception shipped with the package; its provenance is the ``.json`` beside it.
SMALL_CHECKPOINT = Path(__file__).resolve().parent.parent / "assets" / "xception_cifar10_small.pth"
#: Environment variables that, when set to 1/true, forbid download attempts.
OFFLINE_ENVS = ("XCEPTION_OFFLINE", "HF_HUB_OFFLINE")
_CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


class AvailableModel(NamedTuple):
    """The model found (in eval mode), which it is and why (lines <= 88 characters), its kind
    and its measured top-1 test accuracy where its file records one."""

    model: Xception
    description: str
    kind: Literal["imagenet", "cifar10"]
    test_accuracy: float | None


def _wrap(text: str) -> str:
    return textwrap.fill(text, 88, break_long_words=False, break_on_hyphens=False)


def _import_timm() -> Any:
    with warnings.catch_warnings():  # timm imports tqdm.auto, which warns in notebooks without ipywidgets
        warnings.simplefilter("ignore")
        import timm
    return timm


def _timm_weights_url() -> str:
    cfg = _import_timm().models.get_pretrained_cfg("legacy_xception")
    return str(cfg.url) if cfg is not None and cfg.url else "https://huggingface.co"


def _cached_weights(url: str) -> Path | None:
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(urllib.parse.urlparse(url).path).name
    return path if path.is_file() else None


def load_pretrained_imagenet(*, timeout_s: float = 3.0) -> Xception:
    """timm's pretrained ``legacy_xception`` converted with :func:`xception_lib.from_timm`. Without weights in
    torch's hub cache the host is probed, so an offline machine fails (``OSError``) in ``timeout_s``;
    ``XCEPTION_OFFLINE=1`` or ``HF_HUB_OFFLINE=1`` skips the attempt."""
    from xception_lib.pretrained import from_timm

    timm = _import_timm()
    url = _timm_weights_url()
    if _cached_weights(url) is None:
        on = ("1", "true", "yes", "on")
        env = next((name for name in OFFLINE_ENVS if os.environ.get(name, "").strip().lower() in on), None)
        if env is not None:
            raise OSError(f"downloads disabled by {env}")
        host = urllib.parse.urlparse(url).hostname or "huggingface.co"
        socket.create_connection((host, 443), timeout=timeout_s).close()  # reachable: let timm download
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return from_timm(timm.create_model("legacy_xception", pretrained=True))


def _read_checkpoint(path: Path) -> tuple[Xception, float | None]:
    """The model a checkpoint file holds and the last test accuracy it records (or ``None``)."""
    fix = (f"Expected a checkpoint written by xl.train.fit (a dict with 'model' and 'model_config'); "
           f"replace the file, or unset {CHECKPOINT_ENV} to see the model the book ships.")
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {path}. {fix}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # empty, truncated, text, or a pickle of other objects
        raise ValueError(f"{path} is not a readable PyTorch checkpoint (truncated, empty or of another kind: "
                         f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else 'no detail'}). {fix}") from error
    if not isinstance(obj, Mapping) or not isinstance(obj.get("model"), Mapping):
        raise ValueError(f"{path} holds no 'model' state dict (a {type(obj).__name__}). {fix}")
    history = obj.get("history") if isinstance(obj.get("history"), Mapping) else {}
    fields = obj.get("model_config") or history.get("meta", {}).get("model_config")  # older fit: in the history's meta
    if not isinstance(fields, Mapping):
        raise ValueError(f"{path} does not say which Xception it holds: no 'model_config' (its 'config', if any, "
                         f"is the TrainConfig), so the architecture is unknown. {fix}")
    try:
        model = Xception(XceptionConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}))
        state = {k.removeprefix("_orig_mod.").removeprefix("module."): v for k, v in obj["model"].items()}
        model.load_state_dict(state)
    except (TypeError, ValueError, RuntimeError) as error:
        raise ValueError(f"{path}: its weights do not fit its model_config: {str(error)[:300]}. {fix}") from error
    accuracies = [a for a in history.get("test_acc", []) if a == a]  # nan: not evaluated that epoch
    return model.eval(), (accuracies[-1] if accuracies else None)


def load_cifar_checkpoint(path: str | Path, *, device: torch.device | str = "cpu") -> Xception:
    """The Xception in a checkpoint of ``xl.train.fit`` (``"model"``, a state dict, and ``"model_config"``, or from
    an older ``fit`` ``history["meta"]``). A bad file raises an error that names it and says what to do."""
    return _read_checkpoint(Path(path).expanduser())[0].to(device)


def small_checkpoint_provenance() -> dict[str, Any]:
    """How the shipped :data:`SMALL_CHECKPOINT` was made: configs, accuracy, time, CPU, command."""
    return json.loads(SMALL_CHECKPOINT.with_suffix(".json").read_text())


def load_best_available_model(
    *, checkpoint: str | Path | None = None, allow_download: bool = True, timeout_s: float = 3.0,
    device: torch.device | str = "cpu",
) -> AvailableModel:
    """The most informative trained Xception this machine can get, and what it is. In order: the CIFAR-10
    checkpoint you name (``checkpoint`` or ``$XCEPTION_CIFAR_CHECKPOINT``; it must load), the pretrained
    ImageNet Xception (:func:`load_pretrained_imagenet`), the small CIFAR-10 Xception shipped with the package.
    """
    named = checkpoint or os.environ.get(CHECKPOINT_ENV)
    if named:
        path = Path(named).expanduser()
        model, accuracy = _read_checkpoint(path)
        measured = f", last test accuracy {accuracy:.2%}" if accuracy is not None else ", no test accuracy recorded"
        found = AvailableModel(model, f"CIFAR-10 Xception from {path}{measured}.", "cifar10", accuracy)
    else:
        why = "downloads not allowed"
        if allow_download:
            try:
                text = "Pretrained ImageNet Xception (timm's legacy_xception, the Keras weights) via xl.from_timm."
                return AvailableModel(load_pretrained_imagenet(timeout_s=timeout_s).to(device).eval(), _wrap(text),
                                      "imagenet", None)
            except Exception as error:  # no network, no timm, a failed download: show the shipped model
                why = f"ImageNet weights unavailable: {type(error).__name__}: {error}"
        info = small_checkpoint_provenance()
        model, _ = _read_checkpoint(SMALL_CHECKPOINT)
        text = (
            f"The small CIFAR-10 Xception shipped with xception_lib: {info['model']}, {info['parameters']:,} parameters, "
            f"trained {info['epochs']} epochs on {info['threads']} CPU thread(s) ({info['environment']['device_name']}); "
            f"{info['test_accuracy']:.2%} test accuracy on the {info['test_images']:,} CIFAR-10 test images ({why[:120]})."
        )
        found = AvailableModel(model, text, "cifar10", float(info["test_accuracy"]))
    return found._replace(model=found.model.to(device), description=_wrap(found.description))


def class_names_for(kind: str, num_classes: int | None = None) -> list[str]:
    """Class names for a model kind (``"imagenet"``: 1000, ``"cifar10"``: 10), checked against ``num_classes``."""
    names = list(_CIFAR10_CLASSES) if preprocessing_for(kind) is CIFAR10 else imagenet_categories()
    if num_classes is not None and num_classes != len(names):
        raise ValueError(f"expected a model with {len(names)} outputs for kind {kind!r}, got {num_classes}")
    return names
