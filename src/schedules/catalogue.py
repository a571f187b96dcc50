"""The schedules a config can name: `_target_` of each file in conf/scheduler/.

Each factory takes the run's `Timeline` plus the config's keys and returns a pure schedule (a multiplier of the
optimizer's base lr). The keys every config shares (`interval`, `warmup_ratio`, `warmup_steps`, `warmup_epochs`,
`warmup_start_factor`, `warmup_shape`) are handled once, by `Timeline.with_warmup`, so every schedule has a
warmup variant. Each parameter's range is checked here (its kind, from its annotation, by src/config/validation.py), so
a bad value stops the run before training with a message that names the key, the value and what is allowed.

The factories have no defaults: a key's default lives in its YAML file alone (the common keys in
conf/scheduler/shared/), and tests/test_configs.py checks that each factory's keywords are its file's keys.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from src.schedules.core import (
    DECAY_SHAPES,
    Constant,
    CosineRestarts,
    Cyclic,
    Decay,
    Exponential,
    InversePower,
    Join,
    Noam,
    OneCycle,
    Piecewise,
    ReduceOnPlateau,
    Schedule,
)
from src.schedules.timeline import ScheduleConfigError, Timeline

ANNEAL_STRATEGIES = ("cos", "linear")
CYCLIC_MODES = ("triangular", "triangular2", "exp_range")
PLATEAU_METRICS = ("test_loss", "test_acc", "train_loss", "train_acc")
PLATEAU_MODES = ("min", "max")


def _require(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ScheduleConfigError(f"scheduler.{key}={value!r}: allowed is {allowed}")


def _choice(key: str, value: str, allowed: Sequence[str]) -> None:
    _require(value in allowed, key, value, f"one of {', '.join(allowed)}")


def _floor(timeline: Timeline, final_lr: float, key: str = "final_lr", peak: float | None = None) -> float:
    """An absolute lower lr (`final_lr`, `min_lr`) as a multiplier, checked to lie between 0 and the peak lr."""
    peak = timeline.base_lr if peak is None else peak
    _require(0.0 <= final_lr <= peak, key, final_lr, f"0 <= {key} <= the peak lr ({peak})")
    return timeline.relative(final_lr)


def _gamma(gamma: float, key: str = "gamma") -> float:
    _require(gamma > 0, key, gamma, f"{key} > 0 (the lr is multiplied by it)")
    return float(gamma)


def _span(timeline: Timeline, common: dict[str, Any]) -> int:
    """The schedule's length, warmup included, as `with_warmup` will compute it from the same keys."""
    return timeline.span(common.get("total_steps"), common.get("total_epochs"))


def constant(timeline: Timeline, **common) -> Schedule:
    """The base lr throughout (after the optional warmup)."""
    return timeline.with_warmup(lambda length: Constant(1.0), **common)


def linear(timeline: Timeline, *, final_lr: float, **common) -> Schedule:
    """Straight line from the base lr down to `final_lr` at the end of the schedule (BERT / HF "linear")."""
    floor = _floor(timeline, final_lr)
    return timeline.with_warmup(lambda length: Decay(length, floor, "linear"), **common)


def cosine(timeline: Timeline, *, final_lr: float, **common) -> Schedule:
    """Half cosine from the base lr down to `final_lr` at the end of the schedule, then flat."""
    floor = _floor(timeline, final_lr)
    return timeline.with_warmup(lambda length: Decay(length, floor, "cosine"), **common)


def polynomial(timeline: Timeline, *, power: float, final_lr: float, **common) -> Schedule:
    """`(1 - t/T) ** power` from the base lr down to `final_lr` (power 1 is linear)."""
    _require(power > 0, "power", power, "power > 0")
    floor = _floor(timeline, final_lr)
    return timeline.with_warmup(lambda length: Decay(length, floor, "polynomial", float(power)), **common)


def exponential(
    timeline: Timeline,
    *,
    gamma: float,
    min_lr: float,
    staircase: bool,
    period_steps: int | None,
    period_epochs: float | None,
    **common,
) -> Schedule:
    """Multiply by `gamma` once per period (default: every update), never below `min_lr`."""
    period = timeline.count("period", period_steps, period_epochs, default=1)
    _require(period >= 1, "period_steps/period_epochs", period, "a period of at least 1 update")
    decay = Exponential(_gamma(gamma), period, bool(staircase), _floor(timeline, min_lr, "min_lr"))
    return timeline.with_warmup(lambda length: decay, **common)


def factor(timeline: Timeline, *, factor: float, stop_factor_lr: float, **common) -> Schedule:
    """The classic FactorScheduler: multiply by `factor` every update, down to `stop_factor_lr`."""
    _require(0 < factor <= 1, "factor", factor, "0 < factor <= 1")
    decay = Exponential(float(factor), floor=_floor(timeline, stop_factor_lr, "stop_factor_lr"))
    return timeline.with_warmup(lambda length: decay, **common)


def step(timeline: Timeline, *, step_size: float, gamma: float, **common) -> Schedule:
    """Multiply by `gamma` every `step_size` epochs from the start of the run (torch's StepLR)."""
    _require(step_size > 0, "step_size", step_size, "step_size > 0 (epochs)")
    size = max(1, timeline.updates(epochs=step_size))
    gamma = _gamma(gamma)
    span = _span(timeline, common)

    def make(length: int) -> Schedule:
        boundaries = tuple(range(size, span, size))
        return Piecewise(boundaries, tuple(gamma**k for k in range(len(boundaries) + 1)), offset=span - length)

    return timeline.with_warmup(make, **common)


def multistep(
    timeline: Timeline,
    *,
    milestones: Sequence[float],
    gamma: float,
    milestone_ratios: Sequence[float] | None,
    **common,
) -> Schedule:
    """Multiply by `gamma` at each of the `milestones` (epochs from the start of the run; torch's MultiStepLR), or
    at each of the `milestone_ratios` of the run's epochs (so that one config serves every budget).

    A milestone inside the warmup takes effect when the warmup ends.
    """
    if milestone_ratios is not None:
        ratios = list(milestone_ratios)
        _require(
            bool(ratios) and all(0 < r < 1 for r in ratios) and ratios == sorted(set(ratios)),
            "milestone_ratios",
            ratios,
            "null or a non-empty list of fractions of the run, 0 < r < 1, strictly increasing",
        )
        milestones = [round(ratio * timeline.epochs, 9) for ratio in ratios]  # 5/6 of 6 is 5, not 5.000000000000001
    boundaries = timeline.epoch_updates("milestones", list(milestones))
    gamma = _gamma(gamma)
    values = tuple(gamma**k for k in range(len(boundaries) + 1))
    span = _span(timeline, common)
    return timeline.with_warmup(lambda length: Piecewise(boundaries, values, offset=span - length), **common)


def piecewise(timeline: Timeline, *, boundaries: Sequence[float], values: Sequence[float], **common) -> Schedule:
    """`values[i]` times the base lr between the boundaries (epochs): any staircase, given point by point."""
    updates = timeline.epoch_updates("boundaries", list(boundaries))
    values = [float(value) for value in values]
    _require(
        len(values) == len(updates) + 1 and all(value >= 0 for value in values),
        "values",
        values,
        f"{len(updates) + 1} multipliers >= 0 (one more than the boundaries)",
    )
    span = _span(timeline, common)
    return timeline.with_warmup(lambda length: Piecewise(updates, tuple(values), offset=span - length), **common)


def inverse_sqrt(
    timeline: Timeline, *, timescale_steps: int | None, timescale_epochs: float | None, **common
) -> Schedule:
    """`sqrt(tau / (t + tau))` after the warmup; tau defaults to the warmup length, or 1 update without one.

    Without a warmup this is the square-root scheduler `lr * (t + 1) ** -0.5`.
    """
    warmup = timeline.warmup(**common).length
    tau = timeline.count("timescale", timescale_steps, timescale_epochs, default=max(warmup, 1))
    _require(tau >= 1, "timescale_steps/timescale_epochs", tau, "a timescale of at least 1 update")
    return timeline.with_warmup(lambda length: InversePower(tau, 0.5), **common)


def warmup_inverse(timeline: Timeline, **common) -> Schedule:
    """Linear warmup over W updates, then `base * W / t` (t counted from the run's start)."""
    warmup = timeline.warmup(**common).length
    _require(warmup > 0, "warmup_ratio/warmup_steps/warmup_epochs", warmup, "a warmup of at least 1 update")
    return timeline.with_warmup(lambda length: InversePower(warmup, 1.0), **common)


def noam(timeline: Timeline, *, d_model: int, factor: float, **common) -> Schedule:
    """The Transformer's schedule: `factor * d_model**-0.5 * min(s**-0.5, s * W**-1.5)` with s = t + 1.

    The lr is absolute (optimizer.lr is not used); its warmup W is part of the formula and comes from the
    common warmup keys, so `warmup_start_factor` and `warmup_shape` keep their defaults.
    """
    _require(d_model >= 1, "d_model", d_model, "an integer >= 1")
    _require(factor > 0, "factor", factor, "factor > 0")
    for key, default in (("warmup_start_factor", None), ("warmup_shape", "linear")):
        value = common.get(key, default)
        _require(value == default, key, value, f"{default!r} (noam's warmup is part of its formula)")
    warmup = timeline.warmup(**common).length
    _require(warmup > 0, "warmup_ratio/warmup_steps/warmup_epochs", warmup, "a warmup of at least 1 update")
    return Noam(warmup, factor * d_model**-0.5 / timeline.base_lr)


def warmup_stable_decay(
    timeline: Timeline, *, decay_ratio: float, decay_shape: str, final_lr: float, **common
) -> Schedule:
    """WSD: warmup, a plateau at the base lr, then a decay over the last `decay_ratio` of the schedule."""
    _require(0 < decay_ratio <= 1, "decay_ratio", decay_ratio, "0 < decay_ratio <= 1")
    _choice("decay_shape", decay_shape, list(DECAY_SHAPES))
    floor = _floor(timeline, final_lr)
    span = _span(timeline, common)
    decay_length = math.ceil(span * decay_ratio)

    def make(length: int) -> Schedule:
        _require(
            decay_length <= length,
            "decay_ratio",
            decay_ratio,
            f"a decay of at most the {length} updates left after the warmup",
        )
        decay = Decay(decay_length, floor, decay_shape)
        return decay if decay_length == length else Join(Constant(1.0), decay, length - decay_length)

    return timeline.with_warmup(make, **common)


def cosine_restarts(
    timeline: Timeline,
    *,
    cycle_steps: int | None,
    cycle_epochs: float | None,
    cycle_mult: float,
    cycle_decay: float,
    cycle_warmup_ratio: float,
    final_lr: float,
    **common,
) -> Schedule:
    """SGDR: cosine cycles to `final_lr`, each `cycle_mult` times longer, with peaks scaled by `cycle_decay`."""
    first = timeline.count("cycle", cycle_steps, None if cycle_steps is not None else cycle_epochs)
    _require(first is not None and first >= 1, "cycle_steps/cycle_epochs", first, "a first cycle of >= 1 update")
    _require(cycle_mult >= 1, "cycle_mult", cycle_mult, "cycle_mult >= 1")
    _require(0 < cycle_decay <= 1, "cycle_decay", cycle_decay, "0 < cycle_decay <= 1")
    _require(0 <= cycle_warmup_ratio < 1, "cycle_warmup_ratio", cycle_warmup_ratio, "0 <= cycle_warmup_ratio < 1")
    decay = CosineRestarts(first, float(cycle_mult), float(cycle_decay), _floor(timeline, final_lr), cycle_warmup_ratio)
    return timeline.with_warmup(lambda length: decay, **common)


def one_cycle(
    timeline: Timeline,
    *,
    max_lr: float | None,
    pct_start: float,
    div_factor: float,
    final_div_factor: float,
    anneal_strategy: str,
    three_phase: bool,
    cycle_momentum: bool,
    base_momentum: float,
    max_momentum: float,
    **common,
) -> Schedule:
    """torch's OneCycleLR over the schedule: from max_lr/div_factor up to `max_lr`, then down to
    max_lr/(div_factor*final_div_factor); momentum moves the other way when `cycle_momentum` is set."""
    peak = timeline.base_lr if max_lr is None else float(max_lr)
    _require(peak > 0, "max_lr", max_lr, "null (optimizer.lr) or a number > 0")
    _require(0 < pct_start < 1, "pct_start", pct_start, "0 < pct_start < 1")
    _require(div_factor > 0, "div_factor", div_factor, "div_factor > 0")
    _require(final_div_factor > 0, "final_div_factor", final_div_factor, "final_div_factor > 0")
    _choice("anneal_strategy", anneal_strategy, ANNEAL_STRATEGIES)
    _require(0 <= base_momentum <= max_momentum < 1, "base_momentum", base_momentum, "0 <= base <= max_momentum < 1")

    def make(length: int) -> Schedule:
        up_end = pct_start * length - 1  # torch's phase ends; a phase of zero length would divide by zero
        last_start = 2 * up_end if three_phase else up_end
        _require(
            up_end != 0 and last_start != length - 1,
            "pct_start",
            pct_start,
            f"a value for which no phase of the {length}-update cycle has zero length (pct_start * {length} != 1)",
        )
        initial = peak / div_factor
        return OneCycle(
            total=length,
            pct_start=float(pct_start),
            initial=timeline.relative(initial),
            peak=timeline.relative(peak),
            final=timeline.relative(initial / final_div_factor),
            anneal=anneal_strategy,
            three_phase=bool(three_phase),
            cycle_momentum=bool(cycle_momentum),
            base_momentum=float(base_momentum),
            max_momentum=float(max_momentum),
        )

    return timeline.with_warmup(make, **common)


def cyclic(
    timeline: Timeline,
    *,
    min_lr: float | None,
    max_lr: float | None,
    up_steps: int | None,
    up_epochs: float | None,
    down_steps: int | None,
    down_epochs: float | None,
    mode: str,
    gamma: float,
    cycle_momentum: bool,
    base_momentum: float,
    max_momentum: float,
    **common,
) -> Schedule:
    """torch's CyclicLR: triangles between `min_lr` (torch's base_lr) and `max_lr`."""
    high = timeline.base_lr if max_lr is None else float(max_lr)
    _require(high > 0, "max_lr", max_lr, "null (optimizer.lr) or a number > 0")
    low = high / 10 if min_lr is None else float(min_lr)
    _floor(timeline, low, "min_lr", peak=high)
    up = timeline.count("up", up_steps, None if up_steps is not None else up_epochs)
    _require(up is not None and up >= 1, "up_steps/up_epochs", up, "a rise of at least 1 update")
    down = timeline.count("down", down_steps, down_epochs, default=up)
    _require(down >= 1, "down_steps/down_epochs", down, "a fall of at least 1 update")
    _choice("mode", mode, CYCLIC_MODES)
    _require(0 < gamma <= 1, "gamma", gamma, "0 < gamma <= 1 (exp_range shrinks the cycles by gamma**t)")
    _require(0 <= base_momentum <= max_momentum < 1, "base_momentum", base_momentum, "0 <= base <= max_momentum < 1")
    decay = Cyclic(
        low=timeline.relative(low),
        high=timeline.relative(high),
        up=float(up),
        down=float(down),
        mode=mode,
        gamma=float(gamma),
        cycle_momentum=bool(cycle_momentum),
        base_momentum=float(base_momentum),
        max_momentum=float(max_momentum),
    )
    return timeline.with_warmup(lambda length: decay, **common)


def reduce_on_plateau(
    timeline: Timeline,
    *,
    monitor: str,
    mode: str,
    factor: float,
    patience: int,
    cooldown: int,
    threshold: float,
    min_lr: float,
    **common,
) -> Schedule:
    """Cut the lr by `factor` when `monitor` has not improved for more than `patience` epochs (checked once per
    epoch, after the warmup)."""
    _choice("monitor", monitor, PLATEAU_METRICS)
    _choice("mode", mode, PLATEAU_MODES)
    _require(0 < factor < 1, "factor", factor, "0 < factor < 1")
    _require(patience >= 0, "patience", patience, "an integer >= 0")
    _require(cooldown >= 0, "cooldown", cooldown, "an integer >= 0")
    _require(threshold >= 0, "threshold", threshold, "threshold >= 0")
    floor = _floor(timeline, min_lr, "min_lr")

    def make(length: int) -> Schedule:
        return ReduceOnPlateau(monitor, mode, float(factor), patience, cooldown, float(threshold), floor)

    return timeline.with_warmup(make, **common)
