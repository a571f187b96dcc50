"""Optimizers come straight from torch through the config's `_target_` (conf/optimizer/)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from src.config.rules import BOOLEAN, NON_NEGATIVE_NUMBER, NUMBERS, POSITIVE_NUMBER, Rule, fraction


def build_optimizer(optimizer_cfg: DictConfig, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """`_partial_: true` configs become a factory; the model's parameters are the one argument added here."""
    return instantiate(optimizer_cfg, _partial_=True)(params)


# Every key of conf/optimizer/*.yaml; a key one optimizer lacks (Adam's momentum) is simply not checked there.
KEY_RULES: dict[str, Rule] = {
    "optimizer.lr": POSITIVE_NUMBER.in_float32(),
    "optimizer.momentum": fraction("momentum").in_float32(),
    "optimizer.nesterov": BOOLEAN,
    "optimizer.betas": Rule(
        lambda v: NUMBERS.test(v) and len(v) == 2 and all(0 <= b < 1 for b in v), "two numbers, each 0 <= beta < 1"
    ).in_float32(),
    "optimizer.eps": NON_NEGATIVE_NUMBER.in_float32(),
    "optimizer.weight_decay": NON_NEGATIVE_NUMBER.in_float32(),
}
