"""A process started by another one (a study's stage) ends with it: nothing keeps training unattended after the
process that started it died, by kill -9 too, and nothing holds a run folder's lock against its continue."""

from __future__ import annotations

import os
import signal
import threading
import time

PARENT_ENV = "LRBENCH_PARENT_PID"  # the process whose end must stop this one (the study sets it for its stages)
_parent_watched = False


def stop_with_parent(poll_seconds: float = 0.5) -> None:
    """When LRBENCH_PARENT_PID names this process's parent, stop as on a SIGTERM once that parent is gone, by
    kill -9 too: the run keeps its checkpoint and ends, instead of training on unattended and holding its folder's
    lock against the study's continue. The variable then names this process, for the workers a launcher starts.
    Once per process; a parent already gone at the first call stops the process at once."""
    global _parent_watched
    named = os.environ.get(PARENT_ENV, "")
    if _parent_watched or not named.isdigit():
        return
    _parent_watched, parent = True, int(named)
    os.environ[PARENT_ENV] = str(os.getpid())

    def watch() -> None:
        while os.getppid() == parent:  # an orphan is handed to another parent at once, even by kill -9
            time.sleep(poll_seconds)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="stop-with-parent", daemon=True).start()
