"""The lr curve of a run as the preview writes it: lr.csv and lr.png (also drawn by scripts/plot_schedules.py).
A curve is drawn as the stairs the optimizer sees: a sampled value holds until the next."""

from __future__ import annotations

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from matplotlib.figure import Figure  # the object API renders to files (Agg) with no display and no pyplot state
from omegaconf import DictConfig

from src.runs import files


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
