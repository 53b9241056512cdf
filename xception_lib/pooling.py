"""TensorFlow's "same" max-pooling, and an opt-in faster CPU path for every max-pool of a model.

:class:`MaxPool2dSame` is what Keras's reference model computes. The rest of the module is a
speed trick, off unless :func:`fast_max_pools` switches it on: max-pooling does no
multiply-accumulates, yet PyTorch's CPU kernel for NCHW tensors (one output pixel at a time, along
each channel's plane) made the four pools of Xception cost about 7% of a CPU training step. Its
channels_last kernel works on all channels of a pixel at once and is 2-5x faster, copies included.
So :func:`max_pool2d` finds the positions of the maxima in a channels_last copy and gathers the
output from ``x`` at those positions: the same values and the same gradients (gather's backward adds
each output's gradient into the input in the same order as max-pooling's).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MaxPool2dSame(nn.Module):
    """Max-pooling with TensorFlow's ``padding="same"``, as in Keras's reference model.

    TensorFlow pads ``max((ceil(n / s) - 1) * s + k - n, 0)`` pixels, the odd one at the
    bottom/right. For odd inputs (147 -> 74, 37 -> 19) this is PyTorch's symmetric
    ``padding=1``; for even ones (74 -> 37) TensorFlow pads only at the end, so symmetric
    padding would shift every pooling window by one pixel.
    """

    def __init__(self, kernel_size: int = 3, stride: int = 2) -> None:
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride
        self.fast = False  # set by fast_max_pools

    def _pad(self, n: int) -> tuple[int, int]:
        total = max((-(-n // self.stride) - 1) * self.stride + self.kernel_size - n, 0)
        return total // 2, total - total // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (top, bottom), (left, right) = self._pad(x.shape[-2]), self._pad(x.shape[-1])
        if self.fast:
            return self._fast(x, top, bottom, left, right)
        x = F.pad(x, (left, right, top, bottom), value=float("-inf"))  # N x C x (H + pad) x (W + pad)
        return F.max_pool2d(x, self.kernel_size, self.stride)  # N x C x ceil(H / s) x ceil(W / s)

    def _fast(self, x: torch.Tensor, top: int, bottom: int, left: int, right: int) -> torch.Tensor:
        # No padded copy of x: PyTorch's implicit -inf padding (at most k // 2, as TensorFlow's top/left is) starts
        # the windows where TensorFlow's does, and where TensorFlow pads one more pixel at the bottom/right,
        # ceil_mode (slower, so only then) adds the window it makes, if the stride is above 1.
        ceil_mode = bool(bottom > top or right > left)  # a plain bool also under torch.jit.trace
        if ceil_mode and self.stride == 1:
            return max_pool2d(F.pad(x, (left, right, top, bottom), value=float("-inf")), self.kernel_size, 1)
        return max_pool2d(x, self.kernel_size, self.stride, (top, left), ceil_mode=ceil_mode)


# ------------------------------------------------------------------ the opt-in CPU speed trick


def max_pool2d(
    x: torch.Tensor,
    kernel_size: int | tuple[int, ...],
    stride: int | tuple[int, ...],
    padding: int | tuple[int, ...] = 0,
    *,
    ceil_mode: bool = False,
) -> torch.Tensor:
    """``F.max_pool2d`` (implicit -inf ``padding``), computing the same numbers faster on the CPU."""
    if (
        x.device.type != "cpu"
        or x.dim() != 4
        or not x.is_contiguous()
        or x.is_contiguous(memory_format=torch.channels_last)
    ):
        return F.max_pool2d(x, kernel_size, stride, padding, ceil_mode=ceil_mode)
    with torch.no_grad():
        channels_last = x.contiguous(memory_format=torch.channels_last)
        _, where = F.max_pool2d(channels_last, kernel_size, stride, padding, ceil_mode=ceil_mode, return_indices=True)
    where = where.contiguous()  # N x C x H' x W': flat positions (h * W + w) in each plane
    return x.flatten(2).gather(2, where.flatten(2)).view(where.shape)


class MaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` (symmetric padding, no dilation, no indices) computed by :func:`max_pool2d`: the same numbers."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return max_pool2d(x, self.kernel_size, self.stride, self.padding, ceil_mode=self.ceil_mode)


def fast_max_pools(model: nn.Module) -> nn.Module:
    """Switch every max-pool of ``model`` to :func:`max_pool2d` (in place; the same numbers); return ``model``."""
    for name, module in list(model.named_modules()):
        if type(module) is nn.MaxPool2d and module.dilation in (1, (1, 1)) and not module.return_indices:
            model.set_submodule(
                name, MaxPool2d(module.kernel_size, module.stride, module.padding, ceil_mode=module.ceil_mode)
            )
        elif isinstance(module, MaxPool2dSame):
            module.fast = True
    return model
