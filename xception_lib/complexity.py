"""Parameter and MAC counts: closed-form formulas and the ecosystem's counters.

Vocabulary: a **MAC** is one multiply-accumulate, and everything here counts MACs. "FLOPs" is ambiguous: some
sources mean 2 x MACs, many (torchvision's "GFLOPS", fvcore, the 3.8 G of ResNet-50's paper) mean MACs. fvcore's
``FlopCountAnalysis``, despite its name, counts one fused multiply-add of a convolution or linear layer as one.

The formulas, for a ``k x k`` convolution from ``C_in`` to ``C_out`` channels producing
an ``H x W`` output, without bias:

=============  ==========================  ==================================
layer          parameters                  MACs
=============  ==========================  ==================================
regular        k^2 C_in C_out              k^2 C_in C_out H W
grouped (g)    k^2 C_in C_out / g          k^2 C_in C_out H W / g
depthwise      k^2 C_in                    k^2 C_in H W
pointwise      C_in C_out                  C_in C_out H W
separable      k^2 C_in + C_in C_out       (k^2 C_in + C_in C_out) H W
=============  ==========================  ==================================
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import torch
from torch import nn

from xception_lib.runtime import eval_mode

# ------------------------------------------------------------------ closed forms


def conv_params(c_in: int, c_out: int, k: int, groups: int = 1, bias: bool = False) -> int:
    """Parameters of a ``k x k`` convolution with ``groups`` groups."""
    if groups < 1 or c_in % groups or c_out % groups:
        raise ValueError(f"groups={groups} must divide c_in={c_in} and c_out={c_out}")
    return k * k * (c_in // groups) * c_out + (c_out if bias else 0)


def conv_macs(c_in: int, c_out: int, k: int, h_out: int, w_out: int, groups: int = 1) -> int:
    """MACs of a ``k x k`` convolution producing an ``h_out x w_out`` map: every weight once per output pixel
    (bias adds are not MACs)."""
    return conv_params(c_in, c_out, k, groups) * h_out * w_out


def depthwise_params(c: int, k: int) -> int:
    """Parameters of a ``k x k`` depthwise convolution over ``c`` channels."""
    return k * k * c


def depthwise_macs(c: int, k: int, h_out: int, w_out: int) -> int:
    """MACs of a ``k x k`` depthwise convolution."""
    return depthwise_params(c, k) * h_out * w_out


def pointwise_params(c_in: int, c_out: int) -> int:
    """Parameters of a 1x1 convolution."""
    return c_in * c_out


def pointwise_macs(c_in: int, c_out: int, h: int, w: int) -> int:
    """MACs of a 1x1 convolution."""
    return pointwise_params(c_in, c_out) * h * w


def separable_params(c_in: int, c_out: int, k: int) -> int:
    """Parameters of a depthwise separable convolution (depthwise + pointwise)."""
    return depthwise_params(c_in, k) + pointwise_params(c_in, c_out)


def separable_macs(c_in: int, c_out: int, k: int, h_out: int, w_out: int) -> int:
    """MACs of a depthwise separable convolution (depthwise + pointwise)."""
    return separable_params(c_in, c_out, k) * h_out * w_out


def separable_savings(c_in: int, c_out: int, k: int) -> float:
    """How many times fewer MACs (and parameters) separable needs than regular: ``1 / (1/C_out + 1/k^2)``."""
    return conv_params(c_in, c_out, k) / separable_params(c_in, c_out, k)


# ------------------------------------------------------------------ counters


def _example(model: nn.Module, input_size: Sequence[int]) -> torch.Tensor:
    if len(input_size) != 4:
        raise ValueError(f"expected input_size (N, C, H, W), got {tuple(input_size)}")
    return torch.zeros(*input_size, device=next(model.parameters(), torch.empty(0)).device)  # the model's device


def output_shapes(
    model: nn.Module, input_size: Sequence[int], types: tuple[type[nn.Module], ...] = (nn.Conv2d,)
) -> dict[str, list[tuple[int, ...]]]:
    """The output shape of every module of the given ``types``, from one forward pass in eval mode.

    Forward hooks record shapes only and are removed afterwards; a module called twice
    (shared weights) has two shapes. On a ``meta``-device model this costs no arithmetic.
    """
    shapes: dict[str, list[tuple[int, ...]]] = {}

    def recorder(name: str) -> Callable[[nn.Module, object, torch.Tensor], None]:
        return lambda _m, _inp, out: shapes.setdefault(name, []).append(tuple(out.shape))

    handles = [m.register_forward_hook(recorder(n)) for n, m in model.named_modules() if isinstance(m, types)]
    try:
        with eval_mode(model), torch.no_grad():
            model(_example(model, input_size))
    finally:
        for h in handles:
            h.remove()
    return shapes


def torchinfo_params(model: nn.Module, input_size: Sequence[int] = (1, 3, 299, 299)) -> int:
    """Parameters as torchinfo counts them: those of the layers a forward pass of ``input_size``
    reaches (a layer that runs twice counts once), an independent check of the formulas."""
    from torchinfo import summary

    return int(summary(model, input_size=tuple(input_size), verbose=0).total_params)


def count_macs(model: nn.Module, input_size: Sequence[int] = (1, 3, 299, 299)) -> int:
    """MACs of one forward pass as fvcore counts them (convolutions, linear layers, and
    fvcore's small per-element counts for batch norm and pooling), in eval mode."""
    return int(fvcore_analysis(model, input_size).total())


def fvcore_analysis(model: nn.Module, input_size: Sequence[int]):  # -> fvcore FlopCountAnalysis
    """An fvcore ``FlopCountAnalysis`` of ``model`` (eval mode), with its warnings silenced.

    fvcore traces the model with ``torch.jit``, whose deprecation warnings (and fvcore's
    notes on ops it does not count, such as ReLU) say nothing about the counts.
    """
    with eval_mode(model), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fvcore.nn import FlopCountAnalysis

        analysis = FlopCountAnalysis(model, _example(model, input_size))
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
        analysis.total()  # run the trace now, while in eval mode
    return analysis
