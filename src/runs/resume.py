"""Continuing a run: which checkpoint a command continues, whether it may, and the command that continues it.

A resume is exact or refused: the config and the data must be the checkpoint's (but for the keys that only say
where or how fast a run computes, `checkpoints.NOT_PART_OF_THE_RUN`); a difference is refused with what differs
and the command that would continue the run.

- `find`: the checkpoint a command continues (`resume=<folder>`, or `last.pt` already in its own folder).
- `check_data`: the data it trains on now is the checkpoint's (by fingerprint).
- `run_lock`: one process at a time trains in a run folder.
- `command`: the command line that continues a run, quoted for the shell and for Hydra's override grammar.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from src.config.rules import BOOLEAN, FOLDER, INTEGER, Rule
from src.runs import checkpoints as checkpointing
from src.runs.errors import BadInput, Unwritable, error_reason

log = logging.getLogger(__name__)
LOCK = ".lock"

RUN_FOLDER = Rule(FOLDER.test, f"the folder of an earlier run (holding {checkpointing.LAST})")
KEY_RULES: dict[str, Rule] = {
    "resume": RUN_FOLDER.optional(),
    "checkpoint.keep_best": BOOLEAN,
    "checkpoint.skip_finished": BOOLEAN,
    "checkpoint.pause_after_epoch": INTEGER.where(lambda v: v >= 1, "an integer >= 1").optional(" (run every epoch)"),
    "checkpoint.branch_from": Rule(
        lambda value: isinstance(value, str) and Path(value).expanduser().is_file(), "a trunk run's checkpoint file"
    ).optional(" (start from scratch)"),
}


@dataclass
class ResumePoint(checkpointing.SavedAt):
    """The run folder a command continues and its checkpoint."""

    folder: Path
    checkpoint: dict[str, Any]

    @property
    def overrides(self) -> list[str]:
        return list(self.checkpoint["overrides"])


def run_folder_of(cfg: DictConfig, session_dir: Path) -> Path:
    """The folder the command trains in: `resume=<folder>`, else the folder Hydra made for this session (which is
    the `resume` folder itself for a single run: `${run_folder:...}` in conf/config.yaml)."""
    return Path(cfg.resume).expanduser().resolve() if cfg.resume else session_dir


def find(cfg: DictConfig, folder: Path) -> ResumePoint | None:
    """The checkpoint in `folder` this command continues, or None (a new run). Raises BadInput for a checkpoint
    that cannot be read, or whose config changes what the run computes."""
    path = folder / checkpointing.LAST
    if not path.exists() and not path.is_symlink():
        return None
    checkpoint = checkpointing.load(path)  # also a last.pt that is a folder or a broken link: never a new run here
    if changed := checkpointing.changes(checkpoint["config"], checkpointing.run_config(cfg)):
        listed = "\n".join(f"  - {checkpointing.describe(change)}" for change in changed)
        raise BadInput(
            f"cannot resume {folder}: this config differs from the checkpoint's in a way that changes the run:\n"
            f"{listed}\nThe run was started with: {shlex.join(checkpoint['overrides']) or '(no overrides)'}\n"
            f"Resume with the same overrides: {command(checkpoint['overrides'], folder)}\n"
            "A run under another config is a new run: start it in a new folder."
        )
    return ResumePoint(folder, checkpoint)


def check_data(point: ResumePoint, dataset_sha256: str) -> None:
    """Raise BadInput when the data a resume trains on is not the data its checkpoint was trained on."""
    saved = point.checkpoint["dataset_sha256"]
    if saved != dataset_sha256:
        raise BadInput(
            f"cannot resume {point.folder}: the dataset differs from the one its checkpoint was trained on "
            f"(SHA-256 of its images and labels: checkpoint {saved[:16]}..., now {dataset_sha256[:16]}...). "
            "Resume with the same files."
        )


def finished(run_dir: Path, cfg: DictConfig) -> dict[str, Any] | None:
    """The metrics.json of the run in `run_dir` when that run has ended (every epoch done, or stopped as diverged
    or collapsed) or reached the epoch `checkpoint.pause_after_epoch` asks it to pause after, else None: also
    when that file cannot be read, so the run goes on from its last.pt and writes it again."""
    path = run_dir / "metrics.json"
    if not path.is_file():
        return None
    try:
        recorded = json.loads(path.read_text())
    except (OSError, ValueError) as error:  # ValueError: not UTF-8, not JSON
        log.warning("%s cannot be read (%s): the run goes on from its last.pt", path, error)
        return None
    if not isinstance(recorded, dict):
        log.warning("%s holds no record of a run: the run goes on from its last.pt", path)
        return None
    ended_early = recorded.get("diverged") or (recorded.get("collapsed") and cfg.trainer.stop_on_collapse)
    until = min(cfg.trainer.epochs, cfg.checkpoint.pause_after_epoch or cfg.trainer.epochs)
    return recorded if ended_early or recorded.get("epochs", 0) >= until else None


# ------------------------------------------------------------------------------------------- one process per run


@contextmanager
def run_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive `flock` on `<run folder>/.lock` while a process trains there, so a second command on the
    same folder (a resume started twice, two sweeps into one folder) is refused instead of interleaving its
    checkpoints. The kernel drops the lock when its process ends, however it ends, so a killed run leaves no
    stale lock; the file holds the holder's process id for the message, and is removed on release."""
    path = Path(folder) / LOCK
    try:
        fd = _acquire(path)
    except OSError as error:
        raise Unwritable(
            f"cannot write the run's files in {path.parent}: {error_reason(error)}. Pick a writable "
            "folder with output_root=<folder>."
        ) from None
    try:  # only for the message of a process refused later: a full disk does not stop the run here
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    except OSError:
        pass
    try:
        yield
    finally:
        path.unlink(missing_ok=True)  # still holding the lock, so nobody locks the file being removed
        os.close(fd)


def _acquire(path: Path) -> int:
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            holder = _read_holder(fd)
            os.close(fd)
            if error.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            raise BadInput(
                f"cannot train in {path.parent}: {holder} is training there (it holds {path}). "
                "Wait for it to end, or stop it; a run stopped by a signal or killed resumes from its last.pt."
            ) from None
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # its last holder removed the file between our open and our lock: lock the new one


def _read_holder(fd: int) -> str:
    try:
        pid = os.pread(fd, 32, 0).decode().strip()
    except OSError:
        pid = ""
    return f"process {pid}" if pid.isdigit() else "another process"


# ------------------------------------------------------------------------------------------- the command line


def override_key(override: str) -> str:
    """The key an override sets (`+a.b=1`: `a.b`, `~a`: `a`): the text before its first `=`, as Hydra's grammar
    has it (a key holds no `=`), without the add or delete prefix."""
    return override.split("=", 1)[0].lstrip("+~")


def hydra_quoted(value: str) -> str:
    """`value` as a quoted string of Hydra's override grammar, read back as exactly `value`: any character is
    allowed in quotes ('=', ',', spaces, non-ASCII), a quote is escaped, backslashes before a quote or the end
    are doubled, and `${` (which Hydra and OmegaConf would read as an interpolation) is escaped."""
    value = re.sub(r"(\\*)\$\{", lambda match: match.group(1) * 2 + "\\${", value)
    value = re.sub(r"(\\*)'", lambda match: match.group(1) * 2 + "\\'", value)
    value = re.sub(r"(\\+)$", lambda match: match.group(1) * 2, value)
    return f"'{value}'"


def shell_word(word: str) -> str:
    """`word` quoted for a POSIX shell; double quotes where they suffice, which keeps `resume='...'` readable."""
    if shlex.quote(word) == word or re.search(r'["\\$`!]', word):
        return shlex.quote(word)
    return f'"{word}"'


def command(overrides: list[str], run_dir: Path) -> str:
    """The command line, to paste into a shell, that continues the run in `run_dir` described by `overrides`."""
    kept = [override for override in overrides if override_key(override) != "resume"]
    words = ["python", "-m", "src.train", *kept, f"resume={hydra_quoted(str(run_dir))}"]
    return " ".join(shell_word(word) for word in words)
