"""What a training run recorded: per-epoch metrics, per-step losses and where it ran."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from xception_lib.provenance import check, from_dict

EPOCH_FIELDS = ("train_loss", "train_acc", "test_loss", "test_acc", "lr", "images_per_sec", "epoch_time")


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the message names the step."""


@dataclass
class History:
    """Metrics of a training run, one entry per epoch (and per step for the training loss and learning rate)."""

    train_loss: list[float] = field(default_factory=list)  # mean training loss of each epoch
    train_acc: list[float] = field(default_factory=list)  # on augmented images, in train mode
    test_loss: list[float] = field(default_factory=list)  # after each epoch (nan when not evaluated)
    test_acc: list[float] = field(default_factory=list)  # after each epoch (nan when not evaluated)
    lr: list[float] = field(default_factory=list)  # at the end of each epoch
    images_per_sec: list[float] = field(default_factory=list)  # training throughput (evaluation excluded)
    epoch_time: list[float] = field(default_factory=list)  # seconds of training (evaluation excluded)
    step_loss: list[float] = field(default_factory=list)  # every step's training loss, for smooth curves
    step_lr: list[float] = field(default_factory=list)  # every step's learning rate
    meta: dict[str, Any] = field(default_factory=dict)  # everything else: the config, the environment, the model size

    @property
    def epochs(self) -> int:
        return len(self.train_loss)

    @property
    def steps(self) -> int:
        return len(self.step_loss)

    @property
    def train_time(self) -> float:
        return float(sum(self.epoch_time))

    def append_steps(self, losses: list[float], per_epoch: int) -> None:
        """Record the losses of the next steps (whose learning rates ``step_lr`` holds already), or raise a
        :class:`NonFiniteLossError` naming the first non-finite one's step, epoch and batch (``per_epoch`` steps an epoch)."""
        for step, loss in enumerate(losses, start=self.steps):
            if not math.isfinite(loss):
                epoch, batch = divmod(step, per_epoch)
                raise NonFiniteLossError(
                    f"non-finite training loss ({loss}) at step {step} (epoch {epoch + 1}, batch {batch + 1} of the "
                    f"epoch, lr {self.step_lr[step]:.4g}); lower the learning rate or enable grad_clip"
                )
        self.step_loss += losses

    def append_epoch(self, **metrics: float) -> None:
        """Record one epoch; every per-epoch field must be given."""
        missing, extra = set(EPOCH_FIELDS) - set(metrics), set(metrics) - set(EPOCH_FIELDS)
        if missing or extra:
            raise ValueError(f"expected the metrics {EPOCH_FIELDS}: missing {sorted(missing)}, extra {sorted(extra)}")
        for name in EPOCH_FIELDS:
            getattr(self, name).append(float(metrics[name]))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> History:
        """Inverse of ``to_dict``; unknown keys and values of the wrong type are errors naming the field."""
        history = from_dict(cls, data, "history")
        for f in fields(history):  # NaN and infinity are values: an epoch not evaluated, a diverged loss
            value = getattr(history, f.name)
            check(f"history.{f.name}", value, dict[str, Any] if f.name == "meta" else list[float], nan=True)
            setattr(history, f.name, dict(value) if f.name == "meta" else [float(v) for v in value])
        return history

    def summary(self) -> str:
        if not self.epochs:
            return "no epoch completed"
        return (
            f"{self.epochs} epochs ({self.steps} steps): train acc {self.train_acc[-1]:.1%}, "
            f"test acc {self.test_acc[-1]:.1%}, {self.train_time:.1f} s of training, "
            f"{self.images_per_sec[-1]:,.0f} images/s in the last epoch"
        )
