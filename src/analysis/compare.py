"""`python -m src.compare <folder>`: the runs below a sweep folder (or all of outputs/), side by side.

Numbers come from each run's metrics.json, curves from its TensorBoard event files, and what the run was from its
`.hydra/` files (the same flat hyperparameters the HParams dashboard shows), all read by src.analysis.runs. Runs
that differ only in their seed form one configuration: one row with mean ± std over them and their count (one run
per seed: a repeat of a seed is a duplicate, the newest counts). Written into the folder (or `--out`): summary.md,
summary.csv, lr_curves.png, test_acc.png and final_acc_vs_warmup.png; the table is also printed.

A run folder that cannot be read (damaged metrics.json or `.hydra/`) is skipped and named in the report and on
stderr; unfinished runs and sweep jobs refused before training (failed.json) are listed, never averaged. A folder
that cannot hold the report gets it written to outputs/compare/<its name>-<time> instead (exit 0); exit 3 when
nowhere could, 2 when there is nothing to report.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from src.analysis.runs import TAIL_METRIC, FailedJob, Run, Scan, Unfinished, failure_text, scan_runs
from src.analysis.stats import mean_std
from src.runs.errors import error_reason
from src.runs.files import markdown_table, new_figure, save_figure, write_csv, written_together

WARMUP_KEY = "scheduler.warmup_ratio"
FIGURES = ("lr_curves.png", "test_acc.png", "final_acc_vs_warmup.png")
# The test accuracy whose first epoch the report gives ("epochs to target"), unless asked otherwise.
DEFAULT_TARGET_ACC = 0.85


class NoRunsError(RuntimeError):
    """The folder holds nothing to report: no finished, unfinished or failed run (damaged ones are only skipped)."""


class ReportNotWrittenError(OSError):
    """Neither the asked-for folder nor the fallback could hold the report; `report` is still there to print."""

    def __init__(self, report: Report):
        self.report = report
        where = "; ".join(f"{folder}: {error_reason(error)}" for folder, error in report.unwritable)
        super().__init__(f"cannot write the report ({where})")


def _seed(hparams: dict[str, Any]) -> str:
    return repr(hparams.get("seed"))


@dataclass
class Configuration:
    """Runs sharing every hyperparameter but the seed.

    `runs` holds one finished run per seed: the same configuration and seed computes the same run again (bit for bit
    on the CPU), so a repeat is no new evidence. The newest one counts (the latest metrics.json; on a tie the last
    folder in path order) and the older ones are set aside in `duplicates`. Unfinished runs and failed jobs of the
    configuration are listed with it, never averaged.
    """

    hparams: dict[str, Any]
    runs: list[Run] = field(default_factory=list)
    duplicates: list[Run] = field(default_factory=list)
    unfinished: list[Unfinished] = field(default_factory=list)
    failed: list[FailedJob] = field(default_factory=list)

    @property
    def ok_runs(self) -> list[Run]:
        return [run for run in self.runs if run.outcome == "ok"]

    def stat(self, name: str) -> tuple[float | None, float | None]:
        """Mean and std over the ok runs: a collapsed or diverged run is counted (`failed`), never averaged."""
        return mean_std(run.value(name) for run in self.ok_runs)

    def set_aside_duplicates(self) -> None:
        by_seed: dict[str, list[Run]] = {}
        for run in self.runs:
            by_seed.setdefault(_seed(run.hparams), []).append(run)
        self.runs, self.duplicates = [], []
        for same_seed in by_seed.values():
            *older, newest = sorted(same_seed, key=lambda run: (run.modified, str(run.folder)))
            self.runs.append(newest)
            self.duplicates += older

    def counted_instead_of(self, duplicate: Run) -> Run:
        return next(run for run in self.runs if _seed(run.hparams) == _seed(duplicate.hparams))


def group_runs(scan: Scan) -> list[Configuration]:
    """The scan's runs in configurations (in order of first appearance), one counted run per seed; unfinished runs
    and failed jobs (those with a readable `.hydra/`) join their configuration's lists."""
    groups: dict[tuple, Configuration] = {}

    def configuration(hparams: dict[str, Any]) -> Configuration:
        shared = {key: value for key, value in hparams.items() if key != "seed"}
        identity = tuple(sorted((key, repr(value)) for key, value in shared.items()))
        return groups.setdefault(identity, Configuration(hparams=shared))

    for run in scan.runs:
        configuration(run.hparams).runs.append(run)
    for item in scan.unfinished:
        configuration(item.hparams).unfinished.append(item)
    for job in scan.failed:
        if job.hparams is not None:
            configuration(job.hparams).failed.append(job)
    for group in groups.values():
        group.set_aside_duplicates()
    return list(groups.values())


def varying_keys(configurations: list[Configuration]) -> list[str]:
    """The sweep's axes, the key columns: hyperparameters (besides the schedule's name) that every configuration
    has and that differ between them, or that differ between configurations of one schedule.

    A zoo of schedules then shows the keys they share (warmup_ratio), not every schedule's own parameters.
    """
    keys = sorted({key for configuration in configurations for key in configuration.hparams} - {"scheduler"})
    by_schedule: dict[Any, list[Configuration]] = {}
    for configuration in configurations:
        by_schedule.setdefault(configuration.hparams.get("scheduler"), []).append(configuration)

    def differs(group: list[Configuration], key: str) -> bool:
        return len({repr(configuration.hparams.get(key)) for configuration in group}) > 1

    def shared(key: str) -> bool:
        return all(key in configuration.hparams for configuration in configurations)

    return [
        key
        for key in keys
        if (shared(key) and differs(configurations, key)) or any(differs(group, key) for group in by_schedule.values())
    ]


def label(configuration: Configuration, keys: list[str]) -> str:
    """A short legend entry: the schedule's name and the key columns, without their group prefix."""
    parts = [str(configuration.hparams.get("scheduler"))]
    parts += [f"{key.split('.', 1)[-1]}={configuration.hparams.get(key)}" for key in keys]
    return " ".join(parts)


@dataclass
class Report:
    """The comparison table: one row per configuration, sorted by mean final test accuracy (best first), and the
    lists of what was not averaged: failed jobs, unfinished runs, duplicate seeds and skipped (damaged) folders."""

    configurations: list[Configuration]
    keys: list[str]
    target_acc: float
    folder: Path  # the compared folder: listed folders are shown relative to it
    scan: Scan  # what is listed under the table: its unfinished runs, failed jobs and skipped folders
    written_to: Path | None = None  # where write_report wrote the files
    unwritable: list[tuple[Path, OSError]] = field(default_factory=list)  # where it could not, and why

    def _row(self, configuration: Configuration) -> dict[str, Any]:
        steps = [run.steps_to(self.target_acc) for run in configuration.runs]
        row: dict[str, Any] = {"schedule": configuration.hparams.get("scheduler")}
        row.update({key: configuration.hparams.get(key) for key in self.keys})
        row["seeds"] = len(configuration.runs)
        row["runs"] = len(configuration.runs) + len(configuration.duplicates)
        row["duplicates"] = len(configuration.duplicates)
        row["unfinished"] = len(configuration.unfinished)
        row["failed_jobs"] = len(configuration.failed)
        row["diverged"] = sum(run.outcome == "diverged" for run in configuration.runs)
        row["collapsed"] = sum(run.outcome == "collapsed" for run in configuration.runs)
        for name in ("test_acc", TAIL_METRIC, "best_test_acc", "train_loss", "wall_seconds"):
            row[f"{name}_mean"], row[f"{name}_std"] = configuration.stat(name)
        row["steps_to_target_mean"], row["steps_to_target_std"] = mean_std(steps)
        row["reached_target"] = sum(step is not None for step in steps)
        return row

    def rows(self) -> list[dict[str, Any]]:
        rows = [self._row(configuration) for configuration in self.configurations]
        return sorted(
            rows, key=lambda row: -1.0 if row["test_acc_mean"] is None else row["test_acc_mean"], reverse=True
        )

    def write_csv(self, path: Path) -> None:
        write_csv(path, self.rows(), list(self._row(Configuration(hparams={}))))

    def markdown(self) -> str:
        """The table, then the lists of failed jobs, unfinished runs, duplicate seeds and skipped folders."""
        rows = self.rows()
        left_out = any(row["unfinished"] or row["failed_jobs"] for row in rows)
        header = ["schedule", *self.keys, "seeds", "final test acc", "last 10% test acc", "best test acc"]
        header += ["final train loss", f"steps to {self.target_acc:g} acc", "wall s", "failed"]
        header += ["left out"] if left_out else []
        table = []
        for row in rows:
            reached, seeds = row["reached_target"], row["seeds"]
            steps = _cell(row, "steps_to_target", ".0f")
            if seeds and reached < seeds:
                steps = f"{steps} ({reached}/{seeds} reached)" if reached else f"never (0/{seeds})"
            cells = [str(row["schedule"]), *("-" if row[key] is None else str(row[key]) for key in self.keys)]
            cells.append(f"{seeds} (+{_count(row['duplicates'], 'duplicate')})" if row["duplicates"] else str(seeds))
            cells += [_cell(row, name, ".4f") for name in ("test_acc", TAIL_METRIC, "best_test_acc", "train_loss")]
            cells += [steps, _cell(row, "wall_seconds", ".1f")]
            cells.append(failure_text(row, seeds) or "-")
            if left_out:
                parts = [f"{row['unfinished']} unfinished"] if row["unfinished"] else []
                parts += [_count(row["failed_jobs"], "failed job")] if row["failed_jobs"] else []
                cells.append(", ".join(parts) or "-")
            table.append(cells)
        if not rows:
            table.append(["(no configuration)", *["-"] * (len(header) - 1)])
        return "\n".join([markdown_table(header, table), *self._sections()])

    def _where(self, folder: Path) -> str:
        """A listed folder, relative to the compared one when it is inside it."""
        if folder.is_relative_to(self.folder) and folder != self.folder:
            return f"`{folder.relative_to(self.folder)}`"
        return f"`{folder}`"

    def _sections(self) -> list[str]:
        lines: list[str] = []
        if self.scan.failed:
            lines += ["", "## Failed jobs (refused before training, never averaged)", ""]
            for job in self.scan.failed:
                reason = " ".join(job.reason.split())
                overrides = " ".join(job.overrides) or "(none)"
                lines.append(f"- {self._where(job.folder)} (exit {job.status}): {reason} Overrides: `{overrides}`")
        if self.scan.unfinished:
            lines += ["", "## Unfinished runs (not averaged)", ""]
            lines += [f"- {self._where(item.folder)}: {item.reason}" for item in self.scan.unfinished]
        duplicates = [(c, run) for c in self.configurations for run in c.duplicates]
        if duplicates:
            lines += ["", "## Duplicate seeds (the same configuration and seed again: the newest run counts)", ""]
            for configuration, run in duplicates:
                counted = self._where(configuration.counted_instead_of(run).folder)
                lines.append(
                    f"- {label(configuration, self.keys)} seed={run.hparams.get('seed')}: {counted} counts, "
                    f"{self._where(run.folder)} not"
                )
        if self.scan.skipped:
            lines += ["", "## Skipped runs (a file cannot be read)", ""]
            lines += [f"- {self._where(item.folder)}: {item.reason}" for item in self.scan.skipped]
        return lines


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def _cell(row: dict[str, Any], name: str, spec: str) -> str:
    """The row's `<name>_mean ± <name>_std` formatted by `spec`; `-` without a mean."""
    mean, std = row[f"{name}_mean"], row[f"{name}_std"]
    if mean is None:
        return "-"
    return f"{mean:{spec}} ± {std:{spec}}" if std is not None else f"{mean:{spec}}"


def plot_figures(report: Report, paths: Mapping[str, Path]) -> None:
    """lr curves and test accuracy per epoch overlaid (one line per configuration with a finished run), final
    accuracy vs warmup; each FIGURES name into its path of `paths`."""
    configurations = [configuration for configuration in report.configurations if configuration.runs]
    figure, axes = new_figure()
    for configuration in configurations:
        steps, lrs = configuration.runs[0].scalars("train/lr")
        axes.plot(steps, lrs, label=label(configuration, report.keys))
    axes.set(xlabel="optimizer step", ylabel="learning rate", title="Learning rate schedules")
    save_figure(figure, axes, paths[FIGURES[0]])

    figure, axes = new_figure()
    for configuration in configurations:
        curves = [run.scalars("test/acc")[1] for run in configuration.ok_runs or configuration.runs]
        epochs = max(len(curve) for curve in curves)
        means = [statistics.fmean(c[e] for c in curves if len(c) > e) for e in range(epochs)]
        axes.plot(range(1, epochs + 1), means, marker="o", label=label(configuration, report.keys))
    axes.set(xlabel="epoch", ylabel="test accuracy (mean over seeds)", title="Test accuracy per epoch")
    save_figure(figure, axes, paths[FIGURES[1]])

    figure, axes = new_figure()
    series_keys = [key for key in report.keys if key != WARMUP_KEY]
    series: dict[str, list[tuple[float, float, float]]] = {}
    for configuration in configurations:
        warmup = configuration.hparams.get(WARMUP_KEY)
        mean, std = configuration.stat("test_acc")
        if isinstance(warmup, int | float) and mean is not None:
            series.setdefault(label(configuration, series_keys), []).append((warmup, mean, std or 0.0))
    for name, points in series.items():
        warmups, means, stds = zip(*sorted(points), strict=True)
        axes.errorbar(warmups, means, yerr=stds, marker="o", capsize=4, label=name)
    axes.set(xlabel="warmup ratio", ylabel="final test accuracy (mean ± std over seeds)", title="Accuracy vs warmup")
    save_figure(figure, axes, paths[FIGURES[2]])


def build_report(folder: Path, target_acc: float = DEFAULT_TARGET_ACC) -> Report:
    """The report of the run folders below `folder`; NoRunsError when there is nothing but damaged ones."""
    scan = scan_runs(folder)
    if not (scan.runs or scan.unfinished or scan.failed):
        skipped = "".join(f"; skipped {item.folder}: {item.reason}" for item in scan.skipped)
        raise NoRunsError(f"no runs under {folder} (a run folder holds metrics.json, last.pt or failed.json){skipped}")
    configurations = group_runs(scan)
    return Report(configurations, varying_keys(configurations), target_acc, folder, scan)


def fallback_folder(folder: Path) -> Path:
    """Where the report of `folder` goes when `folder` cannot hold it: outputs/compare/<its name>-<time> below the
    current directory (the repository's outputs/ when run from its root)."""
    return Path("outputs", "compare", f"{folder.resolve().name}-{datetime.now():%Y-%m-%d_%H-%M-%S}").absolute()


def write_report(folder: Path, target_acc: float = DEFAULT_TARGET_ACC, out: Path | None = None) -> Report:
    """Build the report of the runs below `folder` and write its files there, or into `out` when given.

    When `folder` cannot hold them (read-only, full, a name taken by a folder) they go to `fallback_folder(folder)`
    instead; `Report.written_to` says where they went, `Report.unwritable` where they could not and why. An `out`
    that cannot hold them is not replaced. ReportNotWrittenError (holding the report) when nowhere could.
    """
    folder = Path(folder)
    report = build_report(folder, target_acc)
    for target in [Path(out)] if out is not None else [folder, fallback_folder(folder)]:
        try:
            _write_files(report, target)
        except OSError as error:
            report.unwritable.append((target, error))
            continue
        report.written_to = target
        return report
    raise ReportNotWrittenError(report)


def _write_files(report: Report, target: Path) -> None:
    """summary.md, summary.csv and the figures, each written aside first: a failure leaves the folder as it was."""
    with written_together(target, ("summary.md", "summary.csv", *FIGURES)) as paths:
        paths["summary.md"].write_text(_summary(report))
        report.write_csv(paths["summary.csv"])
        plot_figures(report, paths)


def _summary(report: Report) -> str:
    """summary.md: a title, the table and its lists, what the numbers mean, the figures."""
    counted = sum(len(configuration.runs) for configuration in report.configurations)
    title = f"# {counted} runs, {len(report.configurations)} configurations in {report.folder}\n\n"
    notes = (
        f"\n\nMean ± sample std over the seeds that neither diverged nor collapsed; `seeds` counts the finished runs, "
        "one per seed (a second run of a configuration and seed is a duplicate: the newest counts), `failed` the "
        "runs left out of the means: diverged (NaN/inf loss, stopped with the epochs it finished) or collapsed (a "
        "whole epoch after the warmup at chance). Unfinished runs and failed jobs are listed, never averaged. Last "
        f"10% test acc is the mean test accuracy over the last tenth of the epochs (at least one). Steps to "
        f"{report.target_acc:g} accuracy are the optimizer steps done at the end of the first epoch whose test "
        "accuracy reached it.\n\n" + "\n".join(f"![{name}]({name})" for name in FIGURES) + "\n"
    )
    return title + report.markdown() + notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m src.compare", description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="a sweep folder, or outputs/ for every run")
    parser.add_argument(
        "--target-acc", type=float, default=DEFAULT_TARGET_ACC, help="test accuracy whose first epoch is reported"
    )
    parser.add_argument("--out", type=Path, help="write the report into this folder instead (made if missing)")
    args = parser.parse_args(argv)
    if not args.folder.is_dir():
        print(
            f"lrbench: folder={str(args.folder)!r}: not a folder; allowed is a sweep folder or outputs/",
            file=sys.stderr,
        )
        return 2
    if not 0 < args.target_acc <= 1:
        print(f"lrbench: --target-acc={args.target_acc}: allowed is a number with 0 < target <= 1", file=sys.stderr)
        return 2
    try:
        report = write_report(args.folder, args.target_acc, args.out)
    except NoRunsError as error:
        print(f"lrbench: {error}", file=sys.stderr)
        return 2
    except ReportNotWrittenError as error:
        print(error.report.markdown())
        _print_problems(error.report)
        print("lrbench: the report above was written nowhere; give a writable folder with --out", file=sys.stderr)
        return 3
    print(report.markdown())
    _print_problems(report)
    if report.unwritable:
        print(f"lrbench: wrote the report into {report.written_to} instead", file=sys.stderr)
    print(f"\nwrote summary.md, summary.csv, {', '.join(FIGURES)} into {report.written_to}")
    return 0


def _print_problems(report: Report) -> None:
    """The skipped run folders and the folders the report could not be written into, on stderr."""
    for item in report.scan.skipped:
        print(f"lrbench: skipped {item.folder}: {item.reason}", file=sys.stderr)
    for target, error in report.unwritable:
        print(f"lrbench: cannot write the report into {target}: {error_reason(error)}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
