"""Checkpoints: what a run needs to continue exactly where it stopped, written so that a crash never corrupts one.

`last.pt` in the run folder is rewritten before the first epoch and at the end of every epoch; with
`checkpoint.keep_best` a copy of the epoch with the best test accuracy is kept as `best.pt`. Each holds the
trainer's whole state (`Trainer.state_dict`: weights, optimizer, the lr driver's counters, every RNG, the data
order, step/epoch counters, history), the run's resolved config, the overrides that describe it and the
fingerprint of the data it trains on.

A checkpoint holds only tensors, numbers, strings, lists, tuples and dicts (the schedule is rebuilt from the
config, not saved), and is read with `torch.load(weights_only=True)`: run folders are shared and copied, and
unpickling anything else could run code. `load` refuses a file that holds more, and one that lacks an entry resume
or the trainer reads (`ENTRIES`), before anything is written.

Resuming (src/runs/resume.py) reloads that state, so the run goes on bit for bit as if never stopped; `changes` finds
what in a config would change the run, and a resume under such a config is refused.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from src.config.rules import BOOLEAN, INTEGER, NUMBER, NUMBERS, STRING, Rule
from src.runs.errors import BadInput
from src.runs.files import write_aside

LAST = "last.pt"
BEST = "best.pt"
# 2: the lr driver's counter and plain numbers instead of LambdaLR's state with the schedule objects (the entries
# `step_count` and `config_changes` of earlier format-2 files are ignored)
FORMAT_VERSION = 2
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


class SavedAt:
    """Where a loaded checkpoint (`self.checkpoint`, `load`'s) was saved in its run: after `epochs`, at `step`."""

    checkpoint: dict[str, Any]

    @property
    def epochs(self) -> int:
        return int(self.checkpoint["trainer"]["result"]["epochs"])

    @property
    def step(self) -> int:
        return int(self.checkpoint["trainer"]["step"])


def without_hydra(cfg: DictConfig) -> DictConfig:
    """The run's config without Hydra's own section (present when composed with it)."""
    return OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])


def run_config(cfg: DictConfig) -> dict[str, Any]:
    """The run's resolved config as plain containers, without Hydra's own section."""
    return OmegaConf.to_container(without_hydra(cfg), resolve=True)


def save(path: Path, payload: Mapping[str, Any]) -> None:
    """Write `payload` aside (`src.runs.files.write_aside`): a crash mid-write leaves the previous file whole."""
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
    """Read a checkpoint with `torch.load(weights_only=True)`; raise CheckpointError, naming what to do, for a file
    that is not one this program can continue (`problems`)."""
    if not path.is_file():
        what = "directory" if path.is_dir() else "link to nothing" if not path.exists() else "special file"
        raise CheckpointError(
            f"{path} is a {what}, not a checkpoint. Move it away, or start the run afresh in a new folder."
        )
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} cannot be read (it is empty). Start the run afresh in a new folder.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises many kinds for a damaged or foreign file
        refused = _refused_by_the_unpickler(error)
        if refused is not None and refused.startswith("Unsupported global"):
            raise CheckpointError(
                f"{path} is refused unread: it holds more than the tensors, numbers, strings, lists and dicts a "
                f"checkpoint is made of ({refused}), and unpickling it could run code. A checkpoint of an older "
                f"lrbench (before format {FORMAT_VERSION}) holds schedule objects and is refused alike. Start the "
                "run afresh in a new folder."
            ) from None
        reason = refused or f"{type(error).__name__}: {error}"
        raise CheckpointError(f"{path} cannot be read ({reason}). Start the run afresh in a new folder.") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_VERSION:
        older = isinstance(payload, dict) and payload.get("format") in range(1, FORMAT_VERSION)
        raise CheckpointError(
            f"{path} is not an lrbench checkpoint of format {FORMAT_VERSION}"
            + (f" (it is of format {payload['format']}, from an older lrbench)" if older else "")
            + ". Start the run afresh in a new folder."
        )
    if found := problems(payload):
        listed = "\n".join(f"  - {problem}" for problem in found)
        raise CheckpointError(
            f"{path} is not a checkpoint lrbench can continue:\n{listed}\nStart the run afresh in a new folder."
        )
    return payload


def _refused_by_the_unpickler(error: Exception) -> str | None:
    """What torch's restricted unpickler refused (`Unsupported global: GLOBAL os.system`), without its advice to
    load the file unrestricted; None for another error."""
    if not isinstance(error, pickle.UnpicklingError):
        return None
    found = re.search(r"WeightsUnpickler error:\s*(.+?)(?: was not an allowed global|\n|$)", str(error))
    return found.group(1) if found else "it holds what a checkpoint does not"


def _list_of(test: Callable[[Any], bool], words: str) -> Rule:
    return Rule(lambda value: isinstance(value, list) and all(map(test, value)), words)


# The kinds of a checkpoint's entries, as config keys have theirs (src.config.rules): a test and its words.
DICT = Rule(lambda value: isinstance(value, dict), "a dict")
TENSOR = Rule(lambda value: isinstance(value, torch.Tensor), "a tensor")
OPTIONAL_INTEGER = Rule(lambda value: value is None or INTEGER.test(value), "an integer or None")
LIST_OF_DICTS = _list_of(DICT.test, "a list of dicts")
# Every entry of a checkpoint that resume (src/runs/resume.py) and the trainer (`Trainer.load_state_dict`, `LRDriver`,
# `RunResult`) read, and its kind, parents before their entries: `problems` names each one missing or of another
# kind, so a foreign file is refused before anything is written instead of failing half way.
ENTRIES = {
    "config": DICT,
    "config.optimizer": DICT,
    "config.optimizer._target_": STRING,
    "overrides": _list_of(STRING.test, "a list of strings"),
    "dataset_sha256": STRING,
    "trainer": DICT,
    "trainer.model": DICT,
    "trainer.optimizer": DICT,
    "trainer.optimizer.state": DICT,
    "trainer.optimizer.param_groups": LIST_OF_DICTS,
    "trainer.lr_driver": DICT,
    "trainer.lr_driver.updates": INTEGER,
    "trainer.lr_driver.schedule": DICT,
    "trainer.torch_rng": TENSOR,
    "trainer.cuda_rng": _list_of(TENSOR.test, "a list of tensors"),
    "trainer.order": TENSOR,
    "trainer.step": INTEGER,
    "trainer.result": DICT,
    "trainer.result.epochs": INTEGER,
    "trainer.result.steps": INTEGER,
    "trainer.result.wall_seconds": NUMBER,
    "trainer.result.diverged": BOOLEAN,
    "trainer.result.diverged_step": OPTIONAL_INTEGER,
    "trainer.result.diverged_epoch": OPTIONAL_INTEGER,
    "trainer.result.collapsed": BOOLEAN,
    "trainer.result.collapsed_epoch": OPTIONAL_INTEGER,
    "trainer.result.threads": OPTIONAL_INTEGER,
    "trainer.result.history": LIST_OF_DICTS,
    "trainer.result.epoch_seconds": NUMBERS,
}
# Dicts whose entries are all listed: anything else there is not of this program (RunResult takes no other field).
CLOSED = ("trainer.result",)
_SHOWN_KINDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string", dict: "a dict"}
_SHOWN_KINDS.update({list: "a list", tuple: "a tuple", type(None): "None", torch.Tensor: "a tensor"})


def problems(payload: Mapping[str, Any]) -> list[str]:
    """Each entry of `ENTRIES` missing from `payload` or of another kind, as `key: what is wrong`; the entries of a
    missing or wrong one are not looked at."""
    found: list[str] = []
    for key, kind in ENTRIES.items():
        parent, _, name = key.rpartition(".")
        holder = _entry(payload, parent) if parent else payload
        if not isinstance(holder, dict):
            continue  # its parent is named already
        if name not in holder:
            found.append(f"{key}: missing")
        elif not kind.test(holder[name]):
            shown = _SHOWN_KINDS.get(type(holder[name]), f"a {type(holder[name]).__name__}")
            found.append(f"{key}: {shown}, allowed is {kind.allowed}")
        elif key in CLOSED and (unknown := sorted(set(holder[name]) - _entries_of(key))):
            found.append(f"{key}: holds {', '.join(map(str, unknown))}, which a run's result has not")
    return found


def _entry(payload: Mapping[str, Any], key: str) -> Any:
    value: Any = payload
    for name in key.split("."):
        if not isinstance(value, dict) or name not in value:
            return None
        value = value[name]
    return value


def _entries_of(key: str) -> set[str]:
    return {entry.removeprefix(f"{key}.") for entry in ENTRIES if entry.startswith(f"{key}.")}


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
    """`key: checkpoint <old>, now <new>`, the line a refused resume shows for one change."""
    shown = [repr(change[side]) if side in change else "(absent)" for side in ("old", "new")]
    return f"{change['key']}: checkpoint {shown[0]}, now {shown[1]}"


@dataclass
class Checkpointer:
    """Saves the trainer into the run folder at every epoch end: `last.pt` always, `best.pt` when asked; beside the
    trainer's state, what the run is (`dataset`: `DeviceData.fingerprint`)."""

    run_dir: Path
    config: dict[str, Any]
    overrides: list[str]
    keep_best: bool
    flush_curves: Callable[[], None]
    dataset: str

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
        }
        save(self.run_dir / LAST, payload)
        history = trainer.result.history
        if (
            self.keep_best
            and history
            and history[-1]["test_acc"] > max((h["test_acc"] for h in history[:-1]), default=-1)
        ):
            save(self.run_dir / BEST, payload)
