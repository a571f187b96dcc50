"""Reading a run folder's TensorBoard event files: every scalar point by tag, the image and tensor tags and the
HParams records. The one place that sets up TensorBoard's reader, so every curve is read whole (not a sample of it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

logging.getLogger("tensorboard").setLevel(logging.WARNING)  # its event reader logs every file it opens


@dataclass(frozen=True)
class Events:
    """What the event files of one folder hold; a tag that was never written reads as an empty curve."""

    scalars: dict[str, list[tuple[int, float]]]  # tag -> every (step, value), in the order they were written
    images: list[str]  # the image tags
    tensors: list[str]  # the tensor tags (the custom-scalars chart layout is one)
    hparams: dict[str, HParamsPluginData]  # `_hparams_/experiment`, `_hparams_/session_start_info`, ..._end_info

    def steps(self, tag: str) -> list[int]:
        return [step for step, _ in self.scalars.get(tag, [])]

    def values(self, tag: str) -> list[float]:
        return [value for _, value in self.scalars.get(tag, [])]


def read_events(folder: Path) -> Events:
    """Every scalar point, the image tags and the HParams records of the event files in `folder`."""
    accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0})  # 0: keep every point
    accumulator.Reload()
    tags = accumulator.Tags()
    try:
        hparams = accumulator.PluginTagToContent("hparams")
    except KeyError:  # no HParams record written
        hparams = {}
    return Events(
        scalars={tag: [(event.step, event.value) for event in accumulator.Scalars(tag)] for tag in tags["scalars"]},
        images=list(tags["images"]),
        tensors=list(tags["tensors"]),
        hparams={tag: HParamsPluginData.FromString(content) for tag, content in hparams.items()},
    )


def read_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar curve of the event files in `folder`: tag -> [(step, value)]."""
    return read_events(folder).scalars
