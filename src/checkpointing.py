"""Checkpoints: what a run needs to continue exactly where it stopped, written so that a crash never corrupts one.

`last.pt` in the run folder is rewritten before the first epoch and at the end of every epoch; with
`checkpoint.keep_best` a copy of the epoch with the best test accuracy is kept as `best.pt`. Each holds the
trainer's whole state (`Trainer.state_dict`: weights, optimizer, lr scheduler, every RNG, the data order,
step/epoch counters, history), the run's resolved config, the overrides that describe it, the fingerprint of the
data it trains on, and the config changes forced resumes made to it.

Resuming (src/resume.py) reloads that state, so the run goes on bit for bit as if never stopped; `changes` finds
what in a config would change the run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from src.errors import BadInput
from src.tracking import write_aside

LAST = "last.pt"
BEST = "best.pt"
FORMAT_VERSION = 1
# Keys that say where, how fast or how verbosely a run computes, not what it computes: they may change on resume.
# (Other thread counts or devices still resume, but bit-for-bit equality is only promised with the same ones.)
NOT_PART_OF_THE_RUN = (
    "resume",
    "checkpoint",
    "output_root",
    "trainer.threads",
    "trainer.device",
    "trainer.progress",
    "trainer.compile",
    "data.root",
    "data.system_dir",
    "data.download",
    "labels",
)


class CheckpointError(BadInput):
    """A checkpoint cannot be read or does not fit the run; the message says what to do."""


def without_hydra(cfg: DictConfig) -> DictConfig:
    """The run's config without Hydra's own section (present when composed with it)."""
    return OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])


def run_config(cfg: DictConfig) -> dict[str, Any]:
    """The run's resolved config as plain containers, without Hydra's own section."""
    return OmegaConf.to_container(without_hydra(cfg), resolve=True)


def save(path: Path, payload: Mapping[str, Any]) -> None:
    """Write `payload` aside (`src.tracking.write_aside`): a crash mid-write leaves the previous file whole."""
    try:
        write_aside(path, lambda handle: torch.save(dict(payload), handle))
    except (OSError, RuntimeError) as error:
        # torch's zip writer reports a failed write (ENOSPC, EFBIG) as a RuntimeError raised from the OSError
        cause = _os_error_behind(error)
        if cause is None or cause is error:
            raise
        raise cause from None


def _os_error_behind(error: BaseException) -> OSError | None:
    """The OSError an exception was raised while handling, if any (how torch.save's writer hides a full disk)."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def load(path: Path) -> dict[str, Any]:
    """Read a checkpoint this program wrote (it holds the schedule objects, so it is a full pickle: trust it)."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # torch.load raises many kinds for a damaged or foreign file
        raise CheckpointError(
            f"{path} cannot be read ({type(error).__name__}: {error}). Start the run afresh in a new folder."
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{path} is not an lrbench checkpoint of format {FORMAT_VERSION}.")
    return payload


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, Mapping):
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def _part_of_the_run(key: str) -> bool:
    return not any(key == ignored or key.startswith(f"{ignored}.") for ignored in NOT_PART_OF_THE_RUN)


_ABSENT = object()


def changes(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every key whose value changes what the run computes, as `{"key", "old", "new"}` (a side where the key is
    absent has no entry), sorted by key."""
    before, after = _flatten(saved), _flatten(current)
    changed = []
    for key in sorted(before.keys() | after.keys()):
        if _part_of_the_run(key) and before.get(key, _ABSENT) != after.get(key, _ABSENT):
            change = {"key": key}
            change.update({side: tree[key] for side, tree in (("old", before), ("new", after)) if key in tree})
            changed.append(change)
    return changed


def describe(change: Mapping[str, Any]) -> str:
    """`key: checkpoint <old>, now <new>`, the line a refusal or a forced resume shows for one change."""
    shown = [repr(change[side]) if side in change else "(absent)" for side in ("old", "new")]
    return f"{change['key']}: checkpoint {shown[0]}, now {shown[1]}"


@dataclass
class Checkpointer:
    """Saves the trainer into the run folder at every epoch end: `last.pt` always, `best.pt` when asked; beside the
    trainer's state, what the run is (`dataset`: `DeviceData.fingerprint`; `config_changes`: see src/resume.py)."""

    run_dir: Path
    config: dict[str, Any]
    overrides: list[str]
    keep_best: bool
    flush_curves: Callable[[], None]
    dataset: str
    config_changes: list[dict[str, Any]]

    def __call__(self, trainer: Any) -> None:
        """Write the state after an epoch (or before the first); TensorBoard is flushed first, so every point up
        to the saved step is on the disk before the checkpoint says the run got that far."""
        self.flush_curves()
        payload = {
            "format": FORMAT_VERSION,
            "trainer": trainer.state_dict(),
            "config": self.config,
            "overrides": self.overrides,
            "dataset_sha256": self.dataset,
            "config_changes": self.config_changes,
        }
        save(self.run_dir / LAST, payload)
        history = trainer.result.history
        if (
            self.keep_best
            and history
            and history[-1]["test_acc"] > max((h["test_acc"] for h in history[:-1]), default=-1)
        ):
            save(self.run_dir / BEST, payload)
