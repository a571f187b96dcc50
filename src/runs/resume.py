"""Continuing a run: which checkpoint a command continues, whether it may, and what the run is afterwards.

- `find`: the checkpoint a command continues (`resume=<folder>`, or `last.pt` already in its own folder); a config
  that changes what the run computes is refused unless `checkpoint.force_resume=true`.
- `run_lock`: one process at a time trains in a run folder.
- `identity`: what the run is once this session starts: the overrides that describe it, its data's fingerprint
  and the history of what forced resumes changed (`config_changes`); other data is refused unless forced.
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
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, ListConfig, OmegaConf

from src.config.rules import BOOLEAN, FOLDER, Rule
from src.runs import checkpoints as checkpointing
from src.runs import folder as run_folder
from src.runs.errors import BadInput, Unwritable, error_reason

log = logging.getLogger(__name__)
LOCK = ".lock"
# Overrides that say how a session continues a run, not what the run is: never part of its recorded overrides.
SESSION_KEYS = ("resume", "checkpoint.force_resume")

RUN_FOLDER = Rule(FOLDER.test, f"the folder of an earlier run (holding {checkpointing.LAST})")
KEY_RULES: dict[str, Rule] = {
    "resume": RUN_FOLDER.optional(),
    "checkpoint.keep_best": BOOLEAN,
    "checkpoint.force_resume": BOOLEAN,
    "checkpoint.skip_finished": BOOLEAN,
}


@dataclass
class ResumePoint:
    """The run folder a command continues, its checkpoint, and what this config changes in it (checkpoint's
    `changes` entries); `forced` when `checkpoint.force_resume=true` let such changes through."""

    folder: Path
    checkpoint: dict[str, Any]
    changes: list[dict[str, Any]]
    forced: bool

    @property
    def epochs(self) -> int:
        return int(self.checkpoint["trainer"]["result"]["epochs"])

    @property
    def step(self) -> int:
        return int(self.checkpoint["trainer"]["step"])


def run_folder_of(cfg: DictConfig, session_dir: Path) -> Path:
    """The folder the command trains in: `resume=<folder>`, else the folder Hydra made for this session."""
    return Path(cfg.resume).expanduser().resolve() if cfg.resume else session_dir


def find(cfg: DictConfig, folder: Path) -> ResumePoint | None:
    """The checkpoint in `folder` this command continues, or None (a new run). Raises BadInput for a checkpoint
    that cannot be read, or whose config changes what the run computes, unless `checkpoint.force_resume=true`."""
    path = folder / checkpointing.LAST
    if not path.exists() and not path.is_symlink():
        return None
    checkpoint = checkpointing.load(path)  # also a last.pt that is a folder or a broken link: never a new run here
    changed = checkpointing.changes(checkpoint["config"], checkpointing.run_config(cfg))
    if changed and not cfg.checkpoint.force_resume:
        listed = "\n".join(f"  - {checkpointing.describe(change)}" for change in changed)
        raise BadInput(
            f"cannot resume {folder}: this config differs from the checkpoint's in a way that changes the run:\n"
            f"{listed}\nThe run was started with: {shlex.join(checkpoint['overrides']) or '(no overrides)'}\n"
            f"Resume with the same overrides ({command(checkpoint['overrides'], folder)}), or add "
            "checkpoint.force_resume=true to continue with this config (weights and counters from the checkpoint, "
            "schedule and optimizer settings from this config)."
        )
    return ResumePoint(folder, checkpoint, changed, forced=bool(cfg.checkpoint.force_resume))


def finished(run_dir: Path, cfg: DictConfig) -> dict[str, Any] | None:
    """The metrics.json of the run in `run_dir` when that run has ended (every epoch done, or stopped as diverged
    or collapsed), else None: also when that file cannot be read, so the run goes on from its last.pt and writes
    it again."""
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
    return recorded if ended_early or recorded.get("epochs", 0) >= cfg.trainer.epochs else None


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


# ------------------------------------------------------------------------------------------- what the run is


@dataclass
class RunIdentity:
    """What the run is from this session on: what a checkpoint, `.hydra/` and metrics.json record about it."""

    overrides: list[str]
    dataset_sha256: str
    config_changes: list[dict[str, Any]]
    # this session changes the run (a new run, or a forced resume that changed it): `.hydra/` is (re)written
    changed_now: bool
    # the optimizer's class changed on a forced resume: its state starts afresh
    fresh_optimizer: bool = False


def identity(
    cfg: DictConfig,
    point: ResumePoint | None,
    dataset_sha256: str,
    task_overrides: list[str],
    choices: Mapping[str, Any],
) -> RunIdentity:
    """What the run is once this session starts. A new run is its overrides and data. A resumed run stays what its
    checkpoint says unless forced: then it records the merged overrides (`merged_overrides`) and appends this
    session's changes to `config_changes`, at the epoch and step it continues from. Other data than the
    checkpoint's (by fingerprint) is refused unless forced."""
    if point is None:
        return RunIdentity(list(task_overrides), dataset_sha256, [], changed_now=True)
    history = list(point.checkpoint.get("config_changes") or [])
    changes = list(point.changes)
    saved_sha256 = point.checkpoint.get("dataset_sha256")
    if saved_sha256 is not None and saved_sha256 != dataset_sha256:
        if not point.forced:
            raise BadInput(
                f"cannot resume {point.folder}: the dataset differs from the one its checkpoint was trained on "
                f"(SHA-256 of its images and labels: checkpoint {saved_sha256[:16]}..., now "
                f"{dataset_sha256[:16]}...; data.root={cfg.data.root}). Resume with the same files, or add "
                "checkpoint.force_resume=true to continue on these."
            )
        changes.append({"key": "dataset_sha256", "old": saved_sha256, "new": dataset_sha256})
    if not changes:
        return RunIdentity(list(point.checkpoint["overrides"]), dataset_sha256, history, changed_now=False)
    # a forced resume onto another optimizer class (e.g. SGD to Adam): the saved state does not fit it
    saved_optimizer = (point.checkpoint["config"].get("optimizer") or {}).get("_target_")
    fresh_optimizer = saved_optimizer != OmegaConf.select(cfg, "optimizer._target_")
    history.append(
        {
            "epoch": point.epochs,
            "step": point.step,
            "changes": changes,
            "optimizer_state": "fresh" if fresh_optimizer else "kept",
        }
    )
    overrides = merged_overrides(point.checkpoint["overrides"], task_overrides, cfg, choices)
    return RunIdentity(overrides, dataset_sha256, history, changed_now=True, fresh_optimizer=fresh_optimizer)


def _parsed(override: str) -> Any | None:
    try:
        return OverridesParser.create().parse_override(override)
    except Exception:  # Hydra parsed it once already; anything it cannot parse again is not kept
        return None


def override_key(override: str) -> str:
    """The key an override sets (`+a.b=1`: `a.b`, `~a`: `a`): the text before its first `=`, as Hydra's grammar
    has it (a key holds no `=`), without the add or delete prefix."""
    return override.split("=", 1)[0].lstrip("+~")


_ABSENT = object()


def _still_true(override: str, cfg: DictConfig, choices: Mapping[str, Any]) -> bool:
    """The run's config already has what `override` sets: keeping it describes the same run."""
    parsed = _parsed(override)
    if parsed is None or parsed.is_sweep_override() or parsed.package is not None:
        return False
    key = parsed.key_or_group
    if key in choices:
        return not parsed.is_delete() and choices[key] == parsed.value()
    current = OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=False)
    if parsed.is_delete():
        return current is _ABSENT
    if isinstance(current, DictConfig | ListConfig):
        current = OmegaConf.to_container(current, resolve=True)
    return current is not _ABSENT and current == parsed.value()


def merged_overrides(old: list[str], new: list[str], cfg: DictConfig, choices: Mapping[str, Any]) -> list[str]:
    """The overrides that describe a run after a forced resume: the old ones, each replaced in place by the new
    command's value for its key; the new command's other ones after them; an old one the new command does not
    repeat only where the run still has its value (else it describes the run before the change). `resume` and
    `checkpoint.force_resume` say how a session went, not what the run is, and are left out. Composing these
    overrides gives the run's config now, so the command that continues it is accepted without force."""
    latest = {override_key(override): override for override in new if override_key(override) not in SESSION_KEYS}
    merged = []
    for override in old:
        key = override_key(override)
        if key in latest:
            merged.append(latest.pop(key))
        elif key not in SESSION_KEYS and _still_true(override, cfg, choices):
            merged.append(override)
    return merged + list(latest.values())


# ------------------------------------------------------------------------------------------- the command line


def continue_in(run_dir: Path, session_dir: Path) -> None:
    """`resume=<folder>`: log into that folder's train.log, and drop the folder Hydra made for this session, so a
    resume leaves no extra run behind."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).parent == session_dir:
            handler.close()
            handler.baseFilename = str(run_dir / Path(handler.baseFilename).name)
            handler.mode = "a"
    run_folder.remove_session_folder(session_dir)


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
