"""A gate for tests that stop a real training process.

Put this folder on PYTHONPATH, set LRBENCH_TEST_GATE to `<folder>:<step>` and LRBENCH_TEST_GATE_REACHED to a
file's path (`tests.conftest.gate_env` does). The first run of the process training in that folder or under it, once
it has logged the window that holds that step, writes that file and waits there until a SIGTERM or SIGINT reaches it
(or it is killed); then it goes on as the signal asks. The test waits for the file and then signals: the signal
lands at a step the test knows, however fast the machine trains. lrbench never imports this module: Python imports
`sitecustomize` at start-up by itself.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import signal
import sys
import time
from pathlib import Path

HANG_BOUND_SECONDS = 600  # only ends a wait nobody will end (a test that died); never decides a result


def _stop_requested() -> bool:
    """Whether the run's signal handler (src.train.StopOnSignal) has been called."""
    handler = signal.getsignal(signal.SIGTERM)
    return getattr(getattr(handler, "__self__", None), "received", None) is not None


def _gate(tracker_class: type, folder: Path, step: int, reached: Path) -> None:
    train_window = tracker_class.train_window
    waited = False

    def gated_train_window(self, at_step: int, loss: float, acc: float) -> None:
        nonlocal waited
        train_window(self, at_step, loss, acc)
        here = Path(self.writer.log_dir).resolve()
        if not waited and at_step >= step and here.is_relative_to(folder):
            waited = True
            partial = reached.with_name(f"{reached.name}.partial")  # whole when the test sees it
            partial.write_text(f"{at_step} {os.getpid()}")  # the step, and the process that waits
            partial.replace(reached)
            deadline = time.monotonic() + HANG_BOUND_SECONDS
            while not _stop_requested() and time.monotonic() < deadline:
                time.sleep(0.01)

    tracker_class.train_window = gated_train_window


class _GateFinder(importlib.abc.MetaPathFinder):
    """Patches src.training.tracking.Tracker as it is first imported (before any module takes its name)."""

    def __init__(self, folder: Path, step: int, reached: Path):
        self.folder, self.step, self.reached = folder, step, reached

    def find_spec(self, name, path, target=None):
        if name != "src.training.tracking":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        execute = spec.loader.exec_module

        def exec_module(module) -> None:
            execute(module)
            _gate(module.Tracker, self.folder, self.step, self.reached)

        spec.loader.exec_module = exec_module
        return spec


if gate := os.environ.get("LRBENCH_TEST_GATE"):
    folder, _, step = gate.rpartition(":")
    reached = Path(os.environ["LRBENCH_TEST_GATE_REACHED"])
    sys.meta_path.insert(0, _GateFinder(Path(folder).resolve(), int(step), reached))
