"""Drive an optimizer's lr from a pure schedule: the lr of update t is base_lr * schedule(t), set into each of the
optimizer's parameter groups (what torch's LambdaLR computes, without its private counters).

The trainer and the preview both go through `build_lr_driver`, so a plotted curve is the trained curve, and a
plot never advances the driver a run trains with (each call builds its own optimizer and driver).
"""

from __future__ import annotations

from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from src.schedules.core import CyclesMomentum, Schedule, WatchesMetrics
from src.schedules.timeline import ScheduleConfigError, Timeline

# A curve is evaluated at every update up to this many, and at evenly spread ones beyond (validation, preview).
MAX_SCHEDULE_POINTS = 200_000


class LRDriver:
    """Applies `schedule` to the optimizer once per update: after every optimizer step, or after every epoch.

    `updates` counts the updates done; `lr` is the lr the next optimizer step will use. The schedule is a pure
    function of the update (rebuilt from the config, never saved), so `state_dict()` is just that counter and a
    stateful schedule's plain numbers (a plateau watch's). A schedule that `CyclesMomentum` (one_cycle,
    cyclic) also sets the optimizer's momentum (SGD's `momentum`, Adam's first beta) at every update.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, schedule: Schedule, timeline: Timeline):
        self.optimizer = optimizer
        self.schedule = schedule
        self.timeline = timeline
        self.interval = timeline.interval
        self.base_lrs = [float(group["lr"]) for group in optimizer.param_groups]
        self.updates = 0
        self._apply(0)

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    @property
    def momentum(self) -> float | None:
        """The momentum the next optimizer step will use (None for optimizers without one)."""
        group = self.optimizer.param_groups[0]
        if "betas" in group:
            return group["betas"][0]
        return group.get("momentum")

    def warmup_updates(self, max_points: int = 100_000) -> int:
        """Updates before the schedule first reaches its peak over the run: the warmup, or any rise to the top
        (one_cycle's first phase). A run is judged for collapse only after it (Trainer)."""
        total = self.timeline.total
        stride = max(1, total // max_points)
        values = [(self.schedule(t), t) for t in range(0, total, stride)]
        if not values:
            return 0
        peak = max(value for value, _ in values)
        return next(t for value, t in values if value >= peak * (1 - 1e-9))

    def after_step(self) -> None:
        if self.interval == "step":
            self._advance()

    def after_epoch(self, metrics: dict[str, float] | None = None) -> None:
        """End of an epoch; `metrics` (e.g. test_loss) feed schedules that watch them, such as plateau ones.

        In step mode the lr of the next step is read again after the observation, so a plateau cut applies
        from the first step of the next epoch.
        """
        if isinstance(self.schedule, WatchesMetrics) and metrics is not None:
            self.schedule.observe(metrics, self.updates + (1 if self.interval == "epoch" else 0))
            if self.interval == "step":
                self._set_lrs(self.updates)
        if self.interval == "epoch":
            self._advance()

    def _advance(self) -> None:
        self.updates += 1
        self._apply(self.updates)

    def lrs_at(self, t: int) -> list[float]:
        """The lr of each of the optimizer's parameter groups at update t."""
        return [base * self.schedule(t) for base in self.base_lrs]

    def _apply(self, t: int) -> None:
        self._set_lrs(t)
        self._apply_momentum(t)

    def _set_lrs(self, t: int) -> None:
        for group, lr in zip(self.optimizer.param_groups, self.lrs_at(t), strict=True):
            group["lr"] = lr

    def _apply_momentum(self, t: int) -> None:
        """Momentum of update t for schedules that cycle it; other schedules leave it alone."""
        value = self.schedule.momentum(t) if isinstance(self.schedule, CyclesMomentum) else None
        if value is None:
            return
        for group in self.optimizer.param_groups:
            if "betas" in group:
                group["betas"] = (value, *group["betas"][1:])
            elif "momentum" in group:
                group["momentum"] = value
            else:
                raise ScheduleConfigError(
                    f"scheduler.cycle_momentum=true: {type(self.optimizer).__name__} has no momentum to cycle; "
                    "allowed is cycle_momentum=false for it"
                )

    def state_dict(self) -> dict[str, Any]:
        """The update counter and the schedule's own state, all plain values (a checkpoint loads with
        `torch.load(weights_only=True)`). A snapshot: later updates do not leak into a saved state."""
        watched = self.schedule.state_dict() if isinstance(self.schedule, WatchesMetrics) else {}
        return {"updates": self.updates, "schedule": watched}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from `state` (`state_dict`'s): the lrs and momentum follow from the schedule at that update."""
        self.updates = int(state["updates"])
        if isinstance(self.schedule, WatchesMetrics):
            self.schedule.load_state_dict(state["schedule"])
        self._apply(self.updates)


def build_schedule(scheduler_cfg: DictConfig, timeline: Timeline) -> Schedule:
    """Instantiate the config's factory (`_partial_: true`) and call it with the run's timeline."""
    factory = instantiate(scheduler_cfg, _partial_=True)
    return factory(timeline=timeline)


def run_timeline(cfg: DictConfig, steps_per_epoch: int) -> Timeline:
    """The timeline of the run a composed config describes."""
    return Timeline(
        interval=cfg.scheduler.interval,
        steps_per_epoch=steps_per_epoch,
        epochs=int(cfg.trainer.epochs),
        base_lr=float(cfg.optimizer.lr),
    )


def build_lr_driver(cfg: DictConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int) -> LRDriver:
    """The lr driver of a composed run config, for an optimizer already built from `cfg.optimizer`."""
    timeline = run_timeline(cfg, steps_per_epoch)
    return LRDriver(optimizer, build_schedule(cfg.scheduler, timeline), timeline)


def _stand_in_optimizer(cfg: DictConfig) -> torch.optim.Optimizer:
    """The run's optimizer over one throw-away parameter: its settings and lrs, nothing trained."""
    return instantiate(cfg.optimizer, _partial_=True)([torch.nn.Parameter(torch.zeros(1))])


def schedule_curves(cfg: DictConfig, steps_per_epoch: int) -> dict[str, list[float]]:
    """The lr (and, where the optimizer has one, the momentum) of every optimizer step of the run `cfg` describes.

    Built by `build_lr_driver`, the function the trainer uses, on a fresh optimizer over a throw-away parameter:
    nothing is trained, the dataset is not read, and no driver of a real run is advanced. Entry t is the value
    for optimizer step t (0-based); each list has `trainer.epochs * steps_per_epoch` entries. No metrics are
    observed, so a plateau schedule shows its curve without cuts.
    """
    driver = build_lr_driver(cfg, _stand_in_optimizer(cfg), steps_per_epoch)
    curves: dict[str, list[float]] = {"lr": [], "momentum": []}
    for _ in range(int(cfg.trainer.epochs)):
        for _ in range(steps_per_epoch):
            curves["lr"].append(driver.lr)
            if driver.momentum is not None:
                curves["momentum"].append(driver.momentum)
            driver.after_step()
        driver.after_epoch(None)
    if not curves["momentum"]:
        del curves["momentum"]
    return curves


def lr_curve(cfg: DictConfig, steps_per_epoch: int) -> list[float]:
    """The lr of every optimizer step of the run `cfg` describes, from the objects the trainer uses.

    Nothing is trained and the dataset is not read: a throw-away parameter stands in for the model. Entry t is
    the lr of optimizer step t (0-based); the list has `trainer.epochs * steps_per_epoch` entries.
    """
    return schedule_curves(cfg, steps_per_epoch)["lr"]


def sampled_updates(total: int, max_points: int = MAX_SCHEDULE_POINTS) -> list[int]:
    """Every update of a run of `total` (>= 1) updates, or about `max_points` evenly spread ones and the last."""
    return sorted({*range(0, total, max(1, total // max_points)), total - 1})


def previewed_curves(
    cfg: DictConfig, steps_per_epoch: int, max_points: int = MAX_SCHEDULE_POINTS
) -> tuple[list[int], dict[str, list[float]]]:
    """The optimizer steps shown and their lr (and momentum): every step of a run of up to `max_points` steps,
    through `schedule_curves`; beyond, the steps of `sampled_updates`.

    A sampled step's values come from the driver the trainer would build, without stepping through the rest:
    the driver sets the lr of update t to base_lr * schedule(t), and a schedule that moves the momentum gives it as
    `schedule.momentum(t)` (None: the optimizer's own).
    """
    total = int(cfg.trainer.epochs) * steps_per_epoch
    if total <= max_points:
        return list(range(total)), schedule_curves(cfg, steps_per_epoch)
    optimizer = _stand_in_optimizer(cfg)
    group = optimizer.param_groups[0]
    own_momentum = group["betas"][0] if "betas" in group else group.get("momentum")
    driver = build_lr_driver(cfg, optimizer, steps_per_epoch)
    cycles = isinstance(driver.schedule, CyclesMomentum)
    steps = sampled_updates(total, max_points)
    updates = [step // steps_per_epoch if driver.interval == "epoch" else step for step in steps]
    curves = {"lr": [driver.lrs_at(t)[0] for t in updates]}
    if own_momentum is not None:
        curves["momentum"] = [
            value if cycles and (value := driver.schedule.momentum(t)) is not None else own_momentum for t in updates
        ]
    return steps, curves
