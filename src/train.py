"""`python -m src.train [overrides]`: compose the config, check it, build the run, fit it, record it.

Exit status (src/runs/errors.py; docs/resume.md lists what each leaves on disk): 0 when the run finished, also when it
diverged or collapsed (a schedule that diverges is a result, recorded in metrics.json, so a sweep goes on); 2 for
bad input before any training; 3 for a run folder that cannot be written; 128 + the signal's number when a signal
stopped it (`last.pt` holds the last finished epoch, the message gives the command that continues it).
In a sweep (`-m`) a job that cannot run writes failed.json into its folder instead of ending the sweep; the other
jobs run, and the sweep ends with the first failed job's status (src.config.hooks.FailedJobs). A signal ends the sweep.
A run started again in a folder holding `last.pt`, or with `resume=<run folder>`, continues from it
(src/runs/resume.py).
"""

from __future__ import annotations

import gc

if __name__ == "__main__":  # the libraries make a million objects for good: collecting during their import is waste
    gc.disable()

import logging
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig
from tqdm.contrib.logging import logging_redirect_tqdm

from src.config.hooks import register_resolvers
from src.config.validation import ConfigError, validate
from src.lr_range.lr_from import lr_record, take_lr_from
from src.runs import folder as run_folder
from src.runs import resume
from src.runs.errors import BadInput, RunError, Stopped, fail, log_to_files
from src.runs.parent_watch import stop_with_parent
from src.runs.session import task_overrides
from src.runs.signals import StopOnSignal
from src.training.run import paused, run

__all__ = ["WORST_OBJECTIVE", "StopOnSignal", "main", "objective", "run", "train"]

if __name__ == "__main__":  # what is loaded stays: later collections (and the exit) skip it
    gc.freeze()
    gc.enable()

log = logging.getLogger("src.train")
register_resolvers()

WORST_OBJECTIVE = 0.0


def check(cfg: DictConfig) -> None:
    """The whole config before anything is read or written: `lr_from` (which sets optimizer.lr), then every key
    (src.config.validation). Raises BadInput listing every problem."""
    try:
        take_lr_from(cfg, task_overrides())  # lr_from=<lr_find folder>: optimizer.lr becomes its suggestion
        validate(cfg)
    except ConfigError as error:
        raise BadInput(f"invalid configuration:\n{error}") from None


def objective(summary: dict[str, Any]) -> float:
    """What a sweeper (Optuna) maximises: the final test accuracy, and the worst value for a run that diverged or
    collapsed, so such a trial ranks last instead of stopping the study."""
    if summary.get("diverged") or summary.get("collapsed") or summary.get("test_acc") is None:
        return WORST_OBJECTIVE
    return float(summary["test_acc"])


def train(cfg: DictConfig, session_dir: Path) -> dict[str, Any]:
    """The command: check the config, take the run folder (Hydra's, or the `resume=` one) for this process alone,
    find what it continues, then train; returns the run's summary."""
    check(cfg)
    run_dir = resume.run_folder_of(cfg, session_dir)
    with resume.run_lock(run_dir):
        resume_point = resume.find(cfg, run_dir)
        # the checkpoint's config was found equal to this one above: the recorded result is this run's
        if resume_point and cfg.checkpoint.skip_finished and (recorded := resume.finished(run_dir, cfg)):
            run_folder.clear_failed(run_dir)
            log.info("already finished, not run again: %s (test_acc %s)", run_dir, recorded.get("test_acc"))
            return recorded
        if run_dir != session_dir:  # `resume=` beside another hydra.run.dir, or in a sweep job
            run_folder.remove_session_folder(session_dir)
        with logging_redirect_tqdm(), StopOnSignal() as stop:
            result = run(cfg, run_dir, resume_point, stop=stop, record=lr_record(cfg))
    summary = result.summary()
    word = f"paused after epoch {result.epochs}/{cfg.trainer.epochs}:" if paused(result, cfg) else "done:"
    log.info("%s test_acc %s after %d epochs in %.1f s", word, summary["test_acc"], result.epochs, result.wall_seconds)
    return summary


def _job_failed(error: RunError, job_dir: Path) -> float:
    """A sweep job that cannot run: failed.json in its folder, a message, and the worst objective, so the sweep
    goes on (its end counts the failures: src.config.hooks.FailedJobs)."""
    number = HydraConfig.get().job.num
    log_to_files(f"job failed (exit status {error.status}): {error}")
    print(f"lrbench: sweep job {number} failed (exit status {error.status}): {error}", file=sys.stderr)
    run_folder.write_failed(job_dir, error.status, str(error), task_overrides(), number)
    return WORST_OBJECTIVE


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float:
    """The one place that turns a RunError into an exit status (or, for a sweep job, into failed.json)."""
    stop_with_parent()
    session_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        return objective(train(cfg, session_dir))
    except RunError as error:
        if HydraConfig.get().mode == RunMode.MULTIRUN and not isinstance(error, Stopped):
            return _job_failed(error, session_dir)
        run_folder.remove_session_folder(session_dir)  # a run refused before training leaves no folder
        fail(str(error), error.status)


if __name__ == "__main__":
    from src.config.overrides import override_key_problem
    from src.config.plugins import missing_extra_problem

    if problem := missing_extra_problem(sys.argv[1:]) or override_key_problem(sys.argv[1:]):
        fail(problem)  # a plugin not installed, or a mistyped group (before Hydra suggests a `+`)
    main()
    gc.freeze()  # nor need the exit go through the run's own objects one by one
