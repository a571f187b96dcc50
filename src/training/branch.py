"""Branching a run from another run's checkpoint (`checkpoint.branch_from=<trunk>/last.pt`): a new run that starts
where the trunk was saved, at an epoch end, and goes on under its own budget and schedule. The classic use is a
warmup-stable-decay trunk whose cooldowns at several budgets share its stable phase (Hägele et al., 2024).

A branch is exact or refused: it must equal the run trained from scratch under its own config, bit for bit. So the
config may differ from the trunk's only in `trainer.epochs` and `scheduler.*`, and the lr (and momentum) the branch's
schedule gives every step before the branch point must be the trunk's own; the data must be the trunk's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from src.runs import checkpoints as checkpointing
from src.runs.errors import BadInput
from src.schedules.driver import schedule_curves

# What a branch may set otherwise than its trunk: the budget, and the schedule that spends it.
BRANCH_MAY_CHANGE = ("trainer.epochs", "scheduler")


def may_change(key: str) -> bool:
    """Whether a branch may set this config key otherwise than its trunk."""
    return any(key == allowed or key.startswith(f"{allowed}.") for allowed in BRANCH_MAY_CHANGE)


@dataclass
class BranchPoint(checkpointing.SavedAt):
    """The trunk checkpoint a run branches from, and where in the trunk it was saved."""

    path: Path
    checkpoint: dict[str, Any]

    def record(self) -> dict[str, Any]:
        """What metrics.json says of it."""
        return {"branched_from": {"checkpoint": str(self.path), "epoch": self.epochs, "step": self.step}}


def load(cfg: DictConfig) -> BranchPoint | None:
    """The checkpoint `checkpoint.branch_from` names, checked to be one the run may branch from: BadInput naming
    what differs otherwise. None without the key."""
    if not cfg.checkpoint.get("branch_from"):
        return None
    path = Path(cfg.checkpoint.branch_from).expanduser().resolve()
    try:
        checkpoint = checkpointing.load(path)
    except checkpointing.CheckpointError as error:
        raise BadInput(f"checkpoint.branch_from={str(path)!r}: {error}") from None
    other = [
        change
        for change in checkpointing.changes(checkpoint["config"], checkpointing.run_config(cfg))
        if not may_change(change["key"])
    ]
    if other:
        listed = "\n".join(f"  - {checkpointing.describe(change)}" for change in other)
        raise BadInput(
            f"checkpoint.branch_from={str(path)!r}: a branch may differ from its trunk only in "
            f"{', '.join(BRANCH_MAY_CHANGE)}; this config also changes:\n{listed}"
        )
    return BranchPoint(path, checkpoint)


def first_difference(trunk: DictConfig, branch: DictConfig, steps_per_epoch: int) -> int:
    """The first optimizer step at which the two runs' schedules give another lr (or momentum); the length of the
    shorter run when they never do."""
    before, after = schedule_curves(trunk, steps_per_epoch), schedule_curves(branch, steps_per_epoch)
    limit = min(len(before["lr"]), len(after["lr"]))
    names = before.keys() & after.keys()
    return next((step for step in range(limit) if any(before[n][step] != after[n][step] for n in names)), limit)


def agreeing_epochs(trunk: DictConfig, branch: DictConfig, steps_per_epoch: int) -> int:
    """How many whole epochs the two runs' schedules agree on. A branch of `branch` from a checkpoint of `trunk`
    after at most this many epochs is the run `branch` trained from scratch."""
    return first_difference(trunk, branch, steps_per_epoch) // steps_per_epoch


def check(point: BranchPoint, cfg: DictConfig, steps_per_epoch: int, dataset_sha256: str) -> None:
    """Raise BadInput when the branch would not equal the run trained from scratch: other data, a checkpoint past
    the end of this run, or a schedule that leaves the trunk's before the checkpoint."""
    where = f"checkpoint.branch_from={str(point.path)!r}"
    if point.checkpoint["dataset_sha256"] != dataset_sha256:
        raise BadInput(f"{where}: the trunk was trained on other data (its SHA-256 differs); branch on the same files")
    if point.epochs > cfg.trainer.epochs:
        raise BadInput(
            f"{where}: the trunk was saved after epoch {point.epochs}, past this run's trainer.epochs="
            f"{cfg.trainer.epochs}; branch from a checkpoint at or before it"
        )
    trunk = OmegaConf.create(point.checkpoint["config"])
    step = first_difference(trunk, cfg, steps_per_epoch)
    if (agreed := step // steps_per_epoch) < point.epochs:
        raise BadInput(
            f"{where}: the trunk was saved after epoch {point.epochs} (step {point.step}), but this run's schedule "
            f"leaves the trunk's at step {step} (epoch {math.floor(step / steps_per_epoch) + 1}): a branch there "
            f"would not be this run. Branch after epoch {agreed} at most (a warmup given as a ratio of the run, or a "
            "decay over all of it, differs from the first steps: give the warmup in steps, "
            "scheduler.warmup_steps)"
        )
