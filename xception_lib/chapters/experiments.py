"""The paper's experiments at CIFAR scale: ablations, a runner, and the recorded results.

Three claims of the Xception paper can be tested on CIFAR-10 in minutes:

* residual connections are essential (its Figure 9): ``residual=False``;
* no non-linearity between the depthwise and the pointwise step beats ReLU and ELU
  (its Figure 10): ``intermediate_activation`` in ``none`` / ``relu`` / ``elu``;
* between a regular convolution and a depthwise one lies a spectrum that the paper
  leaves open: ``segments`` from 1 (regular 3x3 convolution) through powers of two to
  ``None`` (one segment per channel, depthwise).

Every ablation is a ``dataclasses.replace`` of one base :class:`~xception_lib.XceptionConfig`
(:func:`ablations`). The runner trains each for several seeds with :func:`xception_lib.train.fit`
and writes one JSON *record* per experiment (:func:`validate_record` documents the format).

From a shell::

    python -m xception_lib.chapters.experiments cifar10 --out book/results/cifar10.json
    python -m xception_lib.chapters.experiments ablations --out book/results/ablations.json --seeds 3

The first is the full-schedule reference run of ``xl.xception_cifar`` (the training
chapter); the second is the ablation sweep, whose number of epochs is sized on the
machine that runs it so that the whole sweep fits a time budget (:func:`size_sweep`).
Both refuse to run on a CPU unless ``--preview`` is given, and a preview record is
never written under the names that recorded GPU results use.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from xception_lib.config import XceptionConfig
from xception_lib.model import Xception

FORMAT = "xception_lib.experiments/1"
"""The ``format`` field of every record this module writes."""

GPU_RESULT_NAMES = ("cifar10.json", "ablations.json")
"""File names reserved for results recorded on a GPU (a preview or a CPU run is never written under them)."""

EPOCH_FIELDS = ("train_loss", "train_acc", "test_loss", "test_acc", "lr", "images_per_sec", "epoch_time")
"""The per-epoch lists every recorded history has (:class:`xception_lib.history.History`)."""

#: Which config field each experiment varies.
EXPERIMENT_FIELDS: dict[str, str] = {
    "residual": "residual",
    "activation": "intermediate_activation",
    "segments": "segments",
}

# ====================================================================== ablations


@dataclass(frozen=True)
class Ablation:
    """One point of the sweep: a base config with some fields replaced.

    Attributes:
        name: A short label such as ``"base"``, ``"residual=False"`` or ``"segments=4"``.
        changes: The replaced fields; empty for the base.
        config: ``dataclasses.replace(base, **changes)``.
    """

    name: str
    changes: dict[str, Any]
    config: XceptionConfig

    def experiments(self) -> tuple[str, ...]:
        """The experiments this point belongs to (the base belongs to all three)."""
        return experiments_of(self.changes)


def experiments_of(changes: dict[str, Any]) -> tuple[str, ...]:
    """The experiments a set of changes belongs to: those whose field is the only one changed."""
    return tuple(e for e, field in EXPERIMENT_FIELDS.items() if set(changes) <= {field})


def spectrum_segments(config: XceptionConfig) -> list[int | None]:
    """The segment counts of the spectrum: 1, 2, 4, ... up to what every layer allows, then ``None``.

    ``segments`` must divide the input channels of every separable convolution, so the
    largest power of two is the largest power of two dividing all of them (64 for
    ``XceptionConfig.cifar()``, whose stem gives the first separable convolution 64 channels).
    ``None`` (one segment per channel, i.e. depthwise) ends the list.
    """
    common = 0
    for channels in config.separable_in_channels():
        common = math.gcd(common, channels)
    points: list[int | None] = []
    g = 1
    while common % g == 0:
        points.append(g)
        g *= 2
    return [*points, None]


def ablations(base: XceptionConfig, experiments: Sequence[str] = tuple(EXPERIMENT_FIELDS)) -> list[Ablation]:
    """The sweep as config replacements of one base config.

    Args:
        base: The reference point; it must be the paper's choice for every varied field
            (residual connections on, no intermediate activation, depthwise).
        experiments: Which of ``"residual"``, ``"activation"``, ``"segments"`` to include.

    Returns:
        The base first, then ``residual=False``, ``activation=relu``/``elu`` and every
        ``segments`` point other than ``None`` (which is the base), each once.
    """
    unknown = [e for e in experiments if e not in EXPERIMENT_FIELDS]
    if unknown:
        raise ValueError(f"unknown experiment(s) {unknown}; expected some of {list(EXPERIMENT_FIELDS)}")
    if not base.residual or base.intermediate_activation != "none" or base.segments is not None:
        raise ValueError(
            "expected a base with residual=True, intermediate_activation='none' and segments=None, got "
            f"residual={base.residual}, intermediate_activation={base.intermediate_activation!r}, "
            f"segments={base.segments}"
        )
    points = [Ablation("base", {}, base)]
    choices: dict[str, list[Any]] = {
        "residual": [False],
        "activation": ["relu", "elu"],
        "segments": [g for g in spectrum_segments(base) if g is not None],
    }
    for experiment in experiments:
        field = EXPERIMENT_FIELDS[experiment]
        for value in choices[experiment]:
            short = "activation" if field == "intermediate_activation" else field
            points.append(Ablation(f"{short}={value}", {field: value}, dataclasses.replace(base, **{field: value})))
    return points


def sweep_base(width_multiplier: float = 0.5, middle_blocks: int = 4) -> XceptionConfig:
    """The base of the GPU sweep: ``XceptionConfig.cifar()`` at half width by default.

    Half width keeps the whole architecture (stem, three entry blocks, the middle flow,
    the exit flow) and costs about a quarter of the MACs, which is what lets ten
    configurations x three seeds fit in about eight minutes (see :func:`size_sweep`).
    """
    return XceptionConfig.cifar(width_multiplier=width_multiplier, middle_blocks=middle_blocks)


def preview_base() -> XceptionConfig:
    """The base of the CPU preview: an eighth of the width and one middle block."""
    return XceptionConfig.cifar(width_multiplier=0.125, middle_blocks=1)


def preview_train_config(device: torch.device | str = "cpu", **overrides: Any) -> Any:
    """The recipe of the CPU preview: one epoch on 256 random training images (batches of 32), 500 test images.

    Args:
        device: Where it will run.
        **overrides: Any other :class:`xception_lib.train.TrainConfig` field.
    """
    from xception_lib import train as tr

    settings: dict[str, Any] = {"epochs": 1, "batch_size": 32, "train_subset": 256, "test_subset": 500, "compile": False}
    return tr.recommended_config(device, **{**settings, **overrides})


# ====================================================================== complexity


@dataclass(frozen=True)
class SeparableLayer:
    """One separable convolution of a config, as the closed-form formulas see it.

    Attributes:
        in_channels: Channels into the spatial step (and into the pointwise step).
        out_channels: Channels out of the pointwise step.
        height: Output height (the spatial step has stride 1; blocks downsample by max-pool).
        width: Output width.
    """

    in_channels: int
    out_channels: int
    height: int
    width: int


def separable_layout(config: XceptionConfig, image_size: int = 32) -> list[SeparableLayer]:
    """Every separable convolution of ``config`` in forward order, with its output size.

    Derived from the config alone (no model is built), so tests can hold the model to it.

    Args:
        config: The architecture.
        image_size: Height and width of the (square) input image.
    """
    size = image_size
    if config.stem == "imagenet":
        size = (size - 3) // 2 + 1  # 3x3, stride 2, no padding
        size = size - 2  # 3x3, no padding
    down = lambda n, stride: n if stride == 1 else -(-n // 2)  # noqa: E731  (3x3 max-pool, stride 2)
    ins = config.separable_in_channels()
    outs: list[int] = []
    sizes: list[int] = []
    for out, stride in zip(config.entry_channels, config.entry_strides):
        outs += [config.channels(out)] * 2
        sizes += [size, size]
        size = down(size, stride)
    mid = config.channels(config.entry_channels[-1])
    outs += [mid] * (3 * config.middle_blocks)
    sizes += [size] * (3 * config.middle_blocks)
    e0, e1, e2 = (config.channels(c) for c in config.exit_channels)
    outs += [mid, e0]
    sizes += [size, size]
    size = down(size, config.exit_stride)
    outs += [e1, e2]
    sizes += [size, size]
    return [SeparableLayer(i, o, s, s) for i, o, s in zip(ins, outs, sizes)]


def complexity(config: XceptionConfig, image_size: int = 32) -> dict[str, int]:
    """Parameters and MACs of one image's forward pass.

    Returns:
        ``params`` (every parameter of the built model) and ``macs`` as fvcore counts
        them (:func:`xception_lib.complexity.count_macs`: convolutions and the linear layer,
        plus fvcore's small per-element counts for batch norm and pooling).
    """
    from xception_lib.complexity import count_macs

    model = Xception(config)
    params = sum(p.numel() for p in model.parameters())
    return {"params": params, "macs": count_macs(model, (1, config.in_channels, image_size, image_size))}


def measure_step_time(
    config: XceptionConfig,
    *,
    batch_size: int,
    device: torch.device | str = "cpu",
    image_size: int = 32,
    amp: str = "off",
    channels_last: bool = False,
    warmup: int = 2,
    steps: int = 5,
) -> float:
    """Median seconds of one training step (forward, backward, SGD update) on random data.

    A fresh model is built for the measurement, so no model that is being trained is touched.
    On CUDA every step is synchronised, so the time is the GPU's, not the launch's.

    Args:
        config: The architecture.
        batch_size: Images per step.
        device: Where to measure.
        image_size: Input height and width.
        amp: Mixed precision as in :class:`xception_lib.train.TrainConfig`: ``"auto"`` (bf16
            or fp16 on a GPU, off on a CPU), ``"bf16"``, ``"fp16"`` or ``"off"``.
        channels_last: Use the NHWC memory format, as the trainer does on a GPU.
        warmup: Steps run before timing (cuDNN picks its algorithms here).
        steps: Timed steps; the median is returned.
    """
    from xception_lib.train import resolve_amp

    if batch_size < 1 or steps < 1 or warmup < 0:
        raise ValueError(f"expected batch_size >= 1, steps >= 1, warmup >= 0; got {batch_size}, {steps}, {warmup}")
    device = torch.device(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Xception(config)
        x = torch.randn(batch_size, config.in_channels, image_size, image_size)
        y = torch.randint(0, config.num_classes, (batch_size,))
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(device, memory_format=memory_format).train()
    x = x.to(device, memory_format=memory_format)
    y = y.to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    dtype = resolve_amp(amp, device)
    times = []
    for _ in range(warmup + steps):
        _synchronize(device)
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = nn.functional.cross_entropy(model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        _synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times[warmup:])


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ====================================================================== sizing the sweep


@dataclass(frozen=True)
class SweepSize:
    """How long each run of a sweep trains, and the prediction behind it.

    Attributes:
        epochs: Epochs of every run (the same for every point: matched budgets).
        train_subset: Training images used (``None``: the whole training set).
        predicted_s: Predicted seconds of all runs together.
        budget_s: Seconds the runs were allowed.
    """

    epochs: int
    train_subset: int | None
    predicted_s: float
    budget_s: float


def size_sweep(
    step_times: Sequence[float],
    *,
    seeds: int,
    budget_s: float,
    train_size: int,
    test_size: int,
    batch_size: int,
    max_epochs: int,
    overhead_per_run_s: float = 3.0,
) -> SweepSize:
    """Choose one number of epochs for every run so that the whole sweep fits ``budget_s``.

    GPU speed cannot be guessed reliably (depthwise convolutions are memory-bound, small
    models are launch-bound), so the runner *measures* the time per training step of every
    config on the machine that runs the sweep, and solves for the epochs::

        epoch_c   = t_c * (train_size / batch_size + test_size / (3 * batch_size))
        predicted = seeds * sum_c (epochs * epoch_c + overhead_per_run_s)

    The test-set term is the per-epoch evaluation (a forward pass costs about a third of
    a training step). When even one epoch does not fit, every run trains one epoch on the
    same random subset size instead.

    Args:
        step_times: Measured seconds per training step, one per config.
        seeds: Runs per config.
        budget_s: Seconds available for the training runs.
        train_size: Images in the training set.
        test_size: Images evaluated after each epoch.
        batch_size: Images per step.
        max_epochs: Upper bound on the epochs (more would not fit the schedule's purpose).
        overhead_per_run_s: Fixed cost of a run (building the model, the first steps, cuDNN
            autotuning), paid once per run.
    """
    if seeds < 1 or max_epochs < 1 or not step_times:
        raise ValueError(f"expected seeds >= 1, max_epochs >= 1 and step times; got {seeds}, {max_epochs}, {step_times}")
    fixed = seeds * len(step_times) * overhead_per_run_s
    steps_per_epoch = train_size / batch_size + test_size / (3 * batch_size)
    per_epoch = seeds * sum(step_times) * steps_per_epoch
    epochs = int((budget_s - fixed) // per_epoch) if budget_s > fixed else 0
    if epochs >= 1:
        epochs = min(epochs, max_epochs)
        return SweepSize(epochs, None, fixed + epochs * per_epoch, budget_s)
    # Not even one epoch fits: one epoch on a subset, a whole number of batches.
    eval_cost = seeds * sum(step_times) * test_size / (3 * batch_size)
    per_image = seeds * sum(step_times) / batch_size
    images = int(max(budget_s - fixed - eval_cost, 0.0) / per_image) // batch_size * batch_size
    images = max(batch_size, images)
    return SweepSize(1, images, fixed + eval_cost + images * per_image, budget_s)


# ====================================================================== the record format


def validate_record(record: Any) -> dict[str, Any]:
    """Check that ``record`` is a valid experiment record and return it.

    A record is one JSON object per experiment::

        format       "xception_lib.experiments/1"
        experiment   "cifar10" (the reference run) or "ablations"
        command      the exact command line that produced it
        preview      true for a CPU preview (never shown as a GPU result)
        complete     false when the run stopped early (budget or interruption)
        environment  xception_lib.provenance.environment(device): device, device_name,
                     torch, cuda, commit, date, ...
        data         {"name", "source", "train_size", "test_size"}
        sizing       how the runs were sized (ablations; see size_sweep), or null
        runs         one object per trained model:
            name, changes ({field: value} replaced in the base config), seed,
            model_config (dataclasses.asdict(XceptionConfig)),
            train_config (dataclasses.asdict(TrainConfig)),
            params, macs (fvcore, one 32x32 image), step_time_s (median seconds per
            training step at step_batch_size images), step_batch_size,
            history (History.to_dict(): per-epoch lists train_loss, train_acc, test_loss,
            test_acc, lr, images_per_sec, epoch_time; per-step step_loss, step_lr; meta),
            final_test_acc (fraction),
            wall_time_s (the whole fit, evaluation included), images_per_sec (training
            throughput, median over epochs)

    Raises:
        ValueError: naming the first missing or malformed field.
    """
    _expect(isinstance(record, dict), "record", "a JSON object", record)
    top = {
        "format": str,
        "experiment": str,
        "command": str,
        "preview": bool,
        "complete": bool,
        "environment": dict,
        "data": dict,
        "runs": list,
    }
    _check_fields(record, top, "record")
    _expect(record["format"] == FORMAT, "record.format", repr(FORMAT), record["format"])
    _expect(record["experiment"] in ("cifar10", "ablations"), "record.experiment", "'cifar10' or 'ablations'", record["experiment"])
    _check_fields(record["environment"], {"device": str, "device_name": str, "torch": str, "date": str}, "record.environment")
    _check_fields(record["data"], {"name": str, "train_size": int, "test_size": int}, "record.data")
    _expect(len(record["runs"]) > 0 or not record["complete"], "record.runs", "at least one run", record["runs"])
    run_fields = {
        "name": str,
        "changes": dict,
        "seed": int,
        "model_config": dict,
        "train_config": dict,
        "params": int,
        "macs": int,
        "step_time_s": (int, float),
        "step_batch_size": int,
        "history": dict,
        "final_test_acc": (int, float),
        "wall_time_s": (int, float),
        "images_per_sec": (int, float),
    }
    for i, run in enumerate(record["runs"]):
        where = f"record.runs[{i}]"
        _expect(isinstance(run, dict), where, "a JSON object", run)
        _check_fields(run, run_fields, where)
        _expect(0.0 <= run["final_test_acc"] <= 1.0, f"{where}.final_test_acc", "a fraction in [0, 1]", run["final_test_acc"])
        for key in ("step_time_s", "wall_time_s", "images_per_sec"):
            _expect(run[key] > 0, f"{where}.{key}", "a positive number", run[key])
        try:
            config = model_config(run)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{where}.model_config: not a valid XceptionConfig ({error})") from error
        for field, value in run["changes"].items():
            _expect(getattr(config, field, object()) == value, f"{where}.changes.{field}", f"{value!r} in model_config", getattr(config, field, None))
        history = run["history"]
        for key in EPOCH_FIELDS:
            _expect(isinstance(history.get(key), list), f"{where}.history.{key}", "a per-epoch list", history.get(key))
        lengths = {key: len(history[key]) for key in EPOCH_FIELDS}
        _expect(len(set(lengths.values())) == 1 and lengths["test_acc"] > 0, f"{where}.history", "non-empty per-epoch lists of one length", lengths)
        _expect(math.isfinite(run["final_test_acc"]), f"{where}.final_test_acc", "a finite number", run["final_test_acc"])
    return record


def _check_fields(obj: dict[str, Any], fields: dict[str, Any], where: str) -> None:
    for key, kind in fields.items():
        _expect(key in obj, f"{where}.{key}", "a field", "nothing")
        ok = isinstance(obj[key], kind) and not (kind in (int, (int, float)) and isinstance(obj[key], bool))
        _expect(ok, f"{where}.{key}", _kind_name(kind), obj[key])


def _kind_name(kind: Any) -> str:
    names = {str: "a string", bool: "true/false", dict: "an object", list: "a list", int: "an integer"}
    return names.get(kind, "a number")


def _expect(condition: bool, where: str, expected: str, got: Any) -> None:
    if not condition:
        shown = repr(got)
        raise ValueError(f"{where}: expected {expected}, got {shown[:120]}")


def model_config(run: dict[str, Any]) -> XceptionConfig:
    """The :class:`~xception_lib.XceptionConfig` of a recorded run (JSON lists back to tuples)."""
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in run["model_config"].items()}
    return XceptionConfig(**fields)


def load_record(path: str | Path) -> dict[str, Any]:
    """Read and validate a record written by this module."""
    with open(path, encoding="utf-8") as f:
        return validate_record(json.load(f))


def load_gpu_record(path: str | Path) -> dict[str, Any] | None:
    """The record at ``path`` if it exists and was measured on a GPU (not a preview), else ``None``.

    This is what the book calls: a missing file, a CPU record or a preview all mean
    "GPU results are not yet recorded".
    """
    path = Path(path)
    if not path.is_file():
        return None
    record = load_record(path)
    if record["preview"] or record["environment"]["device"] != "cuda":
        return None
    return record


def save_record(record: dict[str, Any], path: str | Path) -> None:
    """Validate ``record`` and write it atomically (a temporary file, then a rename).

    Raises:
        ValueError: The record is invalid, or it is a preview or was not measured on a GPU and
            ``path`` is named like a recorded GPU result (``cifar10.json``, ``ablations.json``).
    """
    validate_record(record)
    path = Path(path)
    if path.name in GPU_RESULT_NAMES and (record["preview"] or record["environment"]["device"] != "cuda"):
        raise ValueError(
            f"only a GPU record that is not a preview may be written as {path.name} (the name is reserved for "
            f"GPU results); got preview={record['preview']} on device {record['environment']['device']!r}"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


# ====================================================================== running


def train_run(
    name: str,
    config: XceptionConfig,
    train_config: Any,
    data: Any,
    *,
    device: torch.device | str,
    changes: dict[str, Any] | None = None,
    step_time_s: float | None = None,
    cost: dict[str, int] | None = None,
    progress: bool = False,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train one model and return its run entry (see :func:`validate_record`).

    The model's initial weights come from ``train_config.seed``, so seeds vary both the
    initialisation and the data order, and the global random state is left untouched.

    Args:
        name: The run's label.
        config: The architecture.
        train_config: An :class:`xception_lib.train.TrainConfig`.
        data: A :class:`xception_lib.data.CifarArrays`.
        device: Where to train.
        changes: The fields replaced in the base config (``{}`` for the base).
        step_time_s: A time per step already measured for this config (the sweep measures
            each config once); ``None`` measures it here.
        cost: :func:`complexity` of ``config`` if already computed; ``None`` computes it here.
        progress: Show the trainer's progress bar.
        on_epoch: Called after every epoch with the entry so far (the history up to that
            epoch), e.g. to save a partial record that survives an interrupted run.
    """
    from xception_lib import train as tr

    device = torch.device(device)
    cost = complexity(config) if cost is None else cost
    if step_time_s is None:
        step_time_s = measure_step_time(
            config,
            batch_size=train_config.batch_size,
            device=device,
            amp=train_config.amp,
            channels_last=train_config.channels_last,
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(train_config.seed)
        model = Xception(config)
    start = time.perf_counter()

    def entry(history: Any) -> dict[str, Any]:
        return _run_entry(name, config, train_config, changes, cost, step_time_s, history, time.perf_counter() - start)

    callbacks = [] if on_epoch is None else [lambda _epoch, history: on_epoch(entry(history))]
    history = tr.fit(model, data, train_config, device=device, progress=progress, callbacks=callbacks)
    return entry(history)


def _run_entry(
    name: str,
    config: XceptionConfig,
    train_config: Any,
    changes: dict[str, Any] | None,
    cost: dict[str, int],
    step_time_s: float,
    history: Any,
    wall: float,
) -> dict[str, Any]:
    """A run entry of a record (see :func:`validate_record`) from a history so far."""
    speeds = [s for s in history.images_per_sec if s > 0]
    return {
        "name": name,
        "changes": dict(changes or {}),
        "seed": int(train_config.seed),
        "model_config": dataclasses.asdict(config),
        "train_config": dataclasses.asdict(train_config),
        "params": cost["params"],
        "macs": cost["macs"],
        "step_time_s": float(step_time_s),
        "step_batch_size": int(train_config.batch_size),
        "history": history.to_dict(),
        "final_test_acc": float(history.test_acc[-1]),
        "wall_time_s": wall,
        "images_per_sec": float(statistics.median(speeds)) if speeds else 0.0,
    }


def new_record(experiment: str, data: Any, device: torch.device | str, *, preview: bool, command: str | None = None) -> dict[str, Any]:
    """An empty record (no runs yet) with the environment and the data described."""
    from xception_lib.provenance import environment

    return {
        "format": FORMAT,
        "experiment": experiment,
        "command": command if command is not None else _command_line(),
        "preview": preview,
        "complete": False,
        "environment": environment(device),
        "data": {
            "name": str(getattr(data, "name", "cifar10")),
            "source": str(getattr(data, "source", "unknown")),
            "train_size": int(len(data.train_labels)),
            "test_size": int(len(data.test_labels)),
        },
        "sizing": None,
        "runs": [],
    }


def _command_line() -> str:
    argv = list(sys.argv)
    if argv and argv[0].endswith(os.path.join("xception_lib", "experiments.py")):
        argv = ["python", "-m", "xception_lib.chapters.experiments", *argv[1:]]
    return shlex.join(argv)


def run_reference(
    data: Any,
    *,
    device: torch.device | str,
    out: str | Path | None = None,
    preview: bool = False,
    progress: bool = True,
    command: str | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """The training chapter's reference run: ``xl.xception_cifar()`` on the full schedule.

    Args:
        data: CIFAR-10 arrays from :func:`xception_lib.data.load_cifar`.
        device: Where to train (the full schedule is meant for a GPU).
        out: Where to write the record (``None``: do not write). It is written after every
            epoch with ``complete: false``, and once more at the end.
        preview: Whether this is a CPU preview (recorded as such).
        progress: Show the trainer's progress bar.
        command: The command line to record (default: this process's).
        **overrides: :class:`xception_lib.train.TrainConfig` fields to change from
            :func:`xception_lib.train.recommended_config`.
    """
    from xception_lib import train as tr

    train_config = tr.recommended_config(device, **overrides)
    record = new_record("cifar10", data, device, preview=preview, command=command)

    def save_partial(run: dict[str, Any]) -> None:  # an interrupted run still leaves its epochs so far
        if math.isfinite(run["final_test_acc"]):  # epochs without an evaluation (eval_every > 1) are not saved
            save_record({**record, "complete": False, "runs": [run]}, out)

    run = train_run(
        "xception_cifar",
        XceptionConfig.cifar(),
        train_config,
        data,
        device=device,
        progress=progress,
        on_epoch=save_partial if out is not None else None,
    )
    record["runs"].append(run)
    record["complete"] = True
    if out is not None:
        save_record(record, out)
    return record


def run_ablations(
    data: Any,
    train_config: Any,
    *,
    device: torch.device | str,
    base: XceptionConfig,
    seeds: int = 3,
    experiments: Sequence[str] = tuple(EXPERIMENT_FIELDS),
    budget_s: float | None = None,
    max_epochs: int = 15,
    out: str | Path | None = None,
    preview: bool = False,
    command: str | None = None,
    clock_start: float | None = None,
    timing: tuple[int, int] = (2, 5),
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train every ablation of ``base`` for ``seeds`` seeds and record them.

    Runs go seed by seed (every config with seed 0, then seed 1, ...), so a sweep that
    stops early still compares every config. The record is rewritten after every run.

    Args:
        data: CIFAR arrays.
        train_config: The training recipe; with ``budget_s`` its ``epochs`` and
            ``train_subset`` are replaced by :func:`size_sweep`'s choice.
        device: Where to train.
        base: The base config (:func:`sweep_base` on a GPU, :func:`preview_base` on a CPU).
        seeds: Seeds per config (``train_config.seed + i`` for ``i < seeds``).
        experiments: Which experiments to include.
        budget_s: Seconds for the whole sweep counted from ``clock_start`` (data loading
            and the step-time measurements included); ``None`` keeps ``train_config``'s epochs.
            Runs stop once 125% of it is spent and the record says ``complete: false``.
        max_epochs: Upper bound on the sized epochs.
        out: Where to write the record (``None``: do not write).
        preview: Whether this is a CPU preview (recorded as such).
        command: The command line to record (default: this process's).
        clock_start: ``time.perf_counter()`` at the start of the sweep (default: now).
        timing: ``(warmup, steps)`` of each config's step-time measurement.
        log: Where progress lines go.
    """
    start = time.perf_counter() if clock_start is None else clock_start
    device = torch.device(device)
    points = ablations(base, experiments)
    record = new_record("ablations", data, device, preview=preview, command=command)

    step_times = []
    costs = [complexity(point.config) for point in points]
    for point in points:
        t = measure_step_time(
            point.config,
            batch_size=train_config.batch_size,
            device=device,
            amp=train_config.amp,
            channels_last=train_config.channels_last,
            warmup=timing[0],
            steps=timing[1],
        )
        step_times.append(t)
        log(f"step time {point.name:>18}: {1000 * t:8.1f} ms at batch {train_config.batch_size}")

    sizing: dict[str, Any] = {"step_times_s": dict(zip((p.name for p in points), step_times)), "seeds": seeds}
    if budget_s is not None:
        left = budget_s - (time.perf_counter() - start)
        size = size_sweep(
            step_times,
            seeds=seeds,
            budget_s=left,
            train_size=min(train_config.train_subset or len(data.train_labels), len(data.train_labels)),
            test_size=min(train_config.test_subset or len(data.test_labels), len(data.test_labels)),
            batch_size=train_config.batch_size,
            max_epochs=max_epochs,
        )
        train_config = dataclasses.replace(train_config, epochs=size.epochs, train_subset=size.train_subset or train_config.train_subset)
        sizing.update(**dataclasses.asdict(size), sweep_budget_s=budget_s)  # size.budget_s: what was left for the runs
        log(f"sized: {size.epochs} epoch(s), train subset {size.train_subset}, predicted {size.predicted_s:.0f} s of {left:.0f} s")
    sizing.update(epochs=train_config.epochs, train_subset=train_config.train_subset)
    record["sizing"] = sizing

    stopped = False
    for i in range(seeds):
        for point, t, cost in zip(points, step_times, costs):
            if budget_s is not None and time.perf_counter() - start > 1.25 * budget_s:
                log(f"budget spent: stopping before {point.name}, seed {train_config.seed + i}")
                stopped = True
                break
            cfg = dataclasses.replace(train_config, seed=train_config.seed + i)
            run = train_run(point.name, point.config, cfg, data, device=device, changes=point.changes, step_time_s=t, cost=cost)
            record["runs"].append(run)
            log(f"{point.name:>18} seed {cfg.seed}: test accuracy {100 * run['final_test_acc']:.2f}% in {run['wall_time_s']:.1f} s")
            if out is not None:
                save_record(record, out)
        if stopped:
            break
    record["complete"] = not stopped
    record["sizing"]["total_s"] = time.perf_counter() - start
    if out is not None:
        save_record(record, out)
    return record


# ====================================================================== summaries and figures


def summarize(record: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per config: accuracy over seeds (mean, sample std, min, max), params, MACs, time.

    Rows keep the record's order; ``std`` is 0 for a single seed.
    """
    groups: dict[str, list[dict[str, Any]]] = {}
    for run in record["runs"]:
        groups.setdefault(run["name"], []).append(run)
    rows = []
    for name, runs in groups.items():
        accs = [r["final_test_acc"] for r in runs]
        rows.append(
            {
                "name": name,
                "changes": runs[0]["changes"],
                "segments": runs[0]["model_config"]["segments"],
                "seeds": len(runs),
                "acc_mean": statistics.fmean(accs),
                "acc_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                "acc_min": min(accs),
                "acc_max": max(accs),
                "params": runs[0]["params"],
                "macs": runs[0]["macs"],
                "step_time_s": runs[0]["step_time_s"],
                "step_batch_size": runs[0]["step_batch_size"],
                "wall_time_s": statistics.fmean(r["wall_time_s"] for r in runs),
            }
        )
    return rows


def format_summary(record: dict[str, Any]) -> str:
    """The summary as an aligned text table."""
    lines = [f"{'config':<18}{'seeds':>6}{'test acc (%)':>17}{'params':>12}{'MACs':>10}{'ms/step':>10}"]
    for row in summarize(record):
        acc = f"{100 * row['acc_mean']:.2f} ± {100 * row['acc_std']:.2f}"
        lines.append(
            f"{row['name']:<18}{row['seeds']:>6}{acc:>17}{row['params']:>12,}"
            f"{row['macs'] / 1e6:>9.1f}M{1000 * row['step_time_s']:>10.1f}"
        )
    return "\n".join(lines)


def effects(record: dict[str, Any]) -> list[dict[str, Any]]:
    """Every config against the base: the accuracy difference, its standard error, and the cost ratios.

    Returns:
        One row per config other than ``"base"``, in the record's order: ``name``, ``seeds``
        and ``base_seeds``, ``delta`` (mean final test accuracy minus the base's, a fraction),
        ``se`` (its standard error, ``sqrt(s_a^2 / n_a + s_b^2 / n_b)``; NaN when either side
        has a single seed), and ``params_ratio``, ``macs_ratio``, ``step_time_ratio`` (this
        config over the base).

    Raises:
        ValueError: The record has no ``"base"`` runs.
    """
    rows = {row["name"]: row for row in summarize(record)}
    if "base" not in rows:
        raise ValueError(f"expected a record with 'base' runs, got configs {sorted(rows)}")
    base = rows["base"]
    out = []
    for name, row in rows.items():
        if name == "base":
            continue
        se = math.nan
        if row["seeds"] > 1 and base["seeds"] > 1:
            se = math.sqrt(row["acc_std"] ** 2 / row["seeds"] + base["acc_std"] ** 2 / base["seeds"])
        out.append(
            {
                "name": name,
                "seeds": row["seeds"],
                "base_seeds": base["seeds"],
                "delta": row["acc_mean"] - base["acc_mean"],
                "se": se,
                "params_ratio": row["params"] / base["params"],
                "macs_ratio": row["macs"] / base["macs"],
                "step_time_ratio": row["step_time_s"] / base["step_time_s"],
            }
        )
    return out


def format_effects(records: dict[str, dict[str, Any]]) -> str:
    """Side by side, for several records of the same sweep: each config's accuracy difference from the base.

    Args:
        records: Column label -> record, e.g. ``{"2 epochs": a, "4 epochs": b}``. The cost
            ratios (MACs, measured step time) are those of the first record.

    Returns:
        The table as aligned text. An entry ``+1.23 ± 0.45 (3)`` is a difference of +1.23
        percentage points with its standard error, over 3 seeds (``±  n/a`` with a single seed).
    """
    if not records:
        raise ValueError("expected at least one record")
    tables = {label: {row["name"]: row for row in effects(record)} for label, record in records.items()}
    first = next(iter(tables.values()))
    names = list(first) + [n for table in tables.values() for n in table if n not in first]
    header = f"{'vs base':<18}" + "".join(f"{label:>22}" for label in tables) + f"{'MACs x':>9}{'time x':>9}"
    lines = [header]
    for name in dict.fromkeys(names):
        cells = []
        for table in tables.values():
            row = table.get(name)
            if row is None:
                cells.append(f"{'-':>22}")
                continue
            se = "  n/a" if math.isnan(row["se"]) else f"{100 * row['se']:5.2f}"
            cells.append(f"{100 * row['delta']:+8.2f} ± {se} ({row['seeds']})".rjust(22))
        cost = first.get(name)
        ratios = f"{cost['macs_ratio']:>9.2f}{cost['step_time_ratio']:>9.2f}" if cost else f"{'':>18}"
        lines.append(f"{name:<18}" + "".join(cells) + ratios)
    return "\n".join(lines)


def reference_summary(record: dict[str, Any], *, target_acc: float = 0.94, target_s: float = 120.0) -> dict[str, Any]:
    """The reference run against its goal (test accuracy ``target_acc`` within ``target_s`` seconds).

    Returns:
        ``final_test_acc``, ``best_test_acc`` and ``best_epoch`` (1-based), ``final_train_acc``,
        ``epochs``, ``wall_time_s``, ``seconds_per_epoch`` (wall time over epochs, evaluation
        included), ``epochs_in_target`` (how many such epochs fit in ``target_s``),
        ``met_accuracy`` and ``met_time``.
    """
    if record["experiment"] != "cifar10" or not record["runs"]:
        raise ValueError(f"expected a 'cifar10' record with a run, got experiment {record['experiment']!r}")
    run = record["runs"][0]
    history = run["history"]
    test_acc = history["test_acc"]
    best = max(range(len(test_acc)), key=lambda i: test_acc[i])
    per_epoch = run["wall_time_s"] / len(test_acc)
    return {
        "final_test_acc": run["final_test_acc"],
        "best_test_acc": test_acc[best],
        "best_epoch": best + 1,
        "final_train_acc": history["train_acc"][-1],
        "epochs": len(test_acc),
        "wall_time_s": run["wall_time_s"],
        "seconds_per_epoch": per_epoch,
        "epochs_in_target": int(target_s // per_epoch),
        "met_accuracy": run["final_test_acc"] >= target_acc,
        "met_time": run["wall_time_s"] <= target_s,
    }


def experiment_rows(record: dict[str, Any], experiment: str) -> list[dict[str, Any]]:
    """The summary rows that belong to one experiment (the base included).

    The spectrum's rows are sorted from 1 segment (regular) to ``None`` (depthwise).
    """
    if experiment not in EXPERIMENT_FIELDS:
        raise ValueError(f"unknown experiment {experiment!r}; expected one of {list(EXPERIMENT_FIELDS)}")
    rows = [row for row in summarize(record) if experiment in experiments_of(row["changes"])]
    if experiment == "segments":
        rows.sort(key=lambda row: math.inf if row["segments"] is None else row["segments"])
    return rows


def point_label(row: dict[str, Any], experiment: str) -> str:
    """How a config is named inside one experiment: its value of the experiment's field."""
    field = EXPERIMENT_FIELDS[experiment]
    value = row["changes"].get(field)
    if value is None:  # the base
        value = {"residual": True, "activation": "none", "segments": "None (depthwise)"}[experiment]
    short = "activation" if field == "intermediate_activation" else field
    return f"{short}={value}"


def _seed_curves(record: dict[str, Any], name: str, key: str) -> list[list[float]]:
    return [run["history"][key] for run in record["runs"] if run["name"] == name]


def plot_experiment(record: dict[str, Any], experiment: str, title: str | None = None):  # -> matplotlib Figure
    """Test-accuracy curves (mean over seeds, band = min..max) and final accuracy (mean ± std).

    Args:
        record: A validated record.
        experiment: ``"residual"``, ``"activation"`` or ``"segments"``.
        title: The figure's title (default: the experiment and the hardware).
    """
    import matplotlib.pyplot as plt

    rows = experiment_rows(record, experiment)
    fig, (ax_curve, ax_final) = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": (3, 2)})
    colors = plt.get_cmap("viridis")(torch.linspace(0, 0.9, len(rows)).tolist())
    for row, color in zip(rows, colors):
        curves = _seed_curves(record, row["name"], "test_acc")
        n = min(len(c) for c in curves)
        per_epoch = list(zip(*(c[:n] for c in curves)))
        epochs = range(1, n + 1)
        label = point_label(row, experiment)
        ax_curve.plot(epochs, [100 * statistics.fmean(v) for v in per_epoch], marker="o", ms=3, color=color, label=label)
        ax_curve.fill_between(epochs, [100 * min(v) for v in per_epoch], [100 * max(v) for v in per_epoch], color=color, alpha=0.2)
    ax_curve.set_xlabel("epoch")
    ax_curve.set_ylabel("test accuracy (%)")
    ax_curve.legend(fontsize=8)
    ax_curve.grid(alpha=0.3)
    labels = [point_label(r, experiment).split("=", 1)[1] for r in rows]
    positions = range(len(rows))
    ax_final.bar(positions, [100 * r["acc_mean"] for r in rows], yerr=[100 * r["acc_std"] for r in rows], color=colors, capsize=4, alpha=0.8)
    for pos, row in zip(positions, rows):
        accs = [100 * r["final_test_acc"] for r in record["runs"] if r["name"] == row["name"]]
        ax_final.plot([pos] * len(accs), accs, "k.", ms=5)
    low = min(100 * r["acc_min"] for r in rows)
    high = max(100 * r["acc_max"] for r in rows)
    pad = max(1.0, 0.2 * (high - low))
    ax_final.set_ylim(max(0.0, low - pad), min(100.0, high + pad))
    ax_final.set_xticks(list(positions), labels, rotation=30 if experiment == "segments" else 0, fontsize=8)
    ax_final.set_xlabel(EXPERIMENT_FIELDS[experiment])
    ax_final.set_ylabel("final test accuracy (%)")
    ax_final.grid(alpha=0.3, axis="y")
    fig.suptitle(title if title is not None else f"{experiment}: {_where(record)}", fontsize=10)
    fig.tight_layout()
    return fig


def plot_spectrum(record: dict[str, Any], title: str | None = None):  # -> matplotlib Figure
    """The spectrum: final accuracy against segments, against MACs, and against measured time per step.

    Error bars are the standard deviation over seeds; the depthwise point (``segments=None``)
    is drawn at the right end of the segments axis.
    """
    import matplotlib.pyplot as plt

    rows = experiment_rows(record, "segments")
    finite = [r["segments"] for r in rows if r["segments"] is not None]
    last = max(finite, default=1)
    xs = [math.log2(r["segments"]) if r["segments"] is not None else math.log2(last) + 1 for r in rows]
    accs = [100 * r["acc_mean"] for r in rows]
    errs = [100 * r["acc_std"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    axes[0].errorbar(xs, accs, yerr=errs, fmt="o-", capsize=4)
    axes[0].set_xticks(xs, [str(r["segments"]) if r["segments"] is not None else "per\nchannel" for r in rows])
    axes[0].set_xlabel("segments (1 = regular convolution)")
    for ax, key, scale, label in (
        (axes[1], "macs", 1e6, "MACs per image (millions)"),
        (axes[2], "step_time_s", 1e-3, f"measured time per training step (ms, batch {rows[0]['step_batch_size'] if rows else '?'})"),
    ):
        values = [r[key] / scale for r in rows]
        ax.errorbar(values, accs, yerr=errs, fmt="o", capsize=4)
        for v, a, r in zip(values, accs, rows):
            ax.annotate(str(r["segments"]) if r["segments"] is not None else "dw", (v, a), textcoords="offset points", xytext=(4, 4), fontsize=8)
        _log_axis(ax)
        ax.set_xlabel(label)
    for ax in axes:
        ax.set_ylabel("final test accuracy (%)")
        ax.grid(alpha=0.3)
    fig.suptitle(title if title is not None else f"The spectrum: {_where(record)}", fontsize=10)
    fig.tight_layout()
    return fig


def _log_axis(ax: Any) -> None:
    """A logarithmic x axis labelled with plain numbers (1, 2, 5, 10, 20, ...)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _where(record: dict[str, Any]) -> str:
    env = record["environment"]
    kind = "CPU PREVIEW" if record["preview"] else "recorded"
    return f"{kind}, {env['device_name']}, torch {env['torch']}, {env['date'][:10]}"


# ====================================================================== command line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m xception_lib.chapters.experiments", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("cifar10", "the full-schedule reference run of xl.xception_cifar"),
        ("ablations", "the residual / activation / segments sweep"),
    ):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--out", required=True, help="where to write the JSON record")
        p.add_argument("--data-root", default=None, help="CIFAR-10 location (default: $XCEPTION_DATA)")
        p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
        p.add_argument("--preview", action="store_true", help="a labelled CPU-sized preview (never a GPU result)")
        p.add_argument("--epochs", type=int, default=None, help="override the schedule's epochs")
        p.add_argument("--batch-size", type=int, default=None)
        p.add_argument("--train-subset", type=int, default=None, help="train on this many images")
        p.add_argument("--test-subset", type=int, default=None, help="evaluate on this many test images")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--no-progress", action="store_true")
        p.add_argument(
            "--cudnn-benchmark",
            action=argparse.BooleanOptionalAction,
            default=True,
            help="let cuDNN time its algorithms for each shape (CUDA only; default on; recorded)",
        )
        if name == "cifar10":
            p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None, help="torch.compile the model")
        else:
            p.add_argument("--seeds", type=int, default=3, help="seeds per config (default 3)")
            p.add_argument("--budget-s", type=float, default=480.0, help="seconds for the whole sweep (default 480)")
            p.add_argument("--max-epochs", type=int, default=15)
            p.add_argument("--width", type=float, default=0.5, help="width multiplier of the sweep's base")
            p.add_argument("--middle-blocks", type=int, default=4)
            p.add_argument("--experiments", default="residual,activation,segments")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: ``python -m xception_lib.chapters.experiments {cifar10,ablations} --out PATH``."""
    clock_start = time.perf_counter()
    args = _parser().parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cpu" and not args.preview:
        print("No GPU: the full schedule is meant for one. Pass --preview for a labelled CPU preview.", file=sys.stderr)
        return 2
    if args.preview and Path(args.out).name in GPU_RESULT_NAMES:
        print(f"A preview must not be written as {Path(args.out).name}: that name is for GPU results.", file=sys.stderr)
        return 2
    command = _command_line() if argv is None else shlex.join(["python", "-m", "xception_lib.chapters.experiments", *argv])
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = args.cudnn_benchmark  # a command's own setting; environment() records it

    from xception_lib import data as xd
    from xception_lib import train as tr

    data = xd.load_cifar("cifar10", root=args.data_root)
    overrides: dict[str, Any] = {"seed": args.seed}
    for key in ("epochs", "batch_size", "train_subset", "test_subset"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    if args.command == "cifar10":
        if args.compile is not None:
            overrides["compile"] = args.compile
        record = run_reference(
            data, device=device, out=args.out, preview=args.preview, progress=not args.no_progress, command=command, **overrides
        )
        run = record["runs"][0]
        print(f"test accuracy {100 * run['final_test_acc']:.2f}% in {run['wall_time_s']:.1f} s -> {args.out}")
        return 0

    if args.preview:
        base = preview_base()
        train_config = preview_train_config(device, **overrides)
    else:
        base = sweep_base(args.width, args.middle_blocks)
        train_config = tr.recommended_config(device, compile=False, **overrides)
    record = run_ablations(
        data,
        train_config,
        device=device,
        base=base,
        seeds=args.seeds,
        experiments=[e for e in args.experiments.split(",") if e],
        budget_s=None if args.epochs is not None or args.preview else args.budget_s,
        max_epochs=args.max_epochs,
        out=args.out,
        preview=args.preview,
        command=command,
        clock_start=clock_start,
        timing=(1, 2) if args.preview else (2, 5),
    )
    print(format_summary(record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
