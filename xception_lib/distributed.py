"""What :func:`xception_lib.train.fit` needs to train under ``torchrun`` (Chapter 8 shows the script).

``TrainConfig.batch_size`` stays the global batch: each process takes every ``world_size``-th image of
the epoch's order, DDP averages the gradients, metrics are summed over processes, and only rank 0 writes
checkpoints and reports. Two processes with batch ``B`` train as one with batch ``B`` does (up to the order
of sums) for a model without batch norm; with it each process normalises its own shard unless
``TrainConfig.sync_batchnorm`` applies (CUDA). Without a process group, each function does what one needs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import cast

import numpy as np
import torch
from torch import nn


def rank_and_world_size() -> tuple[int, int]:
    """``(rank, world_size)`` of the running ``torch.distributed`` group, or ``(0, 1)``."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """``values`` summed over all processes, in place."""
    if rank_and_world_size()[1] > 1:
        torch.distributed.all_reduce(values)
    return values


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """Seed of epoch ``epoch``'s dropout in process ``rank``: one stream per process (else image ``i`` of every
    shard gets the same mask); rank 0's is the single process's."""
    entropy = [seed, epoch, 1] if rank == 0 else [seed, epoch, 1, rank]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


@contextlib.contextmanager
def synced_batchnorm(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block, ``model``'s batch norms are ``nn.SyncBatchNorm`` layers sharing their parameters and
    buffers (the optimizer trains them, state-dict keys stay); on exit the original layers are put back."""
    originals = [
        (parent, name, child)
        for parent in list(model.modules())
        for name, child in parent.named_children()
        if isinstance(child, nn.modules.batchnorm._BatchNorm)
    ]
    nn.SyncBatchNorm.convert_sync_batchnorm(model)  # replaces each in its parent
    try:
        yield model
    finally:
        for parent, name, original in originals:
            original.train(getattr(parent, name).training)
            setattr(parent, name, original)


@contextlib.contextmanager
def wrap(model: nn.Module, device: torch.device, *, sync_batchnorm: bool, compile: bool) -> Iterator[nn.Module]:
    """``model`` as the training steps call it: in DDP (several processes), with SyncBatchNorm (asked for, several
    processes, CUDA), compiled (asked for). Evaluation and checkpoints use ``model`` itself."""
    world_size = rank_and_world_size()[1]
    sync = sync_batchnorm and world_size > 1 and device.type == "cuda"  # SyncBatchNorm needs a GPU
    with synced_batchnorm(model) if sync else contextlib.nullcontext(model):
        wrapped = model
        if world_size > 1:
            device_ids = [device.index] if device.type == "cuda" and device.index is not None else None
            wrapped = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
        yield cast(nn.Module, torch.compile(wrapped)) if compile else wrapped
