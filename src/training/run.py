"""One training run from a checked config, into its run folder: the data on the device, the model, optimizer, lr
driver, tracker and checkpointer built, the checkpoint restored when resuming, the epochs fitted, metrics.json and
(for a new run under Hydra) `.hydra/` written. `python -m src.train` checks the config and calls `run`; tests and
scripts call it in-process.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from src.runs import checkpoints as checkpointing
from src.runs import folder as run_folder
from src.runs import resume
from src.runs.errors import BadInput, Stopped, Unwritable, error_reason
from src.runs.files import write_json
from src.runs.session import group_choices, task_overrides
from src.runs.signals import StopOnSignal
from src.schedules import build_lr_driver
from src.schedules.driver import lr_curve
from src.training import branch as branching
from src.training import data
from src.training.device import available_cores, configure_threads, maybe_compile, select_device
from src.training.models import build_model
from src.training.optimizers import build_optimizer
from src.training.tracking import Tracker, run_hparams
from src.training.trainer import Interrupted, RunResult, Trainer, TrainerSettings

log = logging.getLogger("src.train")


def parallel_jobs() -> int:
    """How many jobs the Hydra launcher runs at once (joblib's n_jobs), 1 outside such a launcher.

    A negative n_jobs counts back from the cores as joblib does (-1: one job per core, -2: all but one).
    """
    n_jobs = OmegaConf.select(HydraConfig.get(), "launcher.n_jobs") if HydraConfig.initialized() else None
    if not isinstance(n_jobs, int) or n_jobs == 0:
        return 1
    return n_jobs if n_jobs > 0 else max(1, available_cores() + 1 + n_jobs)


def paused(result: RunResult, cfg: DictConfig) -> bool:
    """Whether the run stopped at `checkpoint.pause_after_epoch`, before its last epoch, to be continued."""
    ended_early = result.diverged or (result.collapsed and cfg.trainer.stop_on_collapse)
    return not ended_early and result.epochs < cfg.trainer.epochs


def run(
    cfg: DictConfig,
    run_dir: Path,
    resume_point: resume.ResumePoint | None = None,
    *,
    stop: StopOnSignal | None = None,
    record: Mapping[str, Any] | None = None,
) -> RunResult:
    """Train the run `cfg` describes (from `resume_point`'s checkpoint, if given) into `run_dir`: curves,
    checkpoints, metrics.json (with `record`'s entries: where the lr came from), and for a new run under Hydra
    `.hydra/` once the data is accepted. Raises BadInput (the data, also other data than the checkpoint's),
    Unwritable (the folder), Stopped (a signal)."""
    configure_threads(cfg.trainer.threads, parallel_jobs=parallel_jobs())
    device = select_device(cfg.trainer.device)
    try:
        dataset = data.load(device=device, **OmegaConf.to_container(cfg.data))
    except data.DatasetNotFoundError as error:
        raise BadInput(str(error)) from None
    if resume_point is not None:
        resume.check_data(resume_point, dataset.fingerprint)
    branch_point = branching.load(cfg) if resume_point is None else None
    if branch_point is not None:
        branching.check(branch_point, cfg, dataset.steps_per_epoch, dataset.fingerprint)
        record = {**(record or {}), **branch_point.record()}
    elif cfg.checkpoint.get("branch_from"):  # a branch resumed from its own last.pt
        record = {**(record or {}), "branched_from": {"checkpoint": str(cfg.checkpoint.branch_from)}}
    overrides = resume_point.overrides if resume_point is not None else task_overrides()
    try:
        if resume_point is None and HydraConfig.initialized():
            config, hydra_config = checkpointing.without_hydra(cfg), HydraConfig.instance().cfg
            run_folder.write_hydra_record(run_dir, config, hydra_config, overrides)
        run_folder.clear_failed(run_dir)
        result = _fit(cfg, run_dir, dataset, device, resume_point or branch_point, overrides, stop)
        write_json(run_dir / "metrics.json", {**result.summary(), **(record or {}), "overrides": overrides})
        run_folder.clear_failed(run_dir)  # also one a command refused by the lock wrote while this one trained
    except OSError as error:
        raise Unwritable(
            f"cannot write the run's files in {run_dir}: {error_reason(error)}. Free some disk space or pick a "
            "writable folder with output_root=<folder>; an interrupted run resumes from its last.pt."
        ) from error
    return result


def _fit(
    cfg: DictConfig,
    run_dir: Path,
    dataset: data.DeviceData,
    device: torch.device,
    start: resume.ResumePoint | branching.BranchPoint | None,
    overrides: list[str],
    stop: StopOnSignal | None,
) -> RunResult:
    """Build the model, optimizer, schedule, tracker and trainer, restore the checkpoint if any (this run's own, or
    the trunk's it branches from), and train."""
    resume_point = start if isinstance(start, resume.ResumePoint) else None
    torch.manual_seed(cfg.seed)  # same seed, same initial weights, whatever the schedule or optimizer
    model = build_model(cfg.model, dataset).to(device)
    maybe_compile(model, cfg.trainer.compile)
    optimizer = build_optimizer(cfg.optimizer, model.parameters())
    lr_driver = build_lr_driver(cfg, optimizer, dataset.steps_per_epoch)
    purge_step = resume_point.step if resume_point is not None else None  # the partial epoch is done again
    tracker = Tracker(run_dir, hparams=run_hparams(cfg, group_choices()), purge_step=purge_step)
    log.info("run folder: %s", run_dir)
    log.info(
        "%d training images, %d steps per epoch, %d epochs, device %s",
        dataset.train_size,
        dataset.steps_per_epoch,
        cfg.trainer.epochs,
        device,
    )
    checkpointer = checkpointing.Checkpointer(
        run_dir,
        checkpointing.run_config(cfg),
        overrides,
        keep_best=cfg.checkpoint.keep_best,
        flush_curves=tracker.writer.flush,
        dataset=dataset.fingerprint,
    )
    settings = TrainerSettings.from_config(cfg)
    trainer = Trainer(
        model,
        optimizer,
        lr_driver,
        dataset,
        tracker,
        settings,
        on_epoch_end=checkpointer,
        should_stop=stop or (lambda: False),
    )
    try:
        if resume_point is not None:
            trainer.load_state_dict(resume_point.checkpoint["trainer"])
            if trainer.result.history:  # its epoch points sit on the restart step, so they are written again
                tracker.epoch(trainer.step, trainer.result.history[-1])
            log.info("resumed after epoch %d/%d at step %d", trainer.result.epochs, cfg.trainer.epochs, trainer.step)
        elif start is not None:  # a branch: the trunk's state; its epoch points and lrs, so those curves start at 0
            trainer.load_state_dict(start.checkpoint["trainer"])
            for epoch in trainer.result.history:
                tracker.epoch(epoch["step"], epoch)
            tracker.lrs(0, lr_curve(cfg, dataset.steps_per_epoch)[: start.step])
            log.info("branched from %s after epoch %d (step %d)", start.path, start.epochs, start.step)
        if resume_point is None:  # the state before the first epoch: even an interrupted first epoch resumes
            checkpointer(trainer)
        result = trainer.fit(until_epoch=cfg.checkpoint.pause_after_epoch)
        if not paused(result, cfg):  # a paused run's final points come when it ends
            tracker.finish(result.summary())
    except Interrupted:
        signum, done = stop.received, trainer.result  # Interrupted is raised only once a signal came
        raise Stopped(
            f"stopped by {signal.Signals(signum).name} during epoch {done.epochs + 1}/{cfg.trainer.epochs}; "
            f"{run_dir / checkpointing.LAST} holds the state after epoch {done.epochs} (step {done.steps}). "
            f"To continue:\n  {resume.command(overrides, run_dir)}",
            signum,
        ) from None
    finally:
        tracker.close()
    return result
