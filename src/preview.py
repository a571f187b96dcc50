"""`python -m src.preview [overrides]`: the lr of every optimizer step of a run, as CSV and PNG, without training.

The same configs and overrides as `python -m src.train` (`scheduler=one_cycle optimizer.lr=0.2`, `-m` sweeps,
`experiment=...`). The curve comes from `src.schedules.schedule_curves`, which drives a fresh optimizer through
the very `build_lr_driver` the trainer uses, so the preview is the trained curve; the dataset is not read (the
steps per epoch follow from `data.train_size` and `data.batch_size`). Each preview writes `lr.csv` (step, epoch,
lr, and momentum where the optimizer has one) and `lr.png` into `${output_root}/previews/<date>/<time>/`
(conf/preview.yaml: conf/config.yaml with the preview's folders and hooks).
A run of more than MAX_SCHEDULE_POINTS steps is sampled, at the evenly spread steps validation checks (and the
last): the preview stays bounded in time and size whatever the run's length, and says how many rows it wrote.
Exit status 2 for a bad config, with the same message as a training run.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from matplotlib.figure import Figure  # the object API renders to files (Agg) with no display and no pyplot state
from omegaconf import DictConfig

from src.config.hooks import register_resolvers
from src.config.validation import (
    MAX_SCHEDULE_POINTS,
    ConfigError,
    override_key_problem,
    planned_steps_per_epoch,
    sampled_updates,
    validate,
)
from src.lr_range.lr_from import take_lr_from
from src.runs import files
from src.runs import folder as run_folder
from src.runs.errors import fail
from src.schedules import CyclesMomentum, build_lr_driver, schedule_curves
from src.training.optimizers import stand_in_optimizer

register_resolvers()

log = logging.getLogger("src.preview")


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
    optimizer = stand_in_optimizer(cfg.optimizer)
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


def write_csv(path: Path, curves: dict[str, list[float]], steps_per_epoch: int, steps: list[int]) -> None:
    """One row per optimizer step in `steps`: step (0-based), epoch (fractional), lr, and momentum when present."""
    rows = [
        {
            "step": step,
            "epoch": f"{step / steps_per_epoch:.6g}",
            **{name: repr(curve[i]) for name, curve in curves.items()},
        }
        for i, step in enumerate(steps)
    ]
    files.write_csv(path, rows, ["step", "epoch", *curves])


def _edges(steps: list[int], steps_per_epoch: int) -> list[float]:
    """Where each value's stair starts and the last one ends, in epochs: a sampled value holds until the next."""
    return [step / steps_per_epoch for step in [*steps, steps[-1] + 1]] if steps else [0.0]


def draw(axes, lrs: list[float], steps_per_epoch: int, steps: list[int], label: str | None = None) -> None:
    """The lr against epochs (a step is 1/steps_per_epoch of one), drawn as the stairs the optimizer sees;
    `steps` are the optimizer steps of the values (every step, or a sampled curve's)."""
    axes.stairs(lrs, _edges(steps, steps_per_epoch), label=label, baseline=None, linewidth=1.6)
    axes.set_xlabel("epoch")
    axes.set_ylabel("learning rate")
    axes.grid(alpha=0.3)


def plot(path: Path, curves: dict[str, list[float]], steps_per_epoch: int, title: str, steps: list[int]) -> None:
    """lr.png: the lr curve, and the momentum on a second axis when the schedule moves it."""
    figure = Figure(figsize=(7, 4), layout="constrained")
    axes = figure.subplots()
    draw(axes, curves["lr"], steps_per_epoch, steps)
    momentum = curves.get("momentum", [])
    if momentum and min(momentum) != max(momentum):
        second = axes.twinx()
        edges = _edges(steps, steps_per_epoch)
        second.stairs(momentum, edges, baseline=None, color="tab:orange", linewidth=1.2, linestyle="--")
        second.set_ylabel("momentum (dashed)")
    axes.set_title(title, fontsize=10)
    figure.savefig(path, dpi=120)


def describe(cfg: DictConfig) -> str:
    """`scheduler=<name>`, the base lr and the interval, for a plot title."""
    name = HydraConfig.get().runtime.choices.get("scheduler", cfg.scheduler._target_.rsplit(".", 1)[-1])
    return f"scheduler={name}, optimizer.lr={cfg.optimizer.lr}, interval={cfg.scheduler.interval}"


@hydra.main(version_base="1.3", config_path="../conf", config_name="preview")
def main(cfg: DictConfig) -> None:
    try:
        take_lr_from(cfg, HydraConfig.get().overrides.task)  # the lr a run with lr_from= would train with
        validate(cfg)
    except ConfigError as error:
        run_folder.remove_session_folder(Path(HydraConfig.get().runtime.output_dir))  # refused: no folder stays
        fail(f"invalid configuration:\n{error}")
    steps_per_epoch = planned_steps_per_epoch(cfg)
    steps, curves = previewed_curves(cfg, steps_per_epoch)
    total = int(cfg.trainer.epochs) * steps_per_epoch
    sampled = f"; sampled: {len(steps)} of the {total} steps, evenly spread" if len(steps) < total else ""
    folder = Path(HydraConfig.get().runtime.output_dir)
    write_csv(folder / "lr.csv", curves, steps_per_epoch, steps)
    plot(folder / "lr.png", curves, steps_per_epoch, describe(cfg) + sampled.replace("; ", "\n"), steps)
    lrs = curves["lr"]
    log.info(
        "%d steps (%d per epoch)%s: lr first %.6g, max %.6g, last %.6g -> %s",
        total,
        steps_per_epoch,
        sampled,
        lrs[0],
        max(lrs),
        lrs[-1],
        folder / "lr.png",
    )


if __name__ == "__main__":
    if key_problem := override_key_problem(sys.argv[1:]):  # a mistyped group, before Hydra suggests a `+`
        fail(key_problem)
    main()
