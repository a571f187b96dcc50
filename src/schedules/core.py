"""Pure schedule pieces: each is a small picklable object, `piece(t) -> lr multiplier`.

`t` is the 0-based index of the update (the optimizer step with `interval=step`, the epoch with
`interval=epoch`): `piece(0)` scales the very first update. Pieces keep no hidden state, so stepping, plotting
and resuming all read the same numbers; the one exception, `ReduceOnPlateau`, keeps its state in its own fields
and hands them out as plain numbers (`state_dict`) for the checkpoint. Every decay is clamped after its end (no
rise after T). What a piece can do beyond its lr is declared: `CyclesMomentum` (it sets the momentum too) and
`WatchesMetrics` (it reacts to the epoch's metrics), checked with isinstance, never found by name.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


class Schedule(Protocol):
    def __call__(self, t: int) -> float: ...


@runtime_checkable
class CyclesMomentum(Protocol):
    """A schedule that sets the optimizer's momentum too (one cycle, cyclic): `momentum(t)`, None where not."""

    def __call__(self, t: int) -> float: ...

    def momentum(self, t: int) -> float | None: ...


@runtime_checkable
class WatchesMetrics(Protocol):
    """A schedule that reacts to each epoch's metrics (reduce on plateau); what it watched is state, handed out as
    plain numbers for the checkpoint."""

    def __call__(self, t: int) -> float: ...

    def observe(self, metrics: dict[str, float], t: int | None = None) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class Constant:
    """The same multiplier at every update."""

    value: float = 1.0

    def __call__(self, t: int) -> float:
        return self.value


DECAY_SHAPES = {
    "linear": lambda progress: 1.0 - progress,
    "cosine": lambda progress: 0.5 * (1.0 + math.cos(math.pi * progress)),
    "1-sqrt": lambda progress: 1.0 - math.sqrt(progress),
}


@dataclass(frozen=True)
class Decay:
    """From 1 at t=0 to `floor` at t=`length` along `shape`, then `floor`.

    Shapes: `linear` (BERT / HF "linear"), `cosine` (half cosine: torch's CosineAnnealingLR, clamped), `1-sqrt` (the
    cooldown of WSD schedules) and `polynomial`, `(1 - t/length) ** power` (torch's PolynomialLR).
    """

    length: int
    floor: float = 0.0
    shape: str = "linear"
    power: float = 1.0

    def __call__(self, t: int) -> float:
        if t >= self.length:
            return self.floor
        progress = t / self.length
        value = (1.0 - progress) ** self.power if self.shape == "polynomial" else DECAY_SHAPES[self.shape](progress)
        return self.floor + (1.0 - self.floor) * value


@dataclass(frozen=True)
class Warmup:
    """Ramp from `start` at t=0 to 1 at t=`length`; linear, or exponential (geometric) when `shape="exponential"`."""

    length: int
    start: float
    shape: str = "linear"

    def __call__(self, t: int) -> float:
        if t >= self.length:
            return 1.0
        progress = t / self.length
        if self.shape == "exponential":
            return self.start ** (1.0 - progress)
        return self.start + (1.0 - self.start) * progress


@dataclass(frozen=True)
class Join:
    """`first` for the updates before `boundary`, then `then` with its clock restarted at 0 (optax's join)."""

    first: Schedule
    then: Schedule
    boundary: int

    def __call__(self, t: int) -> float:
        return self.first(t) if t < self.boundary else self.then(t - self.boundary)

    def momentum(self, t: int) -> float | None:
        """The momentum of the part running at t, if that part cycles momentum."""
        part, local = (self.first, t) if t < self.boundary else (self.then, t - self.boundary)
        return part.momentum(local) if isinstance(part, CyclesMomentum) else None

    def observe(self, metrics: dict[str, float], t: int | None = None) -> None:
        """Pass an epoch's metrics on to `then` once its clock runs (a plateau watch starts after the warmup)."""
        if isinstance(self.then, WatchesMetrics) and (t is None or t >= self.boundary):
            self.then.observe(metrics, None if t is None else t - self.boundary)

    def state_dict(self) -> dict[str, Any]:
        """The state of its parts that keep one (a plateau watch after a warmup), by part."""
        return {name: part.state_dict() for name, part in self._parts() if isinstance(part, WatchesMetrics)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, part in self._parts():
            if name in state:
                part.load_state_dict(state[name])

    def _parts(self) -> tuple[tuple[str, Schedule], ...]:
        return (("first", self.first), ("then", self.then))


@dataclass(frozen=True)
class Exponential:
    """`gamma ** (t / period)` (exponent floored when `staircase`), never below `floor` (torch's ExponentialLR)."""

    gamma: float
    period: int = 1
    staircase: bool = False
    floor: float = 0.0

    def __call__(self, t: int) -> float:
        exponent = t // self.period if self.staircase else t / self.period
        return max(self.floor, self.gamma**exponent)


@dataclass(frozen=True)
class Piecewise:
    """`values[i]` from update `boundaries[i-1]` on (`values[0]` before the first boundary): steps of any height.

    Step, multistep and piecewise schedules are all this piece; torch's StepLR and MultiStepLR agree with it.
    `offset` is added to t, so boundaries can count from the run's start when a warmup comes first.
    """

    boundaries: tuple[int, ...]
    values: tuple[float, ...]
    offset: int = 0

    def __call__(self, t: int) -> float:
        return self.values[bisect.bisect_right(self.boundaries, t + self.offset)]


@dataclass(frozen=True)
class InversePower:
    """`(timescale / (t + timescale)) ** power`: 1 at t=0, then 1/sqrt (power 0.5) or 1/t (power 1) decay."""

    timescale: float
    power: float

    def __call__(self, t: int) -> float:
        return (self.timescale / (t + self.timescale)) ** self.power


@dataclass(frozen=True)
class Noam:
    """The Transformer's rate `scale * min((t+1) ** -0.5, (t+1) * warmup ** -1.5)`, peaking at t = warmup - 1.

    `scale` is `factor * d_model ** -0.5` divided by the optimizer's lr, so the lr itself follows the paper.
    """

    warmup: int
    scale: float

    def __call__(self, t: int) -> float:
        step = t + 1
        return self.scale * min(step**-0.5, step * self.warmup**-1.5)


@dataclass(frozen=True)
class CosineRestarts:
    """SGDR: cosine cycles from a peak to `floor`, each `mult` times longer and with a peak `decay` times lower.

    Cycle k lasts round(first * mult**k) updates and starts at peak decay**k; its first `warmup_ratio` part ramps
    up linearly (1/(W+1), 2/(W+1), ...) before the cosine. With mult 1 or an integer, decay 1 and no warmup this
    is torch's CosineAnnealingWarmRestarts.
    """

    first: int
    mult: float = 1.0
    decay: float = 1.0
    floor: float = 0.0
    warmup_ratio: float = 0.0

    def cycle_at(self, t: int) -> tuple[int, int, int]:
        """(cycle index, position in the cycle, cycle length) of update t."""
        index, start, length = 0, 0, self.first
        while t >= start + length:
            start += length
            index += 1
            length = max(1, round(self.first * self.mult**index))
        return index, t - start, length

    def __call__(self, t: int) -> float:
        index, position, length = self.cycle_at(t)
        peak = self.decay**index
        warmup = math.ceil(length * self.warmup_ratio)
        if position < warmup:
            return self.floor + (peak - self.floor) * (position + 1) / (warmup + 1)
        progress = (position - warmup) / (length - warmup)
        return self.floor + (peak - self.floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _anneal(shape: str, start: float, end: float, progress: float) -> float:
    """OneCycleLR's interpolation from `start` to `end` as progress goes 0 -> 1."""
    if shape == "cos":
        return end + (start - end) / 2.0 * (math.cos(math.pi * progress) + 1)
    return (end - start) * progress + start


@dataclass(frozen=True)
class OneCycle:
    """torch's OneCycleLR, step for step: up from `initial` to `peak` over pct_start of `total`, then down to `final`.

    Values are multipliers of the optimizer's lr. `three_phase` comes back to `initial` before the final anneal.
    `momentum(t)` cycles inversely between `max_momentum` and `base_momentum` when `cycle_momentum` is set.
    The curve is clamped after update total - 1.
    """

    total: int
    pct_start: float
    initial: float
    peak: float
    final: float
    anneal: str = "cos"
    three_phase: bool = False
    cycle_momentum: bool = False
    base_momentum: float = 0.85
    max_momentum: float = 0.95

    def _phases(self) -> list[tuple[float, str, str]]:
        """(end update, start, end) of each phase; names index the lr and momentum ends of torch's table."""
        up_end = float(self.pct_start * self.total) - 1
        if self.three_phase:
            return [(up_end, "initial", "peak"), (2 * up_end, "peak", "initial"), (self.total - 1, "initial", "final")]
        return [(up_end, "initial", "peak"), (self.total - 1, "peak", "final")]

    def _locate(self, t: int) -> tuple[int, float, str, str]:
        t = min(t, self.total - 1)
        phases = self._phases()
        start = 0.0
        for index, (end, first, last) in enumerate(phases):
            if t <= end or index == len(phases) - 1:
                return index, (t - start) / (end - start), first, last
            start = end
        raise AssertionError("unreachable: the last phase takes every t")

    def __call__(self, t: int) -> float:
        _, progress, first, last = self._locate(t)
        return _anneal(self.anneal, getattr(self, first), getattr(self, last), progress)

    def momentum(self, t: int) -> float | None:
        if not self.cycle_momentum:
            return None
        index, progress, _, _ = self._locate(t)
        first, last = (("max", "base"), ("base", "max"), ("max", "max"))[index]
        values = {"max": self.max_momentum, "base": self.base_momentum}
        return _anneal(self.anneal, values[first], values[last], progress)


@dataclass(frozen=True)
class Cyclic:
    """torch's CyclicLR: triangles between `low` and `high` (multipliers), `up` updates rising and `down` falling.

    `triangular` keeps the height, `triangular2` halves it every cycle, `exp_range` scales it by gamma**t.
    `momentum(t)` moves inversely between `max_momentum` and `base_momentum` when `cycle_momentum` is set.
    """

    low: float
    high: float
    up: float
    down: float
    mode: str = "triangular"
    gamma: float = 1.0
    cycle_momentum: bool = False
    base_momentum: float = 0.8
    max_momentum: float = 0.9

    def _position(self, t: int) -> tuple[float, float]:
        """(height factor in [0, 1], amplitude scale) of update t."""
        size = self.up + self.down
        cycle = math.floor(1 + t / size)
        x = 1.0 + t / size - cycle
        ratio = self.up / size
        height = x / ratio if x <= ratio else (x - 1) / (ratio - 1)
        if self.mode == "triangular2":
            return height, 1 / (2.0 ** (cycle - 1))
        if self.mode == "exp_range":
            return height, self.gamma**t
        return height, 1.0

    def __call__(self, t: int) -> float:
        height, scale = self._position(t)
        return self.low + (self.high - self.low) * height * scale

    def momentum(self, t: int) -> float | None:
        if not self.cycle_momentum:
            return None
        height, scale = self._position(t)
        return self.max_momentum - (self.max_momentum - self.base_momentum) * height * scale


# What a plateau watch learns as it runs; its other fields come from the config.
PLATEAU_STATE = ("scale", "best", "bad_epochs", "cooldown_left")


@dataclass
class ReduceOnPlateau:
    """torch's ReduceLROnPlateau as a multiplier: `observe(metrics)` once per epoch cuts it by `factor` after
    more than `patience` epochs without a relative improvement of `threshold`, then waits `cooldown` epochs.

    This piece is the one that holds state (best value, counters, current scale); `state_dict` gives it as plain
    numbers, so a checkpoint carries it without pickling the object. Without observations (a preview) it stays at 1.
    """

    monitor: str = "test_loss"
    mode: str = "min"
    factor: float = 0.1
    patience: int = 2
    cooldown: int = 0
    threshold: float = 1e-4
    floor: float = 0.0
    scale: float = 1.0
    best: float = math.inf
    bad_epochs: int = 0
    cooldown_left: int = 0

    def __post_init__(self) -> None:
        if self.mode == "max" and self.best == math.inf:
            self.best = -math.inf

    def __call__(self, t: int) -> float:
        return self.scale

    def _improves(self, value: float) -> bool:
        if self.mode == "min":
            return value < self.best * (1.0 - self.threshold)
        return value > self.best * (1.0 + self.threshold)

    def observe(self, metrics: dict[str, float], t: int | None = None) -> None:
        value = float(metrics[self.monitor])
        if self._improves(value):
            self.best, self.bad_epochs = value, 0
        else:
            self.bad_epochs += 1
        if self.cooldown_left > 0:
            self.cooldown_left -= 1
            self.bad_epochs = 0
        if self.bad_epochs > self.patience:
            self.scale = max(self.scale * self.factor, self.floor)
            self.cooldown_left, self.bad_epochs = self.cooldown, 0

    def state_dict(self) -> dict[str, float | int]:
        return {name: getattr(self, name) for name in PLATEAU_STATE}

    def load_state_dict(self, state: dict[str, float | int]) -> None:
        for name in PLATEAU_STATE:
            setattr(self, name, state[name])
