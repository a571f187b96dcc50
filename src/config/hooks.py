"""Hydra hooks: the job folder names, the comparison report written when a multirun ends, the exit status of a
sweep with failed jobs, and the note a single run takes of the folders Hydra is about to make for it."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from src.runs import folder as run_folder

log = logging.getLogger(__name__)


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
        self.target_acc = target_acc  # None: the report's own default (src.compare.DEFAULT_TARGET_ACC)

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


class RunFolderNote(Callback):
    """Before Hydra makes a single run's folder, note which of its folders are new, so that a run refused before
    training removes what this process made, and nothing that was there before (src.runs.folder)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        run_folder.note_run_folder(Path(str(OmegaConf.select(config, "hydra.run.dir"))).expanduser())
