"""Optimizers come straight from torch through the config's `_target_` (conf/optimizer/)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig


def build_optimizer(optimizer_cfg: DictConfig, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """`_partial_: true` configs become a factory; the model's parameters are the one argument added here."""
    return instantiate(optimizer_cfg, _partial_=True)(params)
