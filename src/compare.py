"""`python -m src.compare <folder>`: the runs below a sweep folder (or all of outputs/), side by side.

Numbers come from each run's metrics.json, curves from its TensorBoard event files, and what the run was from its
`.hydra/` files (the same flat hyperparameters the HParams dashboard shows). Runs that differ only in their seed
form one configuration: one row with mean ± std over them and their count (one run per seed: a repeat of a seed
is a duplicate, the newest counts). Written into the folder (or `--out`): summary.md, summary.csv, lr_curves.png,
test_acc.png and final_acc_vs_warmup.png; the table is also printed.

A run folder that cannot be read (damaged metrics.json or `.hydra/`) is skipped and named in the report and on
stderr; unfinished runs and sweep jobs refused before training (failed.json) are listed, never averaged. A folder
that cannot hold the report gets it written to outputs/compare/<its name>-<time> instead (exit 0); exit 3 when
nowhere could, 2 when there is nothing to report.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from src.analysis.events import Events, read_events
from src.runs.errors import error_reason
from src.runs.files import markdown_table, new_figure, save_figure, write_csv, written_together
from src.runs.folder import failed_record_problem, glob_settled
from src.training.tracking import run_hparams

WARMUP_KEY = "scheduler.warmup_ratio"
FIGURES = ("lr_curves.png", "test_acc.png", "final_acc_vs_warmup.png")
# The test accuracy whose first epoch the report gives ("epochs to target"), unless asked otherwise.
DEFAULT_TARGET_ACC = 0.85
# `tail_test_acc`: mean test accuracy over the last TAIL_FRACTION of a run's epochs (Run.value).
TAIL_METRIC = "tail_test_acc"
TAIL_FRACTION = 0.1
OUTCOMES = ("collapsed", "diverged")
# The files a run leaves in its folder: last.pt from before its first epoch, metrics.json at its end, failed.json
# when a sweep refused its config. A folder with none of them (only `.hydra/`) never began training.
RUN_FILES = ("metrics.json", "last.pt", "failed.json")
# The numbers of metrics.json the report averages: each a number, or null.
METRIC_NAMES = ("test_acc", "best_test_acc", "train_loss", "wall_seconds")
# What each number a run writes may be (its words, its test); metrics.json holds null for a loss that was not
# finite (a diverged run, src.runs.files.write_json), so NaN, 1e300 or an accuracy of 7.5 is a damaged file.
ACCURACY = ("a fraction 0..1", lambda value: 0 <= value <= 1)
LOSS = ("a finite number", math.isfinite)
COUNT = ("a whole number >= 0", lambda value: math.isfinite(value) and value >= 0 and value == int(value))
SECONDS = ("a finite number >= 0", lambda value: math.isfinite(value) and value >= 0)
LR = ("a finite number > 0", lambda value: math.isfinite(value) and value > 0)
EPOCH_RANGES = {"epoch": COUNT, "step": COUNT, "train_loss": LOSS, "test_loss": LOSS}
EPOCH_RANGES |= {"train_acc": ACCURACY, "test_acc": ACCURACY}
METRIC_RANGES = {**EPOCH_RANGES, "best_test_acc": ACCURACY, "wall_seconds": SECONDS, "peak_lr": LR}
METRIC_RANGES |= {name: COUNT for name in ("epochs", "steps", "diverged_step", "diverged_epoch", "collapsed_epoch")}
# The groups of a run's `.hydra/config.yaml`: a record without one of them is not a run's.
RUN_GROUPS = ("model", "optimizer", "scheduler", "data", "trainer")


class NoRunsError(RuntimeError):
    """The folder holds nothing to report: no finished, unfinished or failed run (damaged ones are only skipped)."""


class DamagedRunError(ValueError):
    """A run folder whose metrics.json, failed.json or `.hydra/` record cannot be read; the message names the file."""


class ReportNotWrittenError(OSError):
    """Neither the asked-for folder nor the fallback could hold the report; `report` is still there to print."""

    def __init__(self, report: Report):
        self.report = report
        where = "; ".join(f"{folder}: {error_reason(error)}" for folder, error in report.unwritable)
        super().__init__(f"cannot write the report ({where})")


@dataclass
class Run:
    """One finished (or diverged, or collapsed) run: its folder, flat hyperparameters and metrics.json.

    `modified` is metrics.json's modification time: of two runs of one configuration and seed the newer counts.
    """

    folder: Path
    hparams: dict[str, Any]
    metrics: dict[str, Any]
    modified: float = 0.0

    @cached_property
    def events(self) -> Events:
        return read_events(self.folder)

    def scalars(self, tag: str) -> tuple[list[int], list[float]]:
        """Steps and values of a scalar tag from the run's event files (empty when the tag is missing)."""
        return self.events.steps(tag), self.events.values(tag)

    @property
    def outcome(self) -> str:
        """`diverged`, `collapsed` (see Trainer), or `ok`; only ok runs are averaged into a configuration's mean."""
        if self.metrics.get("diverged"):
            return "diverged"
        return "collapsed" if self.metrics.get("collapsed") else "ok"

    def value(self, name: str) -> float | None:
        """A metric of metrics.json, or `tail_test_acc`: the mean test accuracy over the last 10% of the epochs
        (at least one), steadier than the last epoch's for a schedule that never anneals."""
        if name != TAIL_METRIC:
            value = self.metrics.get(name)
            return None if value is None else float(value)
        accuracies = [epoch["test_acc"] for epoch in self.metrics.get("history", [])]
        if not accuracies:
            return None
        tail = accuracies[-max(1, math.ceil(len(accuracies) * TAIL_FRACTION)) :]
        return statistics.fmean(tail)

    def seconds_to(self, target_acc: float) -> float | None:
        """Training seconds done when test accuracy first reached `target_acc`."""
        history, seconds = self.metrics.get("history", []), self.metrics.get("epoch_seconds", [])
        for epoch, elapsed in zip(history, seconds, strict=False):
            if epoch["test_acc"] >= target_acc:
                return float(elapsed)
        return None

    def steps_to(self, target_acc: float) -> int | None:
        """Optimizer steps done when test accuracy first reached `target_acc` (evaluated once per epoch)."""
        for epoch in self.metrics.get("history", []):
            if epoch["test_acc"] >= target_acc:
                return int(epoch["step"])
        return None


@dataclass
class Unfinished:
    """A run that has not ended: last.pt without metrics.json, or metrics.json with fewer epochs than planned."""

    folder: Path
    hparams: dict[str, Any]
    reason: str


@dataclass
class FailedJob:
    """A sweep job refused before training (its failed.json): listed with its overrides and reason, never averaged."""

    folder: Path
    status: int
    reason: str
    overrides: list[str]
    hparams: dict[str, Any] | None  # None when its `.hydra/` record is missing or damaged: then it has no row


@dataclass
class Skipped:
    """A run folder left out of the report because a file it needs cannot be read."""

    folder: Path
    reason: str


@dataclass
class Scan:
    """What the run folders below a folder came to."""

    runs: list[Run] = field(default_factory=list)
    unfinished: list[Unfinished] = field(default_factory=list)
    failed: list[FailedJob] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


def _json_kind(value: Any) -> str:
    kinds = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return kinds.get(type(value), "a number")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _read_json(path: Path) -> Any:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise DamagedRunError(f"{path.name} cannot be read: {error_reason(error)}") from error
    try:
        return json.loads(text)
    except ValueError as error:
        raise DamagedRunError(f"{path.name} is not valid JSON ({error})") from error


def _range_problem(where: str, value: Any, allowed: tuple[str, Any]) -> str | None:
    """Why the number `where` of metrics.json is not one a run writes (`allowed`: its words and test), or None."""
    words, test = allowed
    if not _is_number(value):
        return f"metrics.json: {where} is {_json_kind(value)}, not a number"
    return None if test(value) else f"metrics.json: {where} is {value!r}, not {words}"


def read_metrics(path: Path) -> dict[str, Any]:
    """A run's metrics.json; DamagedRunError (naming the file) when it cannot be read or the report cannot use it:
    not an object, no history, a number that is not a number or out of its range (METRIC_RANGES)."""
    metrics = _read_json(path)
    if not isinstance(metrics, dict):
        raise DamagedRunError(f"metrics.json holds {_json_kind(metrics)}, not an object")
    for name, allowed in METRIC_RANGES.items():
        if metrics.get(name) is not None and (problem := _range_problem(name, metrics[name], allowed)):
            raise DamagedRunError(f"{problem} or null")
    history = metrics.get("history")
    if not isinstance(history, list):
        raise DamagedRunError("metrics.json has no history (a list of epochs)")
    for index, epoch in enumerate(history):
        if not (isinstance(epoch, dict) and _is_number(epoch.get("test_acc")) and _is_number(epoch.get("step"))):
            raise DamagedRunError(f"metrics.json: history[{index}] has no numeric test_acc and step")
        for name, allowed in EPOCH_RANGES.items():
            if epoch.get(name) is not None and (
                problem := _range_problem(f"history[{index}].{name}", epoch[name], allowed)
            ):
                raise DamagedRunError(problem)
    seconds = metrics.get("epoch_seconds", [])
    if not isinstance(seconds, list):
        raise DamagedRunError("metrics.json: epoch_seconds is not a list of numbers")
    for index, value in enumerate(seconds):
        if problem := _range_problem(f"epoch_seconds[{index}]", value, SECONDS):
            raise DamagedRunError(problem)
    return metrics


def _yaml_reason(error: Exception) -> str:
    """One line: `line 3: expected ...` for a YAML syntax error (its own text quotes the path, twice)."""
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        return f"line {error.problem_mark.line + 1}: {error.problem}"
    return " ".join(str(error).split())


def _read_hydra(folder: Path) -> dict[str, Any]:
    """The run's flat hyperparameters (src.training.tracking.run_hparams), from `.hydra/config.yaml` and
    `.hydra/hydra.yaml`."""
    record: dict[str, dict[str, Any]] = {}
    for name in ("config.yaml", "hydra.yaml"):
        path = folder / ".hydra" / name
        try:
            loaded = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        except FileNotFoundError as error:
            raise DamagedRunError(f".hydra/{name} is missing") from error
        except (OSError, UnicodeDecodeError) as error:
            raise DamagedRunError(f".hydra/{name} cannot be read: {error_reason(error)}") from error
        except (yaml.YAMLError, OmegaConfBaseException) as error:
            raise DamagedRunError(f".hydra/{name} is not valid YAML ({_yaml_reason(error)})") from error
        if not isinstance(loaded, dict):
            raise DamagedRunError(f".hydra/{name} holds {_json_kind(loaded)}, not a mapping")
        record[name] = loaded
    if missing := [group for group in RUN_GROUPS if not isinstance(record["config.yaml"].get(group), dict)]:
        raise DamagedRunError(f".hydra/config.yaml has no {', '.join(missing)}, which every run's config has")
    choices = ((record["hydra.yaml"].get("hydra") or {}).get("runtime") or {}).get("choices")
    if not isinstance(choices, dict):
        raise DamagedRunError(".hydra/hydra.yaml has no hydra.runtime.choices (which config file each group took)")
    try:
        return run_hparams(record["config.yaml"], choices)
    except (AttributeError, TypeError) as error:
        raise DamagedRunError(f".hydra/config.yaml does not have the shape of a run's config ({error})") from error


def _read_failed_job(folder: Path) -> FailedJob:
    payload = _read_json(folder / "failed.json")
    if problem := failed_record_problem(payload):
        raise DamagedRunError(problem)
    status, reason, overrides = payload["status"], payload["reason"], payload.get("overrides", [])
    try:
        hparams = _read_hydra(folder)
    except DamagedRunError:
        hparams = None  # still a failed job, just without a configuration to count it in
    return FailedJob(folder=folder, status=status, reason=reason, overrides=overrides, hparams=hparams)


def _newest_file(folder: Path, names: Iterable[str]) -> str | None:
    times = {name: (folder / name).stat().st_mtime for name in names if (folder / name).exists()}
    return max(times, key=times.__getitem__) if times else None


def read_run_folder(folder: Path) -> Run | Unfinished | FailedJob:
    """What the run in `folder` came to; DamagedRunError (naming the file) when a file it needs cannot be read.

    failed.json counts unless the job trained after it was written (a newer last.pt or metrics.json). A run is
    unfinished while it has last.pt but no metrics.json, or a metrics.json with fewer epochs than its config's
    trainer.epochs that neither diverged nor collapsed (both stop a run early, and are results).
    """
    if _newest_file(folder, RUN_FILES) == "failed.json":
        return _read_failed_job(folder)
    hparams = _read_hydra(folder)
    path = folder / "metrics.json"
    if not (path.exists() or path.is_symlink()):  # a dangling link is a damaged metrics.json
        if not (folder / "last.pt").exists():
            raise DamagedRunError("neither metrics.json nor last.pt can be found (a link to nothing?)")
        return Unfinished(folder, hparams, "last.pt but no metrics.json: stopped, or still running")
    metrics = read_metrics(path)
    if metrics.get("peak_lr") is not None:  # the lr trained with: lr_from= sets it after .hydra/ was written
        hparams["optimizer.lr"] = metrics["peak_lr"]
    run = Run(folder=folder, hparams=hparams, metrics=metrics, modified=path.stat().st_mtime)
    planned, done = hparams.get("trainer.epochs"), metrics.get("epochs")
    done = done if _is_number(done) else len(metrics["history"])
    if run.outcome == "ok" and _is_number(planned) and done < planned:
        return Unfinished(folder, hparams, f"metrics.json has {done} of the {planned} epochs")
    return run


def scan_runs(folder: Path) -> Scan:
    """Every run folder below `folder` (one holding metrics.json, last.pt or failed.json), in folder order, sorted
    into finished runs, unfinished runs, failed jobs and folders skipped because a file cannot be read."""
    scan = Scan()
    lists = {Run: scan.runs, Unfinished: scan.unfinished, FailedJob: scan.failed}
    for run_folder in sorted({path.parent for name in RUN_FILES for path in glob_settled(folder, f"**/{name}")}):
        try:
            found = read_run_folder(run_folder)
        except DamagedRunError as error:
            scan.skipped.append(Skipped(run_folder, str(error)))
            continue
        lists[type(found)].append(found)
    return scan


def failures(runs: Collection[Run]) -> str:
    """How many of `runs` collapsed or diverged, e.g. `2/5 collapsed`; empty when none did."""
    return failure_text({outcome: sum(run.outcome == outcome for run in runs) for outcome in OUTCOMES}, len(runs))


def failure_text(counts: Mapping[str, int], total: int) -> str:
    """`2/5 collapsed, 1/5 diverged` from the count of each outcome (OUTCOMES); empty when all are 0."""
    return ", ".join(f"{counts[outcome]}/{total} {outcome}" for outcome in OUTCOMES if counts[outcome])


def _mean_std(values: Iterable[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation of the values present; the std needs two of them."""
    present = [float(value) for value in values if value is not None]
    if not present:
        return None, None
    return statistics.fmean(present), statistics.stdev(present) if len(present) > 1 else None


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
        """Mean and std over the ok runs: a collapsed or diverged run is counted (`failures`), never averaged."""
        return _mean_std(run.value(name) for run in self.ok_runs)

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
        row["steps_to_target_mean"], row["steps_to_target_std"] = _mean_std(steps)
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
