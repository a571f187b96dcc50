"""How long a run is in the schedule's own unit, and how warmup is carved out of it.

Conventions (written once, in docs/conventions.md too):
- An *update* is one change of the lr: an optimizer step with `interval=step`, an epoch with `interval=epoch`.
- `total` counts every update of the run, warmup included; a decay after a warmup of W updates lasts total - W.
- Keys ending in `_steps` count optimizer steps and keys ending in `_epochs` count epochs, in either mode;
  with `interval=epoch` a step count is rounded up to whole epochs, with `interval=step` an epoch count becomes
  round(epochs * steps_per_epoch) steps.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

from src.config.rules import Rule, fraction, one_of
from src.schedules.core import Join, Schedule, Warmup

INTERVALS = ("step", "epoch")

# Shared by every schedule and independent of the run, so checked with the other keys rather than when the
# schedule is built (which waits for its inputs): a bad interval is named beside a bad trainer.epochs. A factory's
# own keys take their kinds from its annotations (src.config.validation.KINDS) and their ranges from its checks.
KEY_RULES: dict[str, Rule] = {
    "scheduler.interval": one_of(INTERVALS),
    "scheduler.warmup_ratio": fraction("warmup_ratio"),
}
WARMUP_SHAPES = ("linear", "exponential")


class ScheduleConfigError(ValueError):
    """A schedule parameter is out of range; the message names the key, the value and what is allowed."""


@dataclass(frozen=True)
class WarmupPlan:
    """A checked warmup: `length` updates ramping from `start` (times the peak) with `shape`."""

    length: int
    start: float
    shape: str


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

    def count(self, name: str, steps: float | None, epochs: float | None, default: int | None = None) -> int | None:
        """Updates given by the key pair `<name>_steps` / `<name>_epochs` (at most one set, >= 0), else `default`."""
        if steps is not None and epochs is not None:
            raise ScheduleConfigError(
                f"scheduler.{name}_steps={steps} and scheduler.{name}_epochs={epochs}: set at most one of them"
            )
        for key, value in ((f"{name}_steps", steps), (f"{name}_epochs", epochs)):
            if value is not None and not value >= 0:
                raise ScheduleConfigError(f"scheduler.{key}={value}: allowed is a count >= 0")
        if steps is not None:
            return self.updates(steps=steps)
        if epochs is not None:
            return self.updates(epochs=epochs)
        return default

    def epoch_updates(self, key: str, values: list[float]) -> tuple[int, ...]:
        """Epoch positions (milestones, boundaries) as update indices, checked to be > 0 and increasing."""
        if not values or any(not value > 0 for value in values) or any(b <= a for a, b in itertools.pairwise(values)):
            raise ScheduleConfigError(
                f"scheduler.{key}={list(values)}: allowed is a non-empty list of epochs > 0, strictly increasing"
            )
        return tuple(self.updates(epochs=value) for value in values)

    def relative(self, lr: float) -> float:
        """An absolute lr (e.g. `final_lr`) as a multiplier of the optimizer's base lr."""
        return lr / self.base_lr

    def warmup_length(
        self,
        warmup_ratio: float,
        warmup_steps: int | None,
        warmup_epochs: float | None,
        span: int | None = None,
    ) -> int:
        """Warmup updates: `warmup_steps`, else `warmup_epochs`, else ceil(span * warmup_ratio) (HF's rule).

        `span` is the schedule's length, warmup included (the whole run unless the schedule ends earlier).
        """
        span = self.total if span is None else span
        length = self.count("warmup", warmup_steps, warmup_epochs, default=math.ceil(span * warmup_ratio))
        if length >= span:
            keys = {"warmup_steps": warmup_steps, "warmup_epochs": warmup_epochs, "warmup_ratio": warmup_ratio}
            given = next(f"{key}={value}" for key, value in keys.items() if value is not None)
            raise ScheduleConfigError(
                f"scheduler.{given}: a warmup of {length} {self.interval}s leaves nothing of a schedule of {span} "
                f"{self.interval}s; allowed is a warmup shorter than the schedule"
            )
        return length

    def span(self, total_steps: int | None = None, total_epochs: float | None = None) -> int:
        """The schedule's own length (`total_steps` / `total_epochs`, warmup included), else the whole run."""
        span = self.count("total", total_steps, total_epochs, default=self.total)
        if span < 1:
            raise ScheduleConfigError(f"scheduler.total_*={span} updates: allowed is a schedule of at least 1 update")
        return span

    def warmup(
        self,
        *,
        interval: str,
        warmup_ratio: float,
        warmup_steps: int | None,
        warmup_epochs: float | None,
        warmup_start_factor: float | None,
        warmup_shape: str,
        span: int | None = None,
    ) -> WarmupPlan:
        """Check the common keys every scheduler config carries and resolve the warmup they describe.

        Their defaults live in conf/scheduler/shared/warmup.yaml, which every scheduler config extends.

        The default start factor is 1 / (W + 1): updates 0..W then run at 1/(W+1), 2/(W+1), ..., 1, so the
        first update is never wasted at lr 0. `interval` (the timeline's own) and the range of `warmup_ratio`
        are checked by src/config/validation.py with the other keys, as they do not depend on the run.
        """
        if warmup_shape not in WARMUP_SHAPES:
            raise ScheduleConfigError(
                f"scheduler.warmup_shape={warmup_shape!r}: allowed values are {', '.join(WARMUP_SHAPES)}"
            )
        length = self.warmup_length(warmup_ratio, warmup_steps, warmup_epochs, span)
        start = 1.0 / (length + 1) if warmup_start_factor is None else float(warmup_start_factor)
        if warmup_shape == "exponential" and not 0.0 < start <= 1.0:
            raise ScheduleConfigError(
                f"scheduler.warmup_start_factor={start}: allowed is 0 < f <= 1 (exponential warmup)"
            )
        if not 0.0 <= start <= 1.0:
            raise ScheduleConfigError(f"scheduler.warmup_start_factor={start}: allowed is 0 <= f <= 1")
        return WarmupPlan(length, start, warmup_shape)

    def with_warmup(
        self,
        make_decay: Callable[[int], Schedule],
        *,
        total_steps: int | None = None,
        total_epochs: float | None = None,
        **common,
    ) -> Schedule:
        """A warmup joined in front of `make_decay(span - W)`; no warmup when W is 0.

        `common` are the keys every scheduler config has (see `warmup`); `total_steps` / `total_epochs` end the
        schedule before the run does (the curve then stays at its last value).
        """
        span = self.span(total_steps, total_epochs)
        plan = self.warmup(span=span, **common)
        decay = make_decay(span - plan.length)
        if plan.length == 0:
            return decay
        return Join(Warmup(plan.length, plan.start, plan.shape), decay, plan.length)
