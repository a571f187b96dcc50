"""Draw the lr curve of every schedule in conf/scheduler/ (or the ones named) on one figure, without training.

    python scripts/plot_schedules.py                                   # the whole catalogue, one panel each
    python scripts/plot_schedules.py cosine one_cycle warmup_stable_decay --overlay   # chosen ones on shared axes
    python scripts/plot_schedules.py --set trainer.epochs=30 --set scheduler.interval=epoch
    python scripts/plot_schedules.py --experiments textbook_constant textbook_sqrt --overlay  # presets

Each curve is the preview's (`src.schedules.driver.previewed_curves`: every step, sampled beyond 200,000 steps) of the
composed run config (`scheduler=NAME` plus the `--set` overrides), the same objects a training run drives;
nothing of a real run is touched.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from matplotlib.figure import Figure
from omegaconf import DictConfig

from src import REPO_ROOT
from src.analysis.lr_plots import draw
from src.config.hooks import register_resolvers
from src.config.validation import ConfigError, planned_steps_per_epoch, validate
from src.schedules.driver import previewed_curves

register_resolvers()

CONF_DIR = REPO_ROOT / "conf"
DEFAULT_OUT = REPO_ROOT / "docs" / "figures" / "schedules.png"
COLUMNS = 4


def catalogue(group: str = "scheduler") -> list[str]:
    """Every config's name in a group of conf/, in alphabetical order."""
    return sorted(path.stem for path in (CONF_DIR / group).glob("*.yaml"))


def checked_run(group: str, name: str, overrides: list[str]) -> DictConfig:
    """The run config of `group=name` plus `overrides`, validated as `python -m src.train` would validate it."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"{group}={name}", *overrides], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)  # validation reads the `+key=` overrides from here
    try:
        validate(cfg)
    except ConfigError as error:
        print(f"plot_schedules: {group}={name}: invalid configuration:\n{error}", file=sys.stderr)
        raise SystemExit(2) from None
    return cfg


def draw_run(axes, cfg: DictConfig, label: str | None = None) -> None:
    """The run's lr curve on `axes`: every step, or the sampled steps of a run too long to draw whole."""
    steps_per_epoch = planned_steps_per_epoch(cfg)
    steps, curves = previewed_curves(cfg, steps_per_epoch)
    draw(axes, curves["lr"], steps_per_epoch, steps, label=label)


def plot(names: list[str], overrides: list[str], out: Path, overlay: bool, group: str = "scheduler") -> Path:
    """One panel per schedule (or one shared panel with `overlay`), saved as `out`; `group="experiment"` takes
    the names as presets."""
    configs = [checked_run(group, name, overrides) for name in names]
    if overlay:
        figure = Figure(figsize=(8, 4.5), layout="constrained")
        axes = figure.subplots()
        for name, cfg in zip(names, configs, strict=True):
            draw_run(axes, cfg, label=name)
        axes.legend(fontsize=8)
    else:
        rows = math.ceil(len(names) / COLUMNS)
        figure = Figure(figsize=(3.2 * COLUMNS, 2.4 * rows), layout="constrained")
        grid = figure.subplots(rows, COLUMNS, squeeze=False)
        for index, axes in enumerate(grid.flat):
            if index >= len(names):
                axes.set_visible(False)
                continue
            cfg = configs[index]
            draw_run(axes, cfg)
            axes.set_title(names[index], fontsize=10)
            axes.tick_params(labelsize=7)
            axes.xaxis.label.set_size(8)
            axes.yaxis.label.set_size(8)
    setting = " ".join(overrides) or "defaults"
    figure.suptitle(f"learning-rate schedules per optimizer step ({setting})", fontsize=11)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="schedules to draw (default: every file in conf/scheduler/)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a Hydra override, repeatable")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"the PNG to write (default: {DEFAULT_OUT})")
    parser.add_argument("--overlay", action="store_true", help="all curves on one panel instead of one each")
    parser.add_argument("--experiments", action="store_true", help="the names are presets of conf/experiment/")
    args = parser.parse_args(argv)
    group = "experiment" if args.experiments else "scheduler"
    unknown = sorted(set(args.names) - set(catalogue(group)))
    if unknown:
        parser.error(f"unknown {group}(s) {', '.join(unknown)}: allowed are {', '.join(catalogue(group))}")
    if args.experiments and not args.names:
        parser.error("--experiments needs the names of the presets to draw")
    print(plot(args.names or catalogue(), args.set, args.out, args.overlay, group))
    return 0


if __name__ == "__main__":
    sys.exit(main())
