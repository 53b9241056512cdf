"""A short, resumable trainer for CIFAR: :func:`train_step`, :func:`fit` and the recipe (:class:`TrainConfig`).

:func:`fit` runs :func:`train_step` over the epochs, writes a checkpoint after each and, run again, continues with
exactly the weights an uninterrupted run would have had: every epoch's randomness (shuffling, crops, flips, dropout)
derives from ``(seed, epoch)`` and the rank, so a checkpoint needs no random state (``torchrun``: :mod:`.distributed`).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import numbers
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from xception_lib import checkpoint, distributed
from xception_lib.config import XceptionConfig
from xception_lib.data import CifarArrays
from xception_lib.evaluation import loss_and_accuracy
from xception_lib.history import History
from xception_lib.loader import GpuLoader, check_labels, check_number, check_split
from xception_lib.provenance import environment
from xception_lib.runtime import AMP_CHOICES, progress_bar, resolve_amp

FULL_EPOCHS = 30  #: Epochs of the full schedule (:class:`TrainConfig`'s default).
_OPTIONAL_COUNTS = ("train_subset", "test_subset", "max_steps")  # None: all


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How to train: the modern short CIFAR recipe (SGD with Nesterov momentum, one-cycle learning rate, label
    smoothing, weight decay on weights only, crops and flips, mixed precision). The defaults are the full schedule
    planned for one H100 (94% test accuracy on CIFAR-10 within 2 minutes for ``xception_cifar``: the recorded run met
    the time, not the accuracy). Every field is checked when the config is made."""

    epochs: int = FULL_EPOCHS  # where ResNet-18-sized CIFAR networks reach ~94-95% with one-cycle and smoothing
    batch_size: int = 512  # global; keeps a large GPU busy with 32x32 images, leaves ~100 steps per epoch
    optimizer: Literal["sgd", "adamw"] = "sgd"  # SGD uses momentum and nesterov
    lr: float = 0.2  # peak; 0.1 per 256 images for SGD (linear scaling); about 2e-3 for AdamW
    momentum: float = 0.9  # SGD momentum (AdamW's beta1)
    nesterov: bool = True  # a look-ahead gradient: a little more stable at high learning rates
    # L2 penalty on conv and linear weights only (~0.05 for AdamW): batch norm makes a convolution's scale irrelevant
    # (the decay acts on its direction), while decaying batch norm's own scale and shift would change the function.
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1  # target probability spread over all classes: no over-confident logits
    schedule: Literal["onecycle", "cosine"] = "onecycle"  # after warm-up: a linear or cosine decay to 0
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
        choices = {"optimizer": ("sgd", "adamw"), "schedule": ("onecycle", "cosine"), "amp": AMP_CHOICES}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"TrainConfig: {name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in ("nesterov", "channels_last", "compile", "flip", "sync_batchnorm", "is_preview"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"TrainConfig: {name} must be True or False, got {getattr(self, name)!r}")
        for name in ("epochs", "batch_size", "eval_every", "eval_batch_size", "log_every", *_OPTIONAL_COUNTS):
            value = getattr(self, name)
            check_number("TrainConfig", name, value, integer=True, low=1, optional=name in _OPTIONAL_COUNTS)
        check_number("TrainConfig", "crop_padding", self.crop_padding, integer=True, low=0)
        check_number("TrainConfig", "seed", self.seed, integer=True, low=0)
        check_number("TrainConfig", "lr", self.lr, low=0, low_open=True)
        check_number("TrainConfig", "weight_decay", self.weight_decay, low=0)
        for name in ("momentum", "label_smoothing", "warmup"):
            check_number("TrainConfig", name, getattr(self, name), low=0, high=1, high_open=True)
        check_number("TrainConfig", "grad_clip", self.grad_clip, low=0, low_open=True, optional=True)
        for name, value in vars(self).items():  # numpy numbers become Python's, so that the config writes to JSON
            if isinstance(value, numbers.Real) and type(value) not in (bool, int, float):
                object.__setattr__(self, name, int(value) if isinstance(value, numbers.Integral) else float(value))

    def describe(self) -> str:
        """A few lines saying what this schedule is, with ``PREVIEW`` in front of a preview."""
        head = "Full schedule"
        if self.is_preview:
            head = "PREVIEW (a short CPU schedule, not the recipe)"
        elif self.epochs < FULL_EPOCHS:
            head = f"Short schedule ({self.epochs} of the full {FULL_EPOCHS} epochs)"
        data = f"{self.train_subset:,} training images" if self.train_subset else "all training images"
        test = f"{self.test_subset:,} test images" if self.test_subset else "all test images"
        steps = f", at most {self.max_steps} steps" if self.max_steps else ""
        sgd = f"SGD ({'Nesterov ' if self.nesterov else ''}momentum {self.momentum})"
        return (
            f"{head}:\n  {self.epochs} epochs on {data}{steps},\n  batch {self.batch_size}, evaluated on {test}\n"
            f"  {sgd if self.optimizer == 'sgd' else f'AdamW (beta1 {self.momentum})'}, peak lr {self.lr:g},\n"
            f"  {self.schedule} schedule with {self.warmup:.0%} warm-up, label smoothing {self.label_smoothing:g},\n"
            f"  weight decay {self.weight_decay:g} (not on norms and biases), crop padding {self.crop_padding}, "
            f"flips {'on' if self.flip else 'off'}\n"
            f"  mixed precision {self.amp}, channels_last {self.channels_last}, torch.compile {self.compile}, seed {self.seed}"
        )


def recommended_config(device: torch.device | str, *, full: bool = True, **overrides: Any) -> TrainConfig:
    """On CUDA the full schedule, or with ``full=False`` the same recipe over 10 epochs (a third of the time,
    for a small GPU such as Colab's T4); elsewhere a CPU preview (``is_preview=True``: 4 epochs on 4,096
    training images, batch 64, 1,000 test images), which shows the loop working, not the recipe's result.
    ``overrides``: any :class:`TrainConfig` field, applied last."""
    if torch.device(device).type == "cuda":
        return TrainConfig(**{"epochs": FULL_EPOCHS if full else 10, **overrides})
    preview = TrainConfig(epochs=4, batch_size=64, lr=0.05, warmup=0.1, amp="off", log_every=1, is_preview=True)
    sizes = {"train_subset": 4096, "test_subset": 1000, "eval_batch_size": 250}
    return dataclasses.replace(preview, **(sizes | overrides))


def lr_at(cfg: TrainConfig, step: int, total_steps: int) -> float:
    """Learning rate of optimizer step ``step`` (0-based) out of ``total_steps``."""
    check_number("lr_at", "total_steps", total_steps, integer=True, low=1)
    check_number("lr_at", "step", step, integer=True, low=0, high=total_steps, high_open=True)
    warm = round(cfg.warmup * total_steps)
    if step < warm:
        return cfg.lr * (step + 1) / warm
    progress = (step - warm + 1) / (total_steps - warm + 1)  # in (0, 1): no step at lr 0 or twice at the peak
    if cfg.schedule == "onecycle":
        return cfg.lr * (1 - progress)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * progress))


def train_step(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    amp_dtype: torch.dtype | None,
    *,
    label_smoothing: float = 0.0,
    grad_clip: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimiser step of ``model`` (in train mode) on one batch of normalised ``B x C x H x W`` ``images``
    and ``B`` class indices: forward (under autocast), loss, backward, update.

    Args:
        scaler: Scales the fp16 loss so that small gradients do not underflow; for bf16 or full precision
            pass ``torch.amp.GradScaler(enabled=False)``, which changes nothing.
        amp_dtype: The autocast dtype (:func:`resolve_amp`), or ``None`` for full precision.

    Returns the loss (0-d) and the logits (``B x classes``, float32), detached and still on the device.
    """
    if not images.is_floating_point():
        raise TypeError(
            f"train_step: images must be a floating-point batch (GpuLoader's, normalised), got {images.dtype}"
        )
    check_labels(labels, None, "train_step: labels")
    if images.dim() != 4 or len(images) == 0 or labels.shape != images.shape[:1]:
        shapes = f"images {tuple(images.shape)} and labels {tuple(labels.shape)}"
        raise ValueError(f"train_step: expected a non-empty batch B x C x H x W and B labels, got {shapes}")
    with torch.autocast(images.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        logits = model(images).float()  # B x classes; the softmax and loss in float32
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
    model: nn.Module,
    data: CifarArrays,
    cfg: TrainConfig | None = None,
    *,
    device: torch.device | str | None = None,
    checkpoint_dir: str | Path | None = None,
    progress: bool = True,
    resume: bool = True,
    callbacks: Iterable[Callable[[int, History], None]] = (),
) -> History:
    """Train ``model`` (any classifier of ``N x 3 x H x W`` images, in place) on ``data`` (uint8 images, normalised
    with its ``mean`` and ``std``) with the recipe ``cfg`` (default: :func:`recommended_config` for ``device``, itself
    by default the model's), one :func:`train_step` at a time (DDP under ``torchrun``: :mod:`.distributed`).

    Args:
        checkpoint_dir: Write ``checkpoint.pt`` here after every epoch (atomically); ``None``: none.
        progress: Show a tqdm progress bar (where it can render) and a line per epoch.
        resume: Continue from ``checkpoint_dir``'s checkpoint when there is one (of the same model config,
            TrainConfig and data, else a ``CheckpointError``); ``False``: start afresh.
        callbacks: ``f(epoch, history)``, called after each epoch's checkpoint; an exception stops training.

    Returns the :class:`~xception_lib.history.History`, including epochs restored from a checkpoint, or raises
    :class:`~xception_lib.history.NonFiniteLossError` naming the step where the loss became NaN or infinite.
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
    config = getattr(model, "config", None)
    model_config = dataclasses.asdict(config) if isinstance(config, XceptionConfig) else None
    data = _checked_data(data, model_config["num_classes"] if model_config else None, cfg, world_size)
    model.to(device).to(memory_format=torch.channels_last if cfg.channels_last else torch.preserve_format)
    shared: dict[str, Any] = {"mean": data.mean, "std": data.std, "device": device, "seed": cfg.seed, "rank": rank}
    shared |= {"crop_padding": cfg.crop_padding, "flip": cfg.flip, "channels_last": cfg.channels_last}
    shared["world_size"] = world_size
    train_loader = GpuLoader(data.train_images, data.train_labels, batch_size=cfg.batch_size // world_size, **shared)
    test_loader = GpuLoader(data.test_images, data.test_labels, batch_size=cfg.eval_batch_size, train=False, **shared)
    steps_per_epoch = len(train_loader)
    total_steps = min(cfg.epochs * steps_per_epoch, cfg.max_steps or sys.maxsize)
    last_epoch = math.ceil(total_steps / steps_per_epoch)  # epochs actually run
    optimizer = _make_optimizer(model, cfg)
    amp_dtype = resolve_amp(cfg.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    trained: dict[str, Any] = {"model": model, "optimizer": optimizer, "scaler": scaler}  # what a checkpoint holds
    train_config = dataclasses.asdict(cfg)
    identity = {"model_class": type(model).__name__, "model_config": model_config, "train_config": train_config}
    identity["data"] = checkpoint.data_fingerprint(data)
    meta = {"config": train_config, "environment": environment(device).to_dict(), "world_size": world_size}
    meta |= {"parameters": sum(p.numel() for p in model.parameters()), "model": type(model).__name__}
    meta |= {"model_config": model_config, "dataset": data.name, "data": data.source}
    meta |= {"train_images": len(data.train_labels), "test_images": len(data.test_labels)}
    meta |= {"steps_per_epoch": steps_per_epoch, "total_steps": total_steps}
    history = History(meta=json.loads(json.dumps(meta)))  # as it will read back from JSON (tuples become lists)
    start_epoch = 0
    if checkpoint_path is not None and resume and checkpoint_path.exists():
        stored, start_epoch = checkpoint.restore(checkpoint_path, identity, trained)
        history = History.from_dict(stored)
    label, step = "preview" if cfg.is_preview else "train", start_epoch * steps_per_epoch
    options: dict[str, Any] = {"label_smoothing": cfg.label_smoothing, "grad_clip": cfg.grad_clip}
    with (  # fork_rng: the caller's random state is left alone
        torch.random.fork_rng(devices=[device] if device.type == "cuda" else []),
        distributed.wrap(model, device, sync_batchnorm=cfg.sync_batchnorm, compile=cfg.compile) as train_model,
        progress_bar(total_steps, min(step, total_steps), label, progress and rank == 0) as bar,
    ):
        for epoch in range(start_epoch, last_epoch):
            torch.manual_seed(distributed.epoch_seed(cfg.seed, epoch, rank))  # dropout etc.
            train_loader.set_epoch(epoch)
            bar.set_description(what := f"{label} epoch {epoch + 1}/{last_epoch}")
            train_model.train()
            batches, lr = min(steps_per_epoch, total_steps - step), 0.0  # the last epoch may stop at max_steps
            pending: list[torch.Tensor] = []  # losses not yet read back from the device
            totals = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, correct, count
            start = time.perf_counter()
            for i, (images, labels) in enumerate(itertools.islice(train_loader, batches)):
                lr = lr_at(cfg, step, total_steps)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                loss, logits = train_step(train_model, images, labels, optimizer, scaler, amp_dtype, **options)
                history.step_lr.append(lr)
                step += 1
                pending.append(loss)
                totals[0] += loss * len(labels)
                totals[1] += (logits.argmax(1) == labels).sum()
                totals[2] += len(labels)
                if len(pending) == cfg.log_every or i + 1 == batches:  # the global batch's losses, in one read
                    losses = distributed.all_reduce_sum(torch.stack(pending)) / world_size
                    history.append_steps(losses.tolist(), steps_per_epoch)
                    bar.update(len(pending))
                    bar.set_postfix(loss=f"{history.step_loss[-1]:.3f}", lr=f"{lr:.3g}", refresh=False)
                    pending.clear()
            loss_sum, correct, count = distributed.all_reduce_sum(totals).tolist()  # waits for the device
            seconds = time.perf_counter() - start
            if world_size > 1:  # rank 0's batch-norm statistics (without SyncBatchNorm, each process has its own)
                for buffer in model.buffers():
                    torch.distributed.broadcast(buffer, src=0)
            evaluated = (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == last_epoch
            test = loss_and_accuracy(model, test_loader, amp_dtype) if evaluated else (math.nan, math.nan)
            metrics = {"train_loss": loss_sum / count, "train_acc": correct / count, "test_loss": test[0]}
            metrics |= {"test_acc": test[1], "lr": lr, "images_per_sec": count / seconds, "epoch_time": seconds}
            history.append_epoch(**metrics)
            if progress and rank == 0:
                accuracies = f"train {metrics['train_acc']:.1%}, test {test[1]:.1%}, {count / seconds:,.0f} images/s"
                bar.write(f"{what}: train loss {metrics['train_loss']:.3f}, {accuracies}")
            if checkpoint_path is not None and rank == 0:
                state = {key: obj.state_dict() for key, obj in trained.items()} | identity
                state |= {"format": checkpoint.FORMAT, "epoch": epoch + 1, "step": step, "history": history.to_dict()}
                checkpoint.atomic_save(state, checkpoint_path)
            if world_size > 1:  # no process goes on (or returns) before the checkpoint is written
                torch.distributed.barrier()
            for callback in callbacks:
                callback(epoch, history)
    return history


def _checked_data(data: CifarArrays, classes: int | None, cfg: TrainConfig, world_size: int) -> CifarArrays:
    """``data`` (or the subset ``cfg`` asks for), after checking what training will need of it."""
    if not isinstance(data, CifarArrays):
        raise TypeError(f"data must be a CifarArrays (from xception_lib.data.load_cifar), got a {type(data).__name__}")
    if cfg.train_subset is not None or cfg.test_subset is not None:
        data = data.subset(train=cfg.train_subset, test=cfg.test_subset, seed=cfg.seed)
    for split in ("train", "test"):
        images, labels = getattr(data, f"{split}_images"), getattr(data, f"{split}_labels")
        check_split(images, labels, classes or data.num_classes, f"data.{split}_")
    if cfg.batch_size % world_size:
        raise ValueError(f"batch_size ({cfg.batch_size}) must be divisible by the number of processes ({world_size})")
    if cfg.batch_size > len(data.train_labels):
        raise ValueError(f"batch_size {cfg.batch_size} exceeds the {len(data.train_labels)} training images; lower it")
    return data


def _make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Decay conv and linear weights (2-D and up); not batch-norm parameters or biases (1-D)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.momentum, 0.999))
