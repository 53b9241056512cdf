"""Benchmarks: measured speed beside MAC counts, for whole models and single layers.

Run ``python -m xception_lib.chapters.bench`` (``--help`` for options; ``--quick`` for a short run).
It measures, on one device:

* **models**: forward (inference) and forward+backward (training step) throughput in
  images per second of ``xl.xception()``, the same network with timm's conventions
  (:meth:`XceptionConfig.timm_port`), timm's ``legacy_xception`` (same architecture and
  MACs, so the ratio to it isolates implementation quality), and torchvision's
  Inception V3, ResNet-50 and MobileNetV2 at their native input sizes;
* **layers**: a regular 3x3, a depthwise 3x3 and a pointwise 1x1 convolution at
  Xception's widths and resolutions, with MACs, bytes moved, arithmetic intensity (MACs
  per byte) and achieved GMAC/s, the ingredients of a roofline plot;
* **roofline**: the device's attainable compute (a large matrix product) and memory
  bandwidth (a large copy);
* **variants**: channels_last, bf16/fp16 autocast and ``torch.compile`` where the device
  supports them; the others are listed under ``skipped`` with the reason.

Timing. Each case is warmed up, then run ``rounds`` times; the cases are *interleaved*
(A, B, C, A, B, C, ...), so that a slow spell on a shared machine hits every case alike,
and the statistics (median, interquartile range) are those of
:class:`torch.utils.benchmark.Measurement`. Results are a JSON-ready ``dict`` holding
:func:`xception_lib.provenance.environment` (device, torch version, commit, date);
:func:`validate_results` checks one.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    import torch.utils.benchmark

SCHEMA = "xception_lib.bench/1"
MODES = ("forward", "train")
VARIANTS = ("fp32", "channels_last", "bf16", "fp16", "compile")
LAYER_KINDS = ("regular", "depthwise", "pointwise")
# Xception's widths at its three main resolutions (299 px input): entry block 2's input,
# entry block 3's input and the middle flow.
LAYER_SHAPES = ((128, 74), (256, 37), (728, 19))

# ------------------------------------------------------------------ timing


def synchronize(device: torch.device | str) -> None:
    """Wait for the device's queued work (a no-op on the CPU, whose calls are synchronous)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def time_interleaved(
    cases: Mapping[str, Callable[[], object]],
    *,
    rounds: int = 5,
    warmup: int = 1,
    device: torch.device | str = "cpu",
) -> dict[str, torch.utils.benchmark.Measurement]:
    """Time several callables in interleaved rounds (A, B, A, B, ...).

    ``torch.utils.benchmark.Timer`` times one statement at a time; on a machine shared
    with other work, a slow minute then lands on one case only and biases a ratio.
    Interleaving spreads it over all cases, and the per-round times let a ratio be
    computed round by round (:func:`paired_ratio`).

    Args:
        cases: Name -> a callable running one step (one forward pass, one training step).
        rounds: Timed runs per case.
        warmup: Untimed runs per case first (allocator, oneDNN/cuDNN kernel selection).
        device: Where the cases run; it is synchronised around each timed run.

    Returns:
        Name -> a :class:`torch.utils.benchmark.Measurement` of ``rounds`` runs
        (``.median``, ``.iqr``, ``.raw_times`` in seconds).
    """
    if rounds < 1 or warmup < 0:
        raise ValueError(f"expected rounds >= 1 and warmup >= 0, got rounds={rounds}, warmup={warmup}")
    for _ in range(warmup):
        for fn in cases.values():
            fn()
    synchronize(device)
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    measurement, task_spec = _benchmark_classes()
    threads = torch.get_num_threads()
    return {
        name: measurement(1, ts, task_spec(stmt=name, setup="", label=name, num_threads=threads))
        for name, ts in times.items()
    }


def _benchmark_classes() -> tuple[type, type]:
    """``torch.utils.benchmark``'s ``Measurement`` and ``TaskSpec``, imported quietly.

    Importing ``torch.utils.benchmark`` imports ``torch.utils.cpp_extension``, which logs a
    warning on a CUDA build of PyTorch without a CUDA toolkit; it does not concern us.
    """
    import logging

    logger = logging.getLogger("torch.utils.cpp_extension")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        from torch.utils.benchmark import Measurement
        from torch.utils.benchmark.utils.common import TaskSpec
    finally:
        logger.setLevel(level)
    return Measurement, TaskSpec


def paired_ratio(times_a: Sequence[float], times_b: Sequence[float]) -> tuple[float, float, float]:
    """How many times faster A is than B, round by round: median, 25th and 75th percentile.

    With interleaved rounds, ``times_b[i] / times_a[i]`` compares two runs made moments
    apart, which cancels most of a shared machine's drift.
    """
    if len(times_a) != len(times_b) or not times_a:
        raise ValueError(f"expected two equally long, non-empty lists, got {len(times_a)} and {len(times_b)}")
    ratios = sorted(b / a for a, b in zip(times_a, times_b))
    if len(ratios) == 1:
        return ratios[0], ratios[0], ratios[0]
    q1, _, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
    return statistics.median(ratios), q1, q3


def _timing_row(m: torch.utils.benchmark.Measurement) -> dict[str, Any]:
    return {"median_s": m.median, "iqr_s": m.iqr, "runs": len(m.raw_times), "times_s": list(m.raw_times)}


# ------------------------------------------------------------------ variants


@dataclass(frozen=True)
class Variant:
    """How a case runs: memory format, autocast dtype, compiled or not."""

    name: str
    channels_last: bool = False
    autocast: torch.dtype | None = None
    compile: bool = False


_VARIANTS = {
    "fp32": Variant("fp32"),
    "channels_last": Variant("channels_last", channels_last=True),
    "bf16": Variant("bf16", autocast=torch.bfloat16),
    "fp16": Variant("fp16", autocast=torch.float16),
    "compile": Variant("compile", compile=True),
}


def variant_support(name: str, device: torch.device | str, *, compile: bool = False) -> str | None:
    """``None`` if ``device`` runs variant ``name``, else the reason it is skipped."""
    if name not in _VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {name!r}")
    device = torch.device(device)
    if name in ("bf16", "fp16"):
        if device.type == "cpu":
            check = getattr(torch.ops.mkldnn, f"_is_mkldnn_{name}_supported", None)
            if check is None or not check():
                return f"no native {name} in oneDNN on this CPU (it would be emulated, slowly)"
        elif device.type == "cuda" and name == "bf16" and not torch.cuda.is_bf16_supported():
            return "this GPU does not support bf16"
    if name == "compile" and not compile:
        return "not requested (pass --compile; compiling takes minutes)"
    return None


def _autocast(variant: Variant, device: torch.device):  # -> context manager
    if variant.autocast is None:
        return nullcontext()
    return torch.autocast(device.type, dtype=variant.autocast)


def _prepare(module: nn.Module, x: torch.Tensor, variant: Variant) -> tuple[nn.Module, torch.Tensor]:
    if variant.channels_last:
        module = copy.deepcopy(module).to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    if variant.compile:
        module = torch.compile(module)  # type: ignore[assignment]
    return module, x


@contextmanager
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# ------------------------------------------------------------------ models

MODEL_LABELS = {  # the torchvision models are torchvision's
    "xception": "Xception (xl)",
    "xception_timm_port": "Xception (xl, timm_port)",
    "timm_legacy_xception": "Xception (timm legacy)",
    "inception_v3": "Inception V3",
    "resnet50": "ResNet-50",
    "mobilenet_v2": "MobileNetV2",
}
MODEL_NAMES = tuple(MODEL_LABELS)


def build_model(name: str) -> tuple[nn.Module, int]:
    """A freshly initialised benchmark model and its native input size.

    Args:
        name: One of ``MODEL_NAMES``.
    """
    from xception_lib.config import XceptionConfig
    from xception_lib.model import Xception, xception

    if name == "xception":
        return xception(), 299
    if name == "xception_timm_port":
        return Xception(XceptionConfig.timm_port()), 299
    if name == "timm_legacy_xception":
        with _quiet():  # importing timm warns in notebooks (tqdm), and so does its deprecated-name mapping
            import timm

            return timm.create_model("legacy_xception"), 299
    from torchvision import models

    if name == "inception_v3":
        return models.inception_v3(weights=None, aux_logits=False, init_weights=False), 299
    if name == "resnet50":
        return models.resnet50(weights=None), 224
    if name == "mobilenet_v2":
        return models.mobilenet_v2(weights=None), 224
    raise ValueError(f"model must be one of {MODEL_NAMES}, got {name!r}")


def _forward_step(model: nn.Module, x: torch.Tensor, variant: Variant, device: torch.device) -> Callable[[], object]:
    def step() -> object:
        with torch.inference_mode(), _autocast(variant, device):
            return model(x)

    return step


def _train_step(model: nn.Module, x: torch.Tensor, variant: Variant, device: torch.device) -> Callable[[], object]:
    target = torch.zeros(x.shape[0], dtype=torch.long, device=device)

    def step() -> object:
        model.zero_grad(set_to_none=True)
        with _autocast(variant, device):
            loss = F.cross_entropy(model(x), target)
        loss.backward()
        return loss

    return step


def model_benchmarks(
    names: Sequence[str] = MODEL_NAMES,
    *,
    device: torch.device | str = "cpu",
    batch_size: int = 2,
    modes: Sequence[str] = MODES,
    variants: Sequence[str] = ("fp32",),
    variant_models: Sequence[str] | None = None,
    rounds: int = 5,
    warmup: int = 1,
    compile: bool = False,
    count_macs: bool = True,
    skipped: list[dict[str, str]] | None = None,
) -> list[dict[str, Any]]:
    """Throughput of whole models; all (model, variant) cases of one mode are interleaved.

    Args:
        names: Models from ``MODEL_NAMES``.
        device: Where to run.
        batch_size: Images per step.
        modes: ``"forward"`` (eval mode, inference) and/or ``"train"`` (train mode, one
            forward + cross-entropy + backward, no optimiser step).
        variants: From ``VARIANTS``; unsupported ones are skipped.
        variant_models: The models that run the variants other than ``"fp32"``
            (default: all of ``names``).
        rounds: Timed runs per case.
        warmup: Untimed runs per case first (more are needed with ``compile``).
        compile: Allow the ``"compile"`` variant.
        count_macs: Count each model's MACs per image with fvcore (forward pass, eval mode).
        skipped: A list to append ``{"what", "reason"}`` to for every variant skipped.

    Returns:
        A list with one dict per (model, mode, variant), with keys ``model``, ``label``,
        ``mode``, ``variant``, ``batch_size``, ``input_size``, ``macs_per_image``,
        ``median_s``, ``iqr_s``, ``runs``, ``times_s`` and ``images_per_s`` (batch size
        divided by the median time).
    """
    device = torch.device(device)
    _check_choices(names, MODEL_NAMES, "model")
    if variant_models is not None and not set(variant_models) <= set(names):
        raise ValueError(f"variant_models must be some of names={list(names)}, got {list(variant_models)}")
    _check_choices(modes, MODES, "mode")
    _check_choices(variants, VARIANTS, "variant")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    built = {}
    for name in names:
        model, size = build_model(name)
        macs = None
        if count_macs:
            from xception_lib.complexity import count_macs as fvcore_macs

            with _quiet():
                macs = fvcore_macs(model, (1, 3, size, size))
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(batch_size, 3, size, size, generator=gen).to(device)
        built[name] = (model.to(device), x, size, macs)

    variant_models = list(names if variant_models is None else variant_models)
    supported = []
    for variant_name in variants:
        reason = variant_support(variant_name, device, compile=compile)
        if reason is None:
            supported.append(variant_name)
        elif skipped is not None:
            skipped.append({"what": f"models/{variant_name}", "reason": reason})
    rows = []
    for mode in modes:
        cases, meta = {}, {}
        for name, (model, x, size, macs) in built.items():
            model.train(mode == "train")
            for variant_name in supported:
                if variant_name != "fp32" and name not in variant_models:
                    continue
                variant = _VARIANTS[variant_name]
                m, xv = _prepare(model, x, variant)
                make = _train_step if mode == "train" else _forward_step
                cases[f"{name}/{variant_name}"] = make(m, xv, variant, device)
                meta[f"{name}/{variant_name}"] = (name, variant_name, size, macs)
        with _quiet():
            measured = time_interleaved(cases, rounds=rounds, warmup=warmup, device=device)
        for key, meas in measured.items():
            name, variant_name, size, macs = meta[key]
            rows.append(
                {
                    "model": name,
                    "label": MODEL_LABELS[name],
                    "mode": mode,
                    "variant": variant_name,
                    "batch_size": batch_size,
                    "input_size": size,
                    "macs_per_image": macs,
                    **_timing_row(meas),
                    "images_per_s": batch_size / meas.median,
                }
            )
    return rows


# ------------------------------------------------------------------ layers


@dataclass(frozen=True)
class LayerCase:
    """One convolution of Xception's: kind, width and resolution (stride 1, "same" padding)."""

    kind: str
    channels: int
    size: int

    def module(self) -> nn.Conv2d:
        c = self.channels
        if self.kind == "regular":
            return nn.Conv2d(c, c, 3, padding=1, bias=False)
        if self.kind == "depthwise":
            return nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False)
        if self.kind == "pointwise":
            return nn.Conv2d(c, c, 1, bias=False)
        raise ValueError(f"kind must be one of {LAYER_KINDS}, got {self.kind!r}")

    def macs(self, batch_size: int = 1) -> int:
        """MACs of one forward pass, from :mod:`xception_lib.complexity`'s formulas."""
        from xception_lib import complexity

        c, s = self.channels, self.size
        if self.kind == "regular":
            per_image = complexity.conv_macs(c, c, 3, s, s)
        elif self.kind == "depthwise":
            per_image = complexity.depthwise_macs(c, 3, s, s)
        else:
            per_image = complexity.pointwise_macs(c, c, s, s)
        return batch_size * per_image

    def bytes_moved(self, batch_size: int = 1, bytes_per_element: int = 4) -> int:
        """The least traffic to memory: read input and weights once, write the output once."""
        c = self.channels
        activations = batch_size * c * self.size * self.size
        weights = {"regular": 9 * c * c, "depthwise": 9 * c, "pointwise": c * c}[self.kind]
        return bytes_per_element * (2 * activations + weights)

    def intensity(self, batch_size: int = 1, bytes_per_element: int = 4) -> float:
        """Arithmetic intensity: MACs per byte moved."""
        return self.macs(batch_size) / self.bytes_moved(batch_size, bytes_per_element)


def layer_cases(
    shapes: Sequence[tuple[int, int]] = LAYER_SHAPES, kinds: Sequence[str] = LAYER_KINDS
) -> list[LayerCase]:
    """Every kind at every ``(channels, size)``."""
    _check_choices(kinds, LAYER_KINDS, "layer kind")
    return [LayerCase(kind, c, s) for c, s in shapes for kind in kinds]


def layer_benchmarks(
    cases: Sequence[LayerCase] | None = None,
    *,
    device: torch.device | str = "cpu",
    batch_size: int = 2,
    variants: Sequence[str] = ("fp32",),
    rounds: int = 5,
    warmup: int = 1,
    compile: bool = False,
    skipped: list[dict[str, str]] | None = None,
) -> list[dict[str, Any]]:
    """Forward time of single convolutions (inference mode), all cases of a variant interleaved.

    Returns:
        A list with one dict per (case, variant), with keys ``kind``, ``channels``, ``size``,
        ``variant``, ``batch_size``, ``macs``, ``bytes_fp32``, ``intensity`` (MACs per fp32
        byte), the timing fields and ``gmacs_per_s`` (achieved, from the median).
    """
    device = torch.device(device)
    cases = layer_cases() if cases is None else list(cases)
    _check_choices(variants, VARIANTS, "variant")
    gen = torch.Generator().manual_seed(0)
    built = {}
    for case in cases:
        conv = case.module().to(device).eval()
        x = torch.randn(batch_size, case.channels, case.size, case.size, generator=gen).to(device)
        built[f"{case.kind} {case.channels}x{case.size}x{case.size}"] = (case, conv, x)
    rows = []
    for variant_name in variants:
        reason = variant_support(variant_name, device, compile=compile)
        if reason is not None:
            if skipped is not None:
                skipped.append({"what": f"layers/{variant_name}", "reason": reason})
            continue
        variant = _VARIANTS[variant_name]
        steps = {}
        for key, (_, conv, x) in built.items():
            m, xv = _prepare(conv, x, variant)
            steps[key] = _forward_step(m, xv, variant, device)
        with _quiet():
            measured = time_interleaved(steps, rounds=rounds, warmup=warmup, device=device)
        for key, meas in measured.items():
            case = built[key][0]
            macs = case.macs(batch_size)
            rows.append(
                {
                    "kind": case.kind,
                    "channels": case.channels,
                    "size": case.size,
                    "variant": variant_name,
                    "batch_size": batch_size,
                    "macs": macs,
                    "bytes_fp32": case.bytes_moved(batch_size),
                    "intensity": case.intensity(batch_size),
                    **_timing_row(meas),
                    "gmacs_per_s": macs / meas.median / 1e9,
                }
            )
    return rows


# ------------------------------------------------------------------ roofline


def roofline(
    *, device: torch.device | str = "cpu", matrix_size: int = 2048, copy_mib: int = 128, rounds: int = 5
) -> dict[str, Any]:
    """The two roofs: attainable compute (a large fp32 matrix product) and memory bandwidth (a copy).

    A kernel with arithmetic intensity ``I`` (MACs per byte) cannot exceed
    ``min(peak_gmacs_per_s, I * bandwidth_gb_per_s)`` GMAC/s.

    Returns:
        ``peak_gmacs_per_s``, ``bandwidth_gb_per_s``, ``ridge_intensity`` (the intensity
        where the roofs meet) and how each was measured.
    """
    device = torch.device(device)
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(matrix_size, matrix_size, generator=gen).to(device)
    b = torch.randn(matrix_size, matrix_size, generator=gen).to(device)
    n = copy_mib * 2**20 // 4
    src, dst = torch.randn(n, generator=gen).to(device), torch.empty(n, device=device)
    measured = time_interleaved(
        {"matmul": lambda: torch.mm(a, b), "copy": lambda: dst.copy_(src)}, rounds=rounds, warmup=1, device=device
    )
    peak = matrix_size**3 / measured["matmul"].median / 1e9
    bandwidth = 2 * src.numel() * 4 / measured["copy"].median / 1e9  # read + write
    return {
        "peak_gmacs_per_s": peak,
        "bandwidth_gb_per_s": bandwidth,
        "ridge_intensity": peak / bandwidth,
        "compute_from": f"fp32 matmul {matrix_size}x{matrix_size}x{matrix_size}, median of {rounds}",
        "bandwidth_from": f"copy of {copy_mib} MiB (read + write), median of {rounds}",
    }


# ------------------------------------------------------------------ the whole suite


def run(
    *,
    device: torch.device | str = "cpu",
    quick: bool = False,
    models: Sequence[str] | None = None,
    batch_size: int | None = None,
    rounds: int | None = None,
    compile: bool | None = None,
    variant_models: Sequence[str] | None = None,
    layers: bool = True,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the benchmark suite and return the JSON-ready results.

    Args:
        device: Where to run.
        quick: Fewer rounds, batch size 1 on CPU, variants on Xception only.
        models: Models for the fp32 comparison (default all of ``MODEL_NAMES``).
        batch_size: Images per step (default 2 on CPU, 1 with ``quick``; 32 on GPU).
        rounds: Timed runs per case (default 5, 3 with ``quick``).
        compile: Try ``torch.compile`` (default: on GPU only).
        variant_models: Models also run with the other variants (default: Xception,
            ResNet-50 and MobileNetV2; Xception only with ``quick``).
        layers: Run the layer micro-benchmarks and the roofline measurement.
        progress: Called with a line of text before each part.
    """
    device = torch.device(device)
    on_cpu = device.type == "cpu"
    if batch_size is None:
        batch_size = (1 if quick else 2) if on_cpu else 32
    if rounds is None:
        rounds = 3 if quick else 5
    if compile is None:
        compile = not on_cpu
    models = list(MODEL_NAMES if models is None else models)
    if variant_models is None:
        variant_models = ["xception"] if quick else ["xception", "resnet50", "mobilenet_v2"]
    say = progress or (lambda _line: None)
    skipped: list[dict[str, str]] = []
    warmup = 2 if compile else 1

    say(f"models {', '.join(models)}; variants on {', '.join(variant_models) or 'none'}; batch {batch_size}")
    rows = model_benchmarks(
        models + [m for m in variant_models if m not in models],
        device=device,
        batch_size=batch_size,
        variants=VARIANTS,
        variant_models=variant_models,
        rounds=rounds,
        warmup=warmup,
        compile=compile,
        skipped=skipped,
    )
    layer_rows: list[dict[str, Any]] = []
    roof = None
    if layers:
        say("layers and roofline")
        layer_rows = layer_benchmarks(
            device=device, batch_size=batch_size, variants=VARIANTS, rounds=rounds,
            warmup=warmup, compile=compile, skipped=skipped,
        )
        matrix_size = (1024 if quick else 2048) if on_cpu else 8192
        roof = roofline(device=device, matrix_size=matrix_size, copy_mib=64 if on_cpu else 1024, rounds=rounds)
        best = max((r for r in layer_rows if r["variant"] == "fp32"), key=lambda r: r["gmacs_per_s"])
        if best["gmacs_per_s"] > roof["peak_gmacs_per_s"]:  # a roof must not sit below a measured point
            roof["peak_gmacs_per_s"] = best["gmacs_per_s"]
            roof["ridge_intensity"] = best["gmacs_per_s"] / roof["bandwidth_gb_per_s"]
            roof["compute_from"] = (
                f"{best['kind']} convolution {best['channels']}@{best['size']}, which beat the matmul"
            )
    from xception_lib.provenance import environment

    return {
        "schema": SCHEMA,
        "environment": environment(device),
        "settings": {
            "device": str(device),
            "quick": quick,
            "batch_size": batch_size,
            "rounds": rounds,
            "threads": torch.get_num_threads(),
            "compile": compile,
        },
        "models": rows,
        "layers": layer_rows,
        "roofline": roof,
        "skipped": _unique(skipped),
    }


def _unique(items: list[dict[str, str]]) -> list[dict[str, str]]:
    seen, out = set(), []
    for item in items:
        key = tuple(sorted(item.items()))
        if key not in seen:
            seen.add(key)
            out.append(item)
    return out


def _check_choices(given: Sequence[str], allowed: Sequence[str], what: str) -> None:
    bad = [g for g in given if g not in allowed]
    if bad:
        raise ValueError(f"unknown {what}(s) {bad}; expected some of {list(allowed)}")


# ------------------------------------------------------------------ reading results


def find(rows: Sequence[Mapping[str, Any]], **match: Any) -> dict[str, Any]:
    """The one row whose fields equal ``match`` (``ValueError`` if none or several)."""
    hits = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
    if len(hits) != 1:
        raise ValueError(f"expected exactly one row with {match}, found {len(hits)}")
    return dict(hits[0])


def speed_ratio(
    results: Mapping[str, Any], model: str = "xception", baseline: str = "timm_legacy_xception",
    *, mode: str = "train", variant: str = "fp32",
) -> dict[str, float]:
    """Throughput of ``model`` divided by ``baseline``'s (> 1: ``model`` is faster).

    Returns:
        ``ratio`` (of the median times), and ``paired_median``, ``paired_q1``,
        ``paired_q3`` (round-by-round ratios of the interleaved runs).
    """
    a = find(results["models"], model=model, mode=mode, variant=variant)
    b = find(results["models"], model=baseline, mode=mode, variant=variant)
    med, q1, q3 = paired_ratio(a["times_s"], b["times_s"])
    return {"ratio": b["median_s"] / a["median_s"], "paired_median": med, "paired_q1": q1, "paired_q3": q3}


# ------------------------------------------------------------------ schema


_ENV_KEYS = ("device", "device_name", "torch", "commit", "date")
_SETTINGS_KEYS = ("device", "quick", "batch_size", "rounds", "threads")
_MODEL_KEYS = {
    "model": str, "label": str, "mode": str, "variant": str, "batch_size": int, "input_size": int,
    "median_s": float, "iqr_s": float, "runs": int, "times_s": list, "images_per_s": float,
}
_LAYER_KEYS = {
    "kind": str, "channels": int, "size": int, "variant": str, "batch_size": int, "macs": int,
    "bytes_fp32": int, "intensity": float, "median_s": float, "iqr_s": float, "runs": int,
    "times_s": list, "gmacs_per_s": float,
}


def validate_results(results: Any) -> None:
    """Check that ``results`` has the shape :func:`run` produces; raise ``ValueError`` listing every problem."""
    problems: list[str] = []
    if not isinstance(results, Mapping):
        raise ValueError(f"expected a dict of results, got {type(results).__name__}")
    if results.get("schema") != SCHEMA:
        problems.append(f"schema: expected {SCHEMA!r}, got {results.get('schema')!r}")
    env = results.get("environment")
    if not isinstance(env, Mapping):
        problems.append("environment: expected a dict (xception_lib.provenance.environment())")
    else:
        problems += [f"environment: missing {k!r}" for k in _ENV_KEYS if k not in env]
    settings = results.get("settings")
    if not isinstance(settings, Mapping):
        problems.append("settings: expected a dict")
    else:
        problems += [f"settings: missing {k!r}" for k in _SETTINGS_KEYS if k not in settings]
    for section, keys in (("models", _MODEL_KEYS), ("layers", _LAYER_KEYS)):
        rows = results.get(section)
        if not isinstance(rows, list):
            problems.append(f"{section}: expected a list of rows")
            continue
        for i, row in enumerate(rows):
            problems += _check_row(f"{section}[{i}]", row, keys)
    for i, row in enumerate(results.get("models") or []):
        if isinstance(row, Mapping) and row.get("mode") not in MODES:
            problems.append(f"models[{i}].mode: expected one of {MODES}, got {row.get('mode')!r}")
        macs = row.get("macs_per_image") if isinstance(row, Mapping) else None
        if macs is not None and (not isinstance(macs, int) or macs <= 0):
            problems.append(f"models[{i}].macs_per_image: expected a positive int or null, got {macs!r}")
    roof = results.get("roofline")
    if roof is not None:
        if not isinstance(roof, Mapping):
            problems.append("roofline: expected a dict or null")
        else:
            for k in ("peak_gmacs_per_s", "bandwidth_gb_per_s", "ridge_intensity"):
                if not _positive(roof.get(k)):
                    problems.append(f"roofline.{k}: expected a positive number, got {roof.get(k)!r}")
            for k in ("compute_from", "bandwidth_from"):
                if not isinstance(roof.get(k), str):
                    problems.append(f"roofline.{k}: expected a string saying how it was measured")
    skipped = results.get("skipped")
    if not isinstance(skipped, list) or not all(
        isinstance(s, Mapping) and {"what", "reason"} <= set(s) for s in skipped
    ):
        problems.append("skipped: expected a list of {'what', 'reason'} dicts")
    if problems:
        raise ValueError("invalid benchmark results:\n  " + "\n  ".join(problems))


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def _check_row(where: str, row: Any, keys: Mapping[str, type]) -> list[str]:
    if not isinstance(row, Mapping):
        return [f"{where}: expected a dict, got {type(row).__name__}"]
    problems = []
    for key, kind in keys.items():
        value = row.get(key)
        if kind is float:
            ok = _positive(value) or (key == "iqr_s" and value == 0)
        elif kind is int:
            ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
        elif kind is list:
            ok = isinstance(value, list) and len(value) == row.get("runs") and all(_positive(v) for v in value)
        else:
            ok = isinstance(value, str) and bool(value)
        if not ok:
            adjective = "positive " if kind in (int, float) else ""
            problems.append(f"{where}.{key}: expected {adjective}{kind.__name__}, got {value!r}")
    if row.get("variant") not in VARIANTS:
        problems.append(f"{where}.variant: expected one of {VARIANTS}, got {row.get('variant')!r}")
    return problems


def save(results: Mapping[str, Any], path: str | Path) -> Path:
    """Validate and write ``results`` as JSON."""
    validate_results(results)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1) + "\n")
    return path


def load(path: str | Path) -> dict[str, Any]:
    """Read and validate a results JSON written by :func:`save`."""
    results = json.loads(Path(path).read_text())
    validate_results(results)
    return results


def recorded(directory: str | Path, pattern: str = "bench_gpu*.json") -> list[dict[str, Any]]:
    """Every valid recorded result in ``directory`` matching ``pattern``, by file name."""
    return [load(p) for p in sorted(Path(directory).glob(pattern))]


# ------------------------------------------------------------------ tables


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:  # first column left-aligned, numbers right-aligned
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def describe(results: Mapping[str, Any]) -> str:
    """One line saying where, when and how ``results`` were measured."""
    env, s = results["environment"], results["settings"]
    return (
        f"{env['device_name']} | torch {env['torch']} | {s['threads']} threads | batch {s['batch_size']} | "
        f"{s['rounds']} rounds | commit {str(env['commit'])[:8]} | {env['date']}"
    )


def format_results(
    results: Mapping[str, Any],
    sections: Sequence[str] = ("models", "layers", "roofline", "skipped"),
    *,
    variants: Sequence[str] | None = None,
    header: bool = True,
) -> str:
    """A readable plain-text report of :func:`run`'s results.

    Args:
        results: What :func:`run` returned (or :func:`load` read).
        sections: Which parts to include, in this order: ``"models"``, ``"layers"``,
            ``"roofline"``, ``"skipped"``.
        variants: Only the rows of these variants (default: all).
        header: Start with :func:`describe`'s line and the section titles.
    """
    _check_choices(sections, ("models", "layers", "roofline", "skipped"), "section")
    keep = (lambda r: True) if variants is None else (lambda r: r["variant"] in variants)
    results = {**results, **{part: [r for r in results[part] if keep(r)] for part in ("models", "layers")}}
    out = [describe(results)] if header else []
    if "models" in sections and results["models"]:
        title = ["", "Models (median over interleaved rounds; spread = IQR / median)"] if header else []
        out += [*title, _models_table(results)]
    if "layers" in sections and results["layers"]:
        out += [*(["", "Layers (forward, inference mode)"] if header else []), _layers_table(results)]
    roof = results.get("roofline")
    if "roofline" in sections and roof:
        out += ["", f"Roofline: peak {roof['peak_gmacs_per_s']:.1f} GMAC/s ({roof['compute_from']}), "
                f"bandwidth {roof['bandwidth_gb_per_s']:.1f} GB/s ({roof['bandwidth_from']}), "
                f"ridge at {roof['ridge_intensity']:.1f} MACs/byte"]
    if "skipped" in sections:
        out += [f"skipped {item['what']}: {item['reason']}" for item in results["skipped"]]
    return "\n".join(out)


def _models_table(results: Mapping[str, Any]) -> str:
    mrows = [
        [r["label"], r["variant"], r["mode"], f"{r['input_size']}",
         "-" if r.get("macs_per_image") is None else f"{r['macs_per_image'] / 1e9:.2f}",
         f"{r['median_s'] * 1e3:.1f}", f"{100 * r['iqr_s'] / r['median_s']:.0f}%", f"{r['images_per_s']:.2f}"]
        for r in results["models"]
    ]
    out = [_table(["model", "variant", "mode", "px", "GMACs/img", "ms", "spread", "img/s"], mrows)]
    for mode in MODES:
        for model in ("xception", "xception_timm_port"):
            try:
                r = speed_ratio(results, model, mode=mode)
            except ValueError:
                continue
            out.append(
                f"{MODEL_LABELS[model]} / {MODEL_LABELS['timm_legacy_xception']}, {mode}: {r['ratio']:.3f}x "
                f"(paired: {r['paired_median']:.3f}, IQR {r['paired_q1']:.3f}-{r['paired_q3']:.3f})"
            )
    return "\n".join(out)


def _layers_table(results: Mapping[str, Any]) -> str:
    rows = [
        [f"{r['kind']} {r['channels']}@{r['size']}x{r['size']}", r["variant"], f"{r['macs'] / 1e6:.1f}",
         f"{r['intensity']:.1f}", f"{r['median_s'] * 1e3:.2f}", f"{100 * r['iqr_s'] / r['median_s']:.0f}%",
         f"{r['gmacs_per_s']:.1f}"]
        for r in results["layers"]
    ]
    return _table(["layer", "variant", "MMACs", "MACs/B", "ms", "spread", "GMAC/s"], rows)


def separable_shares(results: Mapping[str, Any], variant: str = "fp32") -> list[dict[str, Any]]:
    """For each measured shape, the depthwise step's share of a separable convolution's MACs and time.

    A separable convolution (C -> C) is a depthwise 3x3 then a pointwise 1x1; both were
    measured at the same width and resolution.
    """
    out = []
    for r in results["layers"]:
        if r["kind"] != "depthwise" or r["variant"] != variant:
            continue
        p = find(results["layers"], kind="pointwise", channels=r["channels"], size=r["size"], variant=variant)
        out.append(
            {
                "channels": r["channels"],
                "size": r["size"],
                "mac_share": r["macs"] / (r["macs"] + p["macs"]),
                "time_share": r["median_s"] / (r["median_s"] + p["median_s"]),
            }
        )
    return out


def variant_speedups(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Speed-up of every non-fp32 row over the fp32 row of the same case (> 1: faster)."""
    out = []
    same_case = {"layers": ("kind", "channels", "size", "batch_size"), "models": ("model", "mode", "batch_size")}
    for section, keys in same_case.items():
        rows = results[section]
        for r in rows:
            if r["variant"] == "fp32":
                continue
            base = find(rows, variant="fp32", **{k: r[k] for k in keys})
            name = f"{r['kind']} {r['channels']}@{r['size']}" if section == "layers" else f"{r['label']}, {r['mode']}"
            speedup = base["median_s"] / r["median_s"]
            out.append({"section": section, "case": name, "variant": r["variant"], "speedup": speedup})
    return out


# ------------------------------------------------------------------ plots


def plot_roofline(results: Mapping[str, Any], ax: Any = None, variant: str = "fp32") -> Any:
    """Achieved GMAC/s against arithmetic intensity (log-log) under the measured roofs."""
    import matplotlib.pyplot as plt

    ax = ax if ax is not None else plt.subplots(figsize=(6.5, 4.2))[1]
    roof = results["roofline"]
    rows = [r for r in results["layers"] if r["variant"] == variant]
    if not rows or roof is None:
        raise ValueError(f"expected layer rows for variant {variant!r} and a roofline measurement")
    lo = min(r["intensity"] for r in rows) / 2
    hi = max(max(r["intensity"] for r in rows) * 2, roof["ridge_intensity"] * 4)
    xs = [lo * (hi / lo) ** (i / 200) for i in range(201)]
    attainable = [min(roof["peak_gmacs_per_s"], x * roof["bandwidth_gb_per_s"]) for x in xs]
    ax.plot(xs, attainable, "k-", lw=1.5, label="roofline: min(peak, intensity x bandwidth)")
    styles = {"regular": ("s", "regular 3x3"), "depthwise": ("o", "depthwise 3x3"), "pointwise": ("^", "pointwise 1x1")}
    for kind, (marker, label) in styles.items():
        pts = [r for r in rows if r["kind"] == kind]
        if not pts:
            continue
        xy = [(r["intensity"], r["gmacs_per_s"]) for r in pts]
        ax.scatter(*zip(*xy), marker=marker, s=50, label=label, zorder=3)
        for r, point in zip(pts, xy):
            ax.annotate(f"{r['channels']}@{r['size']}", point, textcoords="offset points", xytext=(5, -10), fontsize=7)
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="arithmetic intensity (MACs per byte, fp32)",
        ylabel="achieved GMAC/s",
        title=f"{results['environment']['device_name']}, batch {rows[0]['batch_size']}",
    )
    ax.legend(fontsize=8, loc="lower right")
    return ax


def plot_models(results: Mapping[str, Any], ax: Any = None, mode: str = "forward", variant: str = "fp32") -> Any:
    """Measured time per image against MACs per image, one point per model."""
    import matplotlib.pyplot as plt

    ax = ax if ax is not None else plt.subplots(figsize=(6.5, 4.2))[1]
    rows = [
        r for r in results["models"] if r["mode"] == mode and r["variant"] == variant and r.get("macs_per_image")
    ]
    if not rows:
        raise ValueError(f"expected model rows with MACs for mode={mode!r}, variant={variant!r}")
    for r in rows:
        ax.scatter(r["macs_per_image"] / 1e9, 1e3 / r["images_per_s"], s=60, label=r["label"], zorder=3)
    ax.legend(fontsize=8)
    ax.set(
        xlabel="GMACs per image",
        ylabel="ms per image (median)",
        xlim=(0, None),
        ylim=(0, None),
        title=f"{mode}, {results['environment']['device_name']}, batch {rows[0]['batch_size']}",
    )
    return ax


def plot_variants(results: Mapping[str, Any], axes: Any = None) -> Any:
    """Speed-up over fp32 of every other variant: layers (left) and models (right).

    Bars start at 1 (no change) on a log scale, so a 2x speed-up and a 2x slow-down have
    the same length, to the right and to the left.
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    speedups = variant_speedups(results)
    if not speedups:
        raise ValueError("expected rows of a variant other than fp32")
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(11, 4.5), gridspec_kw={"width_ratios": [3, 2]})
    variants = [v for v in VARIANTS if any(s["variant"] == v for s in speedups)]
    height = 0.8 / len(variants)
    for ax, section in zip(axes, ("layers", "models")):
        cases = list(dict.fromkeys(s["case"] for s in speedups if s["section"] == section))
        if not cases:
            ax.set_axis_off()
            ax.text(0.5, 0.5, f"no {section} measured with other variants", ha="center", transform=ax.transAxes)
            continue
        for j, v in enumerate(variants):
            vals = {s["case"]: s["speedup"] for s in speedups if s["section"] == section and s["variant"] == v}
            ys = [i + (j - (len(variants) - 1) / 2) * height for i, c in enumerate(cases) if c in vals]
            widths = [vals[c] - 1 for c in cases if c in vals]
            ax.barh(ys, widths, height, left=1, label=v)
        ax.axvline(1.0, color="k", lw=1)
        ax.set_xscale("log")
        lo, hi = ax.get_xlim()
        ticks = [t for t in (0.1, 0.25, 0.5, 0.8, 1, 1.25, 1.5, 2, 3, 5, 10) if lo <= t <= hi]
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_yticks(range(len(cases)), cases, fontsize=8)
        ax.invert_yaxis()
        ax.set(xlabel="speed-up over fp32 (x, log scale)", title=section)
        ax.legend(fontsize=8)
    axes[0].figure.suptitle(results["environment"]["device_name"], fontsize=10)
    axes[0].figure.tight_layout()
    return axes


# ------------------------------------------------------------------ command line


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m xception_lib.chapters.bench``: run the suite, print a table, optionally write JSON."""
    parser = argparse.ArgumentParser(prog="python -m xception_lib.chapters.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps (default: cpu)")
    parser.add_argument("--quick", action="store_true", help="fewer rounds, batch 1 on CPU, variants on Xception only")
    parser.add_argument("--models", nargs="+", choices=MODEL_NAMES, help="models to compare (default: all)")
    parser.add_argument(
        "--variant-models", nargs="*", choices=MODEL_NAMES, help="models also run with channels_last/bf16/fp16/compile"
    )
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="try torch.compile (default: on GPU only)")
    parser.add_argument("--threads", type=int, help="CPU threads (default: PyTorch's, usually one per core)")
    parser.add_argument("--no-layers", action="store_true", help="skip the layer micro-benchmarks and the roofline")
    parser.add_argument("--output", type=Path, help="write JSON here, e.g. book/results/bench_gpu_h100.json")
    args = parser.parse_args(argv)
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    results = run(
        device=args.device,
        quick=args.quick,
        models=args.models,
        batch_size=args.batch_size,
        rounds=args.rounds,
        compile=args.compile,
        variant_models=args.variant_models,
        layers=not args.no_layers,
        progress=lambda line: print(f"... {line}", file=sys.stderr, flush=True),
    )
    validate_results(results)
    print(format_results(results))
    if args.output is not None:
        print(f"wrote {save(results, args.output)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
