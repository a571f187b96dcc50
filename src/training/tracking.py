"""What a run writes: TensorBoard scalars (against the global optimizer step) and metrics.json.

Step axis: a point at x = t describes the state before optimizer step t (0-based); `train/lr` at t is the lr
step t used, `train/loss` at t the loss of the batch step t learned from (a window's points sit at its last
step), and the per-epoch points sit at x = steps done when the epoch ended.

Side by side: every run writes its flattened hyperparameters and final metrics for the HParams dashboard into its
own folder (not the extra timestamped run `SummaryWriter.add_hparams` creates), and the same custom-scalars layout,
so runs selected in TensorBoard overlay on one lr, one train-loss and one test-accuracy chart.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
from tensorboard.plugins.hparams import metadata as hparams_metadata
from tensorboard.plugins.hparams.api_pb2 import Status
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData, SessionEndInfo
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summaries

# Final metrics shown next to the hyperparameters; `final/diverged` is 1 for a run stopped by a NaN/inf loss,
# `final/collapsed` 1 for a run that ended at chance (Trainer).
FINAL_METRICS = ("test_acc", "best_test_acc", "test_loss", "train_loss", "diverged", "collapsed")
FINAL_TAGS = tuple(f"final/{name}" for name in FINAL_METRICS)
# Config groups whose every key is a hyperparameter, and single keys that are too.
HPARAM_GROUPS = ("scheduler", "optimizer")
HPARAM_KEYS = ("data.batch_size", "data.train_size", "trainer.epochs", "seed", "lr_from")
# Set only where a study set them (src.study): the stage and the schedule's name in the study.
LABEL_KEYS = ("labels.stage", "labels.schedule")
# The HParams dashboard lists hyperparameters that differ between runs first, then by name; these are marked as
# differing, so the schedule, its lr and its warmup lead the table instead of sitting among the constant keys.
LEAD_HPARAMS = (*LABEL_KEYS, "scheduler", "optimizer.lr", "scheduler.warmup_ratio", "scheduler.warmup_steps")
COMPARE_LAYOUT = {
    "compare runs": {
        "learning rate": ["Multiline", ["^train/lr$"]],
        "train loss": ["Multiline", ["^train/loss$"]],
        "test accuracy": ["Multiline", ["^test/acc$"]],
    }
}


def _hparam_value(value: Any) -> str | float | int | bool | None:
    """What the HParams dashboard can show: numbers, strings and booleans as they are, anything else as text."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def run_hparams(cfg: Mapping[str, Any], choices: Mapping[str, Any]) -> dict[str, Any]:
    """The run's flat hyperparameters: the schedule's and optimizer's names and keys, batch size, epochs, seed.

    `cfg` is the run's config (a DictConfig, or plain dicts read back from `.hydra/config.yaml`), `choices`
    Hydra's `runtime.choices` (which file each group took). A null key maps to None, left blank in the dashboard.
    """
    flat: dict[str, Any] = {group: choices.get(group) for group in ("scheduler", "optimizer", "model")}
    for group in HPARAM_GROUPS:
        for key, value in (cfg.get(group) or {}).items():
            if not key.startswith("_"):
                flat[f"{group}.{key}"] = _hparam_value(value)
    for dotted in HPARAM_KEYS:
        flat[dotted] = _hparam_value(_select(cfg, dotted))
    for dotted in LABEL_KEYS:
        if (value := _select(cfg, dotted)) is not None:
            flat[dotted] = _hparam_value(value)
    return flat


def _select(cfg: Mapping[str, Any], dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node


def _lead_first(experiment: Summary) -> Summary:
    """The experiment summary with the LEAD_HPARAMS marked as differing, which the dashboard lists first."""
    plugin_data = experiment.value[0].metadata.plugin_data
    content = HParamsPluginData.FromString(plugin_data.content)
    for info in content.experiment.hparam_infos:
        info.differs = info.name in LEAD_HPARAMS
    plugin_data.content = content.SerializeToString()
    return experiment


def _session_end(status: int) -> Summary:
    """The HParams session's end record with its status (torch's `hparams()` always writes success)."""
    content = HParamsPluginData(
        session_end_info=SessionEndInfo(status=status, end_time_secs=time.time()),
        version=hparams_metadata.PLUGIN_DATA_VERSION,
    )
    plugin_data = SummaryMetadata.PluginData(
        plugin_name=hparams_metadata.PLUGIN_NAME, content=content.SerializeToString()
    )
    summary_metadata = SummaryMetadata(plugin_data=plugin_data)
    return Summary(value=[Summary.Value(tag=hparams_metadata.SESSION_END_INFO_TAG, metadata=summary_metadata)])


class Tracker:
    """One TensorBoard writer per run folder; close it (in a `finally`) so the last points reach the disk.

    With `hparams`, the run opens an HParams session at once (so a run still training, or one that crashed,
    is listed), and `finish` closes it with the final metrics. The session also records `threads`, the torch
    threads the run computes with: runs on different counts differ in the last digits.
    """

    def __init__(self, run_dir: Path, hparams: Mapping[str, Any] | None = None, purge_step: int | None = None):
        # purge_step (a resumed run's step): TensorBoard drops the earlier session's points at or after it
        self.writer = SummaryWriter(log_dir=str(run_dir), flush_secs=30, purge_step=purge_step)
        self.writer.add_custom_scalars(COMPARE_LAYOUT)
        if hparams is not None:
            hparams = {**hparams, "threads": torch.get_num_threads()}
            experiment, session_start, _ = hparams_summaries(hparams, dict.fromkeys(FINAL_TAGS, 0.0))
            self.writer.file_writer.add_summary(_lead_first(experiment))
            self.writer.file_writer.add_summary(session_start)

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

    def finish(self, summary: Mapping[str, Any]) -> None:
        """Final metrics (from `RunResult.summary()`) at the run's last step; a diverged or collapsed run ends as a
        failure in the dashboard's status column."""
        step = int(summary.get("steps") or 0)
        for name, tag in zip(FINAL_METRICS, FINAL_TAGS, strict=True):
            if summary.get(name) is not None and math.isfinite(summary[name]):
                self.writer.add_scalar(tag, float(summary[name]), step)
        failed = summary.get("diverged") or summary.get("collapsed")
        status = Status.STATUS_FAILURE if failed else Status.STATUS_SUCCESS
        self.writer.file_writer.add_summary(_session_end(status))

    def close(self) -> None:
        self.writer.close()
