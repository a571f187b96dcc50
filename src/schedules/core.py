"""Pure schedule pieces: each is a small picklable object, `piece(t) -> lr multiplier`.

`t` is the 0-based index of the update (the optimizer step with `interval=step`, the epoch with
`interval=epoch`): `piece(0)` scales the very first update. Pieces keep no hidden state, so stepping, plotting
and resuming all read the same numbers. Every decay is clamped after its end (no rise after T).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol


class Schedule(Protocol):
    def __call__(self, t: int) -> float: ...


@dataclass(frozen=True)
class Constant:
    """The same multiplier at every update."""

    value: float = 1.0

    def __call__(self, t: int) -> float:
        return self.value


@dataclass(frozen=True)
class Linear:
    """Straight line from 1 at t=0 to `floor` at t=`length`, then `floor`."""

    length: int
    floor: float = 0.0

    def __call__(self, t: int) -> float:
        if t >= self.length:
            return self.floor
        return self.floor + (1.0 - self.floor) * (1.0 - t / self.length)


@dataclass(frozen=True)
class Cosine:
    """Half cosine from 1 at t=0 to `floor` at t=`length`, then `floor` (torch's CosineAnnealingLR, clamped)."""

    length: int
    floor: float = 0.0

    def __call__(self, t: int) -> float:
        if t >= self.length:
            return self.floor
        return self.floor + (1.0 - self.floor) * 0.5 * (1.0 + math.cos(math.pi * t / self.length))


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
