"""Why a run stops before it finishes, each with the exit status `python -m src.train` ends with, and how an
error is put in words for a message (`error_reason`).

The code that finds a problem raises one of these; only the entry points' `main` (`src.train`, `src.study`) turn
them into a message and a status (or, in a sweep, into the job's failed.json), so `src.train.run` can be called
in-process.
"""

from __future__ import annotations

import logging
import sys
from typing import NoReturn

EXIT_BAD_INPUT = 2
EXIT_UNWRITABLE = 3


def error_reason(error: Exception) -> str:
    """What went wrong, in words (`No space left on device`), without the errno and path an OSError adds."""
    return error.strerror if isinstance(error, OSError) and error.strerror else str(error)


class RunError(Exception):
    """A run cannot go on; `str(error)` is the whole message for the user, `status` the process's exit status."""

    status = EXIT_BAD_INPUT

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        if status is not None:
            self.status = status


class BadInput(RunError):
    """The config, the dataset or the checkpoint does not allow the run (exit status 2), found before training."""


class Unwritable(RunError):
    """The run folder cannot be written: disk full, no permission (exit status 3)."""

    status = EXIT_UNWRITABLE


class Stopped(RunError):
    """A signal stopped the run after an optimizer step (exit status 128 + the signal's number)."""

    def __init__(self, message: str, signum: int):
        super().__init__(message, 128 + signum)


def log_to_files(message: str) -> None:
    """Write an error into the run's log file only (the console gets it once, from `fail`)."""
    log = logging.getLogger("lrbench")
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, message, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def fail(message: str, status: int = EXIT_BAD_INPUT) -> NoReturn:
    """Stop a command with a message and exit status `status` (2: bad input), without a traceback; the message
    goes to stderr once, and into the run's log file (not again to the console through logging)."""
    log_to_files(message)
    print(f"lrbench: {message}", file=sys.stderr)
    sys.exit(status)
