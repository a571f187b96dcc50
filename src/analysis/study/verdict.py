"""The verdict under one condition of a study: its schedules' confirm runs, the best, and each other schedule's
answer against it (worse, tied or open, as the sequential rule of src.analysis.stats decided), in numbers and in
words. A study without conditions has one of these; src.analysis.study.report writes them into files.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from src.analysis.runs import OUTCOMES, Run, failure_text
from src.analysis.stats import ALPHA, MAX_SEEDS, POWER, Comparison, compare, holm, sequential_verdict
from src.analysis.study.plan import METRICS, Plan, cell_name

# What the verdict calls a schedule against the best; "open" ones come with the seeds that would decide them.
ANSWERS = ("best", "worse", "tied", "open")
NOT_COMPARED_WORDS = "not compared (fewer than 2 shared seeds)"


@dataclass
class Contestant:
    """One schedule's confirm stage under one condition: its runs by seed, and its ok values of the study metric."""

    name: str  # its label in the study (<schedule>@<condition> under conditions)
    family: str  # the schedule's own label
    lr: float | None
    runs: dict[int, Run]
    values: dict[int, float]

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values.values()) if self.values else None

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.values.values()) if len(self.values) > 1 else None

    def count(self, outcome: str) -> int:
        return sum(run.outcome == outcome for run in self.runs.values())

    def failures(self) -> str:
        return failure_text({outcome: self.count(outcome) for outcome in OUTCOMES}, len(self.runs))

    def steps_to(self, target_acc: float) -> list[int | None]:
        return [run.steps_to(target_acc) for run in self.runs.values()]

    def seconds_to(self, target_acc: float) -> list[float | None]:
        return [run.seconds_to(target_acc) for run in self.runs.values()]


@dataclass(frozen=True)
class Versus:
    """One schedule against a reference (the best, or the baseline): the paired comparison (None with fewer than two
    shared seeds) and its p-values Holm-adjusted across the reference's comparisons: the difference test's
    (`p_holm`) and the equivalence test's (`p_tied_holm`) together, as the sequential rule adjusts them. `state` is
    the rule's answer against the best (worse, tied, open, failed); None against the baseline."""

    comparison: Comparison | None = None
    p_holm: float | None = None
    p_welch_holm: float | None = None
    p_tied_holm: float | None = None
    state: str | None = None

    @property
    def resolved(self) -> bool:
        """Answered: worse or tied against the best; against the baseline, a difference shown at ALPHA."""
        if self.state is not None:
            return self.state in ("worse", "tied")
        return self.p_holm is not None and self.p_holm < ALPHA

    def get(self, name: str) -> Any:
        """A number of the comparison (a field or property of Comparison); None without one."""
        return getattr(self.comparison, name) if self.comparison else None


NOT_COMPARED = Versus()  # the reference itself, and a schedule without a result


def paired(reference: Contestant, other: Contestant, alpha: float, margin: float) -> Comparison | None:
    """`other` against `reference` over the seeds where both runs are ok; None with fewer than two."""
    seeds = sorted(reference.values.keys() & other.values.keys())
    if len(seeds) < 2:
        return None
    return compare([reference.values[s] for s in seeds], [other.values[s] for s in seeds], alpha, margin)


class ConditionVerdict:
    """The verdict on one condition's schedules (every schedule of a study without conditions), from `runs`: the
    study's runs as (stage, label, seed, Run)."""

    def __init__(self, plan: Plan, picks: dict[str, Any], runs: list[Any], condition: str | None):
        self.plan, self.condition = plan, condition
        self.margin = plan.margin / 100
        cells = plan.cells(condition)
        self.picks = {cell.name: picks[cell.name] for cell in cells if cell.name in picks}
        self.contestants = {cell.name: self._contestant(cell.name, cell.family, runs) for cell in cells}
        measured = [c for c in self.contestants.values() if c.values]
        self.sequential = sequential_verdict(
            {c.name: {seed: c.values.get(seed) for seed in c.runs} for c in self.contestants.values() if c.lr},
            plan.confirm_seeds,
            plan.confirm_rounds,
            plan.spending,
            margin=self.margin,
        )
        reliable = [c for c in measured if not c.failures() and len(c.values) >= 2]
        looked = self.sequential.looks and self.contestants[self.sequential.looks[-1].best]
        self.best = looked or (max(reliable or measured, key=lambda c: c.mean) if measured else None)
        self.versus = self._comparisons(self.best, against_best=True)
        baseline = self.contestants.get(cell_name(plan.baseline, condition)) if plan.baseline else None
        self.baseline = baseline if baseline is not None and baseline.values else None
        self.against_baseline = self._comparisons(self.baseline) if self.baseline else {}

    def _contestant(self, name: str, family: str, runs: list[Any]) -> Contestant:
        confirm = {r.seed: r.run for r in runs if r.stage == "confirm" and r.schedule == name}
        values = {seed: run.value(self.plan.metric) for seed, run in confirm.items() if run.outcome == "ok"}
        lr = self.picks.get(name, {}).get("lr")
        return Contestant(name, family, float(lr) if lr is not None else None, confirm, values)

    def _comparisons(self, reference: Contestant | None, against_best: bool = False) -> dict[str, Versus]:
        """Every other measured schedule against `reference`; the difference and equivalence p-values Holm-adjusted
        together across these comparisons (as the sequential rule does at a look)."""
        if reference is None:
            return {}
        others = [c for c in self.contestants.values() if c is not reference and c.values]
        # seed counts are sized for ALPHA / m (Bonferroni), which Holm's correction over m comparisons meets
        comparisons = {c.name: paired(reference, c, ALPHA / max(1, len(others)), self.margin) for c in others}
        found = list(comparisons.values())
        adjusted = holm([c and c.p_paired for c in found] + [c and c.p_equivalent for c in found])
        welch_holm = holm([c and c.p_welch for c in found])
        return {
            name: Versus(
                comparison,
                adjusted[index],
                welch_holm[index],
                adjusted[len(found) + index],
                self.sequential.state.get(name, "open") if against_best else None,
            )
            for index, (name, comparison) in enumerate(comparisons.items())
        }

    def ranked(self) -> list[Contestant]:
        """Every schedule, the best first, then by mean."""
        return sorted(
            self.contestants.values(), key=lambda c: (c is not self.best, -(c.mean if c.mean is not None else -1))
        )

    def answer(self, contestant: Contestant) -> str:
        """The verdict on a schedule against the best: best, worse, tied or open (or why there is none)."""
        if self.best is None or not contestant.values:
            return "no result" if contestant.lr is not None else "no stable lr"
        if contestant is self.best:
            return "best"
        versus = self.versus[contestant.name]
        if versus.comparison is None:
            return NOT_COMPARED_WORDS
        return versus.state if versus.state in ("worse", "tied") else "open"

    def answered(self, answer: str) -> list[str]:
        """The schedules (their own labels) with this answer, in rank order."""
        return [c.family for c in self.ranked() if self.answer(c) == answer]

    def stopped(self, contestant: Contestant) -> str:
        """Why the schedule has the confirm seeds it has: the sequential rule's word on it."""
        rule, name = self.sequential, contestant.name
        if name not in rule.state:
            return "-"
        if name in rule.needed:
            return f"missing runs for its {rule.needed[name]} seeds"
        worse_at = next((look for look in rule.looks if name in look.decided), None)
        if worse_at is not None:
            return f"worse at {worse_at.seeds} seeds (p_holm {worse_at.p_holm[name]:.3g} <= {worse_at.level:.3g})"
        tied_at = next((look for look in rule.looks if name in look.tied), None)
        if tied_at is not None:
            return f"tied at {tied_at.seeds} seeds (TOST p_holm {tied_at.p_tied_holm[name]:.3g} <= {tied_at.level:.3g})"
        if rule.state[name] == "failed":
            return "collapsed or diverged on a seed"
        at_cap = rule.seeds[name] == self.plan.confirm_rounds[-1]
        if rule.state[name] == "best":
            return "best, the cap" if at_cap else "best, nothing left open"
        return "the cap, still open" if at_cap else "open"

    # ------------------------------------------------------------------------------------------ words

    def summary_text(self) -> str:
        """The verdict in words: the best, the schedules tied with it, those worse, those still open and what would
        decide them."""
        metric, margin = METRICS[self.plan.metric], self.plan.margin
        if self.best is None:
            return "No verdict: no schedule has a finished confirm run."
        best = self.best
        looks = len(self.plan.confirm_rounds)
        lines = [
            f"Best: {best.family} at lr {best.lr:g}, {metric} {fmt_number(best.mean, '.4f')} ± "
            f"{fmt_number(best.std, '.4f')} over {len(best.values)} seeds.",
        ]
        rule = f"paired tests, Holm-adjusted, {ALPHA:g} spent over {looks} look{'s' * (looks > 1)}"
        if tied := self.answered("tied"):
            lines.append(
                f"Tied with {best.family}: {', '.join(tied)}: each shown within ±{margin:g} points of it (TOST, "
                f"{rule}); pick any of them."
            )
        if worse := self.answered("worse"):
            lines.append(f"Worse than {best.family}: {', '.join(worse)} ({rule}).")
        if still := self.answered("open"):
            lines.append(
                f"Open: {', '.join(still)}: neither worse nor shown within ±{margin:g} points yet; more seeds "
                "would decide (below)."
            )
        for name, versus in self.versus.items():
            contestant, comparison = self.contestants[name], versus.comparison
            if comparison is None:
                lines.append(f"- {contestant.family}: not compared (fewer than two seeds where both runs are ok).")
                continue
            low, high = fmt_points(comparison.ci_low), fmt_points(comparison.ci_high)
            gap = f"{fmt_points(comparison.diff)} points (95% CI {low} to {high}; beats the best on "
            gap += f"{_share(comparison.p_beats)} of seeds; r = {fmt_number(comparison.correlation, '.2f')})"
            answer, stopped = self.answer(contestant), self.stopped(contestant)
            if answer in ("worse", "tied"):
                lines.append(f"- {contestant.family}: {gap}: {answer}; {stopped}.")
            else:
                lines.append(f"- {contestant.family}: {gap}: open ({stopped}); {decide_text(comparison)}.")
        lines += [
            f"Flag: {c.family} {c.failures()} in the confirm stage (left out of its mean)."
            for c in self.contestants.values()
            if c.failures()
        ]
        for name, planned in self.sequential.needed.items():
            contestant = self.contestants[name]
            missing = [seed for seed in self.plan.confirm_seeds[:planned] if seed not in contestant.runs]
            if missing:
                lines.append(
                    f"Flag: {contestant.family} has {len(contestant.runs)} of the {planned} planned "
                    f"confirm seeds; no finished run can be read for seed{'s' * (len(missing) > 1)} "
                    f"{', '.join(map(str, missing))}."
                )
        for name, pick in self.picks.items():
            family = self.contestants[name].family
            if pick["lr"] is None:
                lines.append(f"Flag: {family} collapsed or diverged at every lr of its grid; it was not confirmed.")
            elif pick["edge"]:
                lines.append(
                    f"Flag: {family}'s tuned lr {pick['lr']} is at the edge of its grid; a wider grid may do better."
                )
        return "\n".join(lines)


def decide_text(comparison: Comparison) -> str:
    """The seeds that would decide an open comparison: to show it worse, or to show it tied."""
    worse, tied = comparison.seeds_paired, comparison.seeds_tied
    if worse is None and tied is None:
        return "no gap or spread measured to size a study for"
    parts = [
        f"about {fmt_seeds(worse)} seeds would show it worse (paired) or {fmt_seeds(comparison.seeds_welch)} unpaired"
    ]
    if comparison.margin is not None:
        parts.append(
            f"{fmt_seeds(tied)} would show it tied within ±{100 * comparison.margin:g} points"
            if tied
            else f"no seed count would show it tied (the gap is at least ±{100 * comparison.margin:g} points)"
        )
    return "; ".join(parts) + f", at {POWER:.0%} power and {ALPHA:g} divided by the number of comparisons"


def fmt_seeds(count: int | None) -> str:
    """A seed count from src.analysis.stats; None past its search (MAX_SEEDS)."""
    return str(count) if count else f">{MAX_SEEDS}"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def fmt_points(value: float | None) -> str:
    """A difference in accuracy points, signed."""
    return "-" if value is None else f"{100 * value:+.2f}"


def fmt_number(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)
