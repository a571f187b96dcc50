"""How long a run is in the schedule's own unit, and how warmup is carved out of it.

Conventions (written once, in docs/conventions.md too):
- An *update* is one change of the lr: an optimizer step with `interval=step`, an epoch with `interval=epoch`.
- `total` counts every update of the run, warmup included; a decay after a warmup of W updates lasts total - W.
- Keys ending in `_steps` count optimizer steps and keys ending in `_epochs` count epochs, in either mode;
  with `interval=epoch` a step count is rounded up to whole epochs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from src.schedules.core import Join, Schedule, Warmup

INTERVALS = ("step", "epoch")
WARMUP_SHAPES = ("linear", "exponential")


class ScheduleConfigError(ValueError):
    """A schedule parameter is out of range; the message names the key, the value and what is allowed."""


@dataclass(frozen=True)
class Timeline:
    """The run's length as the schedule sees it, and the base lr that absolute lrs are relative to."""

    interval: str
    steps_per_epoch: int
    epochs: int
    base_lr: float

    @property
    def total(self) -> int:
        """Updates in the whole run, warmup included."""
        return self.epochs * self.steps_per_epoch if self.interval == "step" else self.epochs

    def updates(self, *, steps: int | None = None, epochs: int | float | None = None) -> int:
        """Convert a count given in optimizer steps or in epochs to updates of this timeline."""
        if steps is not None:
            return int(steps) if self.interval == "step" else math.ceil(steps / self.steps_per_epoch)
        if epochs is not None:
            return round(epochs * self.steps_per_epoch) if self.interval == "step" else math.ceil(epochs)
        raise ValueError("give steps or epochs")

    def relative(self, lr: float) -> float:
        """An absolute lr (e.g. `final_lr`) as a multiplier of the optimizer's base lr."""
        return lr / self.base_lr

    def warmup_length(
        self,
        warmup_ratio: float = 0.0,
        warmup_steps: int | None = None,
        warmup_epochs: float | None = None,
    ) -> int:
        """Warmup updates: `warmup_steps`, else `warmup_epochs`, else ceil(total * warmup_ratio) (HF's rule)."""
        if warmup_steps is not None and warmup_epochs is not None:
            raise ScheduleConfigError(
                f"scheduler.warmup_steps={warmup_steps} and scheduler.warmup_epochs={warmup_epochs}: "
                "set at most one of them"
            )
        if not 0.0 <= warmup_ratio < 1.0:
            raise ScheduleConfigError(f"scheduler.warmup_ratio={warmup_ratio}: allowed is 0 <= warmup_ratio < 1")
        for key, value in (("warmup_steps", warmup_steps), ("warmup_epochs", warmup_epochs)):
            if value is not None and value < 0:
                raise ScheduleConfigError(f"scheduler.{key}={value}: allowed is a count >= 0")
        if warmup_steps is not None:
            length = self.updates(steps=warmup_steps)
        elif warmup_epochs is not None:
            length = self.updates(epochs=warmup_epochs)
        else:
            length = math.ceil(self.total * warmup_ratio)
        if length >= self.total:
            raise ScheduleConfigError(
                f"warmup of {length} {self.interval}s leaves nothing of a run of {self.total} {self.interval}s: "
                "allowed is a warmup shorter than the run"
            )
        return length

    def with_warmup(
        self,
        make_decay: Callable[[int], Schedule],
        *,
        interval: str = "step",
        warmup_ratio: float = 0.0,
        warmup_steps: int | None = None,
        warmup_epochs: float | None = None,
        warmup_start_factor: float | None = None,
        warmup_shape: str = "linear",
    ) -> Schedule:
        """A warmup joined in front of `make_decay(total - W)`; no warmup when W is 0.

        The default start factor is 1 / (W + 1): updates 0..W then run at 1/(W+1), 2/(W+1), ..., 1, so the
        first update is never wasted at lr 0. `interval` is accepted here because every scheduler config has it.
        """
        if interval not in INTERVALS:
            raise ScheduleConfigError(f"scheduler.interval={interval!r}: allowed values are {', '.join(INTERVALS)}")
        if warmup_shape not in WARMUP_SHAPES:
            raise ScheduleConfigError(
                f"scheduler.warmup_shape={warmup_shape!r}: allowed values are {', '.join(WARMUP_SHAPES)}"
            )
        length = self.warmup_length(warmup_ratio, warmup_steps, warmup_epochs)
        decay = make_decay(self.total - length)
        if length == 0:
            return decay
        start = 1.0 / (length + 1) if warmup_start_factor is None else float(warmup_start_factor)
        low = 0.0 if warmup_shape == "linear" else 1e-12
        if not low <= start <= 1.0 or (warmup_shape == "exponential" and start == 0.0):
            allowed = "0 <= f <= 1" if warmup_shape == "linear" else "0 < f <= 1 (exponential warmup)"
            raise ScheduleConfigError(f"scheduler.warmup_start_factor={start}: allowed is {allowed}")
        return Join(Warmup(length, start, warmup_shape), decay, length)
