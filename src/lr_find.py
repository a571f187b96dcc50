"""`python -m src.lr_find [run overrides]`: the LR range test (Smith 2017) for the run those overrides describe.

The same model, optimizer, data, batch size, seed, precision and device as `python -m src.train [run overrides]`,
but from the run's initial weights the lr ramps from `lr_find.min_lr` to `lr_find.max_lr` over `lr_find.num_steps`
steps, one batch per step in the run's batch order, until the smoothed loss exceeds `lr_find.stop_factor` times its
best. Settings: conf/lr_find.yaml; the test itself: src/lr_range/find.py; the ramp, the smoothing and the rules:
src/lr_range/suggest.py. Nothing leaks into a run started afterwards, even in this process (see `find_lr`).

Written into `${output_root}/lr_find/<date>/<time>/`: lr_find.csv (step, lr, raw and smoothed loss), lr_find.png
(loss against lr on a log axis, the suggestions marked), the curve in TensorBoard (scalars against the step, and the
figure), and suggestions.json, which `python -m src.train lr_from=<folder>` and `read_suggestion` read.
Exit status 2 for a bad config or a test that yields no curve (a loss not finite from the first step, a blow-up
after a handful of steps), with a message and no traceback.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from tqdm.contrib.logging import logging_redirect_tqdm

from src.config.hooks import register_resolvers
from src.config.validation import ConfigError, override_key_problem, validate
from src.lr_range.find import (
    CSV_FILE,
    PNG_FILE,
    Curve,
    RangeTestError,
    draw,
    find_lr,
    ramp_problems,
    range_test,
    report_lines,
    title,
    train_command,
    write_curve,
    write_tensorboard,
)
from src.lr_range.suggest import SUGGESTIONS_FILE, SuggestionError, read_suggestion, suggest, suggestions_record
from src.runs.errors import fail
from src.runs.files import write_json
from src.runs.session import group_choices, task_overrides
from src.training import data
from src.training.device import configure_threads, select_device

register_resolvers()

__all__ = ["Curve", "RangeTestError", "find_lr", "ramp_problems", "range_test", "read_suggestion"]

log = logging.getLogger("src.lr_find")


@hydra.main(version_base="1.3", config_path="../conf", config_name="lr_find")
def main(cfg: DictConfig) -> float:
    problems = []
    try:
        validate(cfg)
    except ConfigError as error:
        problems = error.problems
    problems += ramp_problems(cfg.lr_find)
    if problems:
        fail(f"invalid configuration:\n{ConfigError(problems)}")
    folder = Path(HydraConfig.get().runtime.output_dir)
    configure_threads(cfg.trainer.threads)
    device = select_device(cfg.trainer.device)
    try:
        dataset = data.load(device=device, **OmegaConf.to_container(cfg.data))
    except data.DatasetNotFoundError as error:
        fail(str(error))
    log.info("lr range test folder: %s (%d training images, device %s)", folder, dataset.train_size, device)
    try:
        with logging_redirect_tqdm():
            curve = find_lr(cfg, dataset)
    except RangeTestError as error:
        fail(f"lr range test: {error}")
    write_curve(folder / CSV_FILE, curve)
    try:
        suggestions = suggest(curve.lrs, curve.smoothed, stopped_early=curve.stopped_early)
    except SuggestionError as error:
        write_tensorboard(folder, curve, None, curve.stop or "")
        fail(
            f"lr range test: no suggestion, {error}; the test {curve.stop or 'ended'}. lr_find.min_lr="
            f"{cfg.lr_find.min_lr:g} is already too large for this run, or the ramp too steep: lower lr_find.min_lr "
            f"or raise lr_find.num_steps. The curve is in {folder / CSV_FILE}."
        )
    chosen = cfg.lr_find.suggestion
    overrides = task_overrides()
    record = suggestions_record(suggestions, chosen)
    lines = report_lines(curve, suggestions, record, folder, overrides)
    draw(folder / PNG_FILE, curve, suggestions, chosen, title(cfg))
    write_tensorboard(folder, curve, folder / PNG_FILE, "\n".join(lines))
    write_json(
        folder / SUGGESTIONS_FILE,
        {
            **record,
            "command": train_command(overrides, record["override"]),
            "settings": OmegaConf.to_container(cfg.lr_find),
            "steps_run": len(curve.lrs),
            "stop": curve.stop,
            "optimizer": group_choices().get("optimizer"),
            "overrides": overrides,
        },
    )
    log.info("\n".join(lines))
    return suggestions[chosen].lr


if __name__ == "__main__":
    if key_problem := override_key_problem(sys.argv[1:], "lr_find"):  # a mistyped group, before Hydra's `+` hint
        fail(key_problem)
    main()
