"""What a run writes: TensorBoard scalars (against the global optimizer step) and metrics.json.

Step axis: a point at x = t describes the state before optimizer step t (0-based); `train/lr` at t is the lr
step t used, `train/loss` at t the loss of the batch step t learned from (a window's points sit at its last
step), and the per-epoch points sit at x = steps done when the epoch ended.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from torch.utils.tensorboard import SummaryWriter

TRAIN_TAGS = ("train/loss", "train/acc", "train/lr")
EPOCH_TAGS = ("train/epoch_loss", "train/epoch_acc", "test/loss", "test/acc")


class Tracker:
    """One TensorBoard writer per run folder; close it (in a `finally`) so the last points reach the disk."""

    def __init__(self, run_dir: Path, flush_secs: int = 30):
        self.run_dir = Path(run_dir)
        self.writer = SummaryWriter(log_dir=str(self.run_dir), flush_secs=flush_secs)

    def lrs(self, first_step: int, lrs: list[float]) -> None:
        for offset, lr in enumerate(lrs):
            self.writer.add_scalar("train/lr", lr, first_step + offset)

    def train_window(self, step: int, loss: float, acc: float) -> None:
        self.writer.add_scalar("train/loss", loss, step)
        self.writer.add_scalar("train/acc", acc, step)

    def epoch(self, step: int, metrics: dict[str, float]) -> None:
        self.writer.add_scalar("train/epoch_loss", metrics["train_loss"], step)
        self.writer.add_scalar("train/epoch_acc", metrics["train_acc"], step)
        self.writer.add_scalar("test/loss", metrics["test_loss"], step)
        self.writer.add_scalar("test/acc", metrics["test_acc"], step)

    def close(self) -> None:
        self.writer.close()


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write aside and rename, so a reader never sees half a file."""
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    with open(partial, "w") as handle:
        json.dump(payload, handle, indent=2)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    partial.replace(path)
