"""A data loader that keeps the whole split on the device and augments whole batches at once.

torchvision's ``DataLoader`` decodes, crops, flips and normalises one image at a time in
worker processes, then copies every batch to the GPU. CIFAR is small (50,000 x 3 x 32 x 32
bytes = 154 MB), so it fits on any GPU as a single uint8 tensor; then a batch is one index
into that tensor, and random cropping and flipping are one gather for the whole batch. No
worker processes, no copies, and it runs unchanged on a CPU. The idea follows airbench's
``CifarLoader`` (Keller Jordan, 2024).
"""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from xception_lib.runtime import synchronize

__all__ = ["GpuLoader", "check_number", "compare_loaders"]


def check_number(
    where: str, name: str, value: object, *, integer: bool = False, low: float | None = None, high: float | None = None,
    low_open: bool = False, high_open: bool = False, optional: bool = False,
) -> None:
    """Raise unless ``value`` is a finite number (an ``int`` if ``integer``; never a ``bool``) between
    ``low`` and ``high`` (each inclusive unless ``low_open`` / ``high_open``; ``None``: unbounded),
    or ``None`` if ``optional``.

    Raises:
        TypeError: Not a number, or not an integer where one is required; the message names ``where`` and ``name``.
        ValueError: Not finite, or outside the bounds.
    """
    if value is None and optional:
        return
    bounds = [f"{'>' if low_open else '>='} {low}"] if low is not None else []
    bounds += [f"{'<' if high_open else '<='} {high}"] if high is not None else []
    expected = " ".join(["an integer" if integer else "a finite number", " and ".join(bounds), "or None" if optional else ""]).strip()
    if isinstance(value, bool) or not isinstance(value, numbers.Integral if integer else numbers.Real):
        raise TypeError(f"{where}: {name} must be {expected}, got {value!r} ({type(value).__name__})")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if not math.isfinite(value) or too_low or too_high:
        raise ValueError(f"{where}: {name} must be {expected}, got {value!r}")


class GpuLoader:
    """Batches of normalised, augmented images from a uint8 tensor held on ``device``.

    Each epoch draws one random permutation of the images and, for every image, a crop
    offset and a flip, all from a generator seeded by ``(seed, epoch)``; an epoch is
    therefore reproducible from those two numbers alone, which makes resuming and sharding
    exact. Iterating advances the epoch; :meth:`set_epoch` sets it.

    Args:
        images: ``N x C x H x W`` uint8 images.
        labels: ``N`` integer labels.
        mean: Per-channel mean in [0, 1] subtracted after scaling to [0, 1] (the data set's:
            ``CifarArrays.mean``, from :data:`xception_lib.data.DATASETS`).
        std: Per-channel standard deviation in [0, 1] divided by (``CifarArrays.std``).
        batch_size: Images per batch (per process, when sharded).
        train: Shuffle and augment (``True``) or walk the images in order unchanged.
        device: Where the images live and batches are made.
        seed: Seed of the shuffling and augmentation.
        crop_padding: Pad by this many zero pixels on each side, then crop back to
            ``H x W`` at a random offset (torchvision's ``RandomCrop(32, padding=4)``).
            0 disables cropping.
        flip: Flip horizontally with probability 1/2.
        drop_last: Drop the last, smaller batch (default: ``train``).
        dtype: Floating type of the batches.
        channels_last: Return batches in ``torch.channels_last`` memory format.
        rank: This process's index when the data are sharded across processes.
        world_size: Number of processes; each takes every ``world_size``-th image of the
            epoch's permutation, so ``world_size`` loaders with batch ``b`` together see the
            batches of one loader with batch ``world_size * b``. With ``drop_last`` the shards
            are equally long (every process makes the same steps); without it every image is
            in exactly one shard (what evaluation needs).
    """

    def __init__(
        self, images: torch.Tensor, labels: torch.Tensor, *, mean: Sequence[float], std: Sequence[float], batch_size: int = 512,
        train: bool = True, device: torch.device | str = "cpu", seed: int = 0, crop_padding: int = 4, flip: bool = True,
        drop_last: bool | None = None, dtype: torch.dtype = torch.float32, channels_last: bool = False, rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
            got = f"{images.dtype} tensor of shape {tuple(images.shape)}" if isinstance(images, torch.Tensor) else type(images).__name__
            raise TypeError(f"GpuLoader: images must be uint8 N x C x H x W (0-255: the loader normalises them), got a {got}")
        if not isinstance(labels, torch.Tensor) or labels.dim() != 1 or len(labels) != len(images):
            got = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
            raise ValueError(f"GpuLoader: labels must be a 1-D tensor of {len(images)} labels, got {got}")
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise TypeError(f"GpuLoader: labels must be integer class indices, got {labels.dtype}")
        if len(labels) and labels.min() < 0:
            raise ValueError(f"GpuLoader: labels must be class indices >= 0, got {int(labels.min())}")
        for name, value, low in (("batch_size", batch_size, 1), ("crop_padding", crop_padding, 0), ("seed", seed, 0), ("world_size", world_size, 1)):
            check_number("GpuLoader", name, value, integer=True, low=low)
        check_number("GpuLoader", "rank", rank, integer=True, low=0, high=world_size, high_open=True)
        if not dtype.is_floating_point:
            raise TypeError(f"GpuLoader: dtype must be a floating-point type, got {dtype}")
        channels = images.shape[1]
        if len(mean) != channels or len(std) != channels:
            raise ValueError(f"GpuLoader: mean and std need {channels} values each, got {len(mean)} and {len(std)}")
        for i in range(channels):
            check_number("GpuLoader", f"mean[{i}]", mean[i], low=0, high=1)
            check_number("GpuLoader", f"std[{i}]", std[i], low=0, low_open=True)
        self.device = torch.device(device)
        self.images = images.to(self.device)  # N x C x H x W uint8, the whole split
        self.labels = labels.to(self.device, torch.int64)
        self.batch_size, self.train, self.seed, self.dtype, self.channels_last = batch_size, train, seed, dtype, channels_last
        self.crop_padding, self.flip = (crop_padding, flip) if train else (0, False)
        self.drop_last = train if drop_last is None else drop_last
        self.rank, self.world_size, self.epoch = rank, world_size, 0
        # Padded once, so that a batch's selection, padding, crop and flip are one gather.
        p = self.crop_padding
        self._padded = F.pad(self.images, (p, p, p, p)) if p > 0 else self.images  # N x C x (H+2p) x (W+2p)
        # Normalisation on uint8 values: (x - 255 mean) / (255 std).
        self._shift = torch.tensor(mean, device=self.device, dtype=dtype).view(1, -1, 1, 1) * 255
        self._inv_scale = 1 / (torch.tensor(std, device=self.device, dtype=dtype).view(1, -1, 1, 1) * 255)

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration produce epoch ``epoch``'s permutation and augmentations."""
        self.epoch = int(epoch)

    def state_dict(self) -> dict[str, int]:
        """What resuming needs: the seed and the next epoch."""
        return {"seed": self.seed, "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.seed, self.epoch = int(state["seed"]), int(state["epoch"])

    @property
    def num_images(self) -> int:
        """Images in this process's shard of an epoch (before dropping a last partial batch)."""
        return len(self._shard_positions())

    def _shard_positions(self) -> range:
        """Positions in the epoch's order that this process takes: every ``world_size``-th."""
        n = len(self.labels)
        end = n - n % self.world_size if self.drop_last else n  # equal shards, or every image once
        return range(self.rank, end, self.world_size)

    def __len__(self) -> int:
        n = self.num_images
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def _epoch_plan(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """This process's image order, crop offsets (``n x 2``) and flips for ``epoch``."""
        n_total = len(self.labels)
        if not self.train:
            order, offsets, flips = torch.arange(n_total), torch.zeros(n_total, 2, dtype=torch.int64), torch.zeros(n_total, dtype=torch.bool)
        else:
            seed = int(np.random.SeedSequence([self.seed, epoch]).generate_state(1)[0])
            g = torch.Generator().manual_seed(seed)
            order = torch.randperm(n_total, generator=g)
            offsets = torch.randint(0, 2 * self.crop_padding + 1, (n_total, 2), generator=g)
            flips = torch.rand(n_total, generator=g) < 0.5
            if not self.flip:
                flips = torch.zeros_like(flips)
        # Every process takes every world_size-th position: global batch k of one process
        # with batch world_size * b is the union of batch k of world_size processes.
        positions = self._shard_positions()
        sl = slice(positions.start, positions.stop, positions.step)
        return order[sl].to(self.device), offsets[sl].to(self.device), flips[sl].to(self.device)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch = self.epoch
        self.epoch += 1
        order, offsets, flips = self._epoch_plan(epoch)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            idx = order[start : start + self.batch_size]
            if self.train:
                x = self.crop_and_flip(idx, offsets[start : start + self.batch_size], flips[start : start + self.batch_size])
            else:
                x = self.images.index_select(0, idx)
            yield self.normalize(x), self.labels.index_select(0, idx)

    def augment(self, idx: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Images ``idx`` (repeat an index to see several views of one image) with fresh random crops
        and flips from ``generator`` (default: one seeded with ``seed``), as uint8, for looking at them."""
        g = generator if generator is not None else torch.Generator().manual_seed(self.seed)
        idx = torch.as_tensor(idx, dtype=torch.int64)
        offsets = torch.randint(0, 2 * self.crop_padding + 1, (len(idx), 2), generator=g)
        flips = (torch.rand(len(idx), generator=g) < 0.5) & self.flip
        return self.crop_and_flip(idx.to(self.device), offsets.to(self.device), flips.to(self.device))

    def crop_and_flip(self, idx: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
        """``B x C x H x W`` uint8 images ``idx`` (``B`` indices), cropped at ``offsets`` (``B x 2``
        top-left corners, row and column, in the zero-padded images, each in ``[0, 2 crop_padding]``)
        and mirrored where ``flips`` (``B`` booleans), as one gather."""
        b = len(idx)
        _, c, hp, wp = self._padded.shape
        h, w = hp - 2 * self.crop_padding, wp - 2 * self.crop_padding
        device = self._padded.device
        # 32-bit positions when they fit (all of CIFAR does): half the index traffic of int64.
        itype = torch.int32 if self._padded.numel() < 2**31 else torch.int64
        offsets = offsets.to(itype)
        rows = offsets[:, 0:1] + torch.arange(h, device=device, dtype=itype)  # B x H
        cols = torch.where(
            flips[:, None],
            offsets[:, 1:2] + torch.arange(w - 1, -1, -1, device=device, dtype=itype),  # read right to left
            offsets[:, 1:2] + torch.arange(w, device=device, dtype=itype),
        )  # B x W
        # Position of every output pixel in the flattened N x C x Hp x Wp padded images.
        image_start = idx.to(itype).view(b, 1, 1, 1) * (c * hp * wp)
        channel_start = torch.arange(c, device=device, dtype=itype).view(1, c, 1, 1) * (hp * wp)
        pixel = (rows.view(b, h, 1) * wp + cols.view(b, 1, w)).view(b, 1, h, w)
        flat = (image_start + channel_start) + pixel  # B x C x H x W
        return self._padded.view(-1).index_select(0, flat.view(-1)).view(b, c, h, w)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 images -> normalised floating-point images (in ``channels_last`` if asked)."""
        # In place on the fresh floating-point copy: on a CPU, allocating two more
        # batch-sized tensors costs more than the arithmetic.
        x = x.to(self.dtype).sub_(self._shift).mul_(self._inv_scale)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x


class _ArrayDataset(torch.utils.data.Dataset):
    """What ``torchvision.datasets.CIFAR10`` does per item: a PIL image (from ``N x H x W x C``
    uint8 arrays) through the transforms."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Callable[[Any], torch.Tensor]) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def _images_per_second(batches: Iterator[tuple[torch.Tensor, torch.Tensor]], num_batches: int, warmup: int, repeats: int, device: torch.device) -> float:
    """Best images per second over ``repeats`` windows of ``num_batches`` batches, after ``warmup``.

    The best window, not the mean, because other processes on a shared machine only ever
    slow a window down.
    """
    for _ in range(warmup):
        next(batches)
    best = 0.0
    for _ in range(repeats):
        synchronize(device)
        start, n = time.perf_counter(), 0
        for _ in range(num_batches):
            x, y = next(batches)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            n += len(y)
        synchronize(device)
        best = max(best, n / (time.perf_counter() - start))
    return best


def compare_loaders(
    images: torch.Tensor, labels: torch.Tensor, *, mean: Sequence[float], std: Sequence[float], batch_size: int = 256,
    num_batches: int = 10, warmup: int = 2, repeats: int = 3, num_workers: int = 2, threads: int | None = 1,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Images per second of :class:`GpuLoader` and of torchvision's usual pipeline.

    The torchvision pipeline is what most CIFAR tutorials use: a PIL image per item,
    ``RandomCrop(32, padding=4)``, ``RandomHorizontalFlip()``, ``ToTensor()``, ``Normalize``, a
    ``DataLoader`` with ``num_workers`` processes, and a copy of every batch to ``device``. Both
    are timed over ``repeats`` windows of ``num_batches`` batches after ``warmup`` batches (not
    counting worker start-up); the best window counts.

    Args:
        images: ``N x 3 x H x W`` uint8 images (at least ``(warmup + repeats * num_batches) * batch_size``).
        labels: ``N`` labels.
        mean: Normalisation mean (the data set's, ``CifarArrays.mean``); ``std``: its standard deviation.
        batch_size, num_batches, warmup, repeats: Images per batch; batches per timed window;
            batches drawn before timing; timed windows.
        num_workers: DataLoader worker processes.
        threads: PyTorch's intra-op threads while :class:`GpuLoader` is timed (restored;
            ``None``: leave as is). 1 gives it no more CPU than one DataLoader worker has.
        device: Where batches must end up.

    Returns:
        The images per second of each loader (keys ``gpu_loader`` and ``dataloader``), their
        ``ratio`` (gpu_loader / dataloader), and the settings used.
    """
    import torchvision.transforms as T

    device = torch.device(device)
    needed = (warmup + repeats * num_batches) * batch_size
    if len(labels) < needed:
        raise ValueError(f"need at least (warmup + repeats * num_batches) * batch_size = {needed} images, got {len(labels)}")
    transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std)])
    dataset = _ArrayDataset(images.permute(0, 2, 3, 1).numpy(), labels.numpy(), transform)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=True, num_workers=num_workers, drop_last=True, pin_memory=device.type == "cuda"
    )
    batches = iter(loader)
    try:
        dataloader_rate = _images_per_second(batches, num_batches, warmup, repeats, device)
    finally:
        del batches  # stops the worker processes
    gpu = GpuLoader(images, labels, batch_size=batch_size, train=True, device=device, mean=mean, std=std)
    saved_threads = torch.get_num_threads()
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        gpu_rate = _images_per_second(iter(gpu), num_batches, warmup, repeats, device)
    finally:
        torch.set_num_threads(saved_threads)
    settings = {"batch_size": batch_size, "num_batches": num_batches, "repeats": repeats, "num_workers": num_workers}
    threads = threads if threads is not None else saved_threads
    return {"gpu_loader": gpu_rate, "dataloader": dataloader_rate, "ratio": gpu_rate / dataloader_rate, **settings, "threads": threads, "device": str(device)}
