"""`python -m src.train [overrides]`: compose the config, check it, build the run and hand it to the Trainer.

Exit status: 0 for a finished run, and for a diverged one too (a schedule that diverges is a result, recorded in
metrics.json, so a sweep goes on); 2 for a bad config, a missing or damaged dataset, or a checkpoint that does not
fit, before any training; 3 when the run folder cannot be written (disk full, no permission); 128 + the signal's
number (130 for SIGINT, 143 for SIGTERM) when stopped by a signal, with `last.pt` holding the last finished epoch.
A run started again in a folder holding `last.pt`, or with `resume=<run folder>`, continues from it (docs/resume.md).
"""

from __future__ import annotations

import gc

if __name__ == "__main__":  # the libraries make a million objects for good: collecting during their import is waste
    gc.disable()

import json
import logging
import shlex
import shutil
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm.contrib.logging import logging_redirect_tqdm

from src import REPO_ROOT, checkpointing, data
from src.callbacks import job_folder_name
from src.device import available_cores, configure_threads, maybe_compile, select_device
from src.lr_from import lr_record, take_lr_from
from src.optimizers import build_optimizer
from src.schedules import build_lr_driver
from src.tracking import Tracker, run_hparams, write_json
from src.trainer import Interrupted, RunResult, Trainer
from src.validation import ConfigError, validate

if __name__ == "__main__":  # what is loaded stays: later collections (and the exit) skip it
    gc.freeze()
    gc.enable()

log = logging.getLogger("src.train")
OmegaConf.register_new_resolver("repo_root", lambda: str(REPO_ROOT), replace=True)
OmegaConf.register_new_resolver("job_name", job_folder_name, replace=True)  # names sweep job folders


EXIT_BAD_INPUT = 2
EXIT_UNWRITABLE = 3


def fail(message: str, status: int = EXIT_BAD_INPUT) -> None:
    """Stop with a message and exit status `status` (2: bad input), without a traceback.

    The message goes to stderr once, and into the run's log file (not again to the console through logging).
    """
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, message, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
    print(f"lrbench: {message}", file=sys.stderr)
    sys.exit(status)


class StopOnSignal:
    """While active, SIGTERM and SIGINT ask the trainer to stop after its current step (`stop()` is true, and
    `received` names the signal); a second signal ends the process at once."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():  # Python handles signals in its main thread only
            self._previous = {signum: signal.signal(signum, self._handle) for signum in self.SIGNALS}
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def _handle(self, signum: int, frame: object) -> None:
        if self.received is not None:
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)
        self.received = signum

    def __call__(self) -> bool:
        return self.received is not None


def _task_overrides() -> list[str]:
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def _resume_command(overrides: list[str], run_dir: Path) -> str:
    kept = [item for item in overrides if not item.startswith(("resume=", "+resume="))]
    return shlex.join(["python", "-m", "src.train", *kept, f"resume={run_dir}"])


def _resume_point(cfg: DictConfig, session_dir: Path) -> tuple[Path, dict[str, Any], list[str]] | None:
    """The folder and checkpoint this run continues from (`resume=<folder>`, else `last.pt` already in the
    session's folder) and how its config differs; a difference that changes the run stops here unless forced."""
    folder = Path(cfg.resume).expanduser().resolve() if cfg.resume else session_dir
    if not (folder / checkpointing.LAST).is_file():
        return None
    try:
        checkpoint = checkpointing.load(folder / checkpointing.LAST)
    except checkpointing.CheckpointError as error:
        fail(str(error))
    changed = checkpointing.differences(checkpoint["config"], checkpointing.run_config(cfg))
    if changed and not cfg.checkpoint.force_resume:
        listed = "\n".join(f"  - {line}" for line in changed)
        fail(
            f"cannot resume {folder}: this config differs from the checkpoint's in a way that changes the run:\n"
            f"{listed}\nThe run was started with: {shlex.join(checkpoint['overrides']) or '(no overrides)'}\n"
            f"Resume with the same overrides ({_resume_command(checkpoint['overrides'], folder)}), or add "
            "checkpoint.force_resume=true to continue with this config (weights and counters from the checkpoint, "
            "schedule and optimizer settings from this config)."
        )
    return folder, checkpoint, changed


def _finished(run_dir: Path, cfg: DictConfig) -> dict[str, Any] | None:
    """The metrics.json of the run in `run_dir` when that run has ended (every epoch done, or stopped as diverged
    or collapsed), else None."""
    path = run_dir / "metrics.json"
    if not path.is_file():
        return None
    recorded = json.loads(path.read_text())
    ended_early = recorded.get("diverged") or (recorded.get("collapsed") and cfg.trainer.stop_on_collapse)
    return recorded if ended_early or recorded.get("epochs", 0) >= cfg.trainer.epochs else None


def _continue_in(run_dir: Path, session_dir: Path, output_root: Path) -> None:
    """`resume=<folder>`: log into that folder's train.log, and drop the folder Hydra made for this session when
    it holds nothing but Hydra's files, so a resume leaves no extra run behind."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).parent == session_dir:
            handler.close()
            handler.baseFilename = str(run_dir / Path(handler.baseFilename).name)
            handler.mode = "a"
    if {path.name for path in session_dir.iterdir()} <= {".hydra", "train.log"}:
        shutil.rmtree(session_dir, ignore_errors=True)
        for folder in session_dir.parents:  # and the date and runs folders this session alone filled
            if folder == output_root or any(folder.iterdir()):
                break
            folder.rmdir()


def _parallel_jobs() -> int:
    """How many jobs the Hydra launcher runs at once (joblib's n_jobs), 1 outside such a launcher.

    A negative n_jobs counts back from the cores as joblib does (-1: one job per core, -2: all but one).
    """
    if not HydraConfig.initialized():
        return 1
    n_jobs = OmegaConf.select(HydraConfig.get(), "launcher.n_jobs", default=None)
    if not isinstance(n_jobs, int) or n_jobs == 0:
        return 1
    return n_jobs if n_jobs > 0 else max(1, available_cores() + 1 + n_jobs)


def _total_updates(cfg: DictConfig, steps_per_epoch: int) -> int:
    epochs = int(cfg.trainer.epochs)
    return epochs * steps_per_epoch if cfg.scheduler.interval == "step" else epochs


def run(
    cfg: DictConfig,
    run_dir: Path,
    resume_from: dict[str, Any] | None = None,
    *,
    forced: bool = False,
    stop: StopOnSignal | None = None,
) -> RunResult:
    """Train the run `cfg` describes, writing its curves, checkpoints and metrics.json into `run_dir`.

    With `resume_from` (a checkpoint) the run continues from it; `forced` keeps this config's schedule and
    optimizer settings where they differ from the checkpoint's.
    """
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
    overrides = resume_from["overrides"] if resume_from else _task_overrides()
    checkpointer = checkpointing.Checkpointer(
        run_dir,
        checkpointing.run_config(cfg),
        overrides,
        keep_best=cfg.checkpoint.keep_best,
        flush_curves=tracker.writer.flush,
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
        stop_on_collapse=cfg.trainer.stop_on_collapse,
        warmup_updates=lr_driver.warmup_updates(_total_updates(cfg, dataset.steps_per_epoch)),
        on_epoch_end=checkpointer,
        should_stop=stop or (lambda: False),
    )
    try:
        if resume_from:
            trainer.load_state_dict(resume_from["trainer"], current_hyperparameters=forced)
            checkpointing.restart_tensorboard_at(tracker.writer, trainer.step)
            if trainer.result.history:  # its epoch points sit on the restart step, so they are written again
                tracker.epoch(trainer.step, trainer.result.history[-1])
            log.info("resumed after epoch %d/%d at step %d", trainer.result.epochs, cfg.trainer.epochs, trainer.step)
        else:
            checkpointer(trainer)  # the state before the first epoch: even an interrupted first epoch resumes
        result = trainer.fit()
        tracker.finish(result.summary())
    except Interrupted:
        signum, done = stop.received, trainer.result  # Interrupted is raised only once a signal came
        fail(
            f"stopped by {signal.Signals(signum).name} during epoch {done.epochs + 1}/{cfg.trainer.epochs}; "
            f"{run_dir / checkpointing.LAST} holds the state after epoch {done.epochs} (step {done.steps}). "
            f"To continue:\n  {_resume_command(overrides, run_dir)}",
            status=128 + signum,
        )
    finally:
        tracker.close()
    write_json(run_dir / "metrics.json", {**result.summary(), **lr_record(cfg), "overrides": overrides})
    return result


WORST_OBJECTIVE = 0.0


def objective(summary: dict[str, Any]) -> float:
    """What a sweeper (Optuna) maximises: the final test accuracy, and the worst value for a run that diverged or
    collapsed, so such a trial ranks last instead of stopping the study."""
    if summary.get("diverged") or summary.get("collapsed") or summary.get("test_acc") is None:
        return WORST_OBJECTIVE
    return float(summary["test_acc"])


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    try:
        take_lr_from(cfg, _task_overrides())  # lr_from=<lr_find folder>: optimizer.lr becomes its suggestion
        validate(cfg)
    except ConfigError as error:
        fail(f"invalid configuration:\n{error}")
    session_dir = Path(HydraConfig.get().runtime.output_dir)
    resume_point = _resume_point(cfg, session_dir)
    run_dir, checkpoint, changed = resume_point or (session_dir, None, [])
    # the checkpoint's config was found equal to this one above: the recorded result is this run's
    if checkpoint is not None and cfg.checkpoint.skip_finished and (recorded := _finished(run_dir, cfg)):
        log.info("already finished, not run again: %s (test_acc %s)", run_dir, recorded.get("test_acc"))
        return objective(recorded)
    if run_dir != session_dir:
        _continue_in(run_dir, session_dir, Path(cfg.output_root).resolve())
    for line in changed:
        log.warning("forced resume, config changed: %s", line)
    try:
        with logging_redirect_tqdm(), StopOnSignal() as stop:
            result = run(cfg, run_dir, checkpoint, forced=bool(changed), stop=stop)
    except OSError as error:
        Path(run_dir, "metrics.json.partial").unlink(missing_ok=True)
        fail(
            f"cannot write the run's files in {run_dir}: {error.strerror or error}. Free some disk space or pick a "
            "writable folder with output_root=<folder>; an interrupted run resumes from its last.pt.",
            status=EXIT_UNWRITABLE,
        )
    summary = result.summary()
    log.info("done: test_acc %s after %d epochs in %.1f s", summary["test_acc"], result.epochs, result.wall_seconds)
    return objective(summary)


if __name__ == "__main__":
    from src.validation import override_key_problem

    if key_problem := override_key_problem(sys.argv[1:]):  # a mistyped group, before Hydra suggests a `+`
        fail(key_problem)
    main()
    gc.freeze()  # nor need the exit go through the run's own objects one by one
