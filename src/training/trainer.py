"""The epoch loop: train on device-resident batches, evaluate after every epoch, report to the tracker; and the
one training step (`train_step`) that the loop and the LR range test share.

Inside an epoch nothing waits for the device except one read per `log_every_steps` window: per-step losses and
correct counts are written into device buffers, and a window of them is copied to the host in one go.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import KW_ONLY, asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from src.config.rules import BOOLEAN, INTEGER, POSITIVE, Rule, one_of
from src.schedules import LRDriver
from src.training.data import DeviceData
from src.training.device import DEVICES, PRECISIONS, autocast
from src.training.tracking import Tracker

log = logging.getLogger(__name__)
# How close to chance an epoch must stay to count as collapsed (see `at_chance`).
CHANCE_LOSS_MARGIN = 0.05
CHANCE_ACC_MARGIN = 0.02

MAX_EPOCHS = 10_000
MAX_THREADS = 1024
KEY_RULES: dict[str, Rule] = {
    "trainer.epochs": INTEGER.where(lambda v: 1 <= v <= MAX_EPOCHS, f"an integer >= 1 and <= {MAX_EPOCHS}"),
    "trainer.threads": INTEGER.where(lambda v: 1 <= v <= MAX_THREADS, f"an integer 1..{MAX_THREADS}").optional(
        " (all cores)"
    ),
    "trainer.device": one_of(DEVICES),
    "trainer.log_every_steps": POSITIVE,
    "trainer.eval_batch_size": POSITIVE,
    "trainer.stop_on_collapse": BOOLEAN,
    "trainer.progress": BOOLEAN,
    "trainer.precision": one_of(PRECISIONS),
    "trainer.compile": BOOLEAN,
}


@dataclass(frozen=True)
class TrainerSettings:
    """The trainer group of a run config (conf/trainer/, KEY_RULES above), and the run's seed, which orders the
    batches. `threads`, `device` and `compile` are read where the run is set up, the rest by the Trainer."""

    epochs: int
    seed: int = 0
    threads: int | None = None
    device: str = "auto"
    log_every_steps: int = 10
    eval_batch_size: int = 500
    stop_on_collapse: bool = True
    progress: bool = True
    precision: str = "fp32"
    compile: bool = False

    @classmethod
    def from_config(cls, cfg: DictConfig) -> TrainerSettings:
        return cls(seed=cfg.seed, **OmegaConf.to_container(cfg.trainer))


def set_mode(optimizer: torch.optim.Optimizer, mode: str) -> None:
    """Tell an optimizer that has train and eval modes (a schedule-free one, whose weights differ between the two)
    which one follows: `train` before training steps, `eval` before evaluating or saving. Others have none."""
    switch = getattr(optimizer, mode, None)
    if callable(switch):
        switch()


def train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    precision: str = "fp32",
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on one batch: the forward pass under the run's precision, the loss, backward, the update.
    Returns the batch's mean loss (of the weights before the update) and its number of correct predictions, both
    still on the device: nothing here waits for it."""
    with autocast(inputs.device, precision):
        logits = model(inputs)
        loss = F.cross_entropy(logits, labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach(), (logits.argmax(dim=1) == labels).sum()


@dataclass
class RunResult:
    """What a finished (or diverged) run reports; `history` has one entry per completed epoch."""

    epochs: int = 0
    steps: int = 0
    wall_seconds: float = 0.0
    diverged: bool = False
    diverged_step: int | None = None
    diverged_epoch: int | None = None
    collapsed: bool = False
    collapsed_epoch: int | None = None
    # torch's intra-op threads: sums split over another number of threads round differently, so bit-exact
    # repeats need the same count (a resumed run records the count of its last session).
    threads: int | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    # Training seconds done at the end of each epoch (kept apart from `history`, which repeats exactly).
    epoch_seconds: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """What metrics.json records, in this order: the last epoch's metrics, the best test accuracy, the fields."""
        last = self.history[-1] if self.history else {}
        return {
            **{key: last.get(key) for key in ("test_acc", "test_loss", "train_loss", "train_acc")},
            "best_test_acc": max((h["test_acc"] for h in self.history), default=None),
            **asdict(self),
            "wall_seconds": round(self.wall_seconds, 3),
        }


def at_chance(metrics: dict[str, float], num_classes: int) -> bool:
    """An epoch that learned nothing: its mean training loss is at chance level (about ln 10 for ten classes) or
    above, and its test accuracy is at chance too (about 0.10). A collapsed model (dead units, one class for every
    image) sits exactly there. Both are asked for: a slow start can keep an epoch's mean loss near ln 10 while its
    test accuracy already climbs (seen at 0.70 after 8 steps), and such a run is learning."""
    chance_loss = math.log(num_classes) - CHANCE_LOSS_MARGIN
    return metrics["train_loss"] >= chance_loss and metrics["test_acc"] <= 1 / num_classes + CHANCE_ACC_MARGIN


class Diverged(Exception):
    """The run broke at `step` (0-based) of `epoch` (1-based): `what` (the training loss, the test loss or the
    weights) became NaN or infinite."""

    def __init__(self, step: int, epoch: int, what: str = "training loss is not finite at"):
        super().__init__(f"{what} step {step} (epoch {epoch})")
        self.step = step
        self.epoch = epoch


class Interrupted(Exception):
    """A stop was asked for (SIGTERM or SIGINT); raised between two optimizer steps, never inside one."""


@dataclass(eq=False)
class Trainer:
    """Runs the epochs `settings` asks for; `on_epoch_end(trainer)` is called after each (the checkpoint),
    `should_stop()` polled after every optimizer step (a signal). `state_dict`/`load_state_dict` carry everything
    the next epoch depends on, so a restored trainer continues bit for bit.

    Collapse: a whole epoch that starts once the lr driver's warmup is over (the schedule's rise to its peak) and
    ends at chance (`at_chance`) marks the run collapsed at that epoch; with `stop_on_collapse` the run ends there,
    a result like any other. Without it, an epoch off chance again clears the mark.
    """

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    lr_driver: LRDriver
    data: DeviceData
    tracker: Tracker
    settings: TrainerSettings
    _: KW_ONLY
    on_epoch_end: Callable[[Trainer], None] | None = None
    should_stop: Callable[[], bool] = lambda: False

    def __post_init__(self) -> None:
        self.epochs = self.settings.epochs
        self.warmup_updates = self.lr_driver.warmup_updates()
        # The batch order has its own generator: same seed, same order, whatever the model or optimizer draw.
        self.order = torch.Generator(device=self.data.train_x.device).manual_seed(self.settings.seed)
        self.step = 0
        self.result = RunResult()

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "lr_driver": self.lr_driver.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "order": self.order.get_state(),
            "step": self.step,
            "result": asdict(self.result),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from `state` (`state_dict`'s): the run goes on exactly where it was saved."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr_driver.load_state_dict(dict(state["lr_driver"]))
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.order.set_state(state["order"])
        self.step = state["step"]
        self.result = RunResult(**copy.deepcopy(state["result"]))  # a copy: the checkpoint's lists stay as saved

    def fit(self, until_epoch: int | None = None) -> RunResult:
        """Train the epochs not done yet (all of them, unless restored from a checkpoint), or only up to
        `until_epoch`: the schedule keeps its full length, so the run paused there continues later as if it never
        stopped (a study's successive halving judges an lr at such a rung)."""
        result = self.result
        if result.diverged or (result.collapsed and self.settings.stop_on_collapse):
            return result  # it ended early, as a result; a resume has nothing left to do
        earlier_seconds = result.wall_seconds
        threads = torch.get_num_threads()
        if result.threads is not None and result.threads != threads:
            log.warning(
                "the run continues on %d threads after %d: its numbers can differ in the last digits from a run "
                "that never stopped",
                threads,
                result.threads,
            )
        result.threads = threads
        started = time.perf_counter()
        try:
            for epoch in range(result.epochs, min(self.epochs, until_epoch or self.epochs)):
                if self.should_stop():
                    raise Interrupted
                first_update = self.step if self.lr_driver.interval == "step" else epoch
                metrics = {**self.train_epoch(epoch), **self.evaluate()}
                self._check_finite(epoch + 1, metrics)
                self.lr_driver.after_epoch(metrics)
                self.tracker.epoch(self.step, metrics)
                seconds = earlier_seconds + time.perf_counter() - started
                result.history.append({"epoch": epoch + 1, "step": self.step, **metrics})
                result.epoch_seconds.append(round(seconds, 3))
                result.epochs, result.steps = epoch + 1, self.step
                shown = " ".join(
                    f"{name} {metrics[name]:.4f}" for name in ("train_loss", "train_acc", "test_loss", "test_acc")
                )
                log.info("epoch %d/%d step %d: %s lr %.6g", epoch + 1, self.epochs, self.step, shown, metrics["lr"])
                result.wall_seconds = seconds
                stop = self._note_collapse(epoch + 1, first_update, metrics)
                if self.on_epoch_end is not None:
                    self.on_epoch_end(self)
                if stop:
                    break
        except Diverged as diverged:
            result.diverged, result.diverged_step, result.diverged_epoch = True, diverged.step, diverged.epoch
            log.warning("run diverged: %s; stopped after %d finished epochs", diverged, result.epochs)
        result.wall_seconds = earlier_seconds + time.perf_counter() - started
        return result

    def _check_finite(self, epoch: int, metrics: dict[str, float]) -> None:
        """Raise Diverged when the epoch's last updates broke the model: every training loss of the epoch was
        finite (each is computed before its step's update), but the weights or the test loss are not. The epoch
        is then not recorded, and the checkpoint keeps the last sound one."""
        last_step = self.step - 1
        weights = [parameter.detach() for parameter in self.model.parameters()]
        if not bool(torch.stack([weight.isfinite().all() for weight in weights]).all()):
            raise Diverged(last_step, epoch, "the weights are not finite after")
        if not math.isfinite(metrics["test_loss"]):
            raise Diverged(last_step, epoch, "the test loss is not finite after")

    def _note_collapse(self, epoch: int, first_update: int, metrics: dict[str, float]) -> bool:
        """Mark (or clear) a collapse after `epoch`; true when the run should stop here."""
        result = self.result
        stop_on_collapse = self.settings.stop_on_collapse
        if first_update >= self.warmup_updates and at_chance(metrics, self.data.num_classes):
            if not result.collapsed:
                result.collapsed, result.collapsed_epoch = True, epoch
                log.warning(
                    "run collapsed: epoch %d ended at chance (train_loss %.4f, test_acc %.4f)%s",
                    epoch,
                    metrics["train_loss"],
                    metrics["test_acc"],
                    "; stopping (trainer.stop_on_collapse=true)" if stop_on_collapse else "",
                )
            return stop_on_collapse
        if result.collapsed:
            log.info("run left chance again at epoch %d; no longer marked collapsed", epoch)
            result.collapsed, result.collapsed_epoch = False, None
        return False

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over the shuffled training set; returns the epoch's mean loss and accuracy."""
        self.model.train()
        set_mode(self.optimizer, "train")
        settings = self.settings
        sizes = self.data.batch_sizes()
        device = self.data.train_x.device
        step_loss = torch.zeros(len(sizes), device=device)
        step_correct = torch.zeros(len(sizes), device=device)
        step_weight = torch.tensor(sizes, dtype=step_loss.dtype).to(device, non_blocking=True)
        step_lr: list[float] = []
        first_step = self.step
        totals = {"loss": 0.0, "correct": 0.0}
        window_start = 0
        bar = tqdm(
            total=len(sizes), desc=f"epoch {epoch + 1}/{self.epochs}", disable=not settings.progress, leave=False
        )
        try:
            for i, (inputs, labels) in enumerate(self.data.train_batches(self.order)):
                step_lr.append(self.lr_driver.lr)
                step_loss[i], step_correct[i] = train_step(
                    self.model, self.optimizer, inputs, labels, settings.precision
                )
                self.lr_driver.after_step()
                if (i + 1) % settings.log_every_steps == 0 or i + 1 == len(sizes):
                    window = slice(window_start, i + 1)
                    # one device-to-host copy: the window's summed per-image losses and correct predictions
                    loss_sum, correct = torch.stack(
                        [(step_loss[window] * step_weight[window]).sum(), step_correct[window].sum()]
                    ).tolist()
                    count = sum(sizes[window])
                    self.tracker.lrs(first_step + window_start, step_lr[window])
                    if not math.isfinite(loss_sum):
                        raise Diverged(first_step + i, epoch + 1)
                    self.tracker.train_window(first_step + i, loss_sum / count, correct / count)
                    totals["loss"] += loss_sum
                    totals["correct"] += correct
                    bar.update(i + 1 - window_start)
                    bar.set_postfix(
                        loss=f"{loss_sum / count:.4f}", acc=f"{correct / count:.3f}", lr=f"{step_lr[i]:.4g}"
                    )
                    window_start = i + 1
                if self.should_stop():
                    raise Interrupted
        finally:
            bar.close()
            self.step = first_step + len(step_lr)
        return {
            "train_loss": totals["loss"] / self.data.train_size,
            "train_acc": totals["correct"] / self.data.train_size,
            "lr": step_lr[-1],  # the lr of the epoch's last step
        }

    @torch.inference_mode()
    def evaluate(self) -> dict[str, float]:
        """Loss and accuracy on the whole test set, summed on the device and read once. The optimizer is left in
        its eval mode (where it has one), as the checkpoint after the epoch saves it."""
        self.model.eval()
        set_mode(self.optimizer, "eval")
        device = self.data.test_x.device
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device)
        for inputs, labels in self.data.test_batches(self.settings.eval_batch_size):
            with autocast(device, self.settings.precision):
                logits = self.model(inputs)
                loss_sum += F.cross_entropy(logits, labels, reduction="sum")
            correct += (logits.argmax(dim=1) == labels).sum()
        total = int(self.data.test_y.shape[0])
        loss_value, correct_value = torch.stack([loss_sum, correct]).tolist()
        return {"test_loss": loss_value / total, "test_acc": correct_value / total}
