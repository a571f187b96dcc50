"""A study's report, from its finished runs to the verdict: results.csv (one row per run), verdict.csv (one row per
schedule and condition), baseline.csv, report.md and its figures, written together into the study folder; with
`study.conditions`, also conditions.csv (where the best changes) and profile.png. Runs are read with
src.analysis.runs; a run folder it cannot read is skipped and named, never counted. Each condition's verdict is
src.analysis.study.verdict's. Collapsed and diverged runs are counted per schedule and left out of every mean and test.

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

from src.analysis.runs import TAIL_METRIC, Run, Skipped, scan_runs
from src.analysis.stats import ALPHA, POWER
from src.analysis.study.figures import FIGURES, PROFILE_FIGURE, plot
from src.analysis.study.plan import METRICS, Plan
from src.analysis.study.verdict import (
    NOT_COMPARED,
    NOT_COMPARED_WORDS,
    ConditionVerdict,
    Contestant,
    Versus,
    fmt_number,
    fmt_points,
    fmt_seeds,
)
from src.runs.files import markdown_table, write_csv, written_together


@dataclass
class StudyRun:
    """A run of the study, with the stage, schedule (its label in the study), lr and seed it was launched for."""

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


def _family(plan: Plan, label: str) -> str:
    return cell.family if (cell := plan.schedule(label)) else label


def _condition(plan: Plan, label: str) -> str | None:
    return cell.condition if (cell := plan.schedule(label)) else None


# results.csv, one row per run: each column, and how a run of the study fills it.
RESULT_COLUMNS: dict[str, Callable[[StudyRun, Plan], Any]] = {
    "stage": lambda item, plan: item.stage,
    "schedule": lambda item, plan: _family(plan, item.schedule),
    "condition": lambda item, plan: _condition(plan, item.schedule),
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


def _median(values: Iterable[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


class StudyReport:
    """The verdict on a study's runs, one ConditionVerdict per condition (one for a study without conditions);
    `skipped` are the run folders left out (a file cannot be read, or the run has not ended), named in the report
    and never counted."""

    def __init__(
        self, plan: Plan, picks: dict[str, Any], runs: list[StudyRun], wall_seconds: float, skipped: list[Skipped]
    ):
        self.plan, self.picks, self.runs, self.wall_seconds, self.skipped = plan, picks, runs, wall_seconds, skipped
        self.verdicts = {
            condition: ConditionVerdict(plan, picks, runs, condition) for condition in plan.condition_names()
        }

    @property
    def across(self) -> bool:
        """Whether the study compares conditions."""
        return bool(self.plan.conditions)

    # ------------------------------------------------------------------------------------------ the tables

    def verdict_rows(self) -> list[dict[str, Any]]:
        """verdict.csv: every schedule of every condition, in each the best first, then by mean."""
        return [
            _row(VERDICT_COLUMNS, verdict, c, verdict.versus.get(c.name, NOT_COMPARED))
            for verdict in self.verdicts.values()
            for c in verdict.ranked()
        ]

    def baseline_rows(self) -> list[dict[str, Any]]:
        """baseline.csv: every other measured schedule against the baseline, per condition."""
        return [
            _row(BASELINE_COLUMNS, verdict, verdict.contestants[name], versus)
            for verdict in self.verdicts.values()
            for name, versus in verdict.against_baseline.items()
        ]

    def result_rows(self) -> list[dict[str, Any]]:
        ordered = sorted(self.runs, key=lambda r: (r.stage == "confirm", r.schedule, r.lr, r.seed))  # tune first
        return [{column: cell(item, self.plan) for column, cell in RESULT_COLUMNS.items()} for item in ordered]

    def condition_rows(self) -> list[dict[str, Any]]:
        """conditions.csv: per condition, the best and the schedules tied with it, worse than it, still open."""
        rows = []
        for condition, verdict in self.verdicts.items():
            best = verdict.best
            rows.append(
                {
                    "condition": condition,
                    "overrides": " ".join(self.plan.conditions.get(condition, [])),
                    "best": best.family if best else None,
                    "best_mean": best.mean if best else None,
                    **{answer: " ".join(verdict.answered(answer)) for answer in ("tied", "open", "worse")},
                }
            )
        return rows

    def gaps(self) -> dict[str, dict[str | None, float | None]]:
        """Each schedule's gap to its condition's best mean, in points (0 for the best; None without a result)."""
        gaps: dict[str, dict[str | None, float | None]] = {}
        for condition, verdict in self.verdicts.items():
            top = verdict.best.mean if verdict.best else None
            for c in verdict.contestants.values():
                gap = 100 * (top - c.mean) if top is not None and c.mean is not None else None
                gaps.setdefault(c.family, {})[condition] = max(0.0, gap) if gap is not None else None
        return gaps

    def profile(self, tau: float) -> dict[str, float]:
        """The performance profile at `tau` points: per schedule, the share of conditions in which its mean is
        within `tau` of the best's (AlgoPerf's profile, on the accuracy gap instead of a time ratio)."""
        return {
            family: statistics.fmean(gap is not None and gap <= tau + 1e-12 for gap in by_condition.values())
            for family, by_condition in self.gaps().items()
        }

    # ------------------------------------------------------------------------------------------ words

    def summary_text(self) -> str:
        """The verdict in words: per condition, then (under conditions) where the best changes."""
        if not self.across:
            return self.verdicts[None].summary_text()
        parts = [f"Condition {name}: {verdict.summary_text()}" for name, verdict in self.verdicts.items()]
        return "\n\n".join([*parts, self.flips_text()])

    def flips_text(self) -> str:
        """Whether the best, or the set tied with it, changes across the conditions, in words."""
        bests = {name: v.best.family for name, v in self.verdicts.items() if v.best}
        if not bests:
            return "No condition has a verdict."
        lines = []
        if missing := [str(name) for name in self.verdicts if name not in bests]:
            lines.append(
                f"No verdict under {', '.join(missing)} (no finished confirm run); the rest is about the others."
            )
        safe = {name: {v.best.family, *v.answered("tied")} for name, v in self.verdicts.items() if v.best}
        always = set.intersection(*safe.values())
        if len(set(bests.values())) == 1:
            lines.append(f"The best is {next(iter(bests.values()))} under every condition.")
        else:
            listed = "; ".join(f"{name}: {best}" for name, best in bests.items())
            lines.append(f"The winner changes with the condition ({listed}).")
        if always:
            lines.append(f"Best or tied with the best under every condition: {', '.join(sorted(always))}.")
        else:
            lines.append("No schedule is best or tied with the best under every condition.")
        at_margin = self.profile(self.plan.margin)
        shares = ", ".join(f"{family} {share:.0%}" for family, share in sorted(at_margin.items(), key=lambda i: -i[1]))
        lines.append(f"Mean within {self.plan.margin:g} points of the best's, share of conditions: {shares}.")
        return " ".join(lines)

    def branching_text(self) -> str:
        """Which schedules' confirm runs branched from their longest budget's run, and which trained once per
        budget."""
        plan = self.plan
        branched = [r for r in self.runs if r.stage == "confirm" and r.run.metrics.get("branched_from")]
        by_cell = {name: sum(r.schedule == name for r in branched) for name in plan.branches}
        parts = [
            f"{name} after epoch {spec['epoch']} ({by_cell[name]} of "
            f"{sum(r.stage == 'confirm' and r.schedule == name for r in self.runs)} runs)"
            for name, spec in plan.branches.items()
        ]
        alone = sorted({s.family for s in plan.schedules} - {plan.schedule(name).family for name in plan.branches})
        lines = []
        if parts:
            lines.append(
                "Confirm runs branched from the same schedule's run under the longest budget (same lr and seed; "
                f"checkpoint.branch_from, equal to training them alone): {'; '.join(parts)}."
            )
        if alone:
            lines.append(
                f"Trained once per budget: {', '.join(alone)} (their lr curves differ between budgets from the "
                "first epoch: a decay over the whole run, or a warmup given as a ratio of it)."
            )
        lines.append("Stage 1 trains every budget on its own.")
        return " ".join(lines)

    def markdown(self) -> str:
        plan = self.plan
        metric = METRICS[plan.metric]
        total_train = sum(r.run.metrics.get("wall_seconds") or 0 for r in self.runs)
        families = list(dict.fromkeys(schedule.family for schedule in plan.schedules))
        out = [
            f"# Study: {len(families)} schedules"
            + (f" under {len(plan.conditions)} conditions" if self.across else "")
            + f", {len(self.runs)} runs",
            "",
            f"Folder `{plan.dir}`; preset `{plan.preset}`; run overrides `{' '.join(plan.run_overrides) or '-'}`; "
            f"tuning overrides `{' '.join(plan.tune_overrides) or '-'}`.",
            f"Metric: {metric} (`{plan.metric}`); lr pick: `{plan.pick}`; tuning seeds {plan.tune_seeds}; "
            f"confirm seeds {plan.confirm_seeds[0]}..{plan.confirm_seeds[-1]} (paired), looked at after "
            f"{', '.join(map(str, plan.confirm_rounds))} seeds ({plan.spending} spending); margin ±{plan.margin:g} "
            "points; successive halving: "
            f"{'off' if plan.halving is None else f'keep 1/{plan.halving:g} at rungs {plan.rungs}'}.",
            f"This command's wall time: {self.wall_seconds:.0f} s; the runs' own training time: {total_train:.0f} s.",
            "",
        ]
        if self.across:
            out += self._across_section()
        for condition, verdict in self.verdicts.items():
            out += self._condition_section(condition, verdict)
        out += [
            *self._skipped_section(),
            *(f"![{name}]({name})" for name in self.figures()),
            "",
            "Files: results.csv (every run), verdict.csv (stage 2 per schedule"
            + (" and condition), conditions.csv (the best per condition)" if self.across else ")")
            + ", baseline.csv, picks.json, study.json (the plan); every run folder holds its metrics.json, "
            "TensorBoard curves and .hydra/.",
            "",
        ]
        return "\n".join(out)

    def _across_section(self) -> list[str]:
        rows = self.condition_rows()
        return [
            "## Across conditions: where the best changes",
            "",
            self.flips_text(),
            "",
            markdown_table(
                ["condition", "overrides", "best (mean)", "tied with it", "open", "worse"],
                [
                    [
                        str(row["condition"]),
                        f"`{row['overrides']}`",
                        f"{row['best'] or '-'} ({fmt_number(row['best_mean'], '.4f')})",
                        *(row[answer].replace(" ", ", ") or "-" for answer in ("tied", "open", "worse")),
                    ]
                    for row in rows
                ],
            ),
            "",
            f"![{PROFILE_FIGURE}]({PROFILE_FIGURE})",
            "",
            self.branching_text(),
            "",
            "The performance profile: for each schedule, the share of conditions in which its mean is within tau "
            f"points of the best's, against tau; the dashed line is the margin (±{self.plan.margin:g}).",
            "",
        ]

    def _condition_section(self, condition: str | None, verdict: ConditionVerdict) -> list[str]:
        plan, rows = self.plan, [row for row in self.verdict_rows() if row["condition"] == condition]
        suffix = f" under {condition} (`{' '.join(plan.conditions[condition])}`)" if condition else ""
        out = [
            f"## Verdict{suffix}",
            "",
            verdict.summary_text(),
            "",
            f"### Stage 2{suffix}: every schedule at its own lr, paired seeds",
            "",
            f"Differences are against the best ({verdict.best.family if verdict.best else '-'}), in accuracy points, "
            "over the seeds where both runs are ok. The verdict is the sequential rule's (docs/study.md): at each "
            "look (the seed counts above) every open comparison is tested twice, for a difference (paired t-test, "
            f"p) and for equivalence within ±{plan.margin:g} points (two one-sided tests, TOST p), all Holm-adjusted "
            "together and tested at the share of 0.05 spent there: *tied* = equivalence shown (pick either), "
            "*worse* = a difference shown, *open* = neither yet; `seeds: why` says where each stopped. "
            "P(beats best): the share of paired seeds on which the schedule beat the best (a tie counts half). "
            "Welch: the unpaired view. r: correlation of the two schedules' results across seeds; pairing narrows "
            f"the interval only where r > 0. Seeds to decide: seeds at {POWER:.0%} power that would show it worse "
            "(paired / unpaired) or tied, for the gap and spread measured, at "
            f"{ALPHA:g} divided by the number of comparisons. lr range: the neighbouring lrs of stage 1 within the "
            "margin of the schedule's own best (× how wide; ≥ when it reaches the grid's edge). The 95% intervals are "
            "not corrected.",
            "",
            _table(VERDICT_TABLE, rows),
            "",
        ]
        if verdict.baseline is not None:
            baseline = [row for row in self.baseline_rows() if row["condition"] == condition]
            out += [
                f"### Against the baseline ({verdict.baseline.family}){suffix}",
                "",
                _table(BASELINE_TABLE, baseline),
                "",
            ]
        out += [
            f"### Time to {plan.target_acc:g} test accuracy (stage 2){suffix}",
            "",
            _table(TIME_TABLE, rows),
            "",
            f"### Stage 1{suffix}: the lr grid",
            "",
            f"Mean {'of ' + plan.metric if plan.pick == 'metric' else 'best test accuracy'} over the tuning seeds "
            "at each lr; the picked lr in bold. An lr where a tuning run collapsed or diverged cannot be picked.",
            "",
            markdown_table(
                ["schedule", "lr: score"],
                [
                    [verdict.contestants[name].family, _grid_cell(pick, len(plan.tune_seeds))]
                    for name, pick in verdict.picks.items()
                ],
            ),
            "",
        ]
        return out

    def _skipped_section(self) -> list[str]:
        if not self.skipped:
            return []
        lines = [f"- `{item.folder.relative_to(self.plan.dir)}`: {item.reason}" for item in self.skipped]
        return ["## Skipped runs (not counted: a file cannot be read, or the run has not ended)", "", *lines, ""]

    # ------------------------------------------------------------------------------------------ figures

    def figures(self) -> tuple[str, ...]:
        return (*FIGURES, PROFILE_FIGURE) if self.across else FIGURES


def _row(columns: Mapping[str, Column], verdict: ConditionVerdict, contestant: Contestant, versus: Versus) -> dict:
    return {name: column(verdict, contestant, versus) for name, column in columns.items()}


def _diff_cell(row: dict[str, Any], key: str) -> str:
    if row[key] is None:
        return "-"
    return f"{fmt_points(row[key])} ({fmt_points(row['diff_ci_low'])} to {fmt_points(row['diff_ci_high'])})"


def _decide_cell(row: dict[str, Any]) -> str:
    paired, welch, tied = (row[key] for key in ("seeds_to_resolve_paired", "seeds_to_resolve_welch", "seeds_to_tie"))
    if paired is None and welch is None and tied is None:
        return "-"
    return f"worse {fmt_seeds(paired)} / {fmt_seeds(welch)}; tied {fmt_seeds(tied) if tied else 'never'}"


def _range_cell(row: dict[str, Any]) -> str:
    if row["lr_range_low"] is None:
        return "-"
    at_least = "≥ " if row["lr_range_at_edge"] else ""
    return f"{row['lr_range_low']:g} to {row['lr_range_high']:g} ({at_least}×{row['lr_range_factor']:.3g})"


def _failed_cell(row: dict[str, Any]) -> str:
    parts = [f"{row[key]} {key}" for key in ("collapsed", "diverged") if not row[key].startswith("0/")]
    return ", ".join(parts) or "-"


def _grid_cell(pick: dict[str, Any], seeds: int) -> str:
    """Each lr's score (or its failures), with its number of runs when a tuning seed has none."""
    cells = []
    for row in sorted(pick["grid"], key=lambda row: float(row["lr"])):
        if row["failed"]:
            text = f"{row['lr']}: {row['failed']}/{row['runs']} failed"
        elif row.get("dropped_at"):
            text = f"{row['lr']}: dropped at epoch {row['dropped_at']} ({fmt_number(row['rung_score'], '.4f')})"
        elif row["score"] is None:
            text = f"{row['lr']}: -"
        else:
            text = f"{row['lr']}: {row['score']:.4f}"
        if row["runs"] < seeds:
            text += f" ({row['runs']} of {seeds} seeds)"
        cells.append(f"**{text}**" if row["lr"] == pick["lr"] else text)
    return " · ".join(cells)


# verdict.csv and baseline.csv, one row per schedule and condition: each column, and how the report fills it from
# the condition's verdict, the schedule's Contestant `c` and its Versus the table's reference (the best; the baseline).
Column = Callable[[ConditionVerdict, Contestant, Versus], Any]


def _compared(name: str) -> Column:
    """The column of a number of the paired comparison (a field of Comparison)."""
    return lambda verdict, contestant, versus: versus.get(name)


def _to_decide(name: str) -> Column:
    """The seeds that would decide a comparison still open (Comparison.seeds_paired, seeds_welch, seeds_tied)."""
    return lambda verdict, contestant, versus: None if versus.resolved else versus.get(name)


def _lr_range(key: str) -> Column:
    def cell(verdict: ConditionVerdict, contestant: Contestant, versus: Versus) -> Any:
        robust = verdict.picks.get(contestant.name, {}).get("lr_range")
        if robust is None:
            return None
        return float(robust[key]) if key in ("low", "high") else robust[key]

    return cell


def _baseline_word(verdict: ConditionVerdict, contestant: Contestant, versus: Versus) -> str:
    if versus.comparison is None:
        return NOT_COMPARED_WORDS
    if versus.p_tied_holm is not None and versus.p_tied_holm < ALPHA:
        return "tied"
    if not versus.resolved:
        return "open"
    return "better" if versus.comparison.diff > 0 else "worse"


VERDICT_COLUMNS: dict[str, Column] = {
    "schedule": lambda verdict, c, versus: c.family,
    "condition": lambda verdict, c, versus: verdict.condition,
    "lr": lambda verdict, c, versus: c.lr,
    "n": lambda verdict, c, versus: len(c.values),
    "runs": lambda verdict, c, versus: len(c.runs),
    "mean": lambda verdict, c, versus: c.mean,
    "std": lambda verdict, c, versus: c.std,
    "verdict": lambda verdict, c, versus: verdict.answer(c),
    "diff_vs_best": _compared("diff"),
    "diff_ci_low": _compared("ci_low"),
    "diff_ci_high": _compared("ci_high"),
    "p_beats_best": _compared("p_beats"),
    "p_paired": _compared("p_paired"),
    "p_holm": lambda verdict, c, versus: versus.p_holm,
    "margin": lambda verdict, c, versus: verdict.margin,
    "p_tost_lower": _compared("p_tost_lower"),
    "p_tost_upper": _compared("p_tost_upper"),
    "p_equivalent": _compared("p_equivalent"),
    "p_tied_holm": lambda verdict, c, versus: versus.p_tied_holm,
    "p_wilcoxon": _compared("p_wilcoxon"),
    "p_welch": _compared("p_welch"),
    "p_welch_holm": lambda verdict, c, versus: versus.p_welch_holm,
    "correlation": _compared("correlation"),
    "seeds": lambda verdict, c, versus: verdict.sequential.seeds.get(c.name),
    "stopped": lambda verdict, c, versus: verdict.stopped(c),
    "seeds_to_resolve_paired": _to_decide("seeds_paired"),
    "seeds_to_resolve_welch": _to_decide("seeds_welch"),
    "seeds_to_tie": _to_decide("seeds_tied"),
    "lr_range_low": _lr_range("low"),
    "lr_range_high": _lr_range("high"),
    "lr_range_factor": _lr_range("factor"),
    "lr_range_epoch": _lr_range("epoch"),
    "lr_range_at_edge": _lr_range("at_edge"),
    "collapsed": lambda verdict, c, versus: f"{c.count('collapsed')}/{len(c.runs)}",
    "diverged": lambda verdict, c, versus: f"{c.count('diverged')}/{len(c.runs)}",
    "reached_target": lambda verdict, c, versus: (
        f"{sum(s is not None for s in c.steps_to(verdict.plan.target_acc))}/{len(c.runs)}"
    ),
    "median_steps_to_target": lambda verdict, c, versus: _median(c.steps_to(verdict.plan.target_acc)),
    "median_seconds_to_target": lambda verdict, c, versus: _median(c.seconds_to(verdict.plan.target_acc)),
}
BASELINE_COLUMNS: dict[str, Column] = {
    "schedule": VERDICT_COLUMNS["schedule"],
    "condition": VERDICT_COLUMNS["condition"],
    "baseline": lambda verdict, contestant, versus: verdict.baseline.family,
    "diff_vs_baseline": _compared("diff"),
    **{name: VERDICT_COLUMNS[name] for name in ("diff_ci_low", "diff_ci_high", "p_beats_best", "p_paired", "p_holm")},
    **{name: VERDICT_COLUMNS[name] for name in ("p_tied_holm", "p_welch", "p_welch_holm", "correlation")},
    "verdict": _baseline_word,
}

# The report's tables: each column's header, and how its cell is made from a row of verdict_rows() or baseline_rows().
VERDICT_TABLE: dict[str, Callable[[dict[str, Any]], str]] = {
    "schedule": lambda row: row["schedule"],
    "lr": lambda row: fmt_number(row["lr"], "g"),
    "n": lambda row: str(row["n"]),
    "mean ± std": lambda row: f"{fmt_number(row['mean'], '.4f')} ± {fmt_number(row['std'], '.4f')}",
    "verdict": lambda row: row["verdict"],
    "diff (95% CI)": lambda row: _diff_cell(row, "diff_vs_best"),
    "P(beats best)": lambda row: fmt_number(row["p_beats_best"], ".0%"),
    "p (Holm)": lambda row: fmt_number(row["p_holm"], ".3g"),
    "TOST p (Holm)": lambda row: fmt_number(row["p_tied_holm"], ".3g"),
    "Wilcoxon p": lambda row: fmt_number(row["p_wilcoxon"], ".3g"),
    "Welch p (Holm)": lambda row: fmt_number(row["p_welch_holm"], ".3g"),
    "r": lambda row: fmt_number(row["correlation"], ".2f"),
    "seeds: why": lambda row: f"{row['seeds'] if row['seeds'] is not None else '-'}: {row['stopped']}",
    "seeds to decide": _decide_cell,
    "lr range": _range_cell,
    "failed": _failed_cell,
}
BASELINE_TABLE = {
    "schedule": VERDICT_TABLE["schedule"],
    "diff (95% CI)": lambda row: _diff_cell(row, "diff_vs_baseline"),
    **{header: VERDICT_TABLE[header] for header in ("P(beats best)", "p (Holm)", "TOST p (Holm)")},
    **{header: VERDICT_TABLE[header] for header in ("Welch p (Holm)", "r", "verdict")},
}
TIME_TABLE = {
    "schedule": VERDICT_TABLE["schedule"],
    "reached": lambda row: row["reached_target"],
    "median steps": lambda row: fmt_number(row["median_steps_to_target"], ".0f"),
    "median seconds": lambda row: fmt_number(row["median_seconds_to_target"], ".1f"),
}
CONDITION_COLUMNS = ("condition", "overrides", "best", "best_mean", "tied", "open", "worse")


def _table(columns: Mapping[str, Callable[[dict[str, Any]], str]], rows: Iterable[dict[str, Any]]) -> str:
    return markdown_table(list(columns), ([cell(row) for cell in columns.values()] for row in rows))


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
    tables = ("results.csv", "verdict.csv", "baseline.csv", *(("conditions.csv",) if report.across else ()))
    with written_together(Path(report.plan.dir), (*tables, *report.figures(), "report.md")) as paths:
        write_csv(paths["results.csv"], report.result_rows(), RESULT_COLUMNS)
        write_csv(paths["verdict.csv"], report.verdict_rows(), VERDICT_COLUMNS)
        write_csv(paths["baseline.csv"], report.baseline_rows(), BASELINE_COLUMNS)
        if report.across:
            write_csv(paths["conditions.csv"], report.condition_rows(), CONDITION_COLUMNS)
        plot(report, paths)
        paths["report.md"].write_text(report.markdown())
