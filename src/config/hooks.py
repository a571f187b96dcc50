"""Hydra hooks: the resolvers every config uses (`register_resolvers`, called by each command: the repository,
the run folder, the job folder names), and the callbacks each command chooses through `conf/hydra/callbacks/`:
the check of the output folder before Hydra makes it, the comparison report written when a multirun ends, and
the exit status of a sweep with failed jobs."""

from __future__ import annotations

import logging
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from src import REPO_ROOT
from src.runs import folder as run_folder
from src.runs.checkpoints import LAST
from src.runs.errors import EXIT_BAD_INPUT, EXIT_UNWRITABLE, error_reason

log = logging.getLogger(__name__)


def register_resolvers() -> None:
    """`${repo_root:}` (conf/config.yaml's output_root), `${run_folder:...}` (its hydra.run.dir) and
    `${job_name:...}` (its sweep job folders)."""
    OmegaConf.register_new_resolver("repo_root", lambda: str(REPO_ROOT), replace=True)
    OmegaConf.register_new_resolver("run_folder", run_folder_name, replace=True)
    OmegaConf.register_new_resolver("job_name", job_folder_name, replace=True)


def run_folder_name(resume: Any, new: str) -> str:
    """A single run's folder (`hydra.run.dir`): the `resume=` folder when it holds a checkpoint, so Hydra logs into
    that run's own train.log and makes no other folder; else `new`, the timestamped folder of a new run (also for
    a `resume=` that validation then refuses, whose folder is removed again)."""
    if isinstance(resume, str) and resume and (Path(resume).expanduser() / LAST).is_file():
        return str(Path(resume).expanduser())
    return new


def job_folder_name(overrides: Iterable[str], exclude_keys: Iterable[str]) -> str:
    """A job's overrides in the order the sweep gave them (`scheduler=cosine_warmup,scheduler.warmup_ratio=0.1`),
    without the plumbing keys; the `${job_name:...}` resolver of `hydra.sweep.subdir`.

    Hydra's own `override_dirname` sorts the overrides as text, which puts `scheduler.warmup_ratio` before
    `scheduler`. A `/` in a value would nest folders, so it becomes `_`.
    """
    excluded = set(exclude_keys)
    kept = []
    for override in overrides:
        key, _, value = override.partition("=")
        if key.lstrip("+~") in excluded:
            continue
        if key.endswith("@_global_"):  # a preset chosen per job: `+experiment@_global_=x` reads `experiment=x`
            override = f"{key.lstrip('+').removesuffix('@_global_')}={value}"
        kept.append(override)
    return ",".join(kept).replace("/", "_")


class SweepSummary(Callback):
    """After the last job, `python -m src.compare <sweep folder>` in-process: summary.md, summary.csv, figures.

    The runs are already safe on disk, so a report that cannot be written is logged, not raised: the sweep
    still ends with the jobs' own status, and the command to rebuild the report is in the message.
    """

    def __init__(self, target_acc: float | None = None):
        self.target_acc = target_acc  # None: the report's own default (src.analysis.compare.DEFAULT_TARGET_ACC)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from src.analysis.compare import DEFAULT_TARGET_ACC, NoRunsError, write_report  # reads event files, plots

        folder = Path(config.hydra.sweep.dir)
        try:
            report = write_report(folder, DEFAULT_TARGET_ACC if self.target_acc is None else self.target_acc)
        except NoRunsError as error:
            log.warning("no sweep summary: %s", error)
            return
        except Exception as error:  # the report is a convenience; the runs are what matter
            log.error("sweep summary failed (%s); rebuild it with: python -m src.compare %s", error, folder)
            return
        rows = report.rows()
        log.info(
            "sweep summary: %s/summary.md (%d configurations, %d diverged and %d collapsed runs, %d failed jobs)",
            folder,
            len(rows),
            sum(row["diverged"] for row in rows),
            sum(row["collapsed"] for row in rows),
            len(run_folder.failed_jobs(folder)),
        )
        print(report.markdown())


class FailedJobs(Callback):
    """After the last job: when jobs failed (their folders hold failed.json), list them and end the process with
    the status of the first failed job (by job number; 2 for bad input, 3 for an unwritable folder), so a script or
    a study sees that the sweep is not whole. The jobs are found in their folders, whatever launcher ran them
    (in this process, in joblib workers, on other machines).

    It is listed first among the callbacks: Hydra calls the end-of-sweep hooks in reverse order, so the report is
    written before it exits.
    """

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        failed = run_folder.failed_jobs(Path(config.hydra.sweep.dir))
        if not failed:
            return
        listed = "\n".join(f"  - {Path(record['folder']).name}: {record.get('reason')}" for record in failed)
        jobs = "1 sweep job" if len(failed) == 1 else f"{len(failed)} sweep jobs"
        print(f"lrbench: {jobs} failed (the others ran), see their failed.json:", file=sys.stderr)
        print(listed, file=sys.stderr)
        sys.exit(int(failed[0].get("status") or 1))


def output_folder_problem(folder: Path) -> str | None:
    """Why runs cannot be written below `folder` (the nearest existing parent is a file, or takes no new
    folder), or None when they can. A folder is made and removed there, so a full disk or a read-only mount shows."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    try:
        Path(tempfile.mkdtemp(prefix=".lrbench-", dir=existing)).rmdir()
    except OSError as error:
        return f"no new folder can be made in {existing} ({error_reason(error)})"
    return None


def sweep_subdir_problem(subdir: Any) -> str | None:
    """Why `hydra.sweep.subdir` (as written, before Hydra fills it in per job) would put a job folder outside its
    sweep folder, where the sweep's summary and failed-job count never look, or None when it cannot."""
    path = PurePosixPath(str(subdir))
    if path.is_absolute() or ".." in path.parts:
        return (
            f"hydra.sweep.subdir={str(subdir)!r}: allowed is a relative folder inside the sweep folder (no '..' part, "
            "not absolute); the default names each job after its overrides"
        )
    return None


class OutputFolderCheck(Callback):
    """Before Hydra makes the run (or sweep) folder: check that it can, since Hydra itself would stop with a
    traceback from inside pathlib (exit status 3, as for any run folder that cannot be written; 2 for a sweep whose
    job folders would lie outside it, before any job runs); and, for a single run, note which of its folders are
    new, so that a run refused before training removes what this process made (src.runs.folder)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        run_folder.note_run_folder(self._check(config, "hydra.run.dir"))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if problem := sweep_subdir_problem(OmegaConf.to_container(config.hydra.sweep, resolve=False)["subdir"]):
            print(f"lrbench: {problem}", file=sys.stderr)
            sys.exit(EXIT_BAD_INPUT)
        self._check(config, "hydra.sweep.dir")

    @staticmethod
    def _check(config: DictConfig, key: str) -> Path:
        folder = Path(str(OmegaConf.select(config, key))).expanduser()
        if problem := output_folder_problem(folder):
            print(
                f"lrbench: cannot write the run folder {folder}: {problem}. "
                "Pick a writable folder with output_root=<folder>.",
                file=sys.stderr,
            )
            sys.exit(EXIT_UNWRITABLE)
        return folder
