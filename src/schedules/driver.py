"""Drive an optimizer's lr from a pure schedule through one torch LambdaLR.

The trainer and the preview both go through `build_lr_driver`, so a plotted curve is the trained curve, and a
plot never advances the scheduler a run trains with (each call builds its own optimizer and scheduler).
"""

from __future__ import annotations

from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch.optim.lr_scheduler import LambdaLR

from src.schedules.core import Schedule
from src.schedules.timeline import Timeline


class LRDriver:
    """Applies `schedule` to the optimizer once per update: after every optimizer step, or after every epoch.

    `lr` is the lr the next optimizer step will use. The schedule is an object (not a lambda), so
    `state_dict()` round-trips it with LambdaLR's own state.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, schedule: Schedule, interval: str):
        self.schedule = schedule
        self.interval = interval
        self.scheduler = LambdaLR(optimizer, lr_lambda=schedule)

    @property
    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def after_step(self) -> None:
        if self.interval == "step":
            self.scheduler.step()

    def after_epoch(self, metrics: dict[str, float] | None = None) -> None:
        """End of an epoch; `metrics` (e.g. test_loss) feed schedules that watch them, such as plateau ones."""
        observe = getattr(self.schedule, "observe", None)
        if observe is not None and metrics is not None:
            observe(metrics)
        if self.interval == "epoch":
            self.scheduler.step()

    def state_dict(self) -> dict[str, Any]:
        return self.scheduler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scheduler.load_state_dict(state)


def build_schedule(scheduler_cfg: DictConfig, timeline: Timeline) -> Schedule:
    """Instantiate the config's factory (`_partial_: true`) and call it with the run's timeline."""
    factory = instantiate(scheduler_cfg, _partial_=True)
    return factory(timeline=timeline)


def build_lr_driver(cfg: DictConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int) -> LRDriver:
    """The lr driver of a composed run config, for an optimizer already built from `cfg.optimizer`."""
    interval = cfg.scheduler.interval
    timeline = Timeline(
        interval=interval,
        steps_per_epoch=steps_per_epoch,
        epochs=int(cfg.trainer.epochs),
        base_lr=float(cfg.optimizer.lr),
    )
    return LRDriver(optimizer, build_schedule(cfg.scheduler, timeline), interval)


def lr_curve(cfg: DictConfig, steps_per_epoch: int) -> list[float]:
    """The lr of every optimizer step of the run `cfg` describes, from the objects the trainer uses.

    Nothing is trained and the dataset is not read: a throw-away parameter stands in for the model. Entry t is
    the lr of optimizer step t (0-based); the list has `trainer.epochs * steps_per_epoch` entries.
    """
    from src.optimizers import build_optimizer

    optimizer = build_optimizer(cfg.optimizer, [torch.nn.Parameter(torch.zeros(1))])
    driver = build_lr_driver(cfg, optimizer, steps_per_epoch)
    lrs: list[float] = []
    for _ in range(int(cfg.trainer.epochs)):
        for _ in range(steps_per_epoch):
            lrs.append(driver.lr)
            optimizer.step()  # no gradients: changes nothing, but keeps torch's step-order check content
            driver.after_step()
        driver.after_epoch(None)
    return lrs
