"""The statistics of a study's verdict, as pure functions of numbers: no files, no runs, no plots.

Differences are `other - reference` over the seeds both have (paired: same initial weights, same batch order), so
a schedule worse than the best has a negative difference. Distributions and tests come from scipy.stats.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from scipy import stats

ALPHA = 0.05
POWER = 0.8
MAX_SEEDS = 10_000


@dataclass(frozen=True)
class Comparison:
    """One schedule against a reference schedule, paired by seed, with the unpaired (Welch) view beside it."""

    n: int  # seeds both have
    diff: float  # mean paired difference, other - reference
    ci_low: float | None  # 95% t-interval of the paired mean difference
    ci_high: float | None
    p_paired: float | None  # paired t-test, two-sided
    p_wilcoxon: float | None  # Wilcoxon signed-rank test, two-sided (exact for small n)
    p_welch: float | None  # Welch's unpaired t-test, two-sided
    correlation: float | None  # Pearson r of the two schedules' results across the shared seeds
    seeds_paired: int | None  # seeds that would resolve `diff` with the paired test (80% power at 0.05)
    seeds_welch: int | None  # seeds per schedule for Welch's test at the same power


def mean_std(values: Iterable[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation of the values present; the std needs two of them."""
    present = [float(value) for value in values if value is not None]
    if not present:
        return None, None
    return statistics.fmean(present), statistics.stdev(present) if len(present) > 1 else None


def compare(reference: Sequence[float], other: Sequence[float], alpha: float = ALPHA) -> Comparison:
    """`other` against `reference`, both listed in the same seed order (entry i of each is seed i's result).

    `alpha` is the level the seed counts are sized for (e.g. 0.05 divided by the number of comparisons made)."""
    if len(reference) != len(other):
        raise ValueError(f"paired samples differ in length: {len(reference)} and {len(other)}")
    n = len(reference)
    differences = [b - a for a, b in zip(reference, other, strict=True)]
    diff = statistics.fmean(differences) if differences else math.nan
    ci_low = ci_high = p_paired = p_wilcoxon = p_welch = correlation = sd_paired = sd_pooled = None
    if n >= 2:
        sd_paired = statistics.stdev(differences)
        sd_pooled = math.sqrt((statistics.variance(reference) + statistics.variance(other)) / 2)
        if _constant(differences):  # no spread: the t statistic is undefined, the interval a point
            ci_low = ci_high = diff
            p_paired = 1.0 if diff == 0 else 0.0
        else:
            paired = stats.ttest_rel(other, reference)
            interval = paired.confidence_interval(0.95)
            ci_low, ci_high, p_paired = float(interval.low), float(interval.high), float(paired.pvalue)
        if any(d != 0 for d in differences):
            p_wilcoxon = float(stats.wilcoxon(other, reference).pvalue)
        if not (_constant(reference) and _constant(other)):
            p_welch = float(stats.ttest_ind(other, reference, equal_var=False).pvalue)
    if n >= 3 and not (_constant(reference) or _constant(other)):
        correlation = float(stats.pearsonr(reference, other).statistic)
    return Comparison(
        n=n,
        diff=diff,
        ci_low=ci_low,
        ci_high=ci_high,
        p_paired=p_paired,
        p_wilcoxon=p_wilcoxon,
        p_welch=p_welch,
        correlation=correlation,
        seeds_paired=seeds_needed(diff, sd_paired, paired=True, alpha=alpha),
        seeds_welch=seeds_needed(diff, sd_pooled, paired=False, alpha=alpha),
    )


def _constant(values: Sequence[float]) -> bool:
    return len(set(values)) <= 1


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjustment: controls the family-wise error over the comparisons given (None stays None).

    The i-th smallest of m p-values becomes max over j <= i of min(1, (m - j + 1) * p_(j)).
    """
    present = sorted((p, index) for index, p in enumerate(p_values) if p is not None)
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, index) in enumerate(present):
        running = max(running, min(1.0, (len(present) - rank) * p))
        adjusted[index] = running
    return adjusted


def t_test_power(effect: float, n: int, *, paired: bool, alpha: float = ALPHA) -> float:
    """Power of the two-sided t-test to detect a standardised difference `effect` (mean / sd) with n seeds.

    Paired: one-sample test on n differences (df n - 1, noncentrality effect * sqrt(n)). Unpaired: two groups of n
    with equal spread (df 2n - 2, noncentrality effect * sqrt(n / 2)).
    """
    df = n - 1 if paired else 2 * n - 2
    if df < 1:
        return 0.0
    noncentrality = effect * math.sqrt(n if paired else n / 2)
    critical = stats.t.ppf(1 - alpha / 2, df)
    return float(stats.nct.sf(critical, df, noncentrality) + stats.nct.cdf(-critical, df, noncentrality))


def seeds_needed(diff: float, sd: float | None, *, paired: bool, alpha: float = ALPHA) -> int | None:
    """The fewest seeds (per schedule) at which the t-test reaches POWER for a true difference `diff` with spread
    `sd`, both as measured; None when they say nothing (no spread measured, no difference) or past MAX_SEEDS."""
    if sd is None or not math.isfinite(diff) or diff == 0:
        return None
    if sd == 0:
        return 2
    effect = abs(diff) / sd

    def enough(n: int) -> bool:
        return t_test_power(effect, n, paired=paired, alpha=alpha) >= POWER

    if not enough(MAX_SEEDS):
        return None
    low, high = 1, 2  # power rises with n: double until enough, then halve the gap
    while not enough(high):
        low, high = high, high * 2
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if enough(middle) else (middle, high)
    return high


# ------------------------------------------------------------------------------------- seeds added in rounds

# Lan-DeMets alpha-spending functions: the share of ALPHA spent once a fraction t of the seeds is in (t = n / n_max).
# pocock spends early (large gaps are decided at the first looks); obrien_fleming keeps most for the last look.
SPENDING = {
    "pocock": lambda t, alpha: alpha * math.log(1 + (math.e - 1) * t),
    "obrien_fleming": lambda t, alpha: 2 - 2 * stats.norm.cdf(stats.norm.ppf(1 - alpha / 2) / math.sqrt(t)),
}


def look_levels(rounds: Sequence[int], spending: str = "pocock", alpha: float = ALPHA) -> list[float]:
    """The level each look tests at: what the spending function spends between the previous look and this one
    (looks after rounds[k] seeds, the last at rounds[-1]). The levels sum to `alpha`, so by the union bound the
    chance of any false "worse" over all looks stays at most `alpha`, however the looks are correlated."""
    spend = SPENDING[spending]
    spent = [float(spend(n / rounds[-1], alpha)) for n in rounds]
    spent[-1] = alpha  # the full fraction spends exactly alpha (no rounding left over)
    return [later - earlier for earlier, later in zip([0.0, *spent[:-1]], spent, strict=True)]


@dataclass(frozen=True)
class Look:
    """One look of the sequential rule: after `seeds` paired seeds, the best and each open schedule's paired
    p-value against it, Holm-adjusted across the open ones and tested at `level`."""

    seeds: int
    level: float
    best: str
    p_holm: dict[str, float | None]
    decided: tuple[str, ...]


@dataclass(frozen=True)
class Sequential:
    """Where the sequential rule stands: its looks so far, each schedule's state (`best`, `worse`, `open`, or
    `failed`: a collapsed or diverged seed), the seeds each used and, while a look is still to come, the schedules
    that need seeds for it (`needed`: {schedule: seed count}); `needed` is empty once the rule has ended."""

    looks: tuple[Look, ...]
    state: dict[str, str]
    seeds: dict[str, int]
    needed: dict[str, int]


def sequential_verdict(
    values: Mapping[str, Mapping[int, float | None]],
    seeds: Sequence[int],
    rounds: Sequence[int],
    spending: str = "pocock",
    alpha: float = ALPHA,
) -> Sequential:
    """Replay the sequential rule on the results in: `values[schedule][seed]` is a run's metric, None for a failed
    run, missing for a run not made yet; `seeds` the shared sequence (every schedule's seeds are its first ones),
    `rounds` the seed counts at the looks. At each look the schedules still open and the best (the highest mean
    among them) are compared on their first `rounds[k]` seeds; a comparison whose Holm-adjusted paired p-value is
    at most the look's level (`look_levels`) is decided (worse) and takes no more seeds. The rule ends when nothing
    is open or at the last look. A pure function of what is on disk, so a continued study replays it exactly."""
    levels = look_levels(rounds, spending, alpha)
    state = dict.fromkeys(values, "open")
    used = dict.fromkeys(values, 0)
    looks: list[Look] = []
    for count, level in zip(rounds, levels, strict=True):
        active = [name for name, now in state.items() if now in ("open", "best")]
        wanted = seeds[:count]
        if missing := {name: count for name in active if any(seed not in values[name] for seed in wanted)}:
            return Sequential(tuple(looks), state, used, missing)
        for name in active:
            used[name] = count
            if any(values[name][seed] is None for seed in wanted):
                state[name] = "failed"
        active = [name for name in active if state[name] != "failed"]
        if not active:
            break
        best = max(active, key=lambda name: statistics.fmean(values[name][seed] for seed in wanted))
        others = [name for name in active if name != best]
        p_values = [
            compare([values[best][s] for s in wanted], [values[name][s] for s in wanted]).p_paired for name in others
        ]
        adjusted = dict(zip(others, holm(p_values), strict=True))
        decided = tuple(name for name in others if adjusted[name] is not None and adjusted[name] <= level)
        for name in active:
            state[name] = "worse" if name in decided else "best" if name == best else "open"
        looks.append(Look(count, level, best, adjusted, decided))
        if not [name for name in others if name not in decided]:
            break
    return Sequential(tuple(looks), state, used, {})
