"""A data loader that keeps the whole split on the device and augments whole batches at once.

torchvision's ``DataLoader`` crops, flips and normalises one image at a time in worker processes, then
copies every batch to the GPU. CIFAR (50,000 x 3 x 32 x 32 bytes = 154 MB) fits on any GPU as one uint8
tensor; a batch is then one index into it, and cropping and flipping one gather for the whole batch: no
workers, no copies, and unchanged on a CPU. The idea follows airbench's ``CifarLoader`` (Keller Jordan, 2024).
"""

from __future__ import annotations

import functools
import math
import numbers
import operator
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["GpuLoader", "check_images", "check_labels", "check_number", "check_split"]

_INTEGER_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
_COMPARISONS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}


def check_number(
    where: str,
    name: str,
    value: object,
    *,
    integer: bool = False,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    optional: bool = False,
) -> None:
    """Raise a ``TypeError`` (not a number, or a ``bool``) or ``ValueError`` naming ``where`` and ``name`` unless
    ``value`` is a finite number (``int`` if ``integer``) from ``low`` to ``high`` (``*_open``: excluded) or ``None``
    if ``optional``."""
    if value is None and optional:
        return
    ops = ((">" if low_open else ">=", low), ("<" if high_open else "<=", high))
    bounds = [(op, bound) for op, bound in ops if bound is not None]
    kind = ["an integer" if integer else "a finite number", " and ".join(f"{op} {bound}" for op, bound in bounds)]
    expected = " ".join(filter(None, [*kind, "or None" if optional else ""]))
    if isinstance(value, bool) or not isinstance(value, numbers.Integral if integer else numbers.Real):
        raise TypeError(f"{where}: {name} must be {expected}, got {value!r} ({type(value).__name__})")
    if not math.isfinite(value) or not all(_COMPARISONS[op](value, bound) for op, bound in bounds):
        raise ValueError(f"{where}: {name} must be {expected}, got {value!r}")


def check_images(images: object, name: str) -> torch.Tensor:
    """Raise a ``TypeError`` unless ``images`` is an ``N x C x H x W`` uint8 tensor (0-255, unnormalised)."""
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
        tensor = images if isinstance(images, torch.Tensor) else None
        got = f"{tensor.dtype} tensor of shape {tuple(tensor.shape)}" if tensor is not None else type(images).__name__
        raise TypeError(
            f"{name} must be uint8 images N x C x H x W (0-255, as xception_lib.data.load_cifar returns them), got a "
            f"{got}; pass them unnormalised: the loader normalises them with the data set's mean and std"
        )
    return images


def check_labels(labels: object, classes: int | None, name: str) -> torch.Tensor:
    """Raise a ``TypeError`` or ``ValueError`` unless ``labels`` is an integer tensor of indices in [0, ``classes``)."""
    if not isinstance(labels, torch.Tensor) or labels.dtype not in _INTEGER_DTYPES:
        raise TypeError(
            f"{name} must be an integer tensor of class indices, got {getattr(labels, 'dtype', type(labels).__name__)}"
        )
    if labels.numel() and (int(labels.min()) < 0 or (classes is not None and int(labels.max()) >= classes)):
        low, high = int(labels.min()), int(labels.max())
        span = f"in [0, {classes})" if classes is not None else ">= 0"
        raise ValueError(f"{name} must be class indices {span}, got values from {low} to {high}")
    return labels


def check_split(images: object, labels: object, classes: int | None, where: str = "") -> None:
    """:func:`check_images` and :func:`check_labels`, at least one image, one label per image; ``where`` prefixes
    the names in messages (``"data.train_"``)."""
    images, labels = check_images(images, f"{where}images"), check_labels(labels, classes, f"{where}labels")
    if len(images) == 0:
        raise ValueError(f"{where}images is empty (0 x C x H x W); pass at least one image")
    if labels.shape != images.shape[:1]:
        raise ValueError(
            f"{where}labels: expected one label for each of the {len(images)} images, got shape {tuple(labels.shape)}"
        )


class GpuLoader:
    """Batches of normalised, augmented images from a uint8 tensor held on ``device``.

    Each epoch's permutation, crop offsets and flips come from a generator seeded by ``(seed, epoch)`` alone,
    which makes resuming and sharding exact. Iterating advances the epoch; :meth:`set_epoch` sets it.

    Args:
        images: ``N x C x H x W`` uint8 images (and ``labels``, ``N`` integer labels).
        mean: Per-channel means in [0, 1] of the data set (``CifarArrays.mean``); ``std``: standard deviations.
        train: Shuffle, augment and drop the last, smaller batch (``True``), or walk the images in order unchanged.
        crop_padding: Zero-pad by this many pixels, then crop back to ``H x W`` at a random offset
            (torchvision's ``RandomCrop(32, padding=4)``); 0: no crops. ``flip``: mirror with probability 1/2.
        world_size: Each of ``world_size`` processes (this one is ``rank``) takes every ``world_size``-th image of
            the epoch's permutation (equal shards in training), so ``world_size`` loaders with ``batch_size`` ``b``
            together see the batches of one loader with ``world_size * b``.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        batch_size: int = 512,
        train: bool = True,
        device: torch.device | str = "cpu",
        seed: int = 0,
        crop_padding: int = 4,
        flip: bool = True,
        channels_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        check_split(images, labels, None, "GpuLoader: ")
        for name, value, low in (("batch_size", batch_size, 1), ("crop_padding", crop_padding, 0), ("seed", seed, 0)):
            check_number("GpuLoader", name, value, integer=True, low=low)
        check_number("GpuLoader", "world_size", world_size, integer=True, low=1)
        check_number("GpuLoader", "rank", rank, integer=True, low=0, high=world_size, high_open=True)
        channels = images.shape[1]
        if len(mean) != channels or len(std) != channels:
            raise ValueError(
                f"GpuLoader: images of {channels} channels need mean and std of {channels} values each, "
                f"got {len(mean)} and {len(std)}"
            )
        for i in range(channels):
            check_number("GpuLoader", f"mean[{i}]", mean[i], low=0, high=1)
            check_number("GpuLoader", f"std[{i}]", std[i], low=0, low_open=True)
        self.device = torch.device(device)
        self.images = images.to(self.device).contiguous()  # N x C x H x W, the layout the gather reads
        self.labels = labels.to(self.device, torch.int64)
        self.batch_size, self.train, self.seed, self.epoch = batch_size, train, seed, 0
        self._memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.crop_padding, self.flip = (crop_padding, flip) if train else (0, False)
        # The positions this process takes in each epoch's order (see world_size).
        self._shard = slice(rank, len(labels) - (len(labels) % world_size if train else 0), world_size)
        # Padded once (N x C x H+2p x W+2p), so that a batch's selection, padding, crop and flip are one gather.
        self._padded = F.pad(self.images, (self.crop_padding,) * 4) if self.crop_padding else self.images
        # Normalisation on uint8 values: (x - 255 mean) / (255 std).
        self._shift = torch.tensor(mean, device=self.device, dtype=torch.float32).view(1, -1, 1, 1) * 255
        self._inv_scale = 1 / (torch.tensor(std, device=self.device, dtype=torch.float32).view(1, -1, 1, 1) * 255)

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration produce epoch ``epoch``'s permutation and augmentations."""
        check_number("GpuLoader.set_epoch", "epoch", epoch, integer=True, low=0)
        self.epoch = int(epoch)

    def __len__(self) -> int:
        n = len(range(len(self.labels))[self._shard])
        return n // self.batch_size if self.train else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        g = torch.Generator().manual_seed(int(np.random.SeedSequence([self.seed, epoch]).generate_state(1)[0]))
        order = torch.randperm(len(self.labels), generator=g) if self.train else torch.arange(len(self.labels))
        offsets, flips = self._random_views(len(self.labels), g)  # in evaluation: no crops, no flips
        order, offsets, flips = (t[self._shard].to(self.device) for t in (order, offsets, flips))
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            batch = slice(start, start + self.batch_size)
            x = self._crop_and_flip(order[batch], offsets[batch], flips[batch])
            # In place on the fresh copy: on a CPU, two more batch-sized tensors cost more than the arithmetic.
            x = x.float().sub_(self._shift).mul_(self._inv_scale).contiguous(memory_format=self._memory_format)
            yield x, self.labels.index_select(0, order[batch])

    def augment(self, idx: torch.Tensor) -> torch.Tensor:
        """Images ``idx`` (repeat an index to see several views of one image) with random crops and flips
        (seeded with ``seed``), as uint8, for looking at them."""
        idx = torch.as_tensor(idx)
        if idx.dtype not in _INTEGER_DTYPES:
            raise TypeError(f"GpuLoader.augment: idx must be integer image indices, got {idx.dtype}")
        if idx.dim() != 1 or (idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= len(self.images))):
            raise ValueError(
                f"GpuLoader.augment: idx must be 1-D image indices in [0, {len(self.images)}), got {idx.tolist()}"[:300]
            )
        offsets, flips = self._random_views(len(idx), torch.Generator().manual_seed(self.seed))
        return self._crop_and_flip(idx.to(self.device, torch.int64), offsets.to(self.device), flips.to(self.device))

    def _random_views(self, n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` random crop offsets (``n x 2``, each in ``[0, 2 crop_padding]``) and flips."""
        offsets = torch.randint(0, 2 * self.crop_padding + 1, (n, 2), generator=g)
        return offsets, (torch.rand(n, generator=g) < 0.5) & self.flip

    def _crop_and_flip(self, idx: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
        """``B x C x H x W`` uint8 images ``idx``, cropped at ``offsets`` (``B x 2`` top-left corners, row and
        column, in the padded images) and mirrored where ``flips`` (``B`` booleans), as one gather."""
        _, c, hp, wp = self._padded.shape
        h, w = hp - 2 * self.crop_padding, wp - 2 * self.crop_padding
        # 32-bit positions when they fit (all of CIFAR does): half the index traffic of int64.
        itype = torch.int32 if self._padded.numel() < 2**31 else torch.int64
        arange = functools.partial(torch.arange, device=self._padded.device, dtype=itype)
        rows = offsets[:, :1].to(itype) + arange(h)  # B x H
        cols = torch.where(flips[:, None], arange(w - 1, -1, -1), arange(w))  # B x W; flipped: read right to left
        cols = offsets[:, 1:].to(itype) + cols
        # Position of every output pixel in the flattened N x C x Hp x Wp padded images: B x C x H x W.
        flat = idx.to(itype).view(-1, 1, 1, 1) * (c * hp * wp) + arange(c).view(1, c, 1, 1) * (hp * wp)
        flat = flat + rows[:, None, :, None] * wp + cols[:, None, None, :]
        return self._padded.view(-1).index_select(0, flat.view(-1)).view(flat.shape)
