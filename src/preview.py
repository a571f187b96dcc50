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
from omegaconf import DictConfig

from src.analysis import lr_plots
from src.config.hooks import register_resolvers
from src.config.overrides import override_key_problem
from src.config.validation import (
    ConfigError,
    planned_steps_per_epoch,
    validate,
)
from src.lr_range.lr_from import take_lr_from
from src.runs import folder as run_folder
from src.runs.errors import fail
from src.schedules.driver import previewed_curves

register_resolvers()

log = logging.getLogger("src.preview")


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
    lr_plots.write_csv(folder / "lr.csv", curves, steps_per_epoch, steps)
    lr_plots.plot(
        folder / "lr.png", curves, steps_per_epoch, lr_plots.describe(cfg) + sampled.replace("; ", "\n"), steps
    )
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
