"""What a training run recorded: per-epoch metrics, per-step losses and where it ran."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

_EPOCH_FIELDS = ("train_loss", "train_acc", "test_loss", "test_acc", "lr", "images_per_sec", "epoch_time")


@dataclass
class History:
    """Metrics of a training run, one entry per epoch (and per step for the training loss).

    Attributes:
        train_loss: Mean training loss of each epoch.
        train_acc: Training accuracy of each epoch (on augmented images, in train mode).
        test_loss: Test loss after each epoch (``nan`` when not evaluated).
        test_acc: Test accuracy after each epoch (``nan`` when not evaluated).
        lr: Learning rate at the end of each epoch.
        images_per_sec: Training throughput of each epoch (evaluation excluded).
        epoch_time: Seconds of training in each epoch (evaluation excluded).
        step_loss: Training loss of every step, for smooth curves.
        step_lr: Learning rate of every step.
        meta: Everything else worth keeping: the config, the environment, the model size.
    """

    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    test_acc: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    images_per_sec: list[float] = field(default_factory=list)
    epoch_time: list[float] = field(default_factory=list)
    step_loss: list[float] = field(default_factory=list)
    step_lr: list[float] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def epochs(self) -> int:
        """Number of completed epochs."""
        return len(self.train_loss)

    @property
    def steps(self) -> int:
        """Number of completed optimizer steps."""
        return len(self.step_loss)

    @property
    def final_test_acc(self) -> float | None:
        """Test accuracy after the last epoch, or ``None`` before the first."""
        return self.test_acc[-1] if self.test_acc else None

    @property
    def train_time(self) -> float:
        """Seconds spent training (evaluation excluded), summed over epochs."""
        return float(sum(self.epoch_time))

    def append_epoch(self, **metrics: float) -> None:
        """Record one epoch; every per-epoch field must be given."""
        missing = set(_EPOCH_FIELDS) - set(metrics)
        extra = set(metrics) - set(_EPOCH_FIELDS)
        if missing or extra:
            raise ValueError(f"expected exactly the metrics {_EPOCH_FIELDS}, missing {sorted(missing)}, extra {sorted(extra)}")
        for name in _EPOCH_FIELDS:
            getattr(self, name).append(float(metrics[name]))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary (``nan`` stays a float; ``json.dump`` writes it as ``NaN``)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> History:
        """Inverse of :meth:`to_dict`; unknown keys and values of the wrong type are errors naming the field."""
        if not isinstance(data, dict):
            raise TypeError(f"a History must be read from a dict, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown History fields {sorted(unknown)}; expected a subset of {sorted(names)}")
        if not isinstance(data.get("meta", {}), dict):
            raise TypeError(f"History field meta must be a dict, got {type(data['meta']).__name__}")
        values: dict[str, list[float]] = {}
        for name, column in data.items():
            if name == "meta":
                continue
            if not isinstance(column, list):
                raise TypeError(f"History field {name} must be a list of numbers, got {type(column).__name__}")
            for i, value in enumerate(column):
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise TypeError(f"History field {name}[{i}] must be a number, got {value!r}")
            values[name] = [float(v) for v in column]
        return cls(**values, meta=dict(data.get("meta", {})))

    def summary(self) -> str:
        """One line: epochs, steps, final accuracies, training time and throughput."""
        if not self.epochs:
            return "no epoch completed"
        return (
            f"{self.epochs} epochs ({self.steps} steps): train acc {self.train_acc[-1]:.1%}, "
            f"test acc {self.test_acc[-1]:.1%}, {self.train_time:.1f} s of training, "
            f"{self.images_per_sec[-1]:,.0f} images/s in the last epoch"
        )
