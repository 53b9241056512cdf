"""Looking inside Xception (chapter 7): feature maps, first-layer filters, separable convolutions, statistics, and
which trained model to show. Figures fill the book's column with text of 9 pt or more."""

from __future__ import annotations

import json
import os
import socket
import textwrap
import urllib.parse
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import numpy as np
import torch

from xception_lib.chapters import style
from xception_lib.checkpoint import CheckpointError, load_checkpoint
from xception_lib.config import XceptionConfig
from xception_lib.layers import SeparableConv2d
from xception_lib.model import Xception
from xception_lib.runtime import eval_mode

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def as_batch(images: torch.Tensor, model: torch.nn.Module | None = None, *, one: bool = False) -> torch.Tensor:
    """Preprocessed images as N x 3 x H x W floats (one image, 3 x H x W, gains a batch dimension; N = 1 if
    ``one``), on the ``model``'s device if given; anything else raises a ``ValueError`` or ``TypeError``."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"expected preprocessed images as a torch.Tensor, got {type(images).__name__}")
    x = images[None] if images.dim() == 3 else images
    if x.dim() != 4 or x.shape[1] != 3 or 0 in x.shape:
        raise ValueError(f"expected preprocessed images N x 3 x H x W (N >= 1), got shape {tuple(images.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"expected preprocessed float images, got {x.dtype}: apply xl.images.preprocess first")
    if one and x.shape[0] != 1:
        raise ValueError(f"expected one image (3 x H x W or 1 x 3 x H x W), got shape {tuple(images.shape)}")
    return x if model is None else x.to(next(model.parameters()).device)


def stage_outputs(model: Xception, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every named stage's output (N x C x h x w, on the CPU) for preprocessed images, in eval mode."""
    with eval_mode(model), torch.no_grad():
        out = model.forward_intermediates(as_batch(images, model))
    return {name: t.cpu() for name, t in out.items()}


def select_channels(activation: torch.Tensor, n: int = 16) -> list[int]:
    """The ``n`` channels of one image's C x h x w activation with the largest mean after ReLU, most active first."""
    if activation.dim() != 3:
        raise ValueError(f"expected one image's activation C x h x w, got shape {tuple(activation.shape)}")
    c = activation.shape[0]
    if not 1 <= n <= c:
        raise ValueError(f"n must be in [1, {c}] for this stage's {c} channels, got {n}")
    return torch.argsort(activation.clamp_min(0).mean(dim=(1, 2)), descending=True, stable=True)[:n].tolist()


def panel_grid(nrows: int, ncols: int, *, height: float | None = None) -> tuple[Figure, np.ndarray]:
    """A column-wide figure and its ``nrows x ncols`` axes without ticks; ``height``: of a row."""
    import matplotlib.pyplot as plt

    row = height if height is not None else style.COLUMN_IN / ncols + 0.3
    size = (style.COLUMN_IN, row * nrows + 0.45)  # 0.45 in for the title
    no_ticks: dict[str, Any] = {"xticks": [], "yticks": []}
    return plt.subplots(nrows, ncols, figsize=size, squeeze=False, layout="constrained", subplot_kw=no_ticks)


def _panels(count: int, ncols: int = 8) -> tuple[Figure, list[Axes]]:
    """The first ``count`` axes of a :func:`panel_grid` of ``ncols`` columns; the others are removed."""
    ncols = min(ncols, count)
    fig, axes = panel_grid(-(-count // ncols), ncols)
    for ax in axes.flat[count:]:
        ax.remove()
    return fig, list(axes.flat[:count])


def _show_map(ax: Axes, m: torch.Tensor, label: str, *, signed: bool = False) -> None:
    """One feature map: viridis from 0 after ReLU, or red/blue around 0 when ``signed``; the colour range is
    the map's 0.5% and 99.5% quantiles, so that one hot pixel does not wash it out."""
    m = m.detach().float().cpu()
    lo, hi = (float(q) for q in torch.quantile((m.abs() if signed else m).flatten(), torch.tensor([0.005, 0.995])))
    hi = max(hi, lo + 1e-6)
    low = -hi if signed else max(lo, 0.0)
    ax.imshow(m.numpy(), cmap="RdBu_r" if signed else "viridis", vmin=low, vmax=hi, interpolation="nearest")
    ax.set(xticks=[], yticks=[])
    ax.set_title(label, fontsize=9)


def plot_feature_maps(
    model: Xception, image: torch.Tensor, stage: str, *, n: int = 16, title: str | None = None
) -> Figure:
    """The ``n`` most active of one stage's feature maps (a key of ``model.stages()``) for one preprocessed image
    (3 x H x W or 1 x 3 x H x W), after ReLU, each on its own scale."""
    if stage not in model.stages():
        raise ValueError(f"stage must be one of {list(model.stages())}, got {stage!r}")
    act = stage_outputs(model, as_batch(image, one=True))[stage][0]  # C x h x w
    fig, axes = _panels(n)
    for ax, ch in zip(axes, select_channels(act, n), strict=True):
        _show_map(ax, act[ch].clamp_min(0), f"ch {ch}")  # what the next layer's ReLU lets through
    c, h, w = act.shape
    which = f"all {c} channels, most active first" if n == c else f"{n} most active of {c} channels"
    fig.suptitle(title or f"{stage}: {which} ({h}x{w}, ReLU, own scale each)", fontsize=11)
    return fig


def plot_stages(model: Xception, image: torch.Tensor, *, n: int = 6) -> Figure:
    """The ``n`` most active channels of every stage for one image, a row each."""
    outs = stage_outputs(model, as_batch(image, one=True))
    fig, axes = panel_grid(len(outs), n)
    for row, (name, act) in enumerate(outs.items()):
        for col, ch in enumerate(select_channels(act[0], n)):
            _show_map(axes[row, col], act[0, ch].clamp_min(0), f"ch {ch}")
        c, h, w = act.shape[1:]
        axes[row, 0].set_ylabel(f"{name.replace('_flow', '').replace('.block', ' ')}\n{c} x {h}x{w}", fontsize=9)
    fig.suptitle("Most active channels of each stage (after ReLU, each on its own scale)", fontsize=11)
    return fig


def plot_first_filters(model: Xception) -> Figure:
    """The first convolution's filters (``model.stem.conv1``) as small RGB patches, each scaled by its own
    largest absolute weight: grey is 0, a colour shows the mix of R, G and B the filter responds to."""
    weight = model.get_parameter("stem.conv1.weight").detach().float().cpu()  # C_out x 3 x k x k
    scale = weight.abs().amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)
    patches = (weight / (2 * scale) + 0.5).permute(0, 2, 3, 1).numpy()  # C_out x k x k x 3 in [0, 1]
    fig, axes = _panels(len(patches))
    for i, (ax, patch) in enumerate(zip(axes, patches, strict=True)):
        ax.imshow(patch, interpolation="nearest")
        ax.set_title(f"{i}", fontsize=9)
    k = weight.shape[-1]
    fig.suptitle(f"stem.conv1: {len(patches)} filters of 3 x {k} x {k} as RGB (grey = 0)", fontsize=11)
    return fig


def _separable_input(model: Xception, x: torch.Tensor, layer: str) -> tuple[SeparableConv2d, torch.Tensor]:
    """A named SeparableConv2d and the input it receives, captured by a pre-hook that is always removed."""
    module = dict(model.named_modules()).get(layer)
    if not isinstance(module, SeparableConv2d):
        raise ValueError(
            f"expected the name of a SeparableConv2d (e.g. 'entry_flow.block1.layers.sep1'), got {layer!r}"
        )
    captured: list[torch.Tensor] = []
    handle = module.register_forward_pre_hook(lambda _m, args: captured.append(args[0].detach().clone()))
    try:
        with eval_mode(model), torch.no_grad():
            model.forward_features(x)
    finally:
        handle.remove()
    return module, captured[0]


def plot_separable_steps(
    model: Xception,
    image: torch.Tensor,
    layer: str = "entry_flow.block1.layers.sep1",
    *,
    inputs: int = 4,
    outputs: int = 3,
) -> Figure:
    """One separable convolution (``layer`` names a :class:`~xception_lib.SeparableConv2d`), step by step.

    Top: ``inputs`` input channels, the 3x3 depthwise kernel of each and its output. Bottom: the
    pointwise weights to the ``outputs`` most active output channels, and those outputs. Inputs are
    those contributing most to them (pointwise weight x depthwise activity). Red positive, blue negative.
    """
    import matplotlib.pyplot as plt

    sep, x_in = _separable_input(model, as_batch(image, model, one=True), layer)
    with torch.no_grad():
        depthwise = sep.depthwise(x_in)  # 1 x C_in x h x w: each channel filtered on its own
        mixed_in = sep.intermediate(depthwise)
        pointwise = sep.pointwise(mixed_in)  # 1 x C_out x h x w: 1x1 mix of all channels
    (c_in, h, w), c_out = depthwise.shape[1:], pointwise.shape[1]
    if not 1 <= inputs <= c_in or not 1 <= outputs <= c_out:
        raise ValueError(f"inputs must be in [1, {c_in}] and outputs in [1, {c_out}], got {inputs} and {outputs}")
    p = sep.pointwise.weight.detach()[:, :, 0, 0].cpu()  # C_out x C_in
    outs = torch.argsort(pointwise[0].abs().mean(dim=(1, 2)).cpu(), descending=True)[:outputs].tolist()
    activity = mixed_in[0].abs().mean(dim=(1, 2)).cpu()  # C_in
    ins = torch.argsort((p[outs].abs() * activity).sum(dim=0), descending=True)[:inputs].tolist()
    kernels = sep.depthwise.weight.detach().cpu()[:, 0]  # C_in x k x k (one kernel per channel)

    fig = plt.figure(figsize=(style.COLUMN_IN, 8.6), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[3, 1.2], squeeze=False)[:, 0]
    grid = top.subplots(3, inputs, squeeze=False)
    for col, i in enumerate(ins):
        for row, (m, what) in enumerate([(x_in, "input"), (kernels[None], "kernel"), (depthwise, "depthwise")]):
            _show_map(grid[row, col], m[0, i], f"{what}, ch {i}", signed=True)
    for ax, label in zip(grid[:, 0], ("input", "3x3 kernel", "after\ndepthwise"), strict=True):
        ax.set_ylabel(label, fontsize=9)
    heading = {"fontsize": 10, "fontweight": "bold"}
    step = f"Step 1, depthwise: each of the {c_in} channels is filtered on its own"
    top.suptitle(step, color=style.colour("depthwise"), **heading)
    lower = bottom.subplots(1, 1 + outputs, width_ratios=[1.6] + [1.0] * outputs)
    weights = p[outs][:, ins].numpy()
    bound = float(np.abs(weights).max()) or 1.0
    lower[0].imshow(weights, cmap="RdBu_r", vmin=-bound, vmax=bound, aspect="auto")
    for (r, c), v in np.ndenumerate(weights):
        ink = "w" if abs(v) > 0.6 * bound else "k"
        lower[0].text(c, r, f"{v:+.2f}", ha="center", va="center", fontsize=9, color=ink)
    lower[0].set_xticks(range(len(ins)), [f"in {i}" for i in ins], fontsize=9, rotation=45)
    lower[0].set_yticks(range(len(outs)), [f"out {o}" for o in outs], fontsize=9)
    lower[0].set_title("pointwise weights", fontsize=9)
    for ax, o in zip(lower[1:], outs, strict=True):
        _show_map(ax, pointwise[0, o], f"output ch {o}", signed=True)
    step = f"Step 2, pointwise: each of the {c_out} outputs sums all {c_in} depthwise channels"
    bottom.suptitle(step, color=style.colour("pointwise"), **heading)
    fig.suptitle(f"{layer}: {c_in} -> {c_out} channels at {h}x{w}", fontsize=11)
    return fig


def activation_statistics(model: Xception, images: torch.Tensor) -> pd.DataFrame:
    """Per-stage statistics of a batch of images' activations, one row per stage (the index): ``channels``,
    ``mean_relu`` (mean after ReLU), ``std`` (of the raw output), ``sparsity`` (fraction that ReLU sets to zero),
    ``dead_channels`` (fraction of channels zero everywhere after ReLU)."""
    import pandas as pd

    rows = {}
    for name, act in stage_outputs(model, images).items():
        rows[name] = {
            "channels": act.shape[1],
            "mean_relu": float(act.relu().mean()),
            "std": float(act.std()),
            "sparsity": float((act <= 0).float().mean()),
            "dead_channels": float((act.amax(dim=(0, 2, 3)) <= 0).float().mean()),
        }
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("stage")


def plot_activation_statistics(stats: Mapping[str, pd.DataFrame], *, title: str | None = None) -> Figure:
    """Mean after ReLU, spread, sparsity and dead channels per stage: four line plots of
    :func:`activation_statistics` results keyed by a label to compare. The first is drawn in Xception's
    colour, the others in greys with dashed lines and open markers, told apart without colour."""
    import matplotlib.pyplot as plt

    looks = [{"color": style.colour("xception"), "ls": "-", "marker": "o"}] + [
        {"color": grey, "ls": "--", "marker": marker, "mfc": "white"}
        for grey, marker in zip(("0.45", "0.2", "0.65"), "s^D", strict=True)
    ]
    if len(stats) > len(looks):
        raise ValueError(f"expected at most {len(looks)} sets of statistics to compare, got {len(stats)}")
    fig, grid = plt.subplots(2, 2, figsize=(style.COLUMN_IN, 5.6), layout="constrained")
    panels = ["mean after ReLU", "standard deviation", "fraction zero after ReLU", "channels never firing"]
    for ax, key, label in zip(grid.flat, ["mean_relu", "std", "sparsity", "dead_channels"], panels, strict=True):
        for (name, frame), look in zip(stats.items(), looks, strict=False):
            ax.plot(frame.index.str.replace("_flow", "").str.replace(".block", " "), frame[key], label=name, **look)
        if key in ("sparsity", "dead_channels"):
            ax.set_ylim(-0.02, 1.02)
        elif all((frame[key] > 0).all() for frame in stats.values()):
            ax.set_yscale("log")  # values can span orders of magnitude across stages
            ax.yaxis.set_major_formatter("{x:g}")  # 0.5, not 5 x 10^-1; minor ticks: 2 and 5 labelled
            ax.yaxis.set_minor_formatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else "")
            label += " (log)"
        ax.set_ylabel(label, fontsize=9)
        ax.tick_params(labelsize=9)
        ax.tick_params(axis="x", labelrotation=30)
        ax.grid(alpha=0.3)
    grid[0, 0].legend(fontsize=9)
    fig.suptitle(title or "Activation statistics per stage", fontsize=11)
    return fig


def top_k(
    model: Xception, images: torch.Tensor, class_names: Sequence[str], *, k: int = 5
) -> list[list[tuple[str, float]]]:
    """The ``k`` most probable classes of each image, as (name, probability) pairs."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    with eval_mode(model), torch.no_grad():
        probs = model(as_batch(images, model)).softmax(dim=1).cpu()
    if probs.shape[1] != len(class_names):
        raise ValueError(f"expected {probs.shape[1]} class names (one per model output), got {len(class_names)}")
    values, indices = probs.topk(min(k, probs.shape[1]), dim=1)
    return [
        [(class_names[i], v) for v, i in zip(vs, ids, strict=True)]
        for vs, ids in zip(values.tolist(), indices.tolist(), strict=True)
    ]


#: Environment variable naming a CIFAR-10 checkpoint (written by ``xl.train.fit``) to show.
CHECKPOINT_ENV = "XCEPTION_CIFAR_CHECKPOINT"
#: The small CIFAR-10 Xception shipped with the package; its provenance is the ``.json`` beside it.
SMALL_CHECKPOINT = Path(__file__).resolve().parent.parent / "assets" / "xception_cifar10_small.pth"
#: Environment variables that, when set to 1/true, forbid download attempts.
OFFLINE_ENVS = ("XCEPTION_OFFLINE", "HF_HUB_OFFLINE")


class AvailableModel(NamedTuple):
    """The model found (in eval mode), which it is and why (lines <= 79 characters), its kind
    and its measured top-1 test accuracy where its file records one."""

    model: Xception
    description: str
    kind: Literal["imagenet", "cifar10"]
    test_accuracy: float | None


def load_pretrained_imagenet(*, timeout_s: float = 3.0) -> Xception:
    """timm's pretrained ``legacy_xception`` converted with :func:`xception_lib.from_timm`. Without weights in
    torch's hub cache the host is probed, so an offline machine fails (``OSError``, one sentence) in
    ``timeout_s``; ``XCEPTION_OFFLINE=1`` or ``HF_HUB_OFFLINE=1`` skips the attempt."""
    from xception_lib.pretrained import from_timm

    with warnings.catch_warnings():  # timm imports tqdm.auto, which warns in notebooks without ipywidgets
        warnings.simplefilter("ignore")
        import timm

        url = urllib.parse.urlparse(getattr(timm.models.get_pretrained_cfg("legacy_xception"), "url", None) or "")
        if not (Path(torch.hub.get_dir()) / "checkpoints" / Path(url.path).name).is_file():
            env = [e for e in OFFLINE_ENVS if os.environ.get(e, "").strip().lower() in ("1", "true", "yes", "on")]
            if env:
                raise OSError(f"downloads are disabled by {env[0]}")
            host = url.hostname or "huggingface.co"
            try:  # probe the host, so that an offline machine gives up in timeout_s
                socket.create_connection((host, 443), timeout=timeout_s).close()
            except OSError as error:  # gaierror, timeout, refused: the reader needs the cause, not the errno
                raise OSError(f"{host} cannot be reached from this machine (no network?)") from error
        return from_timm(timm.create_model("legacy_xception", pretrained=True))


def read_checkpoint(path: str | Path) -> tuple[Xception, float | None]:
    """The CIFAR-10 Xception (in eval mode) in a checkpoint of ``xl.train.fit``, and its last test accuracy."""
    path = Path(path).expanduser()
    fix = (
        "Expected a checkpoint written by xl.train.fit (a dict with 'model' and 'model_config'); "
        f"replace the file, or unset {CHECKPOINT_ENV} to see the model the book ships."
    )
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {path}. {fix}")
    try:
        obj = load_checkpoint(path)
    except CheckpointError as error:
        raise ValueError(f"{error}. {fix}") from None
    if not isinstance(obj.get("model"), Mapping):
        raise ValueError(f"{path} holds no 'model' state dict. {fix}")
    if not isinstance(obj.get("model_config"), Mapping):
        raise ValueError(
            f"{path} does not say which Xception it holds: no 'model_config' (its 'config', if any, is the "
            f"TrainConfig), so the architecture is unknown. {fix}"
        )
    try:
        fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in obj["model_config"].items()}
        model = Xception(XceptionConfig(**fields))
        model.load_state_dict(obj["model"])  # fit saves the unwrapped model's state, as restore reads it
    except (TypeError, ValueError, RuntimeError) as error:
        raise ValueError(f"{path}: its weights do not fit its model_config: {str(error)[:300]}. {fix}") from error
    if model.config.num_classes != 10:
        raise ValueError(
            f"{path} holds a {model.config.num_classes}-class Xception, not a CIFAR-10 one: chapter 7 names "
            f"its classes with CIFAR-10's. Name a CIFAR-10 checkpoint, or unset {CHECKPOINT_ENV}."
        )
    accuracies = [a for a in (obj.get("history") or {}).get("test_acc", []) if a == a]  # nan: not evaluated
    return model.eval(), (accuracies[-1] if accuracies else None)


def small_checkpoint_provenance() -> dict[str, Any]:
    """How the shipped :data:`SMALL_CHECKPOINT` was made: configs, data, accuracy, time, CPU, command."""
    info: dict[str, Any] = json.loads(SMALL_CHECKPOINT.with_suffix(".json").read_text())
    info["dataset"] = "CIFAR-10 (JPEG copy)" if "jpeg" in str(info.get("data", "")).lower() else "CIFAR-10"
    return info


def load_best_available_model() -> AvailableModel:
    """The most informative trained Xception this machine can get (on the CPU), and what it is. In order: the
    CIFAR-10 checkpoint named by ``$XCEPTION_CIFAR_CHECKPOINT`` (it must load), the pretrained ImageNet Xception
    (:func:`load_pretrained_imagenet`), the small CIFAR-10 Xception shipped with the package."""
    named = os.environ.get(CHECKPOINT_ENV)
    if named:
        model, accuracy = read_checkpoint(named)
        measured = f"last test accuracy {accuracy:.2%}" if accuracy is not None else "no test accuracy recorded"
        found = AvailableModel(model, f"CIFAR-10 Xception from {named}, {measured}.", "cifar10", accuracy)
    else:
        try:
            text = "Pretrained ImageNet Xception (timm's legacy_xception, the Keras weights) via xl.from_timm."
            found = AvailableModel(load_pretrained_imagenet(), text, "imagenet", None)
        except Exception as error:  # offline or downloads disabled (an OSError's one sentence), no timm...
            cause = str(error).splitlines()[0][:100] if isinstance(error, OSError) else type(error).__name__
            info = small_checkpoint_provenance()
            text = (
                f"The small CIFAR-10 Xception shipped with xception_lib: {info['model']}, {info['parameters']:,} "
                f"parameters, trained {info['epochs']} epochs on {info['threads']} CPU thread(s) "
                f"({info['environment']['device_name']}); {info['test_accuracy']:.2%} test accuracy on the "
                f"{info['test_images']:,} {info['dataset']} test images (ImageNet weights unavailable: {cause})."
            )
            accuracy = float(info["test_accuracy"])
            found = AvailableModel(read_checkpoint(SMALL_CHECKPOINT)[0], text, "cifar10", accuracy)
    text = textwrap.fill(found.description, 79, break_long_words=False, break_on_hyphens=False)
    return found._replace(model=found.model.eval(), description=text)
