"""The one signal handler of lrbench: SIGTERM (what cluster launchers send) and SIGINT (Ctrl-C) ask for a stop at
the next safe point instead of ending the process mid-write; a second signal ends it at once."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopOnSignal:
    """While active, the first SIGTERM or SIGINT is a request: `stop()` is then true and `received` names the
    signal (the trainer stops after its current step). `on_first(signum)`, if given, runs at that first signal
    (e.g. to pass it on to a child process). A second signal ends the process at once, by the signal's default."""

    def __init__(self, on_first: Callable[[int], None] | None = None) -> None:
        self.received: int | None = None
        self._on_first = on_first
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():  # Python handles signals in its main thread only
            self._previous = {signum: signal.signal(signum, self._handle) for signum in SIGNALS}
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: object) -> None:
        if self.received is not None:
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)
        self.received = signum
        if self._on_first is not None:
            self._on_first(signum)

    def __call__(self) -> bool:
        return self.received is not None
