"""What lrbench writes into a run folder besides the training's own files, and what it removes again.

- `.hydra/` (config.yaml, hydra.yaml, overrides.yaml): the record of what the run is, in Hydra's own format
  (what Hydra's `_save_config` writes: `OmegaConf.to_yaml`, unresolved), for a new run once its config and data
  are accepted. Hydra's own writing stays off (`hydra.output_subdir: null` in conf/config.yaml): Hydra writes
  `.hydra/` before the command's function runs, so it would record the lr before `lr_from=` sets it, leave a run
  record in a sweep job refused for a bad value (whose folder holds only failed.json and train.log), stop with a
  traceback and a half-made folder on a disk full from the start (instead of exit 3 and no folder), and rewrite the
  record of a run that a changed config is refused for.
- `failed.json`: a sweep job that could not run (a bad value, a dataset or checkpoint problem, a full disk), with
  its exit status and reason, so the rest of the sweep runs and the end of the sweep counts it (`failed_jobs`).
- A single run refused before training leaves no folder behind: the folders Hydra made for it are removed again.
  Hydra has no such step (it makes the folder before the command runs, and a refusal ends the process), so the
  topmost new folder is noted just before Hydra makes it (`note_run_folder`, from the `output_folder_check`
  callback of src.config.hooks) and removed on a refusal (`remove_session_folder`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from src.runs.errors import error_reason
from src.runs.files import write_json, written_together

log = logging.getLogger(__name__)
HYDRA_DIR = ".hydra"
FAILED = "failed.json"
# What Hydra puts into a run folder before lrbench runs: the log file of the run's logging.
HYDRA_MADE = {"train.log", "preview.log"}  # the job log of src.train and of src.preview


def write_hydra_record(run_dir: Path, config: DictConfig, hydra_config: DictConfig, overrides: list[str]) -> None:
    """Write `.hydra/config.yaml` (the run's config), `hydra.yaml` (Hydra's section) and `overrides.yaml`, as
    Hydra writes them. All three are written aside first and then renamed, so a full disk leaves no half record."""
    folder = Path(run_dir) / HYDRA_DIR
    contents = {
        "config.yaml": OmegaConf.to_yaml(config),
        "overrides.yaml": OmegaConf.to_yaml(list(overrides)),
        "hydra.yaml": OmegaConf.to_yaml(hydra_config),
    }
    with written_together(folder, contents) as paths:
        for name, text in contents.items():
            paths[name].write_text(text, encoding="utf-8")


def write_failed(job_dir: Path, status: int, reason: str, overrides: list[str], job: int) -> None:
    """Record in `job_dir` that this sweep job could not run; a folder that cannot take it is only logged (the
    job's status is still in the sweep's log and exit status)."""
    payload = {"failed": True, "status": status, "reason": reason, "overrides": list(overrides), "job": job}
    try:
        Path(job_dir).mkdir(parents=True, exist_ok=True)
        write_json(Path(job_dir) / FAILED, payload)
    except OSError as error:
        log.error("cannot write %s: %s", Path(job_dir) / FAILED, error_reason(error))


def clear_failed(run_dir: Path) -> None:
    """A job that runs (or is found finished) is no longer failed: drop the failed.json of an earlier attempt."""
    (Path(run_dir) / FAILED).unlink(missing_ok=True)


def glob_settled(folder: Path, pattern: str) -> list[Path]:
    """`folder.glob(pattern)`, scanned again when a folder vanishes under the scan (pathlib then raises
    FileNotFoundError): a run starting meanwhile checks its output folder by making and removing one there."""
    while True:
        try:
            return list(Path(folder).glob(pattern))
        except FileNotFoundError:
            if not Path(folder).is_dir():
                return []


def failed_record_problem(payload: Any) -> str | None:
    """Why `payload` (a failed.json read back) is not a record `write_failed` writes, or None: one check for the
    sweep's end (FailedJobs) and for src.compare, so a hand-edited or foreign file is named, never a traceback."""
    if not (isinstance(payload, dict) and payload.get("failed") is True):
        return 'failed.json is not {"failed": true, "status": ..., "reason": ..., "overrides": [...]}'
    status, reason, overrides = payload.get("status"), payload.get("reason"), payload.get("overrides", [])
    if not (isinstance(status, int) and not isinstance(status, bool) and 0 < status < 256 and isinstance(reason, str)):
        return "failed.json needs an integer status (1 to 255) and a reason string"
    if not (isinstance(overrides, list) and all(isinstance(override, str) for override in overrides)):
        return "failed.json: overrides is not a list of strings"
    job = payload.get("job")
    if job is not None and not (isinstance(job, int) and not isinstance(job, bool) and job >= 0):
        return "failed.json: job is not a job number (an integer >= 0)"
    return None


def failed_jobs(sweep_dir: Path) -> list[dict[str, Any]]:
    """The failed.json records below a sweep folder, in job order (each with its `folder`); one that cannot be
    read, or is not such a record, counts as a failed job of status 1 with the reason."""
    records = []
    for path in glob_settled(sweep_dir, f"**/{FAILED}"):
        try:
            payload = json.loads(path.read_text())
            problem = failed_record_problem(payload)
        except (OSError, ValueError) as error:
            payload, problem = None, f"{path} cannot be read ({error_reason(error)})"
        if problem is None:
            record = {**payload, "folder": str(path.parent)}
        else:
            reason = problem if problem.startswith(str(path)) else f"{path}: {problem}"
            record = {"failed": True, "status": 1, "reason": reason, "folder": str(path.parent)}
        records.append(record)
    return sorted(records, key=lambda record: (record.get("job") is None, record.get("job") or 0, record["folder"]))


# A single run's folder -> the topmost folder of its path that did not exist before Hydra made it (None: none).
_made_by_this_process: dict[Path, Path | None] = {}


def note_run_folder(run_dir: Path) -> None:
    """Before Hydra makes a single run's folder: note the topmost folder of its path not there yet, so a refused
    run removes what this process alone made (`remove_session_folder`) and nothing that was there before."""
    run_dir = Path(os.path.abspath(run_dir))
    missing = [folder for folder in (run_dir, *run_dir.parents) if not folder.exists()]
    _made_by_this_process[run_dir] = missing[-1] if missing else None


def remove_session_folder(session_dir: Path) -> None:
    """Remove the folder Hydra made for this session, when it holds nothing but Hydra's log, and the parents made
    with it (the date folder of a run): a refused run leaves no empty run behind. A folder that existed before
    the session is kept. Log files there are closed first."""
    session_dir = Path(os.path.abspath(session_dir))
    if not session_dir.is_dir() or any(path.name not in HYDRA_MADE for path in session_dir.iterdir()):
        return
    # a sweep job's folder is not noted: its launcher made it, below the sweep folder
    top = _made_by_this_process.get(session_dir, session_dir)
    if top is None:
        return  # the folder was there before: it is the user's
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).parent == session_dir:
            root.removeHandler(handler)
            handler.close()
    shutil.rmtree(session_dir, ignore_errors=True)
    folder = session_dir.parent
    while folder != top.parent:
        try:
            folder.rmdir()  # only an empty one: another run may have started in the same date folder meanwhile
        except OSError:
            break
        folder = folder.parent
