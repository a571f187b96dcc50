"""A study's report, from its finished runs to the verdict: results.csv (one row per run), verdict.csv (one row per
schedule), baseline.csv, report.md and three figures, written together into the study folder. Runs are read with
src.analysis.runs; a run folder it cannot read is skipped and named, never counted. The numbers come from
src.analysis.stats. Collapsed and diverged runs are counted per schedule and left out of every mean and test.

A column is one entry in a table: RESULT_COLUMNS (results.csv), VERDICT_COLUMNS and BASELINE_COLUMNS (verdict.csv,
baseline.csv: its name and how a schedule fills it), and to show it in report.md, one in VERDICT_TABLE, BASELINE_TABLE
or TIME_TABLE (its header and how the CSV row's values make its cell). tests/test_adding_a_report_column.py adds one.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from src.analysis.runs import OUTCOMES, TAIL_METRIC, Run, Skipped, failure_text, scan_runs
from src.analysis.stats import ALPHA, MAX_SEEDS, POWER, Comparison, compare, holm, sequential_verdict
from src.analysis.study.plan import METRICS, Plan
from src.runs.files import markdown_table, new_figure, save_figure, write_csv, written_together

FIGURES = ("lr_sensitivity.png", "forest.png", "test_acc_curves.png")


@dataclass
class StudyRun:
    """A run of the study, with the stage, schedule, lr and seed it was launched for."""

    stage: str
    schedule: str
    lr: float
    seed: int
    run: Run


def collect(found: Iterable[Run]) -> list[StudyRun]:
    """The study's runs among `found`, labelled with their stage and schedule (from their own config)."""
    runs = []
    for run in found:
        stage, schedule = run.hparams.get("labels.stage"), run.hparams.get("labels.schedule")
        if stage is not None and schedule is not None:
            runs.append(StudyRun(stage, schedule, run.hparams["optimizer.lr"], run.hparams["seed"], run))
    return runs


# results.csv, one row per run: each column, and how a run of the study fills it.
RESULT_COLUMNS: dict[str, Callable[[StudyRun, Plan], Any]] = {
    "stage": lambda item, plan: item.stage,
    "schedule": lambda item, plan: item.schedule,
    "lr": lambda item, plan: item.lr,
    "seed": lambda item, plan: item.seed,
    "test_acc": lambda item, plan: item.run.value("test_acc"),
    TAIL_METRIC: lambda item, plan: item.run.value(TAIL_METRIC),
    "best_test_acc": lambda item, plan: item.run.value("best_test_acc"),
    "collapsed": lambda item, plan: bool(item.run.metrics.get("collapsed")),
    "collapsed_epoch": lambda item, plan: item.run.metrics.get("collapsed_epoch"),
    "diverged": lambda item, plan: bool(item.run.metrics.get("diverged")),
    "epochs": lambda item, plan: item.run.metrics.get("epochs"),
    "wall_seconds": lambda item, plan: item.run.metrics.get("wall_seconds"),
    "steps_to_target": lambda item, plan: item.run.steps_to(plan.target_acc),
    "seconds_to_target": lambda item, plan: item.run.seconds_to(plan.target_acc),
    "run_dir": lambda item, plan: str(item.run.folder.relative_to(plan.dir)),
}


@dataclass
class Contestant:
    """One schedule's confirm stage: its runs by seed, and its ok values of the study metric."""

    name: str
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
    shared seeds), and its p-values Holm-adjusted across the reference's comparisons."""

    comparison: Comparison | None = None
    p_holm: float | None = None
    p_welch_holm: float | None = None
    decided: bool | None = None  # against the best: what the sequential rule decided; None: p_holm < ALPHA decides

    @property
    def resolved(self) -> bool:
        if self.decided is not None:
            return self.decided
        return self.p_holm is not None and self.p_holm < ALPHA

    def get(self, name: str) -> Any:
        """A number of the comparison (a field of Comparison); None without one."""
        return getattr(self.comparison, name) if self.comparison else None


NOT_COMPARED = Versus()  # the reference itself, and a schedule without a result


def paired(reference: Contestant, other: Contestant, alpha: float = ALPHA) -> Comparison | None:
    """`other` against `reference` over the seeds where both runs are ok; None with fewer than two."""
    seeds = sorted(reference.values.keys() & other.values.keys())
    if len(seeds) < 2:
        return None
    return compare([reference.values[s] for s in seeds], [other.values[s] for s in seeds], alpha=alpha)


def _median(values: Iterable[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


class StudyReport:
    """The verdict on a study's runs; `skipped` are the run folders left out (a file cannot be read, or the run has
    not ended), named in the report and never counted."""

    def __init__(
        self, plan: Plan, picks: dict[str, Any], runs: list[StudyRun], wall_seconds: float, skipped: list[Skipped]
    ):
        self.plan, self.picks, self.runs, self.wall_seconds, self.skipped = plan, picks, runs, wall_seconds, skipped
        self.contestants = {schedule.name: self._contestant(schedule.name) for schedule in plan.schedules}
        measured = [c for c in self.contestants.values() if c.values]
        self.sequential = sequential_verdict(
            {c.name: {seed: c.values.get(seed) for seed in c.runs} for c in self.contestants.values() if c.lr},
            plan.confirm_seeds,
            plan.confirm_rounds,
            plan.spending,
        )
        reliable = [c for c in measured if not c.failures() and len(c.values) >= 2]
        looked = self.sequential.looks and self.contestants[self.sequential.looks[-1].best]
        self.best = looked or (max(reliable or measured, key=lambda c: c.mean) if measured else None)
        self.verdict = self._comparisons(self.best, sequential=True)
        baseline = self.contestants.get(plan.baseline)
        self.baseline = baseline if baseline is not None and baseline.values else None
        self.against_baseline = self._comparisons(self.baseline) if self.baseline else {}

    def _contestant(self, name: str) -> Contestant:
        confirm = {r.seed: r.run for r in self.runs if r.stage == "confirm" and r.schedule == name}
        values = {seed: run.value(self.plan.metric) for seed, run in confirm.items() if run.outcome == "ok"}
        lr = self.picks.get(name, {}).get("lr")
        return Contestant(name, float(lr) if lr is not None else None, confirm, values)

    def _comparisons(self, reference: Contestant | None, sequential: bool = False) -> dict[str, Versus]:
        """Every other measured schedule against `reference`, the p-values Holm-adjusted across these comparisons;
        `sequential`: against the best, decided by the sequential rule."""
        if reference is None:
            return {}
        others = [c for c in self.contestants.values() if c is not reference and c.values]
        # seed counts are sized for ALPHA / m (Bonferroni), which Holm's correction over m comparisons meets
        comparisons = {c.name: paired(reference, c, ALPHA / max(1, len(others))) for c in others}
        p_holm = holm([comparison and comparison.p_paired for comparison in comparisons.values()])
        welch_holm = holm([comparison and comparison.p_welch for comparison in comparisons.values()])
        return {
            name: Versus(comparison, p, p_welch, self.sequential.state.get(name) == "worse" if sequential else None)
            for (name, comparison), p, p_welch in zip(comparisons.items(), p_holm, welch_holm, strict=True)
        }

    def stopped(self, contestant: Contestant) -> str:
        """Why the schedule has the confirm seeds it has: the sequential rule's word on it."""
        rule, name = self.sequential, contestant.name
        if name not in rule.state:
            return "-"
        if name in rule.needed:
            return f"missing runs for its {rule.needed[name]} seeds"
        decided_at = next((look for look in rule.looks if name in look.decided), None)
        if decided_at is not None:
            return (
                f"decided at {decided_at.seeds} seeds (p_holm {decided_at.p_holm[name]:.3g} <= {decided_at.level:.3g})"
            )
        if rule.state[name] == "failed":
            return "collapsed or diverged on a seed"
        at_cap = rule.seeds[name] == self.plan.confirm_rounds[-1]
        if rule.state[name] == "best":
            return "best, the cap" if at_cap else "best, nothing left open"
        return "the cap, still open" if at_cap else "open"

    # ------------------------------------------------------------------------------------------ the tables

    def _row(self, columns: Mapping[str, Column], contestant: Contestant, versus: Versus) -> dict[str, Any]:
        return {name: column(self, contestant, versus) for name, column in columns.items()}

    def verdict_rows(self) -> list[dict[str, Any]]:
        """verdict.csv: every schedule, the best first, then by mean."""
        ranked = sorted(
            self.contestants.values(), key=lambda c: (c is not self.best, -(c.mean if c.mean is not None else -1))
        )
        return [self._row(VERDICT_COLUMNS, c, self.verdict.get(c.name, NOT_COMPARED)) for c in ranked]

    def baseline_rows(self) -> list[dict[str, Any]]:
        """baseline.csv: every other measured schedule against the baseline."""
        return [
            self._row(BASELINE_COLUMNS, self.contestants[name], versus)
            for name, versus in self.against_baseline.items()
        ]

    def word(self, contestant: Contestant) -> str:
        """The verdict on a schedule against the best."""
        if self.best is None or not contestant.values:
            return "no result" if contestant.lr is not None else "no stable lr"
        if contestant is self.best:
            return "best"
        versus = self.verdict[contestant.name]
        if versus.comparison is None:
            return NOT_COMPARED_WORDS
        if self.sequential.state.get(contestant.name) == "failed":
            return "not decided (a seed collapsed or diverged)"
        return "significantly worse" if versus.resolved else "not significantly worse"

    def result_rows(self) -> list[dict[str, Any]]:
        ordered = sorted(self.runs, key=lambda r: (r.stage == "confirm", r.schedule, r.lr, r.seed))  # tune first
        return [{column: cell(item, self.plan) for column, cell in RESULT_COLUMNS.items()} for item in ordered]

    # ------------------------------------------------------------------------------------------ words

    def summary_text(self) -> str:
        """The verdict in words: the set not significantly worse than the best, what was resolved, what was not."""
        metric = METRICS[self.plan.metric]
        if self.best is None:
            return "No verdict: no schedule has a finished confirm run."
        best = self.best
        lines = [
            f"Best: {best.name} at lr {best.lr:g}, {metric} {_num(best.mean, '.4f')} ± {_num(best.std, '.4f')} "
            f"over {len(best.values)} seeds."
        ]
        tied = [
            name
            for name, versus in self.verdict.items()
            if versus.comparison and not versus.resolved and self.sequential.state.get(name) != "failed"
        ]
        worse = [name for name, versus in self.verdict.items() if versus.resolved]
        if tied:
            lines.append(
                f"Not significantly worse than {best.name} (paired t-test, Holm-adjusted, {ALPHA:g} spent over "
                f"{len(self.plan.confirm_rounds)} look{'s' * (len(self.plan.confirm_rounds) > 1)}): "
                f"{', '.join(tied)}. Within this set the study cannot tell the schedules apart."
            )
        if worse:
            lines.append(f"Significantly worse than {best.name}: {', '.join(worse)}.")
        for name, versus in self.verdict.items():
            comparison = versus.comparison
            if comparison is None:
                lines.append(f"- {name}: not compared (fewer than two seeds where both runs are ok).")
                continue
            gap = f"{_pts(comparison.diff)} points (95% CI {_pts(comparison.ci_low)} to "
            gap += f"{_pts(comparison.ci_high)}; r = {_num(comparison.correlation, '.2f')})"
            if versus.resolved:
                lines.append(f"- {name}: {gap}: resolved, worse; {self.stopped(self.contestants[name])}.")
            else:
                unadjusted = comparison.ci_high is not None and comparison.ci_high < 0
                why = " after Holm's correction (the interval is not corrected)" if unadjusted else ""
                stopped = self.stopped(self.contestants[name])
                lines.append(f"- {name}: {gap}: not resolved{why} ({stopped}); {_seeds_text(comparison)}.")
        lines += [
            f"Flag: {c.name} {c.failures()} in the confirm stage (left out of its mean)."
            for c in self.contestants.values()
            if c.failures()
        ]
        for name, planned in self.sequential.needed.items():
            contestant = self.contestants[name]
            missing = [seed for seed in self.plan.confirm_seeds[:planned] if seed not in contestant.runs]
            if missing:
                lines.append(
                    f"Flag: {contestant.name} has {len(contestant.runs)} of the {planned} planned "
                    f"confirm seeds; no finished run can be read for seed{'s' * (len(missing) > 1)} "
                    f"{', '.join(map(str, missing))}."
                )
        for name, pick in self.picks.items():
            if pick["lr"] is None:
                lines.append(f"Flag: {name} collapsed or diverged at every lr of its grid; it was not confirmed.")
            elif pick["edge"]:
                lines.append(
                    f"Flag: {name}'s tuned lr {pick['lr']} is at the edge of its grid; a wider grid may do better."
                )
        return "\n".join(lines)

    def markdown(self) -> str:
        plan, rows = self.plan, self.verdict_rows()
        metric = METRICS[plan.metric]
        total_train = sum(r.run.metrics.get("wall_seconds") or 0 for r in self.runs)
        out = [
            f"# Study: {len(plan.schedules)} schedules, {len(self.runs)} runs",
            "",
            f"Folder `{plan.dir}`; preset `{plan.preset}`; run overrides `{' '.join(plan.run_overrides) or '-'}`; "
            f"tuning overrides `{' '.join(plan.tune_overrides) or '-'}`.",
            f"Metric: {metric} (`{plan.metric}`); lr pick: `{plan.pick}`; tuning seeds {plan.tune_seeds}; "
            f"confirm seeds {plan.confirm_seeds[0]}..{plan.confirm_seeds[-1]} (paired), looked at after "
            f"{', '.join(map(str, plan.confirm_rounds))} seeds ({plan.spending} spending); successive halving: "
            f"{'off' if plan.halving is None else f'keep 1/{plan.halving:g} at rungs {plan.rungs}'}.",
            f"This command's wall time: {self.wall_seconds:.0f} s; the runs' own training time: {total_train:.0f} s.",
            "",
            "## Verdict",
            "",
            self.summary_text(),
            "",
            "## Stage 2: every schedule at its own lr, paired seeds",
            "",
            f"Differences are against the best ({self.best.name if self.best else '-'}), in accuracy points, over the "
            "seeds where both runs are ok. p (Holm): paired t-test on all of them, Holm-adjusted across the "
            "comparisons. The verdict is the sequential rule's: at each look (the seed counts above) the open "
            "comparisons are tested at the share of 0.05 spent there (docs/study.md), and `seeds: why` says where "
            "each schedule stopped. Welch: "
            "the unpaired view of the same runs. r: correlation of the two schedules' results across seeds; "
            "pairing narrows the interval only where r > 0. Seeds to resolve: seeds per schedule that would give "
            f"{POWER:.0%} power for the measured gap and spread (paired / unpaired), at {ALPHA:g} divided by the "
            "number of comparisons (so that Holm's correction is met). The 95% intervals are not corrected.",
            "",
            _table(VERDICT_TABLE, rows),
            "",
        ]
        if self.baseline is not None:
            out += [
                f"## Against the baseline ({self.baseline.name})",
                "",
                _table(BASELINE_TABLE, self.baseline_rows()),
                "",
            ]
        out += [
            f"## Time to {plan.target_acc:g} test accuracy (stage 2)",
            "",
            _table(TIME_TABLE, rows),
            "",
            "## Stage 1: the lr grid",
            "",
            f"Mean {'of ' + plan.metric if plan.pick == 'metric' else 'best test accuracy'} over the tuning seeds "
            "at each lr; the picked lr in bold. An lr where a tuning run collapsed or diverged cannot be picked.",
            "",
            markdown_table(
                ["schedule", "lr: score"],
                [[name, _grid_cell(pick, len(plan.tune_seeds))] for name, pick in self.picks.items()],
            ),
            "",
            *self._skipped_section(),
            *(f"![{name}]({name})" for name in FIGURES),
            "",
            "Files: results.csv (every run), verdict.csv (stage 2 per schedule), baseline.csv, picks.json, "
            "study.json (the plan); every run folder holds its metrics.json, TensorBoard curves and .hydra/.",
            "",
        ]
        return "\n".join(out)

    def _skipped_section(self) -> list[str]:
        if not self.skipped:
            return []
        lines = [f"- `{item.folder.relative_to(self.plan.dir)}`: {item.reason}" for item in self.skipped]
        return ["## Skipped runs (not counted: a file cannot be read, or the run has not ended)", "", *lines, ""]

    # ------------------------------------------------------------------------------------------ figures

    def plot(self, paths: Mapping[str, Path]) -> None:
        """The FIGURES, each into its path of `paths`."""
        figure, axes = new_figure()
        for name, pick in self.picks.items():
            points = [(float(row["lr"]), row["score"]) for row in pick["grid"] if row["score"] is not None]
            failed = [float(row["lr"]) for row in pick["grid"] if row["failed"]]
            line = axes.plot(*zip(*sorted(points), strict=True), marker="o", label=name)[0] if points else None
            color = line.get_color() if line else None
            if failed:
                axes.scatter(failed, [0.1] * len(failed), marker="x", color=color)
            if pick["lr"] is not None:
                axes.scatter([float(pick["lr"])], [pick["score"]], marker="*", s=160, color=color, zorder=3)
        axes.set_xscale("log")
        axes.set(xlabel="peak lr", ylabel=f"{self.picks and next(iter(self.picks.values()))['rule']} (stage 1 mean)")
        axes.set_title("lr sensitivity (star: picked; x at 0.1: collapsed or diverged)")
        save_figure(figure, axes, paths[FIGURES[0]])

        figure, axes = new_figure()
        rows = [row for row in self.verdict_rows() if row["diff_vs_best"] is not None]
        for index, row in enumerate(rows):
            low, high = (100 * (row[key] - row["diff_vs_best"]) for key in ("diff_ci_low", "diff_ci_high"))
            axes.errorbar(
                [100 * row["diff_vs_best"]], [index], xerr=[[-low], [high]], fmt="o", capsize=4, label=row["schedule"]
            )
        axes.axvline(0, color="grey", linewidth=1)
        axes.set_yticks(range(len(rows)), [row["schedule"] for row in rows])
        axes.set(xlabel=f"paired difference to {self.best.name if self.best else '-'} (points, 95% CI)")
        axes.set_title("Paired differences to the best schedule")
        save_figure(figure, axes, paths[FIGURES[1]])

        figure, axes = new_figure()
        for contestant in self.contestants.values():
            curves = [
                [epoch["test_acc"] for epoch in run.metrics.get("history", [])]
                for seed, run in contestant.runs.items()
                if seed in contestant.values
            ]
            if not curves:
                continue
            by_epoch = list(zip(*curves, strict=False))  # as many epochs as the shortest curve has
            epochs = list(range(1, len(by_epoch) + 1))
            means = [statistics.fmean(accuracies) for accuracies in by_epoch]
            lows, highs = [min(accuracies) for accuracies in by_epoch], [max(accuracies) for accuracies in by_epoch]
            line = axes.plot(epochs, means, marker="o", label=f"{contestant.name} (lr {contestant.lr:g})")[0]
            axes.fill_between(epochs, lows, highs, color=line.get_color(), alpha=0.2)
        axes.set(xlabel="epoch", ylabel="test accuracy (mean; band: min to max over seeds)")
        axes.set_title("Stage 2 test accuracy per epoch")
        save_figure(figure, axes, paths[FIGURES[2]])


def _pts(value: float | None) -> str:
    """A difference in accuracy points, signed."""
    return "-" if value is None else f"{100 * value:+.2f}"


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _diff_cell(row: dict[str, Any], key: str) -> str:
    if row[key] is None:
        return "-"
    return f"{_pts(row[key])} ({_pts(row['diff_ci_low'])} to {_pts(row['diff_ci_high'])})"


def _resolve_cell(row: dict[str, Any]) -> str:
    paired, welch = row["seeds_to_resolve_paired"], row["seeds_to_resolve_welch"]
    if paired is None and welch is None:
        return "-"
    return f"{_seeds(paired)} / {_seeds(welch)}"


def _failed_cell(row: dict[str, Any]) -> str:
    parts = [f"{row[key]} {key}" for key in ("collapsed", "diverged") if not row[key].startswith("0/")]
    return ", ".join(parts) or "-"


# verdict.csv and baseline.csv, one row per schedule: each column, and how the report fills it from the schedule's
# Contestant `c` and its Versus the table's reference (the best; the baseline).
Column = Callable[[StudyReport, Contestant, Versus], Any]
NOT_COMPARED_WORDS = "not compared (fewer than 2 shared seeds)"


def _compared(name: str) -> Column:
    """The column of a number of the paired comparison (a field of Comparison)."""
    return lambda report, contestant, versus: versus.get(name)


def _to_resolve(name: str) -> Column:
    """The seeds that would resolve a gap not resolved yet (Comparison.seeds_paired or seeds_welch)."""
    return lambda report, contestant, versus: None if versus.resolved else versus.get(name)


def _baseline_word(report: StudyReport, contestant: Contestant, versus: Versus) -> str:
    if versus.comparison is None:
        return NOT_COMPARED_WORDS
    if not versus.resolved:
        return "not resolved"
    return "better" if versus.comparison.diff > 0 else "worse"


VERDICT_COLUMNS: dict[str, Column] = {
    "schedule": lambda report, c, versus: c.name,
    "lr": lambda report, c, versus: c.lr,
    "n": lambda report, c, versus: len(c.values),
    "runs": lambda report, c, versus: len(c.runs),
    "mean": lambda report, c, versus: c.mean,
    "std": lambda report, c, versus: c.std,
    "diff_vs_best": _compared("diff"),
    "diff_ci_low": _compared("ci_low"),
    "diff_ci_high": _compared("ci_high"),
    "p_paired": _compared("p_paired"),
    "p_holm": lambda report, c, versus: versus.p_holm,
    "p_wilcoxon": _compared("p_wilcoxon"),
    "p_welch": _compared("p_welch"),
    "p_welch_holm": lambda report, c, versus: versus.p_welch_holm,
    "correlation": _compared("correlation"),
    "verdict": lambda report, c, versus: report.word(c),
    "seeds": lambda report, c, versus: report.sequential.seeds.get(c.name),
    "stopped": lambda report, c, versus: report.stopped(c),
    "seeds_to_resolve_paired": _to_resolve("seeds_paired"),
    "seeds_to_resolve_welch": _to_resolve("seeds_welch"),
    "collapsed": lambda report, c, versus: f"{c.count('collapsed')}/{len(c.runs)}",
    "diverged": lambda report, c, versus: f"{c.count('diverged')}/{len(c.runs)}",
    "reached_target": lambda report, c, versus: (
        f"{sum(s is not None for s in c.steps_to(report.plan.target_acc))}/{len(c.runs)}"
    ),
    "median_steps_to_target": lambda report, c, versus: _median(c.steps_to(report.plan.target_acc)),
    "median_seconds_to_target": lambda report, c, versus: _median(c.seconds_to(report.plan.target_acc)),
}
BASELINE_COLUMNS: dict[str, Column] = {
    "schedule": VERDICT_COLUMNS["schedule"],
    "baseline": lambda report, contestant, versus: report.baseline.name,
    "diff_vs_baseline": _compared("diff"),
    **{name: VERDICT_COLUMNS[name] for name in ("diff_ci_low", "diff_ci_high", "p_paired", "p_holm", "p_welch")},
    **{name: VERDICT_COLUMNS[name] for name in ("p_welch_holm", "correlation")},
    "verdict": _baseline_word,
}

# The report's tables: each column's header, and how its cell is made from a row of verdict_rows() or baseline_rows().
VERDICT_TABLE: dict[str, Callable[[dict[str, Any]], str]] = {
    "schedule": lambda row: row["schedule"],
    "lr": lambda row: _num(row["lr"], "g"),
    "n": lambda row: str(row["n"]),
    "mean ± std": lambda row: f"{_num(row['mean'], '.4f')} ± {_num(row['std'], '.4f')}",
    "diff (95% CI)": lambda row: _diff_cell(row, "diff_vs_best"),
    "p (Holm)": lambda row: _num(row["p_holm"], ".3g"),
    "Wilcoxon p": lambda row: _num(row["p_wilcoxon"], ".3g"),
    "Welch p (Holm)": lambda row: _num(row["p_welch_holm"], ".3g"),
    "r": lambda row: _num(row["correlation"], ".2f"),
    "verdict": lambda row: row["verdict"],
    "seeds: why": lambda row: f"{row['seeds'] if row['seeds'] is not None else '-'}: {row['stopped']}",
    "seeds to resolve": _resolve_cell,
    "failed": _failed_cell,
}
BASELINE_TABLE = {
    "schedule": VERDICT_TABLE["schedule"],
    "diff (95% CI)": lambda row: _diff_cell(row, "diff_vs_baseline"),
    **{header: VERDICT_TABLE[header] for header in ("p (Holm)", "Welch p (Holm)", "r", "verdict")},
}
TIME_TABLE = {
    "schedule": VERDICT_TABLE["schedule"],
    "reached": lambda row: row["reached_target"],
    "median steps": lambda row: _num(row["median_steps_to_target"], ".0f"),
    "median seconds": lambda row: _num(row["median_seconds_to_target"], ".1f"),
}


def _table(columns: Mapping[str, Callable[[dict[str, Any]], str]], rows: Iterable[dict[str, Any]]) -> str:
    return markdown_table(list(columns), ([cell(row) for cell in columns.values()] for row in rows))


def _seeds_text(comparison: Comparison) -> str:
    if comparison.seeds_paired is None and comparison.seeds_welch is None:
        return "no gap measured to size a study for"
    return (
        f"about {_seeds(comparison.seeds_paired)} seeds (paired) or {_seeds(comparison.seeds_welch)} (unpaired) "
        f"would resolve it at {POWER:.0%} power, at {ALPHA:g} divided by the number of comparisons"
    )


def _seeds(count: int | None) -> str:
    """A seed count from src.analysis.stats.seeds_needed; None past its search (MAX_SEEDS)."""
    return str(count) if count else f">{MAX_SEEDS}"


def _grid_cell(pick: dict[str, Any], seeds: int) -> str:
    """Each lr's score (or its failures), with its number of runs when a tuning seed has none."""
    cells = []
    for row in sorted(pick["grid"], key=lambda row: float(row["lr"])):
        if row["failed"]:
            text = f"{row['lr']}: {row['failed']}/{row['runs']} failed"
        elif row.get("dropped_at"):
            text = f"{row['lr']}: dropped at epoch {row['dropped_at']} ({_num(row['rung_score'], '.4f')})"
        elif row["score"] is None:
            text = f"{row['lr']}: -"
        else:
            text = f"{row['lr']}: {row['score']:.4f}"
        if row["runs"] < seeds:
            text += f" ({row['runs']} of {seeds} seeds)"
        cells.append(f"**{text}**" if row["lr"] == pick["lr"] else text)
    return " · ".join(cells)


def build_study_report(plan: Plan, picks: dict[str, Any], wall_seconds: float) -> StudyReport:
    """The report of the runs in the study folder; a run folder that cannot be read, or whose run has not ended, is
    skipped and named."""
    scan = scan_runs(Path(plan.dir))
    dropped = {  # tuning runs paused at a rung and not promoted: stage 1's table has them, with their rung score
        Path(plan.job_dir("tune", name, row["lr"], seed))
        for name, pick in picks.items()
        for row in pick["grid"]
        if row.get("dropped_at")
        for seed in plan.tune_seeds
    }
    unfinished = [item for item in scan.unfinished if item.folder not in dropped]
    skipped = [*scan.skipped, *(Skipped(item.folder, item.reason) for item in unfinished)]
    skipped += [Skipped(job.folder, f"failed.json: {job.reason}") for job in scan.failed]
    return StudyReport(plan, picks, collect(scan.runs), wall_seconds, sorted(skipped, key=lambda item: item.folder))


def write_study_report(report: StudyReport) -> None:
    """Its CSV files, figures and report.md into the study folder, all or none (OSError when they cannot be)."""
    names = ("results.csv", "verdict.csv", "baseline.csv", *FIGURES, "report.md")
    with written_together(Path(report.plan.dir), names) as paths:
        write_csv(paths["results.csv"], report.result_rows(), RESULT_COLUMNS)
        write_csv(paths["verdict.csv"], report.verdict_rows(), VERDICT_COLUMNS)
        write_csv(paths["baseline.csv"], report.baseline_rows(), BASELINE_COLUMNS)
        report.plot(paths)
        paths["report.md"].write_text(report.markdown())
