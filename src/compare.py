"""`python -m src.compare <folder>`: the runs below a sweep folder (or all of outputs/), side by side.

Numbers come from each run's metrics.json, curves from its TensorBoard event files, and what the run was from its
`.hydra/` files (the same flat hyperparameters the HParams dashboard shows). Runs that differ only in their seed
form one configuration: one row with mean ± std over them and their count. Written into the folder: summary.md,
summary.csv, lr_curves.png, test_acc.png and final_acc_vs_warmup.png; the table is also printed.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import statistics
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from matplotlib import colormaps
from matplotlib.figure import Figure
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from src.callbacks import DEFAULT_TARGET_ACC
from src.tracking import run_hparams

log = logging.getLogger(__name__)
logging.getLogger("tensorboard").setLevel(logging.WARNING)  # its event reader logs every file it opens
WARMUP_KEY = "scheduler.warmup_ratio"
# Keys that tell runs of one configuration apart without changing the configuration.
REPLICA_KEYS = ("seed",)
FIGURES = ("lr_curves.png", "test_acc.png", "final_acc_vs_warmup.png")
# `tail_test_acc`: mean test accuracy over the last TAIL_FRACTION of a run's epochs (Run.value).
TAIL_METRIC = "tail_test_acc"
TAIL_FRACTION = 0.1
OUTCOMES = ("collapsed", "diverged")


class NoRunsError(RuntimeError):
    """The folder holds no finished run (no metrics.json next to a .hydra/ folder)."""


@dataclass
class Run:
    """One finished (or diverged) run: its folder, flat hyperparameters and metrics.json."""

    folder: Path
    hparams: dict[str, Any]
    metrics: dict[str, Any]

    @cached_property
    def _events(self) -> EventAccumulator:
        accumulator = EventAccumulator(str(self.folder), size_guidance={"scalars": 0})  # 0: keep every point
        accumulator.Reload()
        return accumulator

    def scalars(self, tag: str) -> tuple[list[int], list[float]]:
        """Steps and values of a scalar tag from the run's event files (empty when the tag is missing)."""
        if tag not in self._events.Tags().get("scalars", []):
            return [], []
        events = self._events.Scalars(tag)
        return [event.step for event in events], [event.value for event in events]

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


def load_run(folder: Path) -> Run | None:
    """The run in `folder`, or None when it has no metrics.json or no `.hydra/` record of its config."""
    metrics_path, config_path, hydra_path = (
        folder / "metrics.json",
        folder / ".hydra" / "config.yaml",
        folder / ".hydra" / "hydra.yaml",
    )
    if not (metrics_path.is_file() and config_path.is_file() and hydra_path.is_file()):
        return None
    metrics = json.loads(metrics_path.read_text())
    cfg = OmegaConf.to_container(OmegaConf.load(config_path), resolve=False)
    choices = OmegaConf.to_container(OmegaConf.load(hydra_path).hydra.runtime.choices, resolve=False)
    hparams = run_hparams(cfg, choices)
    if metrics.get("peak_lr") is not None:  # the lr trained with: lr_from= sets it after .hydra/ was written
        hparams["optimizer.lr"] = metrics["peak_lr"]
    return Run(folder=folder, hparams=hparams, metrics=metrics)


def find_runs(folder: Path) -> list[Run]:
    """Every run below `folder`, in folder order."""
    runs = [load_run(path.parent) for path in sorted(Path(folder).rglob("metrics.json"))]
    return [run for run in runs if run is not None]


def _mean_std(values: Iterable[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation of the values present; the std needs two of them."""
    present = [float(value) for value in values if value is not None]
    if not present:
        return None, None
    return statistics.fmean(present), statistics.stdev(present) if len(present) > 1 else None


@dataclass
class Configuration:
    """Runs sharing every hyperparameter but the seed."""

    hparams: dict[str, Any]
    runs: list[Run] = field(default_factory=list)

    @property
    def ok_runs(self) -> list[Run]:
        return [run for run in self.runs if run.outcome == "ok"]

    def stat(self, name: str) -> tuple[float | None, float | None]:
        """Mean and std over the ok runs: a collapsed or diverged run is counted (`failures`), never averaged."""
        return _mean_std(run.value(name) for run in self.ok_runs)

    def failures(self) -> str:
        """How many runs collapsed or diverged, e.g. `2/5 collapsed`; empty when none did."""
        counts = {outcome: sum(run.outcome == outcome for run in self.runs) for outcome in OUTCOMES}
        return ", ".join(f"{count}/{len(self.runs)} {outcome}" for outcome, count in counts.items() if count)


def group_runs(runs: list[Run]) -> list[Configuration]:
    """Runs grouped into configurations, in order of first appearance."""
    groups: dict[tuple, Configuration] = {}
    for run in runs:
        shared = {key: value for key, value in run.hparams.items() if key not in REPLICA_KEYS}
        identity = tuple(sorted((key, repr(value)) for key, value in shared.items()))
        groups.setdefault(identity, Configuration(hparams=shared)).runs.append(run)
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
    """The comparison table: one row per configuration, sorted by mean final test accuracy (best first)."""

    configurations: list[Configuration]
    keys: list[str]
    target_acc: float

    def rows(self) -> list[dict[str, Any]]:
        rows = []
        for configuration in self.configurations:
            steps = [run.steps_to(self.target_acc) for run in configuration.runs]
            row: dict[str, Any] = {"schedule": configuration.hparams.get("scheduler")}
            row.update({key: configuration.hparams.get(key) for key in self.keys})
            row["seeds"] = len(configuration.runs)
            row["diverged"] = sum(run.outcome == "diverged" for run in configuration.runs)
            row["collapsed"] = sum(run.outcome == "collapsed" for run in configuration.runs)
            for name in ("test_acc", TAIL_METRIC, "best_test_acc", "train_loss", "wall_seconds"):
                row[f"{name}_mean"], row[f"{name}_std"] = configuration.stat(name)
            row["steps_to_target_mean"], row["steps_to_target_std"] = _mean_std(steps)
            row["reached_target"] = sum(step is not None for step in steps)
            rows.append(row)
        return sorted(
            rows, key=lambda row: -1.0 if row["test_acc_mean"] is None else row["test_acc_mean"], reverse=True
        )

    def write_csv(self, path: Path) -> None:
        rows = self.rows()
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            for row in rows:
                writer.writerow({key: "" if value is None else value for key, value in row.items()})

    def markdown(self) -> str:
        target = f"steps to {self.target_acc:g} acc"
        header = ["schedule", *self.keys, "seeds", "final test acc", "last 10% test acc", "best test acc"]
        header += ["final train loss", target, "wall s", "failed"]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in self.rows():
            reached = row["reached_target"]
            steps = _cell(row["steps_to_target_mean"], row["steps_to_target_std"], ".0f")
            if reached < row["seeds"]:
                steps = f"{steps} ({reached}/{row['seeds']} reached)" if reached else f"never (0/{row['seeds']})"
            cells = [str(row["schedule"]), *("-" if row[key] is None else str(row[key]) for key in self.keys)]
            cells.append(str(row["seeds"]))
            cells += [
                _cell(row["test_acc_mean"], row["test_acc_std"], ".4f"),
                _cell(row[f"{TAIL_METRIC}_mean"], row[f"{TAIL_METRIC}_std"], ".4f"),
                _cell(row["best_test_acc_mean"], row["best_test_acc_std"], ".4f"),
                _cell(row["train_loss_mean"], row["train_loss_std"], ".4f"),
                steps,
                _cell(row["wall_seconds_mean"], row["wall_seconds_std"], ".1f"),
                _failed_cell(row),
            ]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)


def _failed_cell(row: dict[str, Any]) -> str:
    parts = [f"{row[outcome]}/{row['seeds']} {outcome}" for outcome in OUTCOMES if row[outcome]]
    return ", ".join(parts) or "-"


def _cell(mean: float | None, std: float | None, spec: str) -> str:
    if mean is None:
        return "-"
    return f"{mean:{spec}} ± {std:{spec}}" if std is not None else f"{mean:{spec}}"


def plot_figures(report: Report, folder: Path) -> list[Path]:
    """lr curves and test accuracy per epoch overlaid (one line per configuration), final accuracy vs warmup."""
    written = []
    figure, axes = _figure()
    for configuration in report.configurations:
        steps, lrs = configuration.runs[0].scalars("train/lr")
        axes.plot(steps, lrs, label=label(configuration, report.keys))
    axes.set(xlabel="optimizer step", ylabel="learning rate", title="Learning rate schedules")
    written.append(_save(figure, axes, folder / FIGURES[0]))

    figure, axes = _figure()
    for configuration in report.configurations:
        curves = [run.scalars("test/acc")[1] for run in configuration.ok_runs or configuration.runs]
        epochs = max(len(curve) for curve in curves)
        means = [statistics.fmean(c[e] for c in curves if len(c) > e) for e in range(epochs)]
        axes.plot(range(1, epochs + 1), means, marker="o", label=label(configuration, report.keys))
    axes.set(xlabel="epoch", ylabel="test accuracy (mean over seeds)", title="Test accuracy per epoch")
    written.append(_save(figure, axes, folder / FIGURES[1]))

    figure, axes = _figure()
    series_keys = [key for key in report.keys if key != WARMUP_KEY]
    series: dict[str, list[tuple[float, float, float]]] = {}
    for configuration in report.configurations:
        warmup = configuration.hparams.get(WARMUP_KEY)
        mean, std = configuration.stat("test_acc")
        if isinstance(warmup, int | float) and mean is not None:
            series.setdefault(label(configuration, series_keys), []).append((warmup, mean, std or 0.0))
    for name, points in series.items():
        warmups, means, stds = zip(*sorted(points), strict=True)
        axes.errorbar(warmups, means, yerr=stds, marker="o", capsize=4, label=name)
    axes.set(xlabel="warmup ratio", ylabel="final test accuracy (mean ± std over seeds)", title="Accuracy vs warmup")
    written.append(_save(figure, axes, folder / FIGURES[2]))
    return written


def _figure() -> tuple[Figure, Any]:
    """A figure outside pyplot: no GUI backend, nothing kept alive after it is saved."""
    figure = Figure(figsize=(9, 5))
    axes = figure.subplots()
    axes.set_prop_cycle(color=colormaps["tab20"].colors)  # a zoo has more lines than the default ten colours
    return figure, axes


def _save(figure: Figure, axes: Any, path: Path) -> Path:
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5))
    axes.grid(alpha=0.3)
    figure.savefig(path, dpi=110, bbox_inches="tight")
    return path


def write_report(folder: Path, target_acc: float = DEFAULT_TARGET_ACC) -> Report:
    """Build the report of the runs below `folder` and write its files there."""
    folder = Path(folder)
    runs = find_runs(folder)
    if not runs:
        raise NoRunsError(f"no runs under {folder} (a run folder holds metrics.json and .hydra/)")
    configurations = group_runs(runs)
    report = Report(configurations, varying_keys(configurations), target_acc)
    markdown = report.markdown()
    title = f"# {len(runs)} runs, {len(configurations)} configurations in {folder}\n\n"
    notes = (
        f"\n\nMean ± sample std over the seeds that neither diverged nor collapsed; `seeds` counts every run, "
        "`failed` the runs left out of the means: diverged (NaN/inf loss, stopped with the epochs it finished) or "
        "collapsed (a whole epoch after the warmup at chance). Last 10% test acc is the mean test accuracy over the "
        f"last tenth of the epochs (at least one). Steps to {target_acc:g} accuracy are the optimizer steps done at "
        "the end of the first epoch whose test accuracy reached it.\n\n"
        + "\n".join(f"![{name}]({name})" for name in FIGURES)
        + "\n"
    )
    (folder / "summary.md").write_text(title + markdown + notes)
    report.write_csv(folder / "summary.csv")
    plot_figures(report, folder)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m src.compare", description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="a sweep folder, or outputs/ for every run")
    parser.add_argument(
        "--target-acc", type=float, default=DEFAULT_TARGET_ACC, help="test accuracy whose first epoch is reported"
    )
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
        report = write_report(args.folder, args.target_acc)
    except NoRunsError as error:
        print(f"lrbench: {error}", file=sys.stderr)
        return 2
    print(report.markdown())
    print(f"\nwrote summary.md, summary.csv, {', '.join(FIGURES)} into {args.folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
