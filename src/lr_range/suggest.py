"""The LR range test's arithmetic, free of torch: the ramp, the smoothing, the stop rule and the suggestions; and
reading a finished test's suggestion back (`read_suggestion`, `lr_from=`).

The suggestions read the smoothed curve, as fastai's `lr_find` does:
- `min_div10`: the lr of the lowest smoothed loss, divided by 10 (the default suggestion, conf/lr_find.yaml);
- `valley`: fastai's rule, the middle of the longest stretch over which the smoothed loss keeps falling;
- `steepest`: the lr where the smoothed loss falls fastest per step of the ramp (per unit of log lr for `exp`).
The first tenth of the curve (where the smoothing has seen few batches) is left out, and so are the last five points
of a test stopped early (the blow-up). Every suggestion lies inside the swept range and is rounded to 3 significant
digits, so `optimizer.lr=<printed value>` and `lr_from=<folder>` train with the very same lr.
"""

from __future__ import annotations

import json
import math
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from src.config.rules import INTEGER, NUMBER, POSITIVE_NUMBER, Rule, fraction, one_of

RAMPS = ("exp", "linear")
# The ramp's length in steps: too few leave no curve to read.
MIN_STEPS = 20
MAX_STEPS = 1_000_000
RULES = ("min_div10", "valley", "steepest")

# `python -m src.lr_find`'s own keys (conf/lr_find.yaml); a training run has none of them. The range test sets the
# optimizer's lr to each of min_lr..max_lr in turn, so they must fit float32 as an lr does.
KEY_RULES: dict[str, Rule] = {
    "lr_find.min_lr": POSITIVE_NUMBER.in_float32(),
    "lr_find.max_lr": POSITIVE_NUMBER.in_float32(),
    "lr_find.num_steps": INTEGER.where(
        lambda v: MIN_STEPS <= v <= MAX_STEPS,
        f"an integer {MIN_STEPS}..{MAX_STEPS} (too few steps leave no curve to read; 300 is the default)",
    ),
    "lr_find.mode": one_of(RAMPS),
    "lr_find.smooth": fraction("smooth", " (0.98 is fastai's)"),
    "lr_find.stop_factor": NUMBER.where(lambda v: v > 1, "a number > 1").optional(" (never stop early)"),
    "lr_find.suggestion": one_of(RULES),
}
SUGGESTIONS_FILE = "suggestions.json"
# The fewest points the suggestions read, once the curve's ends are left out.
MIN_POINTS = 5
TAIL_POINTS = 5
WHAT_RULES_DO = {
    "steepest": "where the smoothed loss falls fastest",
    "valley": "the middle of the longest stretch where the smoothed loss keeps falling",
    "min_div10": "the lr of the lowest smoothed loss, divided by 10",
}
WHY_RULES = {
    "min_div10": (
        "past the lowest smoothed loss a larger lr stops helping, and a decade below it leaves room for the whole "
        "schedule; on the default LeNet it moved least between seeds (docs/lr_find.md)"
    ),
    "valley": (
        "it sits inside the longest falling stretch, away from the flat start and the blow-up (fastai's default); "
        "on a curve with a long plateau the stretch starts early and the valley lands low"
    ),
    "steepest": "the loss falls fastest there; a few noisy batches can move it by a decade",
}


class SuggestionError(ValueError):
    """No suggestion can be read or made; the message says why and what to change."""


def ramp(min_lr: float, max_lr: float, num_steps: int, mode: str = "exp") -> list[float]:
    """The lr of each of `num_steps` steps, from `min_lr` at the first to `max_lr` at the last: geometric (`exp`) or
    arithmetic (`linear`)."""
    if mode not in RAMPS:
        raise ValueError(f"mode={mode!r}: allowed is one of {', '.join(RAMPS)}")
    last = max(1, num_steps - 1)
    if mode == "exp":
        return [min_lr * (max_lr / min_lr) ** (i / last) for i in range(num_steps)]
    return [min_lr + (max_lr - min_lr) * i / last for i in range(num_steps)]


class Smoother:
    """Bias-corrected exponential moving average: after n losses, sum(beta^k (1-beta) loss_{n-k}) / (1 - beta^n),
    so the first values are not pulled towards 0."""

    def __init__(self, beta: float = 0.98):
        self.beta = beta
        self.average = 0.0
        self.count = 0

    def __call__(self, loss: float) -> float:
        self.count += 1
        self.average = self.beta * self.average + (1 - self.beta) * loss
        return self.average / (1 - self.beta**self.count)


def should_stop(smoothed: float, best: float, stop_factor: float | None) -> bool:
    """The test ends once the smoothed loss exceeds `stop_factor` times its best (or is not finite)."""
    if not math.isfinite(smoothed):
        return True
    return stop_factor is not None and smoothed > stop_factor * best


def window(count: int, stopped_early: bool) -> range:
    """The indices the suggestions read: without the first tenth, and without the blow-up of a test stopped early."""
    return range(count // 10, count - TAIL_POINTS if stopped_early else count)


def steepest_index(smoothed: Sequence[float]) -> int:
    """The index where `smoothed` falls fastest per step: the most negative central difference (one-sided at the
    ends). On an exponential ramp a step is a fixed factor of lr, so this is the steepest fall against log lr."""
    return int(np.argmin(np.gradient(smoothed)))


def valley_index(smoothed: Sequence[float]) -> tuple[int, int, int]:
    """fastai's valley rule: (index, first, last) where [first, last] is the longest falling stretch (the longest
    strictly decreasing subsequence, ending at `last`) and the index lies halfway through it.

    fastai's own loop is quadratic; this is the same result in O(n log n) (patience sorting), so long ramps are cheap.
    """
    tails: list[float] = []  # tails[k]: the smallest end (in -loss) of a falling run of k + 1 points so far
    longest = []
    for loss in smoothed:
        position = bisect_left(tails, -loss)  # a strictly decreasing run of losses is strictly increasing in -loss
        longest.append(position + 1)
        tails[position : position + 1] = [-loss]  # a lower end for runs of that length, or a run one longer
    last = max(range(len(longest)), key=lambda i: (longest[i], -i))  # the first index reaching the longest run
    start = last - longest[last]  # fastai's arithmetic: one before the stretch's first point
    sections = (last - start) / 3
    index = start + int(sections) + int(sections / 2)
    return max(index, 0), start + 1, last  # a run of one or two points from index 0 puts fastai's index at -1


@dataclass
class Suggestion:
    rule: str
    lr: float
    detail: str


def rounded_lr(lr: float) -> float:
    """An lr to 3 significant digits: what a suggestion or a grid point says, and a clean folder name."""
    return float(f"{lr:.3g}")


def suggest(lrs: Sequence[float], smoothed: Sequence[float], *, stopped_early: bool) -> dict[str, Suggestion]:
    """Every rule's suggestion from a range test's lrs and smoothed losses (in ramp order)."""
    kept = window(len(lrs), stopped_early)
    if len(kept) < MIN_POINTS:
        raise SuggestionError(
            f"only {len(lrs)} steps of the ramp were recorded, {len(kept)} usable after the first tenth and the "
            f"blow-up are left out; at least {MIN_POINTS} are needed"
        )
    xs, ys = [lrs[i] for i in kept], [smoothed[i] for i in kept]
    low, high = min(lrs), max(lrs)

    def inside(lr: float) -> float:
        return min(max(rounded_lr(lr), low), high)

    steep = steepest_index(ys)
    valley, first, last = valley_index(ys)
    lowest = min(range(len(ys)), key=ys.__getitem__)
    minimum = inside(xs[lowest] / 10)
    clamped = " (raised to the ramp's start)" if minimum > rounded_lr(xs[lowest] / 10) else ""
    return {
        "min_div10": Suggestion(
            "min_div10", minimum, f"lowest smoothed loss {ys[lowest]:.4g} at lr {xs[lowest]:.3g}{clamped}"
        ),
        "valley": Suggestion("valley", inside(xs[valley]), f"falling stretch {xs[first]:.3g} .. {xs[last]:.3g}"),
        "steepest": Suggestion("steepest", inside(xs[steep]), f"smoothed loss {ys[steep]:.4g}"),
    }


def suggestions_record(suggestions: dict[str, Suggestion], chosen: str) -> dict[str, Any]:
    """The JSON part that names the suggestion, why, and the override to use."""
    lr = suggestions[chosen].lr
    return {
        "suggestion": chosen,
        "lr": lr,
        "override": f"optimizer.lr={lr:g}",
        "why": WHY_RULES[chosen],
        "suggestions": {name: asdict(suggestion) for name, suggestion in suggestions.items()},
    }


def suggestions_path(path: str | Path) -> Path:
    """The suggestions file of an lr_find folder, or `path` itself when it names the file."""
    path = Path(path).expanduser()
    return path / SUGGESTIONS_FILE if path.is_dir() else path


def read_suggestion(path: str | Path, rule: str | None = None) -> float:
    """The lr a finished range test suggests (`rule`: another rule's lr); `path` is its folder or its JSON file.

    For a run's `lr_from=` and for studies that centre their lr grid on the test.
    """
    file = suggestions_path(path)
    if not file.is_file():
        found = "does not exist" if not Path(path).expanduser().exists() else f"holds no {SUGGESTIONS_FILE}"
        raise SuggestionError(f"{path} {found}; give the folder of a finished `python -m src.lr_find` (or its JSON)")
    try:
        record = json.loads(file.read_text())
        lr = record["lr"] if rule is None else record["suggestions"][rule]["lr"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        wanted = "its suggestion" if rule is None else f"a {rule!r} suggestion"
        raise SuggestionError(f"{file} holds no readable lr ({wanted}: {error!r})") from None
    if not (isinstance(lr, int | float) and not isinstance(lr, bool) and math.isfinite(lr) and lr > 0):
        raise SuggestionError(f"{file}: the suggested lr {lr!r} is not a number > 0")
    return float(lr)
