"""`python -m src.train [overrides]`: compose the config, check it, build the run and hand it to the Trainer.

Exit status: 0 for a finished run, and for a diverged one too (a schedule that diverges is a result, recorded in
metrics.json, so a sweep goes on); 2 for a bad config or a missing dataset, before any training.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm.contrib.logging import logging_redirect_tqdm

from src import REPO_ROOT, data
from src.callbacks import job_folder_name
from src.device import configure_threads, maybe_compile, select_device, speed_problems
from src.optimizers import build_optimizer
from src.schedules import build_lr_driver
from src.tracking import Tracker, run_hparams, write_json
from src.trainer import RunResult, Trainer
from src.validation import ConfigError, validate

log = logging.getLogger("src.train")
OmegaConf.register_new_resolver("repo_root", lambda: str(REPO_ROOT), replace=True)
OmegaConf.register_new_resolver("job_name", job_folder_name, replace=True)  # names sweep job folders


def fail(message: str) -> None:
    """Stop with a message and exit status 2, without a traceback."""
    log.error(message)
    print(f"lrbench: {message}", file=sys.stderr)
    sys.exit(2)


def _parallel_jobs() -> int:
    """How many jobs the Hydra launcher runs at once (joblib's n_jobs), 1 outside such a launcher.

    A negative n_jobs counts back from the cores as joblib does (-1: one job per core, -2: all but one).
    """
    if not HydraConfig.initialized():
        return 1
    n_jobs = OmegaConf.select(HydraConfig.get(), "launcher.n_jobs", default=None)
    if not isinstance(n_jobs, int) or n_jobs == 0:
        return 1
    return n_jobs if n_jobs > 0 else max(1, (os.cpu_count() or 1) + 1 + n_jobs)


def run(cfg: DictConfig, run_dir: Path) -> RunResult:
    """Train the run `cfg` describes, writing its curves and metrics.json into `run_dir`."""
    configure_threads(cfg.trainer.threads, parallel_jobs=_parallel_jobs())
    device = select_device(cfg.trainer.device)
    try:
        dataset = data.load(device=device, **OmegaConf.to_container(cfg.data))
    except data.DatasetNotFoundError as error:
        fail(str(error))
    torch.manual_seed(cfg.seed)  # same seed, same initial weights, whatever the schedule or optimizer
    model = instantiate(cfg.model).to(device)
    maybe_compile(model, cfg.trainer.compile)
    optimizer = build_optimizer(cfg.optimizer, model.parameters())
    lr_driver = build_lr_driver(cfg, optimizer, dataset.steps_per_epoch)
    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    tracker = Tracker(run_dir, hparams=run_hparams(cfg, choices))
    log.info("run folder: %s", run_dir)
    log.info(
        "%d training images, %d steps per epoch, %d epochs, device %s",
        dataset.train_size,
        dataset.steps_per_epoch,
        cfg.trainer.epochs,
        device,
    )
    trainer = Trainer(
        model,
        optimizer,
        lr_driver,
        dataset,
        tracker,
        epochs=cfg.trainer.epochs,
        data_seed=cfg.seed,
        log_every_steps=cfg.trainer.log_every_steps,
        eval_batch_size=cfg.trainer.eval_batch_size,
        precision=cfg.trainer.precision,
        progress=cfg.trainer.progress,
    )
    try:
        result = trainer.fit()
        tracker.finish(result.summary())
    finally:
        tracker.close()
    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    write_json(run_dir / "metrics.json", {**result.summary(), "overrides": overrides})
    return result


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    try:
        validate(cfg)
    except ConfigError as error:
        fail(f"invalid configuration:\n{error}")
    if problems := speed_problems(cfg.trainer):
        fail(f"invalid configuration:\n{ConfigError(problems)}")
    with logging_redirect_tqdm():
        result = run(cfg, Path(HydraConfig.get().runtime.output_dir))
    summary = result.summary()
    log.info("done: test_acc %s after %d epochs in %.1f s", summary["test_acc"], result.epochs, result.wall_seconds)
    return summary["test_acc"]


if __name__ == "__main__":
    main()
