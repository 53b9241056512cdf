"""Benchmarks: measured speed beside MAC counts, for whole models and single layers.

``python -m xception_lib.chapters.bench`` (``--help``; ``--quick``) times on one device whole models (a forward
pass and a training step), single convolutions (MACs, bytes moved, arithmetic intensity), the device's roofs
and the variants it supports (channels_last, bf16/fp16 autocast, ``torch.compile``), the cases interleaved
(A, B, C, A, B, C, ...). :class:`Results` holds it all; :func:`save` and :func:`load` write and read JSON.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import sys
import tempfile
import time
import types
import typing
import warnings
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from xception_lib.complexity import count_macs
from xception_lib.config import XceptionConfig
from xception_lib.ledger import records_dir
from xception_lib.model import Xception, xception
from xception_lib.provenance import environment
from xception_lib.runtime import synchronize

if TYPE_CHECKING:
    import pandas

SCHEMA = "xception_lib.bench/1"
MODES = ("forward", "train")
VARIANTS = ("fp32", "channels_last", "bf16", "fp16", "compile")
LAYER_KINDS = ("regular", "depthwise", "pointwise")
# Xception's widths at 299 px input: entry blocks 2 and 3's inputs and the middle flow.
LAYER_SHAPES = ((128, 74), (256, 37), (728, 19))
RECORDS = records_dir()  # the recorded results (package data)

# ------------------------------------------------------------------ timing and records
@dataclass(frozen=True)
class Timing:
    """Repeated runs of one case: every time (seconds), their median and interquartile range."""
    median_s: float
    iqr_s: float  # the spread of the middle half of the runs
    runs: int
    times_s: tuple[float, ...]

    @classmethod
    def of(cls, times: Sequence[float]) -> Timing:
        q1, _, q3 = statistics.quantiles(times, n=4, method="inclusive") if len(times) > 1 else (0, 0, 0)
        return cls(statistics.median(times), q3 - q1, len(times), tuple(times))

    @property
    def spread(self) -> float:  # IQR / median
        return self.iqr_s / self.median_s


def time_interleaved(cases: Mapping[Any, Callable[[], object]], *, rounds: int = 5, warmup: int = 1,
                     device: torch.device | str = "cpu") -> dict[Any, Timing]:
    """Time callables (name -> one step) in interleaved rounds (A, B, A, B, ...), one run each per round.

    A slow spell on a shared machine then hits every case, not one. ``warmup`` untimed runs per case
    come first (allocation, kernel choice); ``device`` is synchronised around each timed run.
    """
    if not (isinstance(rounds, int) and rounds >= 1 and isinstance(warmup, int) and warmup >= 0):
        raise ValueError(f"expected rounds >= 1 and warmup >= 0, got rounds={rounds!r}, warmup={warmup!r}")
    for _ in range(warmup):
        for fn in cases.values():
            fn()
    times: dict[Any, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return {name: Timing.of(ts) for name, ts in times.items()}


def paired_ratio(times_a: Sequence[float], times_b: Sequence[float]) -> tuple[float, float, float]:
    """How many times faster A is than B, round by round (runs moments apart): median, 25th, 75th percentile."""
    if len(times_a) != len(times_b) or not times_a:
        raise ValueError(f"expected two equally long, non-empty lists, got {len(times_a)} and {len(times_b)}")
    ratios = [b / a for a, b in zip(times_a, times_b)]
    q1, median, q3 = statistics.quantiles(ratios, n=4, method="inclusive") if len(ratios) > 1 else ratios * 3
    return median, q1, q3


@dataclass(frozen=True)
class ModelRow(Timing):
    """One (model, mode, variant) case of whole-model timing."""
    model: str
    label: str
    mode: str
    variant: str
    batch_size: int
    input_size: int
    macs_per_image: int | None
    images_per_s: float  # batch size / median time


@dataclass(frozen=True)
class LayerRow(Timing):
    """One convolution (kind, width, resolution, variant): MACs, traffic and measured time."""
    kind: str
    channels: int
    size: int
    variant: str
    batch_size: int
    macs: int
    bytes_fp32: int
    intensity: float  # MACs per fp32 byte
    gmacs_per_s: float  # achieved, from the median


@dataclass(frozen=True)
class Roofline:
    """A kernel of intensity I (MACs per byte) cannot exceed min(peak, I x bandwidth)."""
    peak_gmacs_per_s: float
    bandwidth_gb_per_s: float
    ridge_intensity: float  # where the roofs meet
    compute_from: str
    bandwidth_from: str


@dataclass(frozen=True)
class Skipped:
    what: str
    reason: str


@dataclass(frozen=True)
class Settings:
    device: str
    quick: bool
    batch_size: int
    rounds: int
    threads: int
    compile: bool = False
    tf32_convolutions: bool | None = None  # cuDNN's float32 convolutions on TF32 cores; None: CPU or not recorded


@dataclass(frozen=True)
class Results:
    """A benchmark run: where it ran (``xl.provenance.environment()``), how, and every row."""
    environment: dict[str, Any]
    settings: Settings
    models: tuple[ModelRow, ...]
    layers: tuple[LayerRow, ...]
    roofline: Roofline | None
    skipped: tuple[Skipped, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, **asdict(self)}

    @classmethod
    def from_dict(cls, data: Any, where: str = "results") -> Results:
        """Check and convert a JSON dict; a ``ValueError`` lists every problem and names ``where``."""
        if not isinstance(data, Mapping):
            raise ValueError(f"{where}: expected a dict of benchmark results, got {type(data).__name__}")
        problems = [] if data.get("schema") == SCHEMA else [f"schema: expected {SCHEMA!r}, got {data.get('schema')!r}"]
        env = data.get("environment")
        env_keys = ("device", "device_name", "torch", "commit", "date")
        problems += [f"environment.{k}: missing" for k in env_keys if not isinstance(env, Mapping) or k not in env]
        parts: dict[str, Any] = {"settings": _convert(Settings, data.get("settings"), "settings", problems)}
        for name, kind in (("models", ModelRow), ("layers", LayerRow), ("skipped", Skipped)):
            rows = data.get(name)
            if not isinstance(rows, (list, tuple)):
                problems.append(f"{name}: expected a list, got {type(rows).__name__}")
            parts[name] = tuple(_convert(kind, row, f"{name}[{i}]", problems) for i, row in enumerate(rows or []))
        roof = data.get("roofline")
        parts["roofline"] = None if roof is None else _convert(Roofline, roof, "roofline", problems)
        if problems:
            raise ValueError(f"invalid benchmark results in {where}:\n  " + "\n  ".join(problems))
        return cls(environment=dict(env), **parts)  # type: ignore[arg-type]


_CHOICES = {"mode": MODES, "variant": VARIANTS, "kind": LAYER_KINDS}


def _fits(value: Any, hint: Any, name: str) -> bool:
    """Whether a JSON ``value`` fits a field's type; numbers must be finite and > 0 (IQR: >= 0)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_fits(value, a, name) for a in typing.get_args(hint))
    if typing.get_origin(hint) is tuple:
        return isinstance(value, (list, tuple)) and all(_fits(v, float, name) for v in value)
    if hint in (int, float):
        number = isinstance(value, int) or (hint is float and isinstance(value, float))
        finite = number and not isinstance(value, bool) and math.isfinite(value)
        return finite and (value >= 0 if name == "iqr_s" else value > 0)
    if hint is str:
        return isinstance(value, str) and bool(value) and value in _CHOICES.get(name, (value,))
    return isinstance(value, hint)  # bool, None


def _convert(cls: type, data: Any, where: str, problems: list[str]) -> Any:
    """``cls(**data)`` after checking each field, adding what is wrong to ``problems``."""
    if not isinstance(data, Mapping):
        problems.append(f"{where}: expected a dict, got {type(data).__name__}")
        return None
    hints, before = typing.get_type_hints(cls), len(problems)
    for f in fields(cls):
        if f.name not in data and f.default is MISSING:
            problems.append(f"{where}.{f.name}: missing")
        elif f.name in data and not _fits(data[f.name], hints[f.name], f.name):
            numeric = "int" in str(f.type) or "float" in str(f.type)
            expected = f"one of {_CHOICES[f.name]}" if f.name in _CHOICES else f"{f.type}{' > 0' * numeric}"
            problems.append(f"{where}.{f.name}: expected {expected}, got {data[f.name]!r:.40}")
    values = {f.name: data[f.name] for f in fields(cls) if f.name in data}
    if "times_s" in values and len(problems) == before and len(values["times_s"]) != values["runs"]:
        problems.append(f"{where}.times_s: expected {values['runs']} times (runs), got {len(values['times_s'])}")
    if len(problems) > before:
        return None
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def validate_results(results: Results | Mapping[str, Any]) -> Results:
    """``results`` as a checked :class:`Results` (``ValueError`` listing every problem)."""
    return results if isinstance(results, Results) else Results.from_dict(results)


def check_writable(path: str | Path) -> Path:
    """``path`` if a file can be written there (its folder is created), else a ``ValueError`` saying why."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"output {path} is a directory; give a file name, such as {path / 'bench.json'}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent):  # a real write: permissions can mislead (root, /proc)
            pass
    except OSError as err:
        raise ValueError(f"output {path}: cannot write in {path.parent} ({err}); choose another path") from None
    return path


def save(results: Results | Mapping[str, Any], path: str | Path) -> Path:
    """Check and write ``results`` as JSON."""
    path = check_writable(path)
    path.write_text(json.dumps(validate_results(results).to_dict(), indent=1) + "\n")
    return path


def load(path: str | Path) -> Results:
    """Read and check a results JSON written by :func:`save`; errors name the file."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read benchmark results {path}: {err}; rerun the benchmark to rewrite it") from None
    return Results.from_dict(data, where=str(path))


def recorded(pattern: str = "bench_gpu*.json", directory: str | Path | None = None) -> list[Results]:
    """Every recorded result matching ``pattern`` in ``directory`` (default ``RECORDS``), by name."""
    directory = RECORDS if directory is None else Path(directory)
    return [load(p) for p in sorted(directory.glob(pattern))] if directory.is_dir() else []


# ------------------------------------------------------------------ variants
def variant_support(name: str, device: torch.device | str, *, compile: bool = False) -> str | None:
    """``None`` if ``device`` runs variant ``name``, else the reason it is skipped."""
    _check_choices([name], VARIANTS, "variant")
    device = torch.device(device)
    if name in ("bf16", "fp16") and device.type == "cpu":
        check = getattr(torch.ops.mkldnn, f"_is_mkldnn_{name}_supported", None)
        if check is None or not check():
            return f"no native {name} in oneDNN on this CPU (it would be emulated, slowly)"
    if name == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return "this GPU does not support bf16"
    if name == "compile" and not compile:
        return "not requested (pass --compile; compiling takes minutes)"
    return None


def make_step(module: nn.Module, x: torch.Tensor, variant: str = "fp32", train: bool = True) -> Callable[[], object]:
    """One inference-mode forward pass, or one training step (forward, cross-entropy, backward; no optimiser)."""
    if variant == "channels_last":
        module = copy.deepcopy(module).to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    if variant == "compile":
        module = torch.compile(module)  # type: ignore[assignment]
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(variant)
    autocast = nullcontext() if dtype is None else torch.autocast(x.device.type, dtype=dtype)
    target = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)

    def step() -> object:
        if not train:
            with torch.inference_mode(), autocast:
                return module(x)
        module.zero_grad(set_to_none=True)
        with autocast:
            loss = F.cross_entropy(module(x), target)
        loss.backward()
        return loss

    return step


def _timed(cases: Mapping[Any, Callable[[], object]], **kwargs: Any) -> dict[Any, Timing]:
    with warnings.catch_warnings():  # autocast and compile warn about what they cannot do
        warnings.simplefilter("ignore")
        return time_interleaved(cases, **kwargs)


def _supported(variants: Sequence[str], device: torch.device, compile: bool, what: str,
               skipped: list[Skipped] | None) -> list[str]:
    """The variants ``device`` runs; a :class:`Skipped` for each other one is added to ``skipped``."""
    reasons = {v: variant_support(v, device, compile=compile) for v in variants}
    for v, reason in reasons.items():
        if reason is not None and skipped is not None and Skipped(f"{what}/{v}", reason) not in skipped:
            skipped.append(Skipped(f"{what}/{v}", reason))
    return [v for v, reason in reasons.items() if reason is None]


# ------------------------------------------------------------------ models and layers
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
    """A freshly initialised benchmark model (one of ``MODEL_NAMES``) and its native input size."""
    from torchvision import models

    _check_choices([name], MODEL_NAMES, "model")
    if name == "timm_legacy_xception":
        with warnings.catch_warnings():  # timm warns about tqdm in notebooks and about the deprecated name
            warnings.simplefilter("ignore")
            import timm
            return timm.create_model("legacy_xception"), 299
    return {
        "xception": lambda: (xception(), 299),
        "xception_timm_port": lambda: (Xception(XceptionConfig.timm_port()), 299),
        "inception_v3": lambda: (models.inception_v3(weights=None, aux_logits=False, init_weights=False), 299),
        "resnet50": lambda: (models.resnet50(weights=None), 224),
        "mobilenet_v2": lambda: (models.mobilenet_v2(weights=None), 224),
    }[name]()


def model_benchmarks(
    names: Sequence[str] = MODEL_NAMES, *, device: torch.device | str = "cpu", batch_size: int = 2,
    modes: Sequence[str] = MODES, variants: Sequence[str] = ("fp32",), variant_models: Sequence[str] | None = None,
    rounds: int = 5, warmup: int = 1, compile: bool = False, skipped: list[Skipped] | None = None,
) -> list[ModelRow]:
    """Time whole models (:func:`make_step`, eval mode for ``"forward"``), each mode's cases interleaved.

    Variants other than fp32 run on ``variant_models`` (default: all); those the device lacks are added to
    ``skipped``. MACs per image are counted with fvcore.
    """
    device = torch.device(device)
    _check_choices(names, MODEL_NAMES, "model")
    _check_choices(modes, MODES, "mode")
    if variant_models is not None and not set(variant_models) <= set(names):
        raise ValueError(f"variant_models must be some of names={list(names)}, got {list(variant_models)}")
    _check_positive(batch_size=batch_size)
    supported = _supported(variants, device, compile, "models", skipped)
    built = {}
    for name in names:
        model, size = build_model(name)
        x = torch.randn(batch_size, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
        built[name] = (model.to(device), x, size, count_macs(model, (1, 3, size, size)))
    rows = []
    for mode in modes:
        cases = {
            (name, v): make_step(model.train(mode == "train"), x, v, mode == "train")
            for name, (model, x, _, _) in built.items() for v in supported
            if v == "fp32" or variant_models is None or name in variant_models
        }
        for (name, v), t in _timed(cases, rounds=rounds, warmup=warmup, device=device).items():
            _, _, size, macs = built[name]
            rows.append(ModelRow(**asdict(t), model=name, label=MODEL_LABELS[name], mode=mode, variant=v,
                                 batch_size=batch_size, input_size=size, macs_per_image=macs,
                                 images_per_s=batch_size / t.median_s))
    return rows


@dataclass(frozen=True)
class LayerCase:
    """One convolution of Xception's, C -> C channels: kind, width and resolution (stride 1, "same")."""
    kind: str
    channels: int
    size: int

    def module(self) -> nn.Conv2d:
        _check_choices([self.kind], LAYER_KINDS, "layer kind")
        kernel, groups = {"regular": (3, 1), "depthwise": (3, self.channels), "pointwise": (1, 1)}[self.kind]
        return nn.Conv2d(self.channels, self.channels, kernel, padding=kernel // 2, groups=groups, bias=False)

    def macs(self, batch_size: int = 1) -> int:
        """MACs of one forward pass: each weight is used once per output pixel (stride 1)."""
        return batch_size * self.module().weight.numel() * self.size**2

    def bytes_moved(self, batch_size: int = 1, bytes_per_element: int = 4) -> int:
        """The least traffic to memory: read input and weights once, write the output once."""
        return bytes_per_element * (2 * batch_size * self.channels * self.size**2 + self.module().weight.numel())

    def intensity(self, batch_size: int = 1, bytes_per_element: int = 4) -> float:
        """Arithmetic intensity: MACs per byte moved."""
        return self.macs(batch_size) / self.bytes_moved(batch_size, bytes_per_element)


def layer_cases(shapes: Sequence[tuple[int, int]] = LAYER_SHAPES,
                kinds: Sequence[str] = LAYER_KINDS) -> list[LayerCase]:
    """Every kind at every ``(channels, size)``."""
    _check_choices(kinds, LAYER_KINDS, "layer kind")
    return [LayerCase(kind, c, s) for c, s in shapes for kind in kinds]


def layer_benchmarks(cases: Sequence[LayerCase] | None = None, *, device: torch.device | str = "cpu",
                     batch_size: int = 2, variants: Sequence[str] = ("fp32",), rounds: int = 5, warmup: int = 1,
                     compile: bool = False, skipped: list[Skipped] | None = None) -> list[LayerRow]:
    """Forward time of single convolutions (inference mode), all cases of a variant interleaved."""
    device = torch.device(device)
    _check_positive(batch_size=batch_size)
    gen = torch.Generator().manual_seed(0)
    built = {case: (case.module().to(device).eval(),
                    torch.randn(batch_size, case.channels, case.size, case.size, generator=gen).to(device))
             for case in (layer_cases() if cases is None else cases)}
    rows = []
    for v in _supported(variants, device, compile, "layers", skipped):
        steps = {case: make_step(conv, x, v, train=False) for case, (conv, x) in built.items()}
        for case, t in _timed(steps, rounds=rounds, warmup=warmup, device=device).items():
            rows.append(LayerRow(**asdict(t), kind=case.kind, channels=case.channels, size=case.size, variant=v,
                                 batch_size=batch_size, macs=case.macs(batch_size),
                                 bytes_fp32=case.bytes_moved(batch_size), intensity=case.intensity(batch_size),
                                 gmacs_per_s=case.macs(batch_size) / t.median_s / 1e9))
    return rows


def roofline(*, device: torch.device | str = "cpu", matrix_size: int = 2048, copy_mib: int = 128,
             rounds: int = 5) -> Roofline:
    """The two roofs: attainable compute (a large fp32 matrix product) and memory bandwidth (a copy)."""
    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randn(matrix_size, matrix_size, generator=gen).to(device) for _ in range(2))
    src = torch.randn(copy_mib * 2**20 // 4, generator=gen).to(device)
    dst = torch.empty_like(src)
    t = time_interleaved({"mm": lambda: torch.mm(a, b), "copy": lambda: dst.copy_(src)}, rounds=rounds, device=device)
    peak, bandwidth = matrix_size**3 / t["mm"].median_s / 1e9, 2 * src.numel() * 4 / t["copy"].median_s / 1e9
    return Roofline(peak, bandwidth, peak / bandwidth,
                    f"fp32 matmul {matrix_size}x{matrix_size}x{matrix_size}, median of {rounds}",
                    f"copy of {copy_mib} MiB (read + write), median of {rounds}")


# ------------------------------------------------------------------ the whole suite
def run(*, device: torch.device | str = "cpu", quick: bool = False, models: Sequence[str] | None = None,
        batch_size: int | None = None, rounds: int | None = None, compile: bool | None = None,
        variant_models: Sequence[str] | None = None, layers: bool = True,
        progress: Callable[[str], None] | None = None) -> Results:
    """Run the suite: ``models`` in fp32, ``variant_models`` in every variant, layers and roofs.

    Defaults: all models; variants on Xception, ResNet-50, MobileNetV2 (Xception only if ``quick``); batch 2 on
    a CPU (1 if ``quick``), 32 on a GPU; 5 rounds (3 if ``quick``); ``torch.compile`` on a GPU only.
    """
    device = check_device(device)
    on_cpu = device.type == "cpu"
    batch_size = ((1 if quick else 2) if on_cpu else 32) if batch_size is None else batch_size
    rounds = (3 if quick else 5) if rounds is None else rounds
    compile = (not on_cpu) if compile is None else compile
    models = list(MODEL_NAMES if models is None else models)
    if variant_models is None:
        variant_models = ["xception"] if quick else ["xception", "resnet50", "mobilenet_v2"]
    _check_choices([*models, *variant_models], MODEL_NAMES, "model")
    _check_positive(batch_size=batch_size, rounds=rounds)
    say, skipped, warmup = progress or (lambda _line: None), [], 2 if compile else 1
    say(f"models {', '.join(models)}; variants on {', '.join(variant_models) or 'none'}; batch {batch_size}")
    rows = model_benchmarks(models + [m for m in variant_models if m not in models], device=device,
                            batch_size=batch_size, variants=VARIANTS, variant_models=variant_models, rounds=rounds,
                            warmup=warmup, compile=compile, skipped=skipped)
    layer_rows, roof = [], None
    if layers:
        say("layers and roofline")
        layer_rows = layer_benchmarks(device=device, batch_size=batch_size, variants=VARIANTS, rounds=rounds,
                                      warmup=warmup, compile=compile, skipped=skipped)
        matrix_size = (1024 if quick else 2048) if on_cpu else 8192
        roof = roofline(device=device, matrix_size=matrix_size, copy_mib=64 if on_cpu else 1024, rounds=rounds)
        best = max((r for r in layer_rows if r.variant == "fp32"), key=lambda r: r.gmacs_per_s)
        if best.gmacs_per_s > roof.peak_gmacs_per_s:  # a roof must not sit below a measured point
            roof = Roofline(best.gmacs_per_s, roof.bandwidth_gb_per_s, best.gmacs_per_s / roof.bandwidth_gb_per_s,
                            f"{best.kind} convolution {best.channels}@{best.size}, which beat the matmul",
                            roof.bandwidth_from)
    tf32 = bool(torch.backends.cudnn.allow_tf32) if device.type == "cuda" else None
    settings = Settings(str(device), quick, batch_size, rounds, torch.get_num_threads(), compile, tf32)
    return Results(environment(device), settings, tuple(rows), tuple(layer_rows), roof, tuple(skipped))


def check_device(device: torch.device | str) -> torch.device:
    """``device`` as a ``torch.device`` if this machine has it, else a ``ValueError`` saying what to use."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device {device!r} is not a device ({err}); use cpu, cuda, cuda:1 or mps") from None
    available = {"cpu": True, "cuda": (device.index or 0) < torch.cuda.device_count(),
                 "mps": torch.backends.mps.is_available()}
    if not available.get(device.type, False):
        raise ValueError(f"device {device} is not available on this machine (CUDA devices: "
                         f"{torch.cuda.device_count()}); use cpu")
    return device


def _check_choices(given: Sequence[str], allowed: Sequence[str], what: str) -> None:
    bad = [g for g in given if g not in allowed]
    if bad:
        raise ValueError(f"unknown {what}(s) {bad}; expected some of {list(allowed)}")


def _check_positive(**values: Any) -> None:
    for name, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")


# ------------------------------------------------------------------ reading results
def find(rows: Sequence[Any], **match: Any) -> Any:
    """The one row whose fields equal ``match`` (``ValueError`` if none or several)."""
    hits = [r for r in rows if all(getattr(r, k, None) == v for k, v in match.items())]
    if len(hits) != 1:
        raise ValueError(f"expected exactly one row with {match}, found {len(hits)}")
    return hits[0]


@dataclass(frozen=True)
class Ratio:
    """How many times faster a model is than a baseline (> 1: faster)."""
    ratio: float  # of the median times
    paired_median: float  # of the round-by-round ratios of the interleaved runs, and their quartiles
    paired_q1: float
    paired_q3: float


def speed_ratio(results: Results, model: str = "xception", baseline: str = "timm_legacy_xception", *,
                mode: str = "train", variant: str = "fp32") -> Ratio:
    """Throughput of ``model`` divided by ``baseline``'s, from the same interleaved run."""
    a = find(results.models, model=model, mode=mode, variant=variant)
    b = find(results.models, model=baseline, mode=mode, variant=variant)
    return Ratio(b.median_s / a.median_s, *paired_ratio(a.times_s, b.times_s))


def describe(results: Results) -> str:
    """Two lines saying where, when and how ``results`` were measured."""
    env, s = results.environment, results.settings
    commit = f"commit {env['commit'][:8]}" if env.get("commit") else "not a git checkout (no commit)"
    if env.get("commit_note"):
        commit += " (corrected after the run, see commit_note)"
    return (f"{env['device_name']}, torch {env['torch']}, {s.threads} threads, batch {s.batch_size}, "
            f"{s.rounds} rounds\n{commit}, {env['date']}")


def _table(rows: list[dict[str, Any]]) -> pandas.DataFrame:
    import pandas as pd
    return pd.DataFrame(rows).set_index(next(iter(rows[0]))) if rows else pd.DataFrame()


def model_table(rows: Sequence[ModelRow], variants: Sequence[str] | None = None) -> pandas.DataFrame:
    """One line per model row: MACs, median ms, spread (IQR / median) and images per second."""
    return _table([{"model": r.label, "variant": r.variant, "mode": r.mode, "px": r.input_size,
                    "GMACs": r.macs_per_image and round(r.macs_per_image / 1e9, 2), "ms": round(r.median_s * 1e3, 1),
                    "spread": f"{r.spread:.0%}", "img/s": round(r.images_per_s, 1)}
                   for r in rows if variants is None or r.variant in variants])


def layer_table(rows: Sequence[LayerRow], variants: Sequence[str] | None = None) -> pandas.DataFrame:
    """One line per layer row: MACs, intensity, median ms, spread and achieved GMAC/s."""
    return _table([{"layer": f"{r.kind} {r.channels}@{r.size}x{r.size}", "variant": r.variant,
                    "batch": r.batch_size, "MMACs": round(r.macs / 1e6, 1), "MACs/B": round(r.intensity, 1),
                    "ms": round(r.median_s * 1e3, 3), "spread": f"{r.spread:.0%}", "GMAC/s": round(r.gmacs_per_s, 1)}
                   for r in rows if variants is None or r.variant in variants])


def ratio_table(results: Results, models: Sequence[str] = ("xception", "xception_timm_port"),
                baseline: str = "timm_legacy_xception") -> pandas.DataFrame:
    """Each measured model's speed over ``baseline``'s per mode: ratio of medians, paired median, IQR."""
    rows = []
    for model, mode in ((m, mode) for m in models for mode in MODES):
        if any(r.model == model and r.mode == mode and r.variant == "fp32" for r in results.models):
            r = speed_ratio(results, model, baseline, mode=mode)
            rows.append({"model": model, "mode": mode, "ratio": round(r.ratio, 3),
                         "paired": round(r.paired_median, 3), "IQR": f"{r.paired_q1:.3f} to {r.paired_q3:.3f}"})
    return _table(rows)


def format_results(results: Results, sections: Sequence[str] = ("models", "layers", "roofline", "skipped"), *,
                   variants: Sequence[str] | None = None, header: bool = True) -> str:
    """A plain-text report of ``sections`` (lines <= 88 characters); ``header``: :func:`describe` and titles."""
    _check_choices(sections, ("models", "layers", "roofline", "skipped"), "section")
    out, roof = [describe(results)] if header else [], results.roofline
    for section in sections:
        if section == "models" and results.models:
            out += ["", "Models (median of interleaved rounds; spread = IQR / median)"] * header
            out.append(model_table(results.models, variants).to_string())
            ratios = ratio_table(results)
            if not ratios.empty:
                out += ["", "throughput / timm legacy_xception (paired: round by round)", ratios.to_string()]
        if section == "layers" and results.layers:
            out += ["", "Layers (forward, inference mode)"] * header
            out.append(layer_table(results.layers, variants).to_string())
        if section == "roofline" and roof is not None:
            out += ["", f"roofline: peak {roof.peak_gmacs_per_s:,.1f} GMAC/s ({roof.compute_from})",
                    f"bandwidth {roof.bandwidth_gb_per_s:,.1f} GB/s ({roof.bandwidth_from})",
                    f"ridge point at {roof.ridge_intensity:.1f} MACs per byte"]
        if section == "skipped":
            out += [f"skipped {item.what}: {item.reason}" for item in results.skipped]
    return "\n".join(out)


def separable_shares(results: Results, variant: str = "fp32") -> pandas.DataFrame:
    """The depthwise 3x3's share of a separable convolution's (depthwise, then pointwise) MACs and time, by shape."""
    rows = []
    for dw in (r for r in results.layers if r.kind == "depthwise" and r.variant == variant):
        pw = find(results.layers, kind="pointwise", channels=dw.channels, size=dw.size, variant=variant)
        rows.append({"shape": f"{dw.channels}@{dw.size}x{dw.size}", "mac_share": dw.macs / (dw.macs + pw.macs),
                     "time_share": dw.median_s / (dw.median_s + pw.median_s)})
    return _table(rows)


def variant_speedups(results: Results) -> pandas.DataFrame:
    """Speed-up of every non-fp32 row over the fp32 row of the same case (> 1: faster)."""
    import pandas as pd
    rows = []
    for section, keys in (("layers", ("kind", "channels", "size", "batch_size")),
                          ("models", ("model", "mode", "batch_size"))):
        for r in (r for r in getattr(results, section) if r.variant != "fp32"):
            base = find(getattr(results, section), variant="fp32", **{k: getattr(r, k) for k in keys})
            case = f"{r.kind} {r.channels}@{r.size}" if section == "layers" else f"{r.label}, {r.mode}"
            rows.append({"section": section, "case": case, "variant": r.variant, "speedup": base.median_s / r.median_s})
    return pd.DataFrame(rows, columns=["section", "case", "variant", "speedup"])


# ------------------------------------------------------------------ plots (7 in wide, text >= 9 pt)
#: The book's colours (orange for spatial 3x3, blue for 1x1; the regular 3x3 is purple as in chapter 2).
KIND_COLOURS = {"regular": "tab:purple", "depthwise": "tab:orange", "pointwise": "tab:blue"}
VARIANT_COLOURS = {"channels_last": "tab:green", "bf16": "tab:red", "fp16": "tab:brown", "compile": "tab:grey"}


def plot_roofline(results: Results, ax: Any = None, variant: str = "fp32") -> Any:
    """Achieved GMAC/s against arithmetic intensity (log-log) under the roofs; colour: kind, marker: shape."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    ax = ax if ax is not None else plt.subplots(figsize=(7, 4.4))[1]
    roof, rows = results.roofline, [r for r in results.layers if r.variant == variant]
    if not rows or roof is None:
        raise ValueError(f"expected layer rows for variant {variant!r} and a roofline measurement")
    lo, hi = min(r.intensity for r in rows) / 2, max(max(r.intensity for r in rows) * 2, roof.ridge_intensity * 4)
    xs = [lo * (hi / lo) ** (i / 200) for i in range(201)]
    ax.plot(xs, [min(roof.peak_gmacs_per_s, x * roof.bandwidth_gb_per_s) for x in xs], "k-", lw=1.5)
    markers = dict(zip(dict.fromkeys((r.channels, r.size) for r in rows), "o^sDv"))
    for r in rows:
        ax.scatter(r.intensity, r.gmacs_per_s, marker=markers[r.channels, r.size], s=60, zorder=3,
                   color=KIND_COLOURS[r.kind], edgecolor="k", linewidth=0.5)
    handles = [Line2D([], [], color="k", label="roofline")]
    handles += [Line2D([], [], ls="", marker="o", color=c, label=k) for k, c in KIND_COLOURS.items()]
    handles += [Line2D([], [], ls="", marker=m, color="grey", label=f"{c}@{s}") for (c, s), m in markers.items()]
    ax.legend(handles=handles, fontsize=9, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=4)
    ax.set(xscale="log", yscale="log")
    _labels(ax, "arithmetic intensity (MACs per byte, fp32)", "achieved GMAC/s",
            f"{results.environment['device_name']}, batch {rows[0].batch_size}")
    return ax


def _labels(ax: Any, xlabel: str, ylabel: str, title: str) -> None:
    ax.set_xlabel(xlabel, fontsize=10)
    ax.set_ylabel(ylabel, fontsize=10)
    ax.set_title(title, fontsize=10)
    ax.tick_params(labelsize=9)


def plot_models(results: Results, modes: Sequence[str] = MODES, variant: str = "fp32") -> Any:
    """Measured time per image against MACs per image, one point per model, a panel per mode."""
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(modes), figsize=(7, 3.4), squeeze=False)
    for ax, mode in zip(axes[0], modes):
        rows = [r for r in results.models if r.mode == mode and r.variant == variant and r.macs_per_image]
        if not rows:
            raise ValueError(f"expected model rows with MACs for mode={mode!r}, variant={variant!r}")
        for r in rows:
            ax.scatter(r.macs_per_image / 1e9, 1e3 / r.images_per_s, s=50, label=r.label, zorder=3)
        ax.set(xlim=(0, None), ylim=(0, None))
        _labels(ax, "GMACs per image", "ms per image (median)", f"{mode}, batch {rows[0].batch_size}")
    fig.legend(*axes[0][0].get_legend_handles_labels(), fontsize=9, loc="upper center", ncol=3,
               bbox_to_anchor=(0.5, 0.02))
    fig.suptitle(f"{results.environment['device_name']}, {variant}", fontsize=10)
    fig.tight_layout()
    return axes[0]


def plot_variants(results: Results) -> Any:
    """Speed-up over fp32 of every other variant, layers (top) and models (bottom), on a log scale from 1."""
    import matplotlib.pyplot as plt
    speedups = variant_speedups(results)
    if speedups.empty:
        raise ValueError("expected rows of a variant other than fp32")
    parts = [speedups[speedups.section == s] for s in ("layers", "models")]
    counts = [max(1, part.case.nunique()) for part in parts]
    fig, axes = plt.subplots(2, 1, figsize=(7, 2.2 + 0.4 * sum(counts)), gridspec_kw={"height_ratios": counts})
    for ax, part, section in zip(axes, parts, ("layers", "models")):
        if part.empty:
            ax.set_axis_off()
            ax.text(0.5, 0.5, f"no {section} measured with other variants", ha="center", transform=ax.transAxes)
            continue
        table = part.pivot(index="case", columns="variant", values="speedup")
        table = table.loc[list(dict.fromkeys(part.case)), [v for v in VARIANTS if v in table]]  # measured order
        (table - 1).plot.barh(ax=ax, left=1, width=0.8, logx=True, fontsize=9, color=VARIANT_COLOURS, legend=False)
        ax.axvline(1.0, color="k", lw=1)
        ax.invert_yaxis()
        lo, hi = ax.get_xlim()
        ticks = [t for t in ((0.1, 0.2, 0.5, 1, 2, 5, 10) if hi / lo > 6 else (0.5, 0.8, 1, 1.25, 1.5, 2, 2.5, 3))
                 if lo <= t <= hi]
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.set_xticks([], minor=True)
        legend = ax.get_legend_handles_labels()
        _labels(ax, "speed-up over fp32 (x, log scale)", "", section)
    fig.suptitle(results.environment["device_name"], fontsize=10)
    fig.tight_layout()
    fig.legend(*legend, fontsize=9, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=4)
    return axes


# ------------------------------------------------------------------ command line
def main(argv: Sequence[str] | None = None) -> int:
    """``python -m xception_lib.chapters.bench``: check every argument, run, print, optionally write JSON."""
    parser = argparse.ArgumentParser(prog="python -m xception_lib.chapters.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps (default: cpu)")
    parser.add_argument("--quick", action="store_true", help="fewer rounds, batch 1 on CPU, variants on Xception only")
    parser.add_argument("--models", nargs="+", choices=MODEL_NAMES, help="models to compare (default: all)")
    parser.add_argument("--variant-models", nargs="*", choices=MODEL_NAMES,
                        help="models also run with channels_last/bf16/fp16/compile")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="try torch.compile (default: on GPU only)")
    parser.add_argument("--threads", type=int, help="CPU threads (default: PyTorch's, usually one per core)")
    parser.add_argument("--no-layers", action="store_true", help="skip the layer micro-benchmarks and the roofline")
    parser.add_argument("--output", type=Path, help="write JSON here, e.g. xception_lib/records/bench_gpu_h100.json")
    args = parser.parse_args(argv)
    for flag in ("batch_size", "rounds", "threads"):  # every check before any work
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    try:
        check_device(args.device)
        if args.output is not None:
            check_writable(args.output)
    except ValueError as err:
        parser.error(str(err))
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    results = run(device=args.device, quick=args.quick, models=args.models, batch_size=args.batch_size,
                  rounds=args.rounds, compile=args.compile, variant_models=args.variant_models,
                  layers=not args.no_layers, progress=lambda line: print(f"... {line}", file=sys.stderr, flush=True))
    print(format_results(results))
    if args.output is not None:
        print(f"wrote {save(results, args.output)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
