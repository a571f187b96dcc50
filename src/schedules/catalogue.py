"""The schedules a config can name: `_target_` of each file in conf/scheduler/.

Each factory takes the run's `Timeline` plus the config's keys and returns a pure schedule (a multiplier of the
optimizer's base lr). Warmup keys (`warmup_ratio`, `warmup_steps`, `warmup_epochs`, `warmup_start_factor`,
`warmup_shape`) are handled once, by `Timeline.with_warmup`, so every schedule has a warmup variant.
"""

from __future__ import annotations

from src.schedules.core import Constant, Cosine, Linear, Schedule
from src.schedules.timeline import ScheduleConfigError, Timeline


def _floor(timeline: Timeline, final_lr: float) -> float:
    """`final_lr` as a multiplier, checked to lie between 0 and the peak lr."""
    if not 0.0 <= final_lr <= timeline.base_lr:
        raise ScheduleConfigError(
            f"scheduler.final_lr={final_lr}: allowed is 0 <= final_lr <= optimizer.lr ({timeline.base_lr})"
        )
    return timeline.relative(final_lr)


def constant(timeline: Timeline, **warmup) -> Schedule:
    """The base lr throughout (after the optional warmup)."""
    return timeline.with_warmup(lambda length: Constant(1.0), **warmup)


def cosine(timeline: Timeline, final_lr: float = 0.0, **warmup) -> Schedule:
    """Half cosine from the base lr down to `final_lr` at the end of the run."""
    floor = _floor(timeline, final_lr)
    return timeline.with_warmup(lambda length: Cosine(length, floor), **warmup)


def linear(timeline: Timeline, final_lr: float = 0.0, **warmup) -> Schedule:
    """Straight line from the base lr down to `final_lr` at the end of the run (BERT / HF "linear")."""
    floor = _floor(timeline, final_lr)
    return timeline.with_warmup(lambda length: Linear(length, floor), **warmup)
