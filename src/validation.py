"""Check a composed run config before anything is loaded or trained.

Every problem is collected, so one message lists them all, each with the key, the value and what is allowed.
The schedule itself is built once on the run's timeline, so its own parameter checks run here too.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from src.device import DEVICES
from src.schedules import ScheduleConfigError, Timeline, build_schedule
from src.schedules.timeline import INTERVALS

FASHION_MNIST_TRAIN_SIZE = 60_000


class ConfigError(ValueError):
    """The config has problems; the message lists every one of them."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(f"  - {problem}" for problem in problems))
        self.problems = problems


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _positive_int(value: Any) -> bool:
    return _is_int(value) and value >= 1


def _get(cfg: DictConfig, key: str) -> Any:
    return OmegaConf.select(cfg, key, default=None, throw_on_missing=False)


# key, test, what is allowed
CHECKS: list[tuple[str, Callable[[Any], bool], str]] = [
    ("seed", _is_int, "an integer"),
    ("trainer.epochs", _positive_int, "an integer >= 1"),
    ("trainer.device", lambda v: v in DEVICES, f"one of {', '.join(DEVICES)}"),
    ("trainer.threads", lambda v: v is None or _positive_int(v), "null (all cores) or an integer >= 1"),
    ("trainer.log_every_steps", _positive_int, "an integer >= 1"),
    ("trainer.eval_batch_size", _positive_int, "an integer >= 1"),
    ("data.batch_size", _positive_int, "an integer >= 1"),
    ("data.train_size", lambda v: v is None or _positive_int(v), "null (all 60000) or an integer >= 1"),
    ("optimizer.lr", lambda v: _is_number(v) and v > 0, "a number > 0"),
    ("scheduler.interval", lambda v: v in INTERVALS, f"one of {', '.join(INTERVALS)}"),
    (
        "scheduler.warmup_ratio",
        lambda v: v is None or (_is_number(v) and 0 <= v < 1),
        "a number with 0 <= warmup_ratio < 1",
    ),
]


def _optimizer_problems(cfg: DictConfig) -> list[str]:
    problems = []
    momentum = _get(cfg, "optimizer.momentum")
    if momentum is not None and not (_is_number(momentum) and 0 <= momentum < 1):
        problems.append(f"optimizer.momentum={momentum!r}: allowed is a number with 0 <= momentum < 1")
    betas = _get(cfg, "optimizer.betas")
    if betas is not None and not (len(betas) == 2 and all(_is_number(beta) and 0 <= beta < 1 for beta in betas)):
        problems.append(f"optimizer.betas={list(betas)!r}: allowed is two numbers, each 0 <= beta < 1")
    weight_decay = _get(cfg, "optimizer.weight_decay")
    if weight_decay is not None and not (_is_number(weight_decay) and weight_decay >= 0):
        problems.append(f"optimizer.weight_decay={weight_decay!r}: allowed is a number >= 0")
    return problems


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError listing every problem of `cfg`; return quietly when it can run."""
    problems = []
    for key, test, allowed in CHECKS:
        value = _get(cfg, key)
        if not test(value):
            problems.append(f"{key}={value!r}: allowed is {allowed}")
    problems += _optimizer_problems(cfg)
    if _get(cfg, "trainer.device") == "cuda" and not torch.cuda.is_available():
        problems.append("trainer.device='cuda': CUDA is not available on this machine; use auto or cpu")
    if not problems:
        problems += _schedule_problems(cfg)
    if problems:
        raise ConfigError(problems)


def _schedule_problems(cfg: DictConfig) -> list[str]:
    """Build the schedule on the run's timeline once, and evaluate it at every update, to catch bad values."""
    train_size = cfg.data.train_size or FASHION_MNIST_TRAIN_SIZE
    timeline = Timeline(
        interval=cfg.scheduler.interval,
        steps_per_epoch=math.ceil(train_size / cfg.data.batch_size),
        epochs=cfg.trainer.epochs,
        base_lr=float(cfg.optimizer.lr),
    )
    try:
        schedule = build_schedule(cfg.scheduler, timeline)
        bad = [t for t in range(timeline.total) if not (math.isfinite(schedule(t)) and schedule(t) >= 0)]
    except ScheduleConfigError as error:
        return [str(error)]
    except TypeError as error:  # a key the schedule does not take, or a value of the wrong type
        return [f"scheduler: {error}"]
    if bad:
        return [f"scheduler: the lr multiplier is negative or not finite at update {bad[0]}"]
    return []
