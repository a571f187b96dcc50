"""The statistics of a study's verdict, as pure functions of numbers: no files, no runs, no plots.

Differences are `other - reference` over the seeds both have (paired: same initial weights, same batch order), so
a schedule worse than the best has a negative difference. Distributions and tests come from scipy.stats.

Three answers per comparison: *worse* (the paired difference test rejects "no difference"), *tied* (two one-sided
tests, TOST, reject "the difference is at least `margin` either way": equivalence within the margin) and *open*
(neither yet). Margins are in the values' own units (accuracy as a fraction: 0.01 is one point).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

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
    p_beats: float | None = None  # P(other > reference) on a fresh seed: the share of seeds it won (ties half)
    margin: float | None = None  # the equivalence margin tested (None: no equivalence test)
    p_tost_lower: float | None = None  # one-sided paired t-test of "diff <= -margin" (rejected: not that much worse)
    p_tost_upper: float | None = None  # one-sided paired t-test of "diff >= +margin" (rejected: not that much better)
    seeds_tied: int | None = None  # seeds at which TOST would show equivalence at 80% power, for `diff` as measured

    @property
    def p_equivalent(self) -> float | None:
        """TOST: equivalence within the margin is shown at level a when both one-sided tests reject at a."""
        if self.p_tost_lower is None or self.p_tost_upper is None:
            return None
        return max(self.p_tost_lower, self.p_tost_upper)


def mean_std(values: Iterable[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation of the values present; the std needs two of them."""
    present = [float(value) for value in values if value is not None]
    if not present:
        return None, None
    return statistics.fmean(present), statistics.stdev(present) if len(present) > 1 else None


def compare(
    reference: Sequence[float], other: Sequence[float], alpha: float = ALPHA, margin: float | None = None
) -> Comparison:
    """`other` against `reference`, both listed in the same seed order (entry i of each is seed i's result).

    `alpha` is the level the seed counts are sized for (e.g. 0.05 divided by the number of comparisons made);
    `margin`, when given, adds the equivalence tests (TOST) within +-margin."""
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
    lower = upper = None
    if margin is not None and n >= 2:
        lower, upper = tost(differences, margin)
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
        p_beats=beats(differences),
        margin=margin,
        p_tost_lower=lower,
        p_tost_upper=upper,
        seeds_tied=None if margin is None else seeds_to_tie(diff, sd_paired, margin, alpha=alpha),
    )


def beats(differences: Sequence[float]) -> float | None:
    """P(other > reference) on a fresh seed, estimated from the paired seeds: the share where `other` won, a tie
    counting half (Bouthillier et al., 2021, read it as the chance that a new run would favour it)."""
    if not differences:
        return None
    return statistics.fmean(1.0 if d > 0 else 0.5 if d == 0 else 0.0 for d in differences)


def tost(differences: Sequence[float], margin: float) -> tuple[float, float]:
    """Two one-sided paired t-tests of the mean difference against -margin and +margin (Schuirmann, 1987): the
    p-values of "diff <= -margin" and of "diff >= +margin". Differences without spread are a point: each null is
    then rejected (p 0) or not (p 1) outright."""
    if margin <= 0:
        raise ValueError(f"an equivalence margin is > 0, not {margin}")
    if _constant(differences):
        value = differences[0]
        return (0.0 if value > -margin else 1.0), (0.0 if value < margin else 1.0)
    lower = stats.ttest_1samp(differences, -margin, alternative="greater").pvalue
    upper = stats.ttest_1samp(differences, margin, alternative="less").pvalue
    return float(lower), float(upper)


def tost_power(diff: float, sd: float, n: int, margin: float, alpha: float = ALPHA) -> float:
    """Power of TOST at level `alpha` with n paired seeds when the true difference is `diff` with spread `sd`: the
    usual bound P(t1 > c) + P(t2 < -c) - 1 on the noncentral t (exact enough to size a study)."""
    if n < 2 or abs(diff) >= margin:
        return 0.0
    df, scale = n - 1, sd / math.sqrt(n)
    critical = stats.t.ppf(1 - alpha, df)
    lower = stats.nct.sf(critical, df, (diff + margin) / scale)
    upper = stats.nct.cdf(-critical, df, (diff - margin) / scale)
    return max(0.0, float(lower + upper - 1))


def seeds_to_tie(diff: float, sd: float | None, margin: float, alpha: float = ALPHA) -> int | None:
    """The fewest paired seeds at which TOST reaches POWER for the difference and spread measured; None when it
    never can (the gap is at least the margin, no spread measured) or only past MAX_SEEDS."""
    if sd is None or not math.isfinite(diff) or abs(diff) >= margin:
        return None
    if sd == 0:
        return 2
    return _fewest(lambda n: tost_power(diff, sd, n, margin, alpha) >= POWER)


def _fewest(enough: Callable[[int], bool]) -> int | None:
    """The smallest n in 2..MAX_SEEDS with enough(n), for a test whose power rises with n; None past MAX_SEEDS."""
    if not enough(MAX_SEEDS):
        return None
    low, high = 1, 2  # double until enough, then halve the gap
    while not enough(high):
        low, high = high, high * 2
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if enough(middle) else (middle, high)
    return high


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
    return _fewest(lambda n: t_test_power(effect, n, paired=paired, alpha=alpha) >= POWER)


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
    """One look of the sequential rule: after `seeds` paired seeds, the best and, for each open schedule, its paired
    p-value against it (`p_holm`: "no difference") and its TOST p-value (`p_tied_holm`: "a difference of at least
    the margin"), all of them Holm-adjusted together and tested at `level`; `decided` are those answered here."""

    seeds: int
    level: float
    best: str
    p_holm: dict[str, float | None]
    decided: tuple[str, ...]
    p_tied_holm: dict[str, float | None] = field(default_factory=dict)
    tied: tuple[str, ...] = ()


@dataclass(frozen=True)
class Sequential:
    """Where the sequential rule stands: its looks so far, each schedule's state (`best`, `worse`, `tied`: shown
    within the margin of the best, `open`, or `failed`: a collapsed or diverged seed), the seeds each used and,
    while a look is still to come, the schedules that need seeds for it (`needed`: {schedule: seed count});
    `needed` is empty once the rule has ended."""

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
    margin: float | None = None,
) -> Sequential:
    """Replay the sequential rule on the results in: `values[schedule][seed]` is a run's metric, None for a failed
    run, missing for a run not made yet; `seeds` the shared sequence (every schedule's seeds are its first ones),
    `rounds` the seed counts at the looks. At each look the schedules still open and the best (the highest mean
    among them) are compared on their first `rounds[k]` seeds. Two null hypotheses per open schedule: "no
    difference" (paired t-test) and, with a `margin`, "at least the margin apart" (TOST); all of the look's are
    Holm-adjusted together and rejected at the look's level (`look_levels`). A schedule whose equivalence is shown
    is tied; else one whose difference is shown is worse; either takes no more seeds. The rule ends when nothing is
    open or at the last look. A pure function of what is on disk, so a continued study replays it exactly."""
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
        comparisons = [
            compare([values[best][s] for s in wanted], [values[name][s] for s in wanted], margin=margin)
            for name in others
        ]
        tested = [c.p_paired for c in comparisons] + [c.p_equivalent for c in comparisons if margin is not None]
        adjusted = holm(tested)
        worse_p = dict(zip(others, adjusted[: len(others)], strict=True))
        tied_p = dict(zip(others, adjusted[len(others) :], strict=True)) if margin is not None else {}
        tied = tuple(name for name in others if tied_p.get(name) is not None and tied_p[name] <= level)
        decided = tuple(
            name for name in others if name not in tied and worse_p[name] is not None and worse_p[name] <= level
        )
        for name in active:
            state[name] = "worse" if name in decided else "tied" if name in tied else "best" if name == best else "open"
        looks.append(Look(count, level, best, worse_p, decided, tied_p, tied))
        if not [name for name in others if name not in decided and name not in tied]:
            break
    return Sequential(tuple(looks), state, used, {})
