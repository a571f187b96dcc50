"""Optimizers come from the config's `_target_` (conf/optimizer/): a torch.optim class, or a function of this
project returning an optimizer, whose module then holds the KEY_RULES of its keys (this table is torch's)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from src.config.rules import BOOLEAN, NON_NEGATIVE_NUMBER, NUMBERS, POSITIVE_NUMBER, Rule, fraction


def build_optimizer(optimizer_cfg: DictConfig, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """`_partial_: true` configs become a factory; the model's parameters are the one argument added here."""
    return instantiate(optimizer_cfg, _partial_=True)(params)


def stand_in_optimizer(optimizer_cfg: DictConfig, *, with_gradient: bool = False) -> torch.optim.Optimizer:
    """The configured optimizer over one stand-in weight (1.0): its settings, an lr curve or a first step without
    a model. Without a gradient its step changes nothing; with one (1.0) the step is a real update."""
    weight = torch.nn.Parameter(torch.ones(1))
    weight.grad = torch.ones(1) if with_gradient else None
    return build_optimizer(optimizer_cfg, [weight])


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
