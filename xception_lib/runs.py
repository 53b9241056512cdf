"""Training runs for the ledger: the models trained, the recipes, step times and :func:`train_run`.

A run trains one model (an :class:`~xception_lib.XceptionConfig` or the ResNet-18 control) with
:func:`xception_lib.train.fit` and returns an :class:`xception_lib.ledger.Run` with everything it
measured; chapter 5's recipe race and chapter 6's ablations are made of such runs.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shlex
import statistics
import sys
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from xception_lib import ledger
from xception_lib.config import XceptionConfig
from xception_lib.model import Xception
from xception_lib.timing import Timing, clock, measure


def build_model(architecture: XceptionConfig | str, num_classes: int = 10) -> nn.Module:
    """An :class:`~xception_lib.Xception` of the config, or ``"resnet18"`` (:func:`resnet18_cifar`)."""
    if isinstance(architecture, XceptionConfig):
        return Xception(architecture)
    if architecture == "resnet18":
        return resnet18_cifar(num_classes)
    raise ValueError(f"expected an XceptionConfig or 'resnet18', got {architecture!r}")


def resnet18_cifar(num_classes: int = 10) -> nn.Module:
    """The control: torchvision's ResNet-18 in its CIFAR form (a 3x3 stride-1 stem, no max-pool), 11.2M parameters.

    The first stage keeps the 32x32 input, as in the CIFAR ResNets that reach 94-95% in about 30 epochs.
    """
    from torchvision.models import resnet18

    model = resnet18(num_classes=num_classes)
    model.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


def complexity(architecture: XceptionConfig | str, image_size: int = 32) -> dict[str, int | None]:
    """``params`` of the built model and ``macs`` of one image (fvcore; ``None`` where fvcore is missing)."""
    model = build_model(architecture)
    try:
        from xception_lib.complexity import count_macs

        macs: int | None = count_macs(model, (1, 3, image_size, image_size))
    except ImportError:  # a bare GPU machine
        macs = None
    return {"params": sum(p.numel() for p in model.parameters()), "macs": macs}


def measure_step_time(
    architecture: XceptionConfig | str,
    *,
    batch_size: int,
    device: torch.device | str = "cpu",
    image_size: int = 32,
    amp: str = "off",
    channels_last: bool = False,
    warmup: int = 2,
    steps: int = 5,
    budget_s: float | None = None,
) -> Timing:
    """The seconds of single :func:`~xception_lib.train.train_step` calls of a fresh model on random data.

    Timed by :func:`xception_lib.timing.measure` (``steps`` repeats within ``budget_s``, the device synchronised);
    the global random state is left alone.
    """
    from xception_lib.train import resolve_amp, train_step

    if batch_size < 1:
        raise ValueError(f"expected batch_size >= 1, got {batch_size}")
    device = torch.device(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_model(architecture).to(device).to(memory_format=fmt).train()
        x = torch.randn(batch_size, 3, image_size, image_size).to(device, memory_format=fmt)
        y = torch.randint(0, 10, (batch_size,), device=device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    dtype = resolve_amp(amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    step = lambda: train_step(model, x, y, optimizer, scaler, dtype)  # noqa: E731
    return measure(step, warmup=warmup, repeats=steps, budget_s=budget_s, device=device)


def estimate(step: Timing, steps: int) -> str:
    """A training-time estimate from a measured step: the median and the range of the steps, times ``steps``."""
    low, mid, high = (steps * t / 60 for t in (min(step.times), step.median, max(step.times)))
    cut = " (the time budget cut the measurement short)" if step.truncated else ""
    return (
        f"{1000 * step.median:.0f} ms per step (median of {len(step.times)}; fastest {1000 * min(step.times):.0f} ms, "
        f"slowest {1000 * max(step.times):.0f} ms){cut}\nESTIMATE for {steps:,} steps: {mid:.1f} min "
        f"(fastest to slowest step: {low:.1f}-{high:.1f} min),\nevaluation not included"
    )


@dataclass(frozen=True)
class Recipe:
    """A training recipe: ``TrainConfig`` and model changes, plus what ``fit`` does not do itself."""

    name: str
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields replaced in recommended_config
    model: dict[str, Any] = field(default_factory=dict)  # XceptionConfig fields replaced (the control ignores them)
    cutout: int = 0  # side of a square zeroed at a random place of each training image
    ema: float | None = None  # decay of a weight (and BN statistics) average, updated every step, evaluated at the end
    tta_flip: bool = False  # also evaluate the mean prediction of each test image and its mirror image
    why: str = ""  # where the choice comes from

    def extras(self) -> dict[str, Any]:
        """What the recipe adds beyond ``TrainConfig`` (``ledger.Run.extras``)."""
        out = {"cutout": self.cutout, "ema": self.ema, "tta_flip": self.tta_flip, "model": self.model}
        return {k: v for k, v in out.items() if v}


_LR: dict[str, Any] = {
    "lr": 0.4
}  # 0.1 per 128 images (CIFAR ResNets), scaled linearly to batch 512; the recorded run had 0.2
_REG: dict[str, Any] = {
    "cutout": 12,
    "ema": 0.999,
    "tta_flip": True,
}  # each also records the accuracy without EMA and without flips
RECIPES: tuple[Recipe, ...] = (
    Recipe(
        "lr0.4+cutout12+ema+flip",
        _LR,
        **_REG,
        why="Cutout (DeVries & Taylor 2017), hlb-CIFAR10's EMA, against the overfit",
    ),
    Recipe("lr0.4+flip", _LR, tta_flip=True, why="linear scaling of the learning rate; airbench94's test-time flips"),
    Recipe(
        "lr0.4+cutout12+ema+flip+40ep+compile",
        {**_LR, "epochs": 40, "compile": True},
        **_REG,
        why="more epochs in the same time, paid for by torch.compile",
    ),
    Recipe(
        "lr0.4+ls0.2+cutout12+ema+flip", {**_LR, "label_smoothing": 0.2}, **_REG, why="airbench94's label smoothing 0.2"
    ),
    Recipe("lr0.4+dropout0.3+cutout12+ema+flip", _LR, {"dropout": 0.3}, **_REG, why="dropout before the classifier"),
    Recipe("baseline+flip", tta_flip=True, why="the recorded reference recipe (89.7% on an H100, 99.4% train acc.)"),
)
"""The recipe race's candidates for ``xception_cifar``, most promising first, grounded in fast CIFAR-10 training."""


def recipe(name: str) -> Recipe:
    """The recipe of :data:`RECIPES` called ``name``."""
    by_name = {r.name: r for r in RECIPES}
    if name not in by_name:
        raise ValueError(f"unknown recipe {name!r}; expected one of {list(by_name)}")
    return by_name[name]


class WithExtras(nn.Module):
    """``model`` with a recipe's Cutout (of training batches) and weight EMA (updated every training step).

    In eval mode it is ``model``; the average is kept outside the module's children, away from the optimizer.
    """

    def __init__(self, model: nn.Module, cutout: int = 0, ema: float | None = None) -> None:
        super().__init__()
        self.model, self.cutout, self.decay = model, cutout, ema
        self.config = getattr(model, "config", None)
        self._ema: list[nn.Module] = []  # a list, so that nn.Module does not register it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.decay is not None:
            self.update_ema()  # the weights after the previous step
        if self.training and self.cutout:
            n, _, h, w = x.shape
            top = torch.randint(-self.cutout // 2, h - self.cutout // 2, (n, 1, 1), device=x.device)
            left = torch.randint(-self.cutout // 2, w - self.cutout // 2, (n, 1, 1), device=x.device)
            rows = torch.arange(h, device=x.device).view(1, h, 1)
            cols = torch.arange(w, device=x.device).view(1, 1, w)
            inside = (rows >= top) & (rows < top + self.cutout) & (cols >= left) & (cols < left + self.cutout)
            x = x * (~inside).unsqueeze(1).to(x.dtype)  # 0 is the mean of normalised images
        return self.model(x)

    @torch.compiler.disable
    @torch.no_grad()
    def update_ema(self) -> None:
        """Move the average towards the current weights (the first call copies them)."""
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        if not self._ema:
            self._ema.append(AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(self.decay), use_buffers=True))
        self._ema[0].update_parameters(self.model)  # type: ignore[operator]

    @property
    def averaged(self) -> nn.Module:
        module: nn.Module = self._ema[0].module  # type: ignore[assignment]
        return module


def test_accuracy(model: nn.Module, data: Any, *, device: torch.device | str, flip: bool = False) -> float:
    """Accuracy on ``data``'s test images; with ``flip``, of the average prediction of each image and its mirror."""
    from xception_lib.train import predict

    kw = {"device": device, "mean": data.mean, "std": data.std}
    probs = predict(model, data.test_images, **kw)
    if flip:
        probs = probs + predict(model, data.test_images.flip(-1), **kw)
    return (probs.argmax(1) == data.test_labels).float().mean().item()


def train_run(
    name: str,
    architecture: XceptionConfig | str,
    train_config: Any,
    data: Any,
    *,
    device: torch.device | str,
    kind: str = "ablation",
    study: str = "ablations",
    changes: dict[str, Any] | None = None,
    extras: Recipe | None = None,
    step_time: bool = True,
    command: str | None = None,
    notes: dict[str, Any] | None = None,
    progress: bool = False,
) -> ledger.Run:
    """Train one model (``XceptionConfig`` or ``"resnet18"``) with :func:`~xception_lib.train.fit`; return its run.

    The initial weights come from ``train_config.seed`` (the global random state is left alone);
    ``extras``' Cutout, EMA and test-time flips apply; ``step_time`` first times a fresh model's step.
    """
    from xception_lib import train as tr
    from xception_lib.provenance import environment

    device = torch.device(device)
    extras = extras or Recipe("plain")
    cost = complexity(architecture)
    step_s = None
    if step_time:
        step_s = measure_step_time(
            architecture,
            batch_size=train_config.batch_size,
            device=device,
            amp=train_config.amp,
            channels_last=train_config.channels_last,
        ).median
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(train_config.seed)
        model = build_model(architecture, data.num_classes)
    extra = WithExtras(model, extras.cutout, extras.ema) if extras.cutout or extras.ema else None
    trained = extra or model
    elapsed = clock()
    history = tr.fit(trained, data, train_config, device=device, progress=progress)
    wall = elapsed()
    test = data.subset(test=train_config.test_subset, seed=train_config.seed) if train_config.test_subset else data
    metrics = {}
    if extras.ema:
        assert extra is not None
        extra.update_ema()  # the last step
        metrics["ema_test_acc"] = test_accuracy(extra.averaged, test, device=device)
    if extras.tta_flip:
        metrics["tta_test_acc"] = test_accuracy(model, test, device=device, flip=True)
        if extra is not None and extras.ema:
            metrics["ema_tta_test_acc"] = test_accuracy(extra.averaged, test, device=device, flip=True)
    speeds = [s for s in history.images_per_sec if s > 0]
    as_dict = dataclasses.asdict(architecture) if isinstance(architecture, XceptionConfig) else None
    return ledger.Run(
        kind=kind,
        study=study,
        name=name,
        model="xception" if as_dict is not None else str(architecture),
        model_config=json.loads(json.dumps(as_dict)) if as_dict is not None else {},
        changes=dict(changes or {}),
        train_config=dataclasses.asdict(train_config),
        seed=int(train_config.seed),
        epochs=history.epochs,
        params=int(cost["params"] or 0),
        macs=cost["macs"],
        final_test_acc=float(history.test_acc[-1]),
        wall_time_s=wall,
        images_per_sec=float(statistics.median(speeds)) if speeds else math.nan,
        history=history,
        environment=environment(device),
        data={
            "name": data.name,
            "source": str(data.source),
            "train_size": len(data.train_labels),
            "test_size": len(data.test_labels),
        },
        command=command if command is not None else shlex.join(sys.argv),
        step_time_s=step_s,
        step_batch_size=train_config.batch_size if step_time else None,
        extras=extras.extras(),
        metrics=metrics,
        notes=dict(notes or {}),
        preview=bool(train_config.is_preview or device.type != "cuda"),
    )
