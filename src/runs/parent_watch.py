"""A process started by another one (a study's jobs) ends with it: nothing keeps training unattended after the
process that started it died, by kill -9 too, and nothing holds a run folder's lock against its continue."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from pathlib import Path

PARENT_ENV = "LRBENCH_PARENT_PID"  # the process whose end must stop this one (the study sets it for its jobs)
_parent_watched = False


def identity(pid: int | None = None) -> str:
    """`<host>:<pid>:<start time>` of a process (this one by default): what PARENT_ENV holds. The start time tells
    a process from a later one given the same pid; the host, a job on another machine (a SLURM node), which cannot
    see the study's process and does not watch it."""
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{pid}:{_start_time(pid)}"


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot; '' where /proc has none (not Linux, or it is gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _alive(pid: int, started: str) -> bool:
    """Whether the process that had `started` as its start time still runs (a zombie has ended)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        if started:  # it had a /proc entry: gone now
            return False
        try:  # no /proc on this system: whether the pid exists
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return fields[0] != "Z" and fields[19] == started


def stop_with_parent(poll_seconds: float = 0.5) -> None:
    """When LRBENCH_PARENT_PID names a process of this machine, stop as on a SIGTERM once that process is gone, by
    kill -9 too: the run keeps its checkpoint and ends, instead of training on unattended and holding its folder's
    lock against the study's continue. The variable then names this process, for the workers a launcher starts
    (joblib's, submitit_local's), which watch it in turn. Once per process; a process already gone at the first
    call stops this one at once."""
    global _parent_watched
    host, _, rest = os.environ.get(PARENT_ENV, "").partition(":")
    pid, _, started = rest.partition(":")
    if _parent_watched or not pid.isdigit() or host != socket.gethostname():
        return
    _parent_watched = True
    os.environ[PARENT_ENV] = identity()

    def watch() -> None:
        while _alive(int(pid), started):
            time.sleep(poll_seconds)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="stop-with-parent", daemon=True).start()
