"""Datasets resident on the device: uint8 images and int64 labels kept on one device, batches sliced there from a
seeded on-device permutation and normalised there, so no DataLoader and no per-image work sits in the hot path.

A dataset is a function the data config names (`data._target_`, e.g. src.training.datasets.fashion_mnist.load):
called with `device` and the config's other keys, it returns a DeviceData. Its module also holds INFO (the training
set's size, the classes, the input shape: what the config check plans with before anything is read) and the
KEY_RULES of its keys (src.config.validation gathers them from the module `_target_` names).
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import torch
from hydra.utils import get_method

from src.config.rules import INTEGER, POSITIVE, Rule

FASHION_MNIST = "src.training.datasets.fashion_mnist.load"  # the dataset of a data config without `_target_`


class DatasetNotFoundError(RuntimeError):
    """The dataset could not be found, prepared or downloaded; the message says how to get it."""


class DatasetCorruptError(DatasetNotFoundError):
    """A dataset file is truncated or damaged; the message says which, what was found and how to fix it."""


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset is, known before it is read: the size of its whole training set, its number of classes and
    the shape of one input (channels, height, width), which the model is built for."""

    train_size: int
    num_classes: int
    input_shape: tuple[int, int, int]

    def size_rules(self) -> dict[str, Rule]:
        """The rules of the keys every dataset has: the batch size, and how many training images to keep."""
        n = self.train_size
        return {
            "data.batch_size": POSITIVE,
            "data.train_size": INTEGER.where(lambda v: 1 <= v <= n, f"an integer 1..{n}").optional(f" (all {n})"),
        }


def info(data_cfg: Any) -> DatasetInfo:
    """The INFO of the dataset the data config names."""
    target = str(data_cfg.get("_target_") or FASHION_MNIST)
    return importlib.import_module(target.rpartition(".")[0]).INFO


@dataclass
class DeviceData:
    """Train and test sets resident on one device: uint8 images (N, H, W) of one channel or (N, C, H, W), int64
    labels (N,); `fingerprint` identifies the files they come from (a checkpoint records it, so a resume on other
    data shows); `num_classes` is the dataset's (by default, the largest label + 1)."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    batch_size: int
    mean: float
    std: float
    fingerprint: str = ""
    num_classes: int | None = None

    def __post_init__(self) -> None:
        if self.num_classes is None:
            labels = torch.cat([self.train_y.reshape(-1), self.test_y.reshape(-1)])
            self.num_classes = int(labels.max()) + 1 if labels.numel() else 0

    @property
    def train_size(self) -> int:
        return int(self.train_y.shape[0])

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One input as the model sees it: (channels, height, width)."""
        shape = tuple(self.train_x.shape[1:])
        return shape if len(shape) == 3 else (1, *shape)

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps per epoch: the last, smaller batch is kept, so no image is left out."""
        return math.ceil(self.train_size / self.batch_size)

    def batch_sizes(self) -> list[int]:
        """The size of each batch of an epoch, known on the host without touching the device."""
        full, rest = divmod(self.train_size, self.batch_size)
        return [self.batch_size] * full + ([rest] if rest else [])

    def to_input(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images to normalised float (B, C, H, W), on the images' device."""
        inputs = (images.float() / 255.0 - self.mean) / self.std
        return inputs if inputs.dim() == 4 else inputs.unsqueeze(1)

    def train_batches(self, generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of shuffled batches; the order comes from `generator` alone (paired across runs)."""
        order = torch.randperm(self.train_size, device=self.train_x.device, generator=generator)
        for start in range(0, self.train_size, self.batch_size):
            index = order[start : start + self.batch_size]
            # index_select copies whole rows: ten times faster on the CPU than `train_x[index]`, which goes pixel
            # by pixel on OpenMP threads (and stalls for milliseconds when another process holds a core).
            yield self.to_input(self.train_x.index_select(0, index)), self.train_y.index_select(0, index)

    def test_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, int(self.test_y.shape[0]), batch_size):
            stop = start + batch_size
            yield self.to_input(self.test_x[start:stop]), self.test_y[start:stop]

    def keep_first(self, train_size: int | None) -> DeviceData:
        """The first `train_size` training images (a view, no copy), or all of them for None."""
        if train_size is None:
            return self
        return replace(self, train_x=self.train_x[:train_size], train_y=self.train_y[:train_size])


def load(*, device: torch.device, _target_: str = FASHION_MNIST, **keys: Any) -> DeviceData:
    """The dataset `_target_` names (the data config's; Fashion-MNIST without one) on `device`, given the data
    config's other keys: `data.load(device=device, **OmegaConf.to_container(cfg.data))`."""
    return get_method(_target_)(device=device, **keys)
