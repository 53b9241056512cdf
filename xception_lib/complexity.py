"""Parameter and MAC counts: closed-form formulas and the ecosystem's counters.

Vocabulary: a **MAC** is one multiply-accumulate; a FLOP count is 2 x MACs. Everything
here counts MACs. The counters come from torchinfo (``total_params``,
``total_mult_adds``) and fvcore (``FlopCountAnalysis``, which despite its name counts
one fused multiply-add as one, i.e. MACs, for convolutions and linear layers).

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
from dataclasses import dataclass

import torch
from torch import nn

# ------------------------------------------------------------------ closed forms


def conv_params(c_in: int, c_out: int, k: int, groups: int = 1, bias: bool = False) -> int:
    """Parameters of a ``k x k`` convolution with ``groups`` groups."""
    _check_groups(c_in, c_out, groups)
    return k * k * (c_in // groups) * c_out + (c_out if bias else 0)


def conv_macs(c_in: int, c_out: int, k: int, h_out: int, w_out: int, groups: int = 1) -> int:
    """MACs of a ``k x k`` convolution producing an ``h_out x w_out`` map (bias adds are not MACs)."""
    _check_groups(c_in, c_out, groups)
    return k * k * (c_in // groups) * c_out * h_out * w_out


def depthwise_params(c: int, k: int) -> int:
    """Parameters of a ``k x k`` depthwise convolution over ``c`` channels."""
    return k * k * c


def depthwise_macs(c: int, k: int, h_out: int, w_out: int) -> int:
    """MACs of a ``k x k`` depthwise convolution."""
    return k * k * c * h_out * w_out


def pointwise_params(c_in: int, c_out: int) -> int:
    """Parameters of a 1x1 convolution."""
    return c_in * c_out


def pointwise_macs(c_in: int, c_out: int, h: int, w: int) -> int:
    """MACs of a 1x1 convolution."""
    return c_in * c_out * h * w


def separable_params(c_in: int, c_out: int, k: int) -> int:
    """Parameters of a depthwise separable convolution (depthwise + pointwise)."""
    return depthwise_params(c_in, k) + pointwise_params(c_in, c_out)


def separable_macs(c_in: int, c_out: int, k: int, h_out: int, w_out: int) -> int:
    """MACs of a depthwise separable convolution (depthwise + pointwise)."""
    return depthwise_macs(c_in, k, h_out, w_out) + pointwise_macs(c_in, c_out, h_out, w_out)


def separable_savings(c_in: int, c_out: int, k: int) -> float:
    """How many times fewer MACs (and parameters) separable needs than regular: ``1 / (1/C_out + 1/k^2)``."""
    return conv_params(c_in, c_out, k) / separable_params(c_in, c_out, k)


def _check_groups(c_in: int, c_out: int, groups: int) -> None:
    if groups < 1 or c_in % groups or c_out % groups:
        raise ValueError(f"groups={groups} must divide c_in={c_in} and c_out={c_out}")


def conv_module_macs(conv: nn.Conv2d, h_out: int, w_out: int) -> int:
    """The closed-form MACs of an ``nn.Conv2d`` (square kernels) at a given output size."""
    kh, kw = conv.kernel_size
    return kh * kw * (conv.in_channels // conv.groups) * conv.out_channels * h_out * w_out


# ------------------------------------------------------------------ counters


def _example(model: nn.Module, input_size: Sequence[int]) -> torch.Tensor:
    if len(input_size) != 4:
        raise ValueError(f"expected input_size (N, C, H, W), got {tuple(input_size)}")
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    return torch.zeros(*input_size, device=device)


def count_params(model: nn.Module, input_size: Sequence[int] = (1, 3, 299, 299)) -> int:
    """Total parameters as torchinfo reports them."""
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
    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from fvcore.nn import FlopCountAnalysis

            analysis = FlopCountAnalysis(model, _example(model, input_size))
            analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
            analysis.total()  # run the trace now, while in eval mode
    finally:
        model.train(was_training)
    return analysis


def torchinfo_summary(model: nn.Module, input_size: Sequence[int] = (1, 3, 299, 299), depth: int = 3):  # -> ModelStatistics
    """torchinfo's summary (shapes, parameters, mult-adds per layer)."""
    from torchinfo import summary

    return summary(
        model,
        input_size=tuple(input_size),
        depth=depth,
        col_names=("output_size", "num_params", "mult_adds"),
        row_settings=("var_names",),
        verbose=0,
    )


@dataclass(frozen=True)
class ConvCheck:
    """One convolution: its closed-form counts beside the counters'."""

    name: str
    kind: str  # "regular", "depthwise", "pointwise" or "grouped"
    formula_params: int
    counted_params: int
    formula_macs: int
    fvcore_macs: int

    @property
    def agrees(self) -> bool:
        return self.formula_params == self.counted_params and self.formula_macs == self.fvcore_macs


def conv_kind(conv: nn.Conv2d) -> str:
    """``"pointwise"``, ``"depthwise"``, ``"grouped"`` or ``"regular"``."""
    if conv.kernel_size == (1, 1) and conv.groups == 1:
        return "pointwise"
    if conv.groups == conv.in_channels == conv.out_channels and conv.groups > 1:
        return "depthwise"
    return "grouped" if conv.groups > 1 else "regular"


def check_convs(model: nn.Module, input_size: Sequence[int]) -> list[ConvCheck]:
    """Compare formula and counter for every ``nn.Conv2d`` of ``model``, layer by layer.

    Output sizes come from a forward pass (hooks that record shapes only and are removed
    afterwards); parameters from the module's own tensors; MACs from fvcore.
    """
    convs = {name: m for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    shapes: dict[str, tuple[int, ...]] = {}

    def recorder(name: str) -> Callable[[nn.Module, object, torch.Tensor], None]:
        def hook(_m: nn.Module, _inp: object, out: torch.Tensor) -> None:
            shapes[name] = tuple(out.shape)

        return hook

    handles = [m.register_forward_hook(recorder(n)) for n, m in convs.items()]
    try:
        was_training = model.training
        model.eval()
        with torch.no_grad():
            model(_example(model, input_size))
        model.train(was_training)
    finally:
        for h in handles:
            h.remove()
    by_module = fvcore_analysis(model, input_size).by_module()
    batch = input_size[0]
    rows = []
    for name, conv in convs.items():
        if name not in shapes:
            continue
        _, c_out, h, w = shapes[name]
        k = conv.kernel_size[0]
        rows.append(
            ConvCheck(
                name=name,
                kind=conv_kind(conv),
                formula_params=conv_params(conv.in_channels, c_out, k, conv.groups, conv.bias is not None),
                counted_params=sum(p.numel() for p in conv.parameters()),
                formula_macs=batch * conv_macs(conv.in_channels, c_out, k, h, w, conv.groups),
                fvcore_macs=int(by_module[name]),
            )
        )
    return rows


# ------------------------------------------------------------------ model comparison


@dataclass(frozen=True)
class ModelComplexity:
    """One row of the book's comparison table."""

    name: str
    input_size: int
    params: int
    macs: int


def reference_models() -> dict[str, tuple[Callable[[], nn.Module], int]]:
    """The models the book compares, each with its native input size (random weights)."""
    from torchvision import models

    from xception_lib.model import xception, xception_cifar

    return {
        "Xception": (xception, 299),
        "Inception V3": (lambda: models.inception_v3(weights=None, aux_logits=False, init_weights=False), 299),
        "ResNet-50": (lambda: models.resnet50(weights=None), 224),
        "MobileNetV2": (lambda: models.mobilenet_v2(weights=None), 224),
        "Xception-CIFAR (10 classes)": (xception_cifar, 32),
    }


def comparison_table(names: Sequence[str] | None = None) -> list[ModelComplexity]:
    """Parameters (torchinfo) and MACs (fvcore) of the reference models at their native sizes.

    Args:
        names: A subset of :func:`reference_models`' keys; default all.
    """
    available = reference_models()
    chosen = list(available) if names is None else list(names)
    unknown = [n for n in chosen if n not in available]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; expected some of {list(available)}")
    rows = []
    for name in chosen:
        build, size = available[name]
        model = build()
        shape = (1, 3, size, size)
        rows.append(ModelComplexity(name, size, count_params(model, shape), count_macs(model, shape)))
    return rows
