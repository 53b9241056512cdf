"""pooling: TensorFlow's "same" max-pooling and the fast CPU path give torch's numbers."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import xception_lib as xl
from xception_lib.pooling import max_pool2d


@pytest.mark.parametrize(("size", "expected"), [(147, 74), (74, 37), (37, 19), (38, 19), (19, 10), (1, 1)])
def test_same_max_pool_matches_tensorflow_output_sizes(size: int, expected: int) -> None:
    assert xl.MaxPool2dSame(3, 2)(torch.randn(1, 1, size, size)).shape[-1] == expected


@pytest.mark.parametrize("size", [147, 38, 37, 19, 10])
@pytest.mark.parametrize(("padding", "ceil_mode"), [(1, False), (0, False), ((0, 0), True), ((1, 0), True)])
def test_max_pool2d_gives_the_same_values_and_gradients_as_torch(
    size: int, padding: int | tuple[int, int], ceil_mode: bool
) -> None:
    # small integers: many ties, where the gradient must go to the same (first) maximum
    x = torch.randint(0, 3, (2, 8, size, size)).float().requires_grad_()
    ours = max_pool2d(x, 3, 2, padding, ceil_mode=ceil_mode)
    ref = F.max_pool2d(x, 3, 2, padding, ceil_mode=ceil_mode)
    grad = torch.randn_like(ref)
    assert torch.equal(ours, ref) and ours.is_contiguous()
    assert torch.equal(torch.autograd.grad(ours, x, grad)[0], torch.autograd.grad(ref, x, grad)[0])


def test_max_pool2d_module_is_nn_max_pool2d() -> None:
    pool = xl.pooling.MaxPool2d(3, 2, padding=1)
    x = torch.randn(2, 4, 9, 9)
    assert isinstance(pool, nn.MaxPool2d)
    assert torch.equal(pool(x), nn.MaxPool2d(3, 2, padding=1)(x))
    channels_last = x.contiguous(memory_format=torch.channels_last)
    assert torch.equal(pool(channels_last), F.max_pool2d(x, 3, 2, 1))


def test_same_max_pool_pads_at_the_end_on_even_inputs() -> None:
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    same = xl.MaxPool2dSame(3, 2)(x)
    symmetric = F.max_pool2d(x, 3, 2, padding=1)
    # TensorFlow: windows start at rows/cols 0 and 2 -> maxima at (2,2),(2,3),(3,2),(3,3)
    assert same.flatten().tolist() == [10.0, 11.0, 14.0, 15.0]
    assert symmetric.flatten().tolist() == [5.0, 7.0, 13.0, 15.0]
    for n in (7, 37, 147):  # odd sizes: TensorFlow pads (1, 1), like PyTorch; in Xception only 74 -> 37 differs
        odd = torch.randn(1, 2, n, n)
        assert torch.equal(xl.MaxPool2dSame(3, 2)(odd), F.max_pool2d(odd, 3, 2, padding=1))


@pytest.mark.parametrize("kernel,stride", [(1, 2), (2, 1), (2, 2), (3, 1), (3, 2), (3, 3), (4, 1), (4, 2), (5, 2)])
def test_same_max_pool_equals_explicit_padding(kernel: int, stride: int) -> None:
    """MaxPool2dSame uses max_pool2d's own padding (and ceil_mode) instead of an explicit
    -inf pad where that is equivalent: outputs and gradients must be identical."""
    pool = xl.MaxPool2dSame(kernel, stride)
    pool.fast = True  # what xl.pooling.fast_max_pools switches on
    gen = torch.Generator().manual_seed(0)
    for h, w in [(1, 1), (4, 5), (7, 7), (19, 38), (37, 74), (147, 8)]:
        x = torch.randn(2, 3, h, w, generator=gen, requires_grad=True)
        ref_x = x.detach().clone().requires_grad_()
        (top, bottom), (left, right) = pool._pad(h), pool._pad(w)
        ref = F.max_pool2d(F.pad(ref_x, (left, right, top, bottom), value=float("-inf")), kernel, stride)
        out = pool(x)
        assert out.shape == ref.shape and torch.equal(out, ref), (h, w)
        grad = torch.randn(out.shape, generator=gen)
        out.backward(grad)
        ref.backward(grad)
        assert torch.equal(x.grad, ref_x.grad), (h, w)


@pytest.mark.parametrize("pool_padding", ["same", "symmetric"])
def test_fast_max_pools_is_opt_in_and_changes_no_number(pool_padding: str) -> None:
    torch.manual_seed(0)
    plain = xl.xception_cifar(width_multiplier=0.125, middle_blocks=1, pool_padding=pool_padding)
    pools = [m for m in plain.modules() if isinstance(m, (nn.MaxPool2d, xl.MaxPool2dSame))]
    assert pools and not any(isinstance(m, xl.pooling.MaxPool2d) or getattr(m, "fast", False) for m in pools)
    fast = xl.pooling.fast_max_pools(copy.deepcopy(plain))
    switched = [m for m in fast.modules() if isinstance(m, (nn.MaxPool2d, xl.MaxPool2dSame))]
    assert all(isinstance(m, xl.pooling.MaxPool2d) or getattr(m, "fast", False) for m in switched)
    x = torch.randn(2, 3, 30, 30)
    outputs = []
    for model in (plain, fast):
        model.zero_grad()
        y = model(x)
        y.square().sum().backward()
        outputs.append((y, plain.stem.conv1.weight.grad if model is plain else fast.stem.conv1.weight.grad))
    assert torch.equal(outputs[0][0], outputs[1][0]) and torch.equal(outputs[0][1], outputs[1][1])
