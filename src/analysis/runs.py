"""Reading run folders: what the run in a folder came to (finished, unfinished, refused before training, or
unreadable), from its metrics.json, failed.json and `.hydra/` record. Every number is checked against what a run
writes, so a damaged or hand-edited file sets its folder aside (named, with the reason) instead of skewing a mean.
Both reports (src.analysis.compare, src.analysis.study) and the study's job check read runs here.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from src.analysis.events import Events, read_events
from src.config.rules import NUMBER, Rule
from src.runs.errors import error_reason
from src.runs.folder import failed_record_problem, glob_settled
from src.training.tracking import run_hparams

# `tail_test_acc`: mean test accuracy over the last TAIL_FRACTION of a run's epochs (Run.value).
TAIL_METRIC = "tail_test_acc"
TAIL_FRACTION = 0.1
OUTCOMES = ("collapsed", "diverged")
# The files a run leaves in its folder: last.pt from before its first epoch, metrics.json at its end, failed.json
# when a sweep refused its config. A folder with none of them (only `.hydra/`) never began training.
RUN_FILES = ("metrics.json", "last.pt", "failed.json")
# What each number a run writes may be (its words, its test); metrics.json holds null for a loss that was not
# finite (a diverged run, src.runs.files.write_json), so NaN, 1e300 or an accuracy of 7.5 is a damaged file.
ACCURACY = NUMBER.where(lambda value: 0 <= value <= 1, "a fraction 0..1")
LOSS = NUMBER.where(math.isfinite, "a finite number")
COUNT = NUMBER.where(lambda value: value >= 0 and value == int(value), "a whole number >= 0")
SECONDS = NUMBER.where(lambda value: value >= 0, "a finite number >= 0")
LR = NUMBER.where(lambda value: value > 0, "a finite number > 0")
EPOCH_RANGES = {"epoch": COUNT, "step": COUNT, "train_loss": LOSS, "test_loss": LOSS}
EPOCH_RANGES |= {"train_acc": ACCURACY, "test_acc": ACCURACY}
METRIC_RANGES = {**EPOCH_RANGES, "best_test_acc": ACCURACY, "wall_seconds": SECONDS, "peak_lr": LR}
METRIC_RANGES |= {name: COUNT for name in ("epochs", "steps", "diverged_step", "diverged_epoch", "collapsed_epoch")}
# The groups of a run's `.hydra/config.yaml`: a record without one of them is not a run's.
RUN_GROUPS = ("model", "optimizer", "scheduler", "data", "trainer")


def tail_mean(accuracies: list[float]) -> float:
    """The mean of the last TAIL_FRACTION of a run's per-epoch accuracies (at least one): `tail_test_acc`."""
    return statistics.fmean(accuracies[-max(1, math.ceil(len(accuracies) * TAIL_FRACTION)) :])


class DamagedRunError(ValueError):
    """A run folder whose metrics.json, failed.json or `.hydra/` record cannot be read; the message names the file."""


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
        return tail_mean(accuracies) if accuracies else None

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


def _range_problem(where: str, value: Any, rule: Rule) -> str | None:
    """Why the number `where` of metrics.json is not one a run writes (`rule`: its range and words), or None."""
    if not _is_number(value):
        return f"metrics.json: {where} is {_json_kind(value)}, not a number"
    return None if rule.test(value) else f"metrics.json: {where} is {value!r}, not {rule.allowed}"


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


def failure_text(counts: Mapping[str, int], total: int) -> str:
    """`2/5 collapsed, 1/5 diverged` from the count of each outcome (OUTCOMES); empty when all are 0."""
    return ", ".join(f"{counts[outcome]}/{total} {outcome}" for outcome in OUTCOMES if counts[outcome])
