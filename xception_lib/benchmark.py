"""Benchmarks: measured speed beside MAC counts. :func:`run` (``python -m xception_lib.chapters bench``) times whole
models (a forward pass, a training step), single convolutions, the device's roofs and the variants it supports
(channels_last, bf16/fp16 autocast, ``torch.compile``) into :class:`Results`, which :func:`save` writes as JSON."""

from __future__ import annotations

import copy
import functools
import math
import tempfile
import warnings
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from xception_lib.complexity import count_macs
from xception_lib.config import XceptionConfig
from xception_lib.ledger import read_json, records_dir, write_json_atomic
from xception_lib.model import Xception, xception
from xception_lib.pooling import fast_max_pools
from xception_lib.provenance import Environment, check, check_fields, environment, expect, from_dict
from xception_lib.timing import Timing, interleaved

SCHEMA = "xception_lib.bench/1"
MODES = ("forward", "train")
VARIANTS = ("fp32", "channels_last", "bf16", "fp16", "compile")
LAYER_KINDS = ("regular", "depthwise", "pointwise")
# C -> C convolutions at three of Xception's widths, each at the resolution where its flow runs at 299 px input
# (Xception's own entry-flow convolutions change the width: 64 -> 128 at 147x147, 128 -> 256 at 74x74, ...).
LAYER_SHAPES = ((128, 74), (256, 37), (728, 19))
RECORDS = records_dir()  # the recorded results (package data)


# ------------------------------------------------------------------ records
class _Checked:
    """Fields checked by :func:`~xception_lib.provenance.check_fields`: numbers > 0 (IQR >= 0), names from choices."""

    def __post_init__(self) -> None:
        check_fields(self, {n: (0.0 if n == "iqr_s" else 1e-300, math.inf) for n in vars(self)})  # numbers only
        for name, choices in {"mode": MODES, "variant": VARIANTS, "kind": LAYER_KINDS}.items():  # if it has the field
            expect(getattr(self, name, choices[0]) in choices, name, f"one of {choices}", getattr(self, name, None))


@dataclass(frozen=True)
class Measured(_Checked):
    """Repeated runs of one case: every time (seconds), their median and interquartile range."""

    median_s: float
    iqr_s: float  # the spread of the middle half of the runs
    runs: int
    times_s: tuple[float, ...]

    def __post_init__(self) -> None:
        super().__post_init__()
        check("times_s", list(self.times_s), list[float], 1e-300)
        expect(len(self.times_s) == self.runs, "times_s", f"{self.runs} times (runs)", len(self.times_s))

    @classmethod
    def of(cls, t: Timing, *fields: Any) -> Any:
        """A row of ``cls`` from the times of ``t`` and the other fields, in the order they are declared."""
        return cls(t.median, t.iqr, len(t.times), t.times, *fields)


@dataclass(frozen=True)
class ModelRow(Measured):
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
class LayerRow(Measured):
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
class Roofline(_Checked):
    """A kernel of intensity I (MACs per byte) cannot exceed min(peak, I x bandwidth)."""

    peak_gmacs_per_s: float
    bandwidth_gb_per_s: float
    ridge_intensity: float  # where the roofs meet
    compute_from: str
    bandwidth_from: str


@dataclass(frozen=True)
class Skipped(_Checked):
    what: str
    reason: str


@dataclass(frozen=True)
class Settings(_Checked):
    device: str
    quick: bool
    batch_size: int
    rounds: int
    threads: int
    compile: bool = False
    tf32_convolutions: bool | None = None  # cuDNN's float32 convolutions on TF32 cores; None: CPU or not recorded


def _row(cls: Any, data: Any, where: str) -> Any:
    """``cls`` from a JSON object (lists become tuples); errors name ``where``."""
    expect(isinstance(data, dict), where, "a JSON object", data)
    try:
        return from_dict(cls, {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}, where)
    except ValueError as err:
        raise ValueError(str(err) if str(err).startswith(where) else f"{where}.{err}") from None


@dataclass(frozen=True)
class Results:
    """A benchmark run: where it ran (:func:`xception_lib.provenance.environment`), how, and every row."""

    environment: Environment
    settings: Settings
    models: tuple[ModelRow, ...]
    layers: tuple[LayerRow, ...]
    roofline: Roofline | None
    skipped: tuple[Skipped, ...]


def check_writable(path: str | Path) -> Path:
    """``path`` if a file can be written there (its folder is created), else a ``ValueError`` saying why."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"output {path} is a directory; give a file name, such as {path / 'bench.json'}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path.parent).close()  # a real write: permissions can mislead (root, /proc)
    except OSError as err:
        raise ValueError(f"output {path}: cannot write in {path.parent} ({err}); choose another path") from None
    return path


def save(results: Results, path: str | Path) -> Path:
    """Write ``results`` as JSON atomically: a failed write leaves an existing file as it was."""
    return write_json_atomic(check_writable(path), {"schema": SCHEMA, **asdict(results)})


def load(path: str | Path) -> Results:
    """Read and check a results JSON written by :func:`save`; errors name the file and the first wrong field."""
    data = read_json(path)
    try:
        expect(isinstance(data, dict), "results", "a JSON object of benchmark results", type(data).__name__)
        expect(data.get("schema") == SCHEMA, "schema", repr(SCHEMA), data.get("schema"))
        rows: dict[str, Any] = {}
        for name, kind in (("models", ModelRow), ("layers", LayerRow), ("skipped", Skipped)):
            expect(isinstance(data.get(name), list), name, "a list", data.get(name))
            rows[name] = tuple(_row(kind, row, f"{name}[{i}]") for i, row in enumerate(data[name]))
        roof = data.get("roofline")
        return Results(
            Environment.from_dict(data.get("environment")),
            _row(Settings, data.get("settings"), "settings"),
            roofline=None if roof is None else _row(Roofline, roof, "roofline"),
            **rows,
        )
    except ValueError as err:
        raise ValueError(f"invalid benchmark results in {path}: {err}") from None


def recorded(pattern: str = "bench_gpu*.json") -> list[Results]:
    """Every recorded result in ``RECORDS`` whose file name matches ``pattern``, by name."""
    return [load(p) for p in sorted(RECORDS.glob(pattern))]


# ------------------------------------------------------------------ variants and steps
def variant_support(name: str, device: torch.device | str, *, compile: bool = False) -> str | None:
    """``None`` if ``device`` runs variant ``name``, else the reason it is skipped."""
    expect(name in VARIANTS, "variant", f"one of {VARIANTS}", name)
    device = torch.device(device)
    if name in ("bf16", "fp16") and device.type == "cpu":
        native = getattr(torch.ops.mkldnn, f"_is_mkldnn_{name}_supported", None)
        if native is None or not native():
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


def _timed(cases: Mapping[Any, Callable[[], object]], **options: Any) -> dict[Any, Timing]:
    with warnings.catch_warnings():  # autocast and compile warn about what they cannot do
        warnings.simplefilter("ignore")
        return interleaved(cases, **options)


def call_patterns(
    layers: Mapping[str, nn.Module], x: torch.Tensor, *, budget_s: float = 10.0, threads: int = 1
) -> dict[str, dict[str, Timing]]:
    """Seconds per call of each layer on ``x`` (inference mode, ``threads`` CPU threads, ``budget_s`` for each way),
    timed two ways, the layers interleaved: ``"back to back"``, blocks of 5 calls of one layer (its data stay in the
    caches); ``"one at a time"``, one call of each layer in turn, as inside a network."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            blocks = {n: lambda f=f: [f(x) for _ in range(5)] for n, f in layers.items()}
            hot = interleaved(blocks, repeats=10, budget_s=budget_s)
            cold = interleaved({n: functools.partial(f, x) for n, f in layers.items()}, repeats=30, budget_s=budget_s)
    finally:
        torch.set_num_threads(before)
    per_call = {n: Timing(tuple(s / 5 for s in t.times), t.truncated) for n, t in hot.items()}
    return {"back to back": per_call, "one at a time": cold}


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

    expect(name in MODEL_NAMES, "model", f"one of {MODEL_NAMES}", name)
    if name == "timm_legacy_xception":
        with warnings.catch_warnings():  # timm warns about tqdm in notebooks and about the deprecated name
            warnings.simplefilter("ignore")
            import timm

            return timm.create_model("legacy_xception"), 299
    if name.startswith("xception"):  # with the CPU gather kernel of max-pooling (chapter 8)
        return fast_max_pools(xception() if name == "xception" else Xception(XceptionConfig.timm_port())), 299
    if name == "inception_v3":
        return models.inception_v3(weights=None, aux_logits=False, init_weights=False), 299
    return getattr(models, name)(weights=None), 224


@dataclass(frozen=True)
class LayerCase:
    """One convolution, C -> C channels: kind, width and resolution (stride 1, "same")."""

    kind: str
    channels: int
    size: int

    def module(self) -> nn.Conv2d:
        expect(self.kind in LAYER_KINDS, "layer kind", f"one of {LAYER_KINDS}", self.kind)
        kernel, groups = {"regular": (3, 1), "depthwise": (3, self.channels), "pointwise": (1, 1)}[self.kind]
        return nn.Conv2d(self.channels, self.channels, kernel, padding=kernel // 2, groups=groups, bias=False)

    def macs(self, batch_size: int = 1) -> int:
        """MACs of one forward pass: each weight is used once per output pixel (stride 1)."""
        return batch_size * self.module().weight.numel() * self.size**2

    def bytes_moved(self, batch_size: int = 1) -> int:
        """The least traffic to memory in fp32: read input and weights once, write the output once."""
        return 4 * (2 * batch_size * self.channels * self.size**2 + self.module().weight.numel())

    def intensity(self, batch_size: int = 1) -> float:
        """Arithmetic intensity: MACs per byte moved."""
        return self.macs(batch_size) / self.bytes_moved(batch_size)


def layer_benchmarks(
    cases: Sequence[LayerCase] | None = None,
    *,
    device: torch.device | str = "cpu",
    batch_size: int = 2,
    variants: Sequence[str] = ("fp32",),
    rounds: int = 5,
    **options: Any,
) -> list[LayerRow]:
    """Forward time of single convolutions (inference mode; by default every kind at every ``LAYER_SHAPES``) in each
    of ``variants`` that the device runs, all cases of a variant interleaved; ``options``: ``warmup``, ``budget_s``."""
    device = torch.device(device)
    check("batch_size", batch_size, int, 1)
    check("rounds", rounds, int, 1)
    variants = [v for v in variants if variant_support(v, device, compile=True) is None]
    gen = torch.Generator().manual_seed(0)
    built = {}
    for case in [LayerCase(k, c, s) for c, s in LAYER_SHAPES for k in LAYER_KINDS] if cases is None else cases:
        x = torch.randn(batch_size, case.channels, case.size, case.size, generator=gen)
        built[case] = (case.module().to(device).eval(), x.to(device))
    rows = []
    for v in variants:
        steps = {case: make_step(conv, x, v, train=False) for case, (conv, x) in built.items()}
        for c, t in _timed(steps, repeats=rounds, device=device, **options).items():
            macs, traffic = c.macs(batch_size), c.bytes_moved(batch_size)
            fields = (c.kind, c.channels, c.size, v, batch_size, macs, traffic, macs / traffic, macs / t.median / 1e9)
            rows.append(LayerRow.of(t, *fields))
    return rows


def roofline(
    *, device: torch.device | str = "cpu", matrix_size: int = 2048, copy_mib: int = 128, rounds: int = 5
) -> Roofline:
    """The two roofs: attainable compute (a large fp32 matrix product) and memory bandwidth (a copy)."""
    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randn(matrix_size, matrix_size, generator=gen).to(device) for _ in range(2))
    src = torch.randn(copy_mib * 2**20 // 4, generator=gen).to(device)
    dst = torch.empty_like(src)
    t = interleaved({"mm": lambda: torch.mm(a, b), "copy": lambda: dst.copy_(src)}, repeats=rounds, device=device)
    peak, bandwidth = matrix_size**3 / t["mm"].median / 1e9, 2 * src.numel() * 4 / t["copy"].median / 1e9
    compute = f"fp32 matmul {matrix_size}x{matrix_size}x{matrix_size}, median of {rounds}"
    copy = f"copy of {copy_mib} MiB (read + write), median of {rounds}"
    return Roofline(peak, bandwidth, peak / bandwidth, compute, copy)


# ------------------------------------------------------------------ the whole suite
def run(
    *,
    device: torch.device | str = "cpu",
    quick: bool = False,
    models: Sequence[str] | None = None,
    modes: Sequence[str] = MODES,
    batch_size: int | None = None,
    rounds: int | None = None,
    compile: bool | None = None,
    variant_models: Sequence[str] | None = None,
    layers: bool = True,
    budget_s: float | None = None,
    progress: Callable[[str], None] | None = None,
) -> Results:
    """Run the suite: ``models`` in fp32, ``variant_models`` in every variant, layers and roofs.

    Defaults: all models; variants on Xception, ResNet-50, MobileNetV2 (Xception only if ``quick``); batch 2 on
    a CPU (1 if ``quick``), 32 on a GPU; 5 rounds (3 if ``quick``); ``torch.compile`` on a GPU only.
    ``budget_s``: the most seconds of each group of interleaved cases (a mode, a variant of the layers).
    """
    device = check_device(device)
    on_cpu = device.type == "cpu"
    batch_size = ((1 if quick else 2) if on_cpu else 32) if batch_size is None else batch_size
    rounds = (3 if quick else 5) if rounds is None else rounds
    compile = (not on_cpu) if compile is None else compile
    models = list(MODEL_NAMES if models is None else models)
    if variant_models is None:
        variant_models = ["xception"] if quick else ["xception", "resnet50", "mobilenet_v2"]
    for name in [*models, *variant_models]:
        expect(name in MODEL_NAMES, "model", f"one of {MODEL_NAMES}", name)
    expect(set(modes) <= set(MODES), "modes", f"some of {MODES}", modes)
    check("batch_size", batch_size, int, 1)
    check("rounds", rounds, int, 1)
    if progress:
        progress(f"models {', '.join(models)}; variants on {', '.join(variant_models) or 'none'}; batch {batch_size}")
    reasons = {v: variant_support(v, device, compile=compile) for v in VARIANTS}
    variants = [v for v, reason in reasons.items() if reason is None]
    options: dict[str, Any] = dict(warmup=2 if compile else 1, device=device, budget_s=budget_s)
    built = {}
    for name in dict.fromkeys([*models, *variant_models]):  # every one in fp32, MACs counted with fvcore
        model, size = build_model(name)
        x = torch.randn(batch_size, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
        built[name] = (model.to(device), x, size, count_macs(model, (1, 3, size, size)))
    rows = []
    for mode in modes:  # eval mode for "forward"
        cases = {
            (name, v): make_step(model.train(mode == "train"), x, v, mode == "train")
            for name, (model, x, _, _) in built.items()
            for v in variants
            if v == "fp32" or name in variant_models
        }
        for (name, v), t in _timed(cases, repeats=rounds, **options).items():
            size, macs = built[name][2:]
            rows.append(
                ModelRow.of(t, name, MODEL_LABELS[name], mode, v, batch_size, size, macs, batch_size / t.median)
            )
    layer_rows, roof = [], None
    if layers:
        if progress:
            progress("layers and roofline")
        layer_rows = layer_benchmarks(batch_size=batch_size, variants=variants, rounds=rounds, **options)
        matrix_size = (1024 if quick else 2048) if on_cpu else 8192
        roof = roofline(device=device, matrix_size=matrix_size, copy_mib=64 if on_cpu else 1024, rounds=rounds)
        best = max((r for r in layer_rows if r.variant == "fp32"), key=lambda r: r.gmacs_per_s)
        if best.gmacs_per_s > roof.peak_gmacs_per_s:  # a roof must not sit below a measured point
            where = f"{best.kind} convolution {best.channels}@{best.size}, which beat the matmul"
            ridge = best.gmacs_per_s / roof.bandwidth_gb_per_s
            roof = replace(roof, peak_gmacs_per_s=best.gmacs_per_s, ridge_intensity=ridge, compute_from=where)
    parts = ("models", "layers") if layers else ("models",)
    skipped = tuple(Skipped(f"{part}/{v}", why) for part in parts for v, why in reasons.items() if why)
    tf32 = bool(torch.backends.cudnn.allow_tf32) if device.type == "cuda" else None
    settings = Settings(str(device), quick, batch_size, rounds, torch.get_num_threads(), compile, tf32)
    return Results(environment(device), settings, tuple(rows), tuple(layer_rows), roof, skipped)


def check_device(device: torch.device | str) -> torch.device:
    """``device`` as a ``torch.device`` if this machine has it, else a ``ValueError`` saying what to use."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device {device!r} is not a device ({err}); use cpu, cuda, cuda:1 or mps") from None
    n = torch.cuda.device_count()
    ok = device.type == "cpu" or (device.type == "cuda" and (device.index or 0) < n)
    if not (ok or (device.type == "mps" and torch.backends.mps.is_available())):
        raise ValueError(f"device {device} is not available on this machine (CUDA devices: {n}); use cpu")
    return device
