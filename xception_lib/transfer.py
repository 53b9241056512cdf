"""Transfer learning: adapt a trained Xception to classes it was not trained on.

The steps, each a few lines (chapter 9 writes them out on the page):

* :func:`replace_head`: a new, randomly initialised classifier for the new number of classes;
* :func:`set_trainable`: freeze everything (``requires_grad_(False)``), then unfreeze the named stages;
* :func:`param_groups`: the new head at the full learning rate, the pretrained layers at a fraction of it;
* :func:`fine_tune`: a short training loop (:func:`xception_lib.train.train_step`, cosine learning rate) that keeps
  the batch norms of frozen layers in ``eval()``, so that their running statistics stay the source's;
* :func:`linear_probe`: logistic regression (L-BFGS) on the frozen network's pooled features;
* :func:`adapt`: one of the :data:`REGIMES` from a source network, as the chapter's experiment runs them.

The shipped source network (:func:`load_source_model`) was trained by ``tools/train_source_model.py`` on
CIFAR-10's :data:`SOURCE_CLASSES` only; :data:`TARGET_CLASSES` are the other five.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from xception_lib.data import CifarArrays
from xception_lib.evaluation import evaluate
from xception_lib.loader import GpuLoader
from xception_lib.model import Xception
from xception_lib.runtime import resolve_amp
from xception_lib.timing import clock, measure
from xception_lib.train import train_step

SOURCE_CLASSES = ("airplane", "automobile", "bird", "cat", "deer")
"""CIFAR-10's first five classes: what the shipped source network was trained on."""

TARGET_CLASSES = ("dog", "frog", "horse", "ship", "truck")
"""CIFAR-10's last five classes: new to the source network, the chapter's target task."""

SOURCE_MODEL = Path(__file__).resolve().parent / "assets" / "xception_cifar5_source.pth"
"""The source network's weights (float16); its provenance is the ``.json`` beside it."""

TRANSFER_TABLE = Path(__file__).resolve().parent / "assets" / "transfer_table.json"
"""The recorded full experiment (``tools/transfer_table.py``), with its provenance."""

Regime = Literal["scratch", "probe", "top", "all"]
REGIMES: tuple[Regime, ...] = ("scratch", "probe", "top", "all")
"""From scratch (random weights), linear probe (head only), fine-tune the top (exit flow and head), fine-tune all."""

REGIME_NAMES = {"scratch": "from scratch", "probe": "linear probe", "top": "fine-tune top", "all": "fine-tune all"}
"""How the chapter names the regimes."""

STAGES = ("stem", "entry_flow", "middle_flow", "exit_flow", "head")
"""Xception's top-level stages, input to output."""

TRAINABLE: dict[str, tuple[str, ...]] = {
    "scratch": STAGES,
    "probe": ("head",),
    "top": ("exit_flow", "head"),
    "all": STAGES,
}
"""The stages each regime trains."""


def class_subset(data: CifarArrays, classes: Sequence[str]) -> CifarArrays:
    """The images of ``classes`` only, relabelled ``0 .. len(classes) - 1`` in the order given.

    Args:
        data: Arrays as :func:`xception_lib.data.load_cifar` returns them.
        classes: Names from ``data.classes``, at least two, each once.

    Raises:
        ValueError: A name that is not one of ``data.classes``, a repeated one, or fewer than two.
    """
    names = tuple(classes)
    unknown = [c for c in names if c not in data.classes]
    if unknown:
        raise ValueError(f"class_subset: {unknown} not among the data's classes {data.classes}")
    if len(set(names)) != len(names) or len(names) < 2:
        raise ValueError(f"class_subset: expected at least two distinct class names, got {names}")
    old = torch.tensor([data.classes.index(c) for c in names])
    new_label = torch.full((len(data.classes),), -1, dtype=torch.int64)
    new_label[old] = torch.arange(len(names))

    def pick(images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        keep = torch.isin(labels, old)
        return images[keep], new_label[labels[keep]]

    train_images, train_labels = pick(data.train_images, data.train_labels)
    test_images, test_labels = pick(data.test_images, data.test_labels)
    return dataclasses.replace(
        data,
        train_images=train_images,
        train_labels=train_labels,
        test_images=test_images,
        test_labels=test_labels,
        classes=names,
        source=f"classes {list(names)} of {data.source}",
    )


def few_per_class(
    data: CifarArrays, per_class: int, *, seed: int = 0, split: Literal["train", "test"] = "train"
) -> CifarArrays:
    """``per_class`` images of every class in one split (a seeded random choice); the other split unchanged.

    Raises:
        ValueError: ``per_class`` is below 1 or more than a class has.
    """
    images, labels = getattr(data, f"{split}_images"), getattr(data, f"{split}_labels")
    counts = torch.bincount(labels, minlength=data.num_classes)
    if not 1 <= per_class <= int(counts.min()):
        raise ValueError(
            f"per_class must be in 1..{int(counts.min())} (the smallest class's {split} images), got {per_class}"
        )
    g = torch.Generator().manual_seed(seed)
    picks = [torch.nonzero(labels == c).flatten() for c in range(data.num_classes)]
    idx = torch.cat([p[torch.randperm(len(p), generator=g)[:per_class]] for p in picks]).sort().values
    return dataclasses.replace(
        data,
        **{f"{split}_images": images[idx], f"{split}_labels": labels[idx]},
        source=f"{per_class} {split} images per class (seed {seed}) of {data.source}",
    )


def load_source_model(path: str | Path = SOURCE_MODEL) -> tuple[Xception, dict[str, Any]]:
    """The shipped source network (float32, eval mode) and its provenance (the ``.json`` beside the file)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; make it with tools/train_source_model.py")
    state = torch.load(path, map_location="cpu", weights_only=True)
    from xception_lib.config import XceptionConfig

    model = Xception(XceptionConfig(**_tuples(state["model_config"])))
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state["model"].items()})
    provenance_path = path.with_suffix(".json")
    provenance = json.loads(provenance_path.read_text()) if provenance_path.is_file() else {}
    return model.eval(), provenance


def _tuples(config: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}


def replace_head(model: Xception, num_classes: int) -> Xception:
    """Give ``model`` a new, randomly initialised classifier of ``num_classes`` outputs (in place; returned).

    Everything else keeps its weights; ``model.config.num_classes`` says the new size.
    """
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    old = classifier(model)
    model.head.fc = nn.Linear(old.in_features, num_classes).to(old.weight.device, old.weight.dtype)
    model.config = dataclasses.replace(model.config, num_classes=num_classes)
    return model


def classifier(model: Xception) -> nn.Linear:
    """The final linear layer, ``model.head.fc``."""
    fc = model.head.fc
    if not isinstance(fc, nn.Linear):
        raise TypeError(f"expected model.head.fc to be an nn.Linear, got {type(fc).__name__}")
    return fc


def set_trainable(model: nn.Module, stages: Sequence[str]) -> None:
    """Freeze every parameter of ``model``, then unfreeze those of the named submodules (``"exit_flow"``, ...)."""
    model.requires_grad_(False)
    for name in stages:
        model.get_submodule(name).requires_grad_(True)


def frozen_batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The batch norms whose scale and shift are frozen (``requires_grad`` off)."""
    return [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and not any(p.requires_grad for p in m.parameters())
    ]


def param_groups(model: Xception, *, lr: float, pretrained_lr_scale: float = 0.1) -> list[dict[str, Any]]:
    """Optimizer parameter groups: the classifier ``model.head`` at ``lr``, every other trainable parameter at
    ``lr * pretrained_lr_scale`` (a pretrained layer needs small steps: large ones would erase what it knows).
    Frozen parameters are left out; an empty group is dropped."""
    head = [p for p in model.head.parameters() if p.requires_grad]
    head_ids = {id(p) for p in model.head.parameters()}
    body = [p for p in model.parameters() if p.requires_grad and id(p) not in head_ids]
    groups = [{"params": head, "lr": lr}, {"params": body, "lr": lr * pretrained_lr_scale}]
    return [g for g in groups if g["params"]]


def fine_tune(
    model: Xception,
    data: CifarArrays,
    *,
    steps: int,
    lr: float = 0.05,
    pretrained_lr_scale: float = 0.1,
    batch_size: int = 64,
    batch_norm: Literal["frozen", "eval", "train"] = "frozen",
    augment: bool = True,
    label_smoothing: float = 0.1,
    weight_decay: float = 5e-4,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> list[float]:
    """Train ``model``'s trainable parameters for ``steps`` SGD steps (Nesterov momentum, cosine learning rate).

    Args:
        model: Frozen where wanted (:func:`set_trainable`); trained in place.
        data: Uint8 images, normalised with ``data.mean`` / ``data.std``: the statistics the network was trained
            with, which is the preprocessing its weights expect.
        steps: Optimizer steps (each of ``min(batch_size, training images)`` images).
        lr, pretrained_lr_scale: As in :func:`param_groups`.
        batch_norm: ``"frozen"``: the batch norms of frozen layers stay in ``eval()`` (running statistics used,
            never updated), the others train; ``"eval"``: every batch norm stays in ``eval()`` (what Keras advises
            when fine-tuning all of a pretrained network on little data); ``"train"``: all in train mode, the
            pitfall: batch statistics of a few new images replace the source's.
        augment: Random crops (padding 4) and flips.
        seed: Of the data order and augmentation.

    Returns:
        The training loss of every step.
    """
    if batch_norm not in ("frozen", "eval", "train"):
        raise ValueError(f"batch_norm must be 'frozen', 'eval' or 'train', got {batch_norm!r}")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    device = torch.device(device)
    model.to(device).to(memory_format=torch.channels_last)
    loader = GpuLoader(
        data.train_images,
        data.train_labels,
        mean=data.mean,
        std=data.std,
        batch_size=min(batch_size, len(data.train_labels)),
        device=device,
        seed=seed,
        crop_padding=4 if augment else 0,
        flip=augment,
        channels_last=True,
    )
    optimizer = torch.optim.SGD(
        param_groups(model, lr=lr, pretrained_lr_scale=pretrained_lr_scale),
        momentum=0.9,
        nesterov=True,
        weight_decay=weight_decay,
    )
    cosine = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    amp_dtype = resolve_amp("auto", device)  # bf16 / fp16 on a GPU, off on a CPU
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    model.train()
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in {"frozen": frozen_batchnorms(model), "eval": bns, "train": []}[batch_norm]:
        m.eval()
    losses: list[float] = []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)  # dropout, if any
        while len(losses) < steps:
            for images, labels in loader:
                loss, _ = train_step(
                    model, images, labels, optimizer, scaler, amp_dtype, label_smoothing=label_smoothing
                )
                cosine.step()
                losses.append(loss.item())
                if len(losses) == steps:
                    break
    model.eval()
    return losses


def _eval_batches(
    model: Xception,
    images: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device | str,
    batch_size: int,
) -> Iterator[torch.Tensor]:
    """``images`` normalised, in order, in batches on ``device``; ``model`` put in eval mode there."""
    device = torch.device(device)
    model.eval().to(device).to(memory_format=torch.channels_last)
    labels = torch.zeros(len(images), dtype=torch.int64)  # the loader wants labels; nothing reads them
    loader = GpuLoader(
        images, labels, mean=mean, std=std, batch_size=batch_size, train=False, device=device, channels_last=True
    )
    return (x for x, _ in loader)


@torch.no_grad()
def features(
    model: Xception,
    images: torch.Tensor,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device | str = "cpu",
    batch_size: int = 500,
) -> torch.Tensor:
    """The pooled features (``N x model.num_features``, on the CPU) the classifier sees, in eval mode."""
    batches = _eval_batches(model, images, mean, std, device, batch_size)
    return torch.cat([model.forward_head(model.forward_features(x), pre_logits=True).cpu() for x in batches])


def linear_probe(
    model: Xception,
    data: CifarArrays,
    *,
    weight_decay: float = 1e-3,
    max_iter: int = 200,
    device: torch.device | str = "cpu",
) -> float:
    """Fit ``model.head.fc`` alone by logistic regression on the frozen network's pooled training features
    (full batch, L-BFGS, an L2 penalty ``weight_decay``); no augmentation. Returns the final training loss."""
    x = features(model, data.train_images, mean=data.mean, std=data.std, device=device).to(torch.float64)
    y = data.train_labels
    fc = nn.Linear(x.shape[1], data.num_classes, dtype=torch.float64)
    nn.init.zeros_(fc.weight)
    nn.init.zeros_(fc.bias)
    optimizer = torch.optim.LBFGS(fc.parameters(), lr=1, max_iter=max_iter, line_search_fn="strong_wolfe")

    def objective() -> torch.Tensor:
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(fc(x), y) + weight_decay * fc.weight.square().sum()
        loss.backward()
        return loss

    loss = optimizer.step(objective)
    head = classifier(model)
    with torch.no_grad():
        head.weight.copy_(fc.weight)
        head.bias.copy_(fc.bias)
    return float(loss.detach())


def adapt(
    source: Xception,
    data: CifarArrays,
    regime: Regime,
    *,
    steps: int,
    lr: float = 0.05,
    pretrained_lr_scale: float = 0.1,
    seed: int = 0,
    device: torch.device | str = "cpu",
    **fine_tune_options: Any,
) -> Xception:
    """A new network for ``data``'s classes, made from ``source`` (left unchanged) by one of the :data:`REGIMES`.

    ``"scratch"`` trains ``source``'s architecture from random weights (all at ``lr``); ``"probe"`` fits the
    new head alone (:func:`linear_probe`); ``"top"`` and ``"all"`` fine-tune (:func:`fine_tune`) the exit flow
    and head, or everything, the pretrained part at ``lr * pretrained_lr_scale``; ``"all"`` keeps every batch norm
    in ``eval()`` unless ``batch_norm`` (passed on to :func:`fine_tune`) says otherwise.
    """
    if regime not in REGIMES:
        raise ValueError(f"regime must be one of {REGIMES}, got {regime!r}")
    torch.manual_seed(seed)  # the new head's (or the whole network's) initial weights
    if regime == "scratch":
        model = Xception(dataclasses.replace(source.config, num_classes=data.num_classes))
        pretrained_lr_scale = 1.0
    else:
        model = Xception(source.config)
        model.load_state_dict(source.state_dict())
        replace_head(model, data.num_classes)
    set_trainable(model, TRAINABLE[regime])
    if regime == "probe":
        linear_probe(model, data, device=device)
    else:  # fine-tuning a whole pretrained network: every batch norm keeps the source's statistics (Keras's advice)
        fine_tune_options.setdefault("batch_norm", "eval" if regime == "all" else "frozen")
        fine_tune(
            model,
            data,
            steps=steps,
            lr=lr,
            pretrained_lr_scale=pretrained_lr_scale,
            seed=seed,
            device=device,
            **fine_tune_options,
        )
    return model.eval()


@torch.no_grad()
def trunk_outputs(
    model: Xception,
    images: torch.Tensor,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device | str = "cpu",
    batch_size: int = 100,
) -> torch.Tensor:
    """The middle flow's output for every image (eval mode, on the CPU): what the exit flow receives.

    A network that changed only its exit flow and head (the ``"probe"`` and ``"top"`` regimes, batch norms of the
    frozen part in ``eval()``) computes exactly these from the same images, so they are computed once and shared.
    """
    batches = _eval_batches(model, images, mean, std, device, batch_size)
    return torch.cat([model.forward_intermediates(x)["middle_flow"].cpu() for x in batches])


@torch.no_grad()
def accuracy_from_trunk(model: Xception, trunk: torch.Tensor, labels: torch.Tensor, *, batch_size: int = 500) -> float:
    """Accuracy of ``model``'s exit flow and head on :func:`trunk_outputs` (its trunk must be the one they came from)."""
    model.eval().cpu()
    predictions = torch.cat([model.forward_head(model.exit_flow(t)).argmax(1) for t in trunk.split(batch_size)])
    return float((predictions == labels).double().mean())


def fine_tune_pretrained(
    model: Xception,
    data: CifarArrays,
    *,
    top_steps: int,
    all_steps: int,
    lr: float = 0.02,
    pretrained_lr_scale: float = 0.1,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
    seed: int = 0,
    report: Any = print,
) -> dict[str, float]:
    """The recipe for a large pretrained network (the ImageNet Xception): a new head; the exit flow and head
    trained for ``top_steps``; then everything for ``all_steps``, the pretrained part at ``lr *
    pretrained_lr_scale``; every batch norm in ``eval()`` throughout. Before training it times two steps of each
    stage on a copy and reports the estimate (``report``: a function taking one line).

    Returns:
        ``estimate_s`` (the estimate), ``seconds`` (the time taken), ``test_acc_top`` and ``test_acc_all`` (test
        accuracy after each stage).
    """
    import copy

    device = torch.device(device)
    replace_head(model, data.num_classes)
    options = dict(batch_size=batch_size, batch_norm="eval", seed=seed, device=device, lr=lr)
    per_step = []
    for stages in (("exit_flow", "head"), STAGES):
        trial = copy.deepcopy(model)
        set_trainable(trial, stages)
        fine_tune(trial, data, steps=1, **options)  # type: ignore[arg-type]  # warm-up
        timing = measure(lambda trial=trial: fine_tune(trial, data, steps=2, **options), warmup=0, repeats=1)  # type: ignore[arg-type, misc]
        per_step.append(timing.median / 2)
        del trial
    estimate = top_steps * per_step[0] + all_steps * per_step[1]
    report(
        f"estimate: {estimate / 60:.1f} min for {top_steps} + {all_steps} steps of {batch_size} images "
        f"({per_step[0]:.2f} s and {per_step[1]:.2f} s per step)"
    )
    elapsed = clock()
    result = {"estimate_s": estimate}
    for name, stages, steps, scale in (
        ("top", ("exit_flow", "head"), top_steps, 1.0),
        ("all", STAGES, all_steps, pretrained_lr_scale),
    ):
        set_trainable(model, stages)
        fine_tune(model, data, steps=steps, pretrained_lr_scale=scale, **options)  # type: ignore[arg-type]
        result[f"test_acc_{name}"] = evaluate(
            model,
            data.test_images,
            data.test_labels,
            mean=data.mean,
            std=data.std,
            device=device,
            batch_size=64,
            amp="auto",
        )
        report(f"after fine-tuning {name}: test accuracy {result[f'test_acc_{name}']:.1%}")
    result["seconds"] = elapsed()
    return result


def run_experiment(
    source: Xception,
    data: CifarArrays,
    *,
    sizes: Sequence[int],
    regimes: Sequence[Regime] = REGIMES,
    seeds: Sequence[int] = (0,),
    steps: dict[int, int] | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
    trunk: torch.Tensor | None = None,
) -> Any:
    """Test accuracy of every regime at every training-set size (images per class) and seed, on all of ``data``'s
    test images.

    Args:
        source: The pretrained network (:func:`load_source_model`).
        data: The target task.
        sizes: Training images per class; each seed draws its own (:func:`few_per_class`).
        steps: Fine-tuning steps for each size (default: :func:`default_steps`).
        trunk: ``source``'s :func:`trunk_outputs` for ``data``'s test images, if already computed.

    Returns:
        A pandas ``DataFrame`` with the columns ``per_class, regime, seed, test_acc, seconds`` (training time).
    """

    import pandas as pd

    rows = []
    for seed in seeds:
        for per_class in sizes:
            train = few_per_class(data, per_class, seed=seed)
            for regime in regimes:
                elapsed = clock()
                model = adapt(
                    source,
                    train,
                    regime,
                    steps=(steps or {}).get(per_class, default_steps(per_class)),
                    seed=seed,
                    device=device,
                )
                seconds = elapsed()
                if regime in ("probe", "top"):  # the trunk is the source's: reuse its outputs
                    if trunk is None:
                        trunk = trunk_outputs(source, data.test_images, mean=data.mean, std=data.std, device=device)
                    acc = accuracy_from_trunk(model, trunk, data.test_labels)
                else:
                    acc = evaluate(
                        model,
                        data.test_images,
                        data.test_labels,
                        mean=data.mean,
                        std=data.std,
                        device=device,
                        batch_size=100,
                    )
                rows.append(
                    {"per_class": per_class, "regime": regime, "seed": seed, "test_acc": acc, "seconds": seconds}
                )
                if progress:
                    print(
                        f"{per_class:>4} per class, seed {seed}, {regime:>7}: {acc:.1%} ({seconds:.0f} s)", flush=True
                    )
    return pd.DataFrame(rows)


def default_steps(per_class: int) -> int:
    """Training steps for ``per_class`` images per class, the same for every regime (batches of up to 64): 22 for 10
    per class (22 passes over 50 images), 30 for 50, 40 from 100 on (two passes over 1,250): a CPU's budget."""
    return min(40, 20 + per_class // 5)
