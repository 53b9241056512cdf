"""A short, resumable trainer for CIFAR: :func:`train_step`, :func:`fit` and the recipe (:class:`TrainConfig`).

:func:`fit` runs :func:`train_step` over the epochs, writes a checkpoint after each and, run again, continues
with exactly the weights an uninterrupted run would have had: every epoch's randomness (shuffling, crops,
flips, dropout) derives from ``(seed, epoch)`` (and the rank), so a checkpoint needs no random state.
What changes under ``torchrun`` is in :mod:`xception_lib.distributed`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from xception_lib import checkpoint, distributed
from xception_lib.config import XceptionConfig
from xception_lib.history import History
from xception_lib.loader import GpuLoader, check_labels, check_number, check_split
from xception_lib.provenance import environment
from xception_lib.runtime import eval_mode

__all__ = ["FULL_EPOCHS", "SHORT_EPOCHS", "NonFiniteLossError", "TrainConfig", "fit", "lr_at", "recommended_config", "resolve_amp", "train_step"]  # fmt: skip

FULL_EPOCHS = 30  #: Epochs of the full schedule (:class:`TrainConfig`'s default).
SHORT_EPOCHS = 10  #: Epochs of the shorter GPU schedule, ``recommended_config(device, full=False)``.


_AMP = ("auto", "bf16", "fp16", "off")
_OPTIONAL_COUNTS = ("train_subset", "test_subset", "max_steps")  # None: all


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the message names the step."""


@dataclass(frozen=True)
class TrainConfig:
    """How to train: the modern short CIFAR recipe (SGD with Nesterov momentum, one-cycle learning
    rate, label smoothing, weight decay on weights only, crops and flips, mixed precision).

    The defaults are the full schedule planned for one H100 (goal: 94% test accuracy on CIFAR-10
    within 2 minutes for ``xception_cifar``; the recorded run met the time, not the accuracy).
    Every field is checked when the config is made; a wrong one raises an error naming it.
    """

    epochs: int = FULL_EPOCHS  # where ResNet-18-sized CIFAR networks reach ~94-95% with one-cycle and smoothing
    batch_size: int = 512  # global; keeps a large GPU busy with 32x32 images, leaves ~100 steps per epoch
    optimizer: Literal["sgd", "adamw"] = "sgd"  # SGD uses momentum and nesterov
    lr: float = 0.2  # peak; 0.1 per 256 images for SGD (linear scaling); about 2e-3 for AdamW
    momentum: float = 0.9  # SGD momentum (AdamW's beta1)
    nesterov: bool = True  # a look-ahead gradient: a little more stable at high learning rates
    # L2 penalty on conv and linear weights only: batch norm makes a convolution's scale irrelevant (the decay acts
    # on its direction), while decaying batch norm's own scale and shift would change the function. ~0.05 for AdamW.
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1  # target probability spread over all classes: no over-confident logits
    schedule: Literal["onecycle", "cosine", "constant"] = (
        "onecycle"  # after warm-up: linear / cosine decay to 0, or flat
    )
    warmup: float = 0.15  # fraction of steps from 0 to lr: BN statistics and momentum settle before the large steps
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"  # mixed precision; "auto": see resolve_amp
    channels_last: bool = True  # NHWC: what tensor cores want (and about twice as fast on a CPU for this network)
    compile: bool = False  # torch.compile: faster steps after a compile of a minute or so (in the first epoch)
    train_subset: int | None = None  # train on this many training images (a seeded random choice); None: all
    test_subset: int | None = None  # evaluate on this many test images; None: all
    max_steps: int | None = None  # stop after this many optimizer steps (the schedule is fitted to them)
    eval_every: int = 1  # evaluate every this many epochs (and always after the last)
    eval_batch_size: int = 1000
    crop_padding: int = 4  # random-crop padding in pixels (0: no crops)
    flip: bool = True  # random horizontal flips
    grad_clip: float | None = None  # clip the gradient norm to this; None: no clipping
    log_every: int = 10  # steps between progress updates (each waits for the device)
    seed: int = 0  # of the data order, augmentation, subsets and dropout
    # Under DDP on CUDA, batch norm normalises with the whole global batch's statistics (nn.SyncBatchNorm, one
    # all-reduce per layer and step). No effect in one process or on a CPU; the caller's model keeps its layers.
    sync_batchnorm: bool = True
    is_preview: bool = False  # marks a shortened CPU schedule; printed by describe()

    def __post_init__(self) -> None:
        choices = {"optimizer": ("sgd", "adamw"), "schedule": ("onecycle", "cosine", "constant"), "amp": _AMP}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"TrainConfig: {name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in ("nesterov", "channels_last", "compile", "flip", "sync_batchnorm", "is_preview"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"TrainConfig: {name} must be True or False, got {getattr(self, name)!r}")
        for name in ("epochs", "batch_size", "eval_every", "eval_batch_size", "log_every", *_OPTIONAL_COUNTS):
            check_number(
                "TrainConfig", name, getattr(self, name), integer=True, low=1, optional=name in _OPTIONAL_COUNTS
            )
        check_number("TrainConfig", "crop_padding", self.crop_padding, integer=True, low=0)
        check_number("TrainConfig", "seed", self.seed, integer=True, low=0)
        check_number("TrainConfig", "lr", self.lr, low=0, low_open=True)
        check_number("TrainConfig", "momentum", self.momentum, low=0, high=1, high_open=True)
        check_number("TrainConfig", "weight_decay", self.weight_decay, low=0)
        check_number("TrainConfig", "label_smoothing", self.label_smoothing, low=0, high=1, high_open=True)
        check_number("TrainConfig", "warmup", self.warmup, low=0, high=1, high_open=True)
        check_number("TrainConfig", "grad_clip", self.grad_clip, low=0, low_open=True, optional=True)
        for name, value in vars(self).items():  # numpy numbers become Python's, so that the config writes to JSON
            if isinstance(value, numbers.Real) and type(value) not in (bool, int, float):
                object.__setattr__(self, name, int(value) if isinstance(value, numbers.Integral) else float(value))

    def describe(self) -> str:
        """A few lines saying what this schedule is, with ``PREVIEW`` in front of a preview."""
        data = f"{self.train_subset:,} training images" if self.train_subset else "all training images"
        test = f"{self.test_subset:,} test images" if self.test_subset else "all test images"
        steps = f", at most {self.max_steps} steps" if self.max_steps else ""
        opt = (
            f"SGD ({'Nesterov ' if self.nesterov else ''}momentum {self.momentum})"
            if self.optimizer == "sgd"
            else f"AdamW (beta1 {self.momentum})"
        )
        if self.is_preview:
            head = "PREVIEW (a short CPU schedule, not the recipe)"
        elif self.epochs < FULL_EPOCHS:
            head = f"Short schedule ({self.epochs} of the full {FULL_EPOCHS} epochs)"
        else:
            head = "Full schedule"
        return (
            f"{head}: {self.epochs} epochs on {data}{steps},\n"
            f"  batch {self.batch_size}, evaluated on {test}\n"
            f"  {opt}, peak lr {self.lr:g},\n"
            f"  {self.schedule} schedule with {self.warmup:.0%} warm-up, label smoothing {self.label_smoothing:g},\n"
            f"  weight decay {self.weight_decay:g} (not on norms and biases), crop padding {self.crop_padding}, "
            f"flips {'on' if self.flip else 'off'}\n"
            f"  mixed precision {self.amp}, channels_last {self.channels_last}, torch.compile {self.compile}, seed {self.seed}"
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def recommended_config(device: torch.device | str, *, full: bool = True, **overrides: Any) -> TrainConfig:
    """On CUDA the full schedule, or with ``full=False`` the same recipe over :data:`SHORT_EPOCHS` epochs (a
    third of the time, for a small GPU such as Colab's T4); elsewhere a CPU preview (``is_preview=True``:
    4 epochs on 4,096 training images, batch 64, 1,000 test images), which shows the loop working, not the
    recipe's result. ``overrides``: any :class:`TrainConfig` field, applied last."""
    if torch.device(device).type == "cuda":
        base = TrainConfig() if full else TrainConfig(epochs=SHORT_EPOCHS)
    else:
        base = TrainConfig(
            epochs=4, batch_size=64, lr=0.05, warmup=0.1, amp="off", train_subset=4096, test_subset=1000, eval_batch_size=250,
            log_every=1, is_preview=True,
        )  # fmt: skip
    return dataclasses.replace(base, **overrides)


def resolve_amp(amp: str, device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype for ``amp`` on ``device`` (``None``: full precision).

    ``"auto"`` is bfloat16 on GPUs of compute capability 8.0 and up (A100, H100, RTX 30xx on), float16 below
    (V100, T4; :func:`fit` adds a gradient scaler), off on a CPU. (``torch.cuda.is_bf16_supported()`` also
    counts emulation and says ``True`` on a T4.)
    """
    device = torch.device(device)
    if amp == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.get_device_capability(device) >= (8, 0) else torch.float16
    choices = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}
    if amp not in choices:
        raise ValueError(f"amp must be 'auto', 'bf16', 'fp16' or 'off', got {amp!r}")
    return choices[amp]


def lr_at(cfg: TrainConfig, step: int, total_steps: int) -> float:
    """Learning rate of optimizer step ``step`` (0-based) out of ``total_steps``."""
    check_number("lr_at", "total_steps", total_steps, integer=True, low=1)
    check_number("lr_at", "step", step, integer=True)
    if not 0 <= step < total_steps:
        raise ValueError(f"step must be in [0, {total_steps}), got {step}")
    warm = round(cfg.warmup * total_steps)
    if step < warm:
        return cfg.lr * (step + 1) / warm
    if cfg.schedule == "constant":
        return cfg.lr
    progress = (step - warm + 1) / (total_steps - warm + 1)  # in (0, 1): no step at lr 0 or twice at the peak
    if cfg.schedule == "onecycle":
        return cfg.lr * (1 - progress)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * progress))


def train_step(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler, amp_dtype: torch.dtype | None, *, label_smoothing: float = 0.0, grad_clip: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """One optimiser step on one batch: forward (under autocast), loss, backward, update.

    Args:
        model: The classifier, in train mode.
        images, labels: ``B x C x H x W`` normalised images and ``B`` class indices, on the model's device.
        scaler: Scales the fp16 loss so that small gradients do not underflow; for bf16 or full precision
            pass ``torch.amp.GradScaler(enabled=False)``, which changes nothing.
        amp_dtype: The autocast dtype (:func:`resolve_amp`), or ``None`` for full precision.
        grad_clip: Clip the gradient norm to this value; ``None``: no clipping.

    Returns:
        The loss (0-d) and the logits (``B x classes``, float32), detached and still on the device.
    """
    if not images.is_floating_point():
        raise TypeError(
            f"train_step: images must be a normalised floating-point batch (GpuLoader's), got {images.dtype}"
        )
    check_labels(labels, None, "train_step: labels")
    if images.dim() != 4 or len(images) == 0 or labels.shape != images.shape[:1]:
        shapes = f"images {tuple(images.shape)} and labels {tuple(labels.shape)}"
        raise ValueError(f"train_step: expected a non-empty batch B x C x H x W and B labels, got {shapes}")
    with torch.autocast(images.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        logits = model(images)  # B x classes, in amp_dtype where autocast chose it
    logits = logits.float()  # the softmax and loss in float32
    loss = nn.functional.cross_entropy(logits, labels, label_smoothing=label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if grad_clip is not None:
        scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    scaler.step(optimizer)  # skipped when the fp16 gradients overflowed
    scaler.update()
    return loss.detach(), logits.detach()


def fit(
    model: nn.Module, data: Any, cfg: TrainConfig | None = None, *, device: torch.device | str | None = None,
    checkpoint_dir: str | Path | None = None, progress: bool = True, resume: bool = True,
    callbacks: Iterable[Callable[[int, History], None]] = (),
) -> History:  # fmt: skip
    """Train ``model`` on ``data`` with the recipe ``cfg``, one :func:`train_step` at a time (with DDP under
    ``torchrun``: :mod:`xception_lib.distributed`).

    Args:
        model: Any classifier of ``N x 3 x H x W`` images; trained in place.
        data: A :class:`~xception_lib.data.CifarArrays` (uint8 images, normalised with its ``mean``/``std``).
        cfg: The recipe (default: :func:`recommended_config` for ``device``).
        device: Where to train (default: the model's device).
        checkpoint_dir: Write ``checkpoint.pt`` here after every epoch (atomically); ``None``: none.
        progress: Show a tqdm progress bar (where it can render) and a line per epoch.
        resume: Continue from ``checkpoint_dir``'s checkpoint when there is one (of the same model config,
            TrainConfig and data, else a ``CheckpointError``); ``False``: start afresh.
        callbacks: ``f(epoch, history)``, called after each epoch's checkpoint; an exception stops training.

    Returns the :class:`~xception_lib.history.History`, including epochs restored from a checkpoint, or raises
    :class:`NonFiniteLossError` naming the step where the loss became NaN or infinite.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    cfg = cfg if cfg is not None else recommended_config(device)
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"fit: cfg must be a TrainConfig (or None for recommended_config), got {type(cfg).__name__}")
    callbacks = list(callbacks)
    if not all(callable(f) for f in callbacks):
        raise TypeError(f"fit: callbacks must be functions f(epoch, history), got {callbacks}")
    rank, world_size = distributed.rank_and_world_size()
    checkpoint_path = checkpoint.checkpoint_file(checkpoint_dir, create=rank == 0)
    data = _checked_data(data, model, cfg, world_size)
    model.to(device).to(memory_format=torch.channels_last if cfg.channels_last else torch.preserve_format)
    train_loader, test_loader = (_loader(data, cfg, device, train, rank, world_size) for train in (True, False))
    steps_per_epoch = len(train_loader)
    total_steps = min(cfg.epochs * steps_per_epoch, cfg.max_steps or sys.maxsize)
    last_epoch = math.ceil(total_steps / steps_per_epoch)  # epochs actually run
    optimizer = _make_optimizer(model, cfg)
    amp_dtype = resolve_amp(cfg.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    config = getattr(model, "config", None)
    model_config = dataclasses.asdict(config) if isinstance(config, XceptionConfig) else None
    history = History(meta=_run_meta(model, model_config, data, cfg, device, world_size, steps_per_epoch, total_steps))
    identity: dict[str, Any] = {"model_class": type(model).__name__, "model_config": model_config}
    identity |= {"train_config": cfg.to_dict(), "data": checkpoint.data_fingerprint(data)}
    start_epoch = 0
    if checkpoint_path is not None and resume and checkpoint_path.exists():
        stored, start_epoch = checkpoint.restore(
            checkpoint_path, identity, TrainConfig().to_dict(), model, optimizer, scaler
        )
        history = History.from_dict(stored)
    label = "preview" if cfg.is_preview else "train"
    bar = _progress_bar(total_steps, min(start_epoch * steps_per_epoch, total_steps), label, progress and rank == 0)
    step = start_epoch * steps_per_epoch
    try:
        with (  # fork_rng: the caller's random state is left alone
            torch.random.fork_rng(devices=[device] if device.type == "cuda" else []),
            distributed.wrap(model, device, sync_batchnorm=cfg.sync_batchnorm, compile=cfg.compile) as train_model,
        ):
            for epoch in range(start_epoch, last_epoch):
                torch.manual_seed(_epoch_seed(cfg.seed, epoch, rank))  # dropout etc.: a function of (seed, epoch, rank)
                train_loader.set_epoch(epoch)
                if bar is not None:
                    bar.set_description(f"{label} epoch {epoch + 1}/{last_epoch}")
                steps = range(step, total_steps)  # the run's steps still to take
                step, metrics = _train_epoch(
                    train_model, train_loader, optimizer, scaler, amp_dtype, cfg, steps, history, bar
                )
                distributed.broadcast_buffers(model)
                evaluated = (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == last_epoch
                metrics["test_loss"], metrics["test_acc"] = _evaluate(model, test_loader, amp_dtype, evaluated)
                history.append_epoch(**metrics)
                if progress and rank == 0:
                    _report(f"{label} epoch {epoch + 1}/{last_epoch}", metrics, bar)
                if checkpoint_path is not None and rank == 0:
                    state = {"model": model.state_dict(), **identity, "optimizer": optimizer.state_dict()}
                    state |= {
                        "scaler": scaler.state_dict(),
                        "format": checkpoint.FORMAT,
                        "epoch": epoch + 1,
                        "step": step,
                    }
                    state |= {"history": history.to_dict(), "loader": train_loader.state_dict()}
                    checkpoint.atomic_save(state, checkpoint_path)
                distributed.barrier()  # no process goes on (or returns) before the checkpoint is written
                for callback in callbacks:
                    callback(epoch, history)
    finally:
        if bar is not None:
            bar.close()
    return history


def _train_epoch(
    model: nn.Module, loader: GpuLoader, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
    amp_dtype: torch.dtype | None, cfg: TrainConfig, steps: range, history: History, bar: Any,
) -> tuple[int, dict[str, float]]:  # fmt: skip
    """One epoch, or what is left of ``steps`` (the run's steps still to take). Returns the next step and the metrics."""
    step, total_steps = steps.start, steps.stop
    model.train()
    pending: list[torch.Tensor] = []  # losses not yet read back from the device
    totals = torch.zeros(3, dtype=torch.float64, device=loader.device)  # loss sum, correct, count
    start, lr = time.perf_counter(), 0.0
    for images, labels in loader:
        if step >= total_steps:
            break
        lr = lr_at(cfg, step, total_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        smoothing, clip = cfg.label_smoothing, cfg.grad_clip
        loss, logits = train_step(
            model, images, labels, optimizer, scaler, amp_dtype, label_smoothing=smoothing, grad_clip=clip
        )
        history.step_lr.append(lr)
        step += 1
        pending.append(loss)
        totals[0] += loss * len(labels)
        totals[1] += (logits.argmax(1) == labels).sum()
        totals[2] += len(labels)
        if len(pending) >= cfg.log_every:
            _record_losses(pending, step, len(loader), history, bar, lr)
    if pending:
        _record_losses(pending, step, len(loader), history, bar, lr)
    loss_sum, correct, count = distributed.all_reduce_sum(totals).tolist()  # waits for the device
    seconds = time.perf_counter() - start
    metrics = {
        "train_loss": loss_sum / count,
        "train_acc": correct / count,
        "lr": lr,
        "images_per_sec": count / seconds,
    }
    return step, metrics | {"epoch_time": seconds}


def _record_losses(
    pending: list[torch.Tensor], step: int, per_epoch: int, history: History, bar: Any, lr: float
) -> None:
    """Copy the pending losses (averaged over processes: the global batch's) into ``history``; a non-finite one
    stops every process at once, naming its exact step."""
    values = (distributed.all_reduce_sum(torch.stack(pending)) / distributed.rank_and_world_size()[1]).tolist()
    for offset, value in enumerate(values):
        if not math.isfinite(value):
            bad = step - len(values) + offset
            epoch, batch = divmod(bad, per_epoch)
            raise NonFiniteLossError(
                f"non-finite training loss ({value}) at step {bad} (epoch {epoch + 1}, batch {batch + 1} of the epoch, "
                f"lr {history.step_lr[bad]:.4g}); lower the learning rate or enable grad_clip"
            )
    history.step_loss.extend(values)
    pending.clear()
    if bar is not None:
        bar.update(len(values))
        bar.set_postfix(loss=f"{values[-1]:.3f}", lr=f"{lr:.3g}", refresh=False)


def _checked_data(data: Any, model: nn.Module, cfg: TrainConfig, world_size: int) -> Any:
    """``data`` (or the subset ``cfg`` asks for), after checking what training will need of it."""
    missing = [
        k for k in ("train_images", "train_labels", "test_images", "test_labels", "mean", "std") if not hasattr(data, k)
    ]
    if missing:
        raise TypeError(
            f"data must be a CifarArrays (from xception_lib.data.load_cifar); a {type(data).__name__} has no {missing}"
        )
    if cfg.train_subset is not None or cfg.test_subset is not None:
        data = data.subset(train=cfg.train_subset, test=cfg.test_subset, seed=cfg.seed)
    config = getattr(model, "config", None)
    classes = config.num_classes if isinstance(config, XceptionConfig) else getattr(data, "num_classes", None)
    for split in ("train", "test"):
        check_split(getattr(data, f"{split}_images"), getattr(data, f"{split}_labels"), classes, f"data.{split}_")
    if cfg.batch_size % world_size:
        raise ValueError(f"batch_size ({cfg.batch_size}) must be divisible by the number of processes ({world_size})")
    if cfg.batch_size > len(data.train_labels):
        raise ValueError(f"batch_size {cfg.batch_size} exceeds the {len(data.train_labels)} training images; lower it")
    return data


def _loader(data: Any, cfg: TrainConfig, device: torch.device, train: bool, rank: int, world_size: int) -> GpuLoader:
    split = "train" if train else "test"
    return GpuLoader(
        getattr(data, f"{split}_images"), getattr(data, f"{split}_labels"),
        batch_size=cfg.batch_size // world_size if train else cfg.eval_batch_size,
        train=train, device=device, seed=cfg.seed, crop_padding=cfg.crop_padding, flip=cfg.flip, mean=data.mean, std=data.std,
        channels_last=cfg.channels_last, rank=rank, world_size=world_size,
    )  # fmt: skip


def _make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Decay conv and linear weights (2-D and up); not batch-norm parameters or biases (1-D)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.momentum, 0.999))


def _epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """Seed of epoch ``epoch``'s dropout in process ``rank``: one stream per process (else image ``i`` of every
    shard gets the same mask); rank 0's is the single process's."""
    entropy = [seed, epoch, 1] if rank == 0 else [seed, epoch, 1, rank]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def _progress_bar(total: int, initial: int, desc: str, enabled: bool) -> Any:
    """tqdm's bar (a widget in Jupyter, text in a terminal), or ``None``, also in a kernel without ipywidgets (a
    headless book build), where a text bar would leave hundreds of carriage-return updates in the output."""
    if not enabled:
        return None
    if "ipykernel" in sys.modules:
        try:
            import ipywidgets  # noqa: F401
        except ImportError:
            return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True)


def _report(what: str, metrics: dict[str, float], bar: Any) -> None:
    line = (
        f"{what}: train loss {metrics['train_loss']:.3f}, train acc {metrics['train_acc']:.1%}, "
        f"test acc {metrics['test_acc']:.1%}, {metrics['images_per_sec']:,.0f} images/s"
    )
    if bar is None:
        print(line, flush=True)
        return
    bar.set_postfix(loss=f"{metrics['train_loss']:.3f}", test_acc=f"{metrics['test_acc']:.1%}")
    bar.write(line)


def _run_meta(
    model: nn.Module, model_config: dict[str, Any] | None, data: Any, cfg: TrainConfig, device: torch.device,
    world_size: int, steps_per_epoch: int, total_steps: int,
) -> dict[str, Any]:  # fmt: skip
    found: Any = environment(device)
    env = (
        found.to_dict() if hasattr(found, "to_dict") else found
    )  # a dict, or (after provenance's change) an Environment
    meta = {
        "config": cfg.to_dict(),
        # Plain types only (torch.__version__ is a str subclass), so checkpoints load with weights_only.
        "environment": {k: v if v is None or type(v) in (str, int, float) else str(v) for k, v in env.items()},
        "world_size": world_size, "parameters": sum(p.numel() for p in model.parameters()), "model": type(model).__name__,
        "model_config": model_config, "dataset": getattr(data, "name", None), "data": getattr(data, "source", None),
        "train_images": len(data.train_labels), "test_images": len(data.test_labels), "steps_per_epoch": steps_per_epoch,
        "total_steps": total_steps,
    }  # fmt: skip
    return json.loads(json.dumps(meta))  # as it will read back from JSON (tuples become lists)


@torch.no_grad()
def _evaluate(model: nn.Module, loader: GpuLoader, amp_dtype: torch.dtype | None, wanted: bool) -> tuple[float, float]:
    """Mean cross-entropy (no label smoothing) and accuracy over the loader's images (all processes' shards);
    NaNs unless ``wanted`` (an epoch without a test)."""
    if not wanted:
        return math.nan, math.nan
    totals = torch.zeros(3, dtype=torch.float64, device=loader.device)  # loss sum, correct, count
    with eval_mode(model):
        for x, y in loader:
            with torch.autocast(loader.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits = model(x)
            logits = logits.float()
            totals[0] += nn.functional.cross_entropy(logits, y, reduction="sum")
            totals[1] += (logits.argmax(1) == y).sum()
            totals[2] += len(y)
    loss_sum, correct, count = distributed.all_reduce_sum(totals).tolist()
    return loss_sum / count, correct / count
