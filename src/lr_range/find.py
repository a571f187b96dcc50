"""The LR range test (Smith 2017) of a run: the ramp, trained with the run's own step (src.training.trainer's
`train_step`) from the run's initial weights in its batch order, and what it leaves (the curve as CSV, a figure,
TensorBoard, the report). `python -m src.lr_find` runs it; the rules that read the curve are src.lr_range.suggest.
"""

from __future__ import annotations

import itertools
import logging
import math
import shlex
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from src.config.rules import NUMBER
from src.config.validation import ConfigError, validate
from src.lr_range.suggest import (
    SUGGESTIONS_FILE,
    WHAT_RULES_DO,
    Smoother,
    Suggestion,
    SuggestionError,
    ramp,
    should_stop,
    suggest,
    suggestions_record,
    window,
)
from src.runs.errors import BadInput
from src.runs.files import new_figure, save_figure, write_csv, write_json
from src.runs.session import group_choices, task_overrides
from src.training import data
from src.training.data import DeviceData
from src.training.device import configure_threads, select_device
from src.training.models import build_model
from src.training.optimizers import build_optimizer
from src.training.trainer import set_mode, train_step

log = logging.getLogger("src.lr_find")

CSV_FILE, PNG_FILE = "lr_find.csv", "lr_find.png"


class RangeTestError(RuntimeError):
    """The test yields no curve to read; the message says why and what to change."""


@dataclass
class Curve:
    """One range test: the lr, raw loss and smoothed loss of each step taken, and why it ended early (if it did)."""

    planned: list[float]
    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    smoothed: list[float] = field(default_factory=list)
    stop: str | None = None

    @property
    def stopped_early(self) -> bool:
        return self.stop is not None


def ramp_problems(settings: Mapping[str, Any]) -> list[str]:
    """The ramp must rise: min_lr below max_lr (each key's own kind and range is src.config.validation's)."""
    min_lr, max_lr = settings.get("min_lr"), settings.get("max_lr")
    if NUMBER.test(min_lr) and NUMBER.test(max_lr) and 0 < max_lr <= min_lr:
        return [f"lr_find.min_lr={min_lr!r}, lr_find.max_lr={max_lr!r}: allowed is min_lr < max_lr (the ramp rises)"]
    return []


def range_test(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
    lrs: Sequence[float],
    *,
    beta: float = 0.98,
    stop_factor: float | None = 4.0,
    precision: str = "fp32",
    progress: bool = True,
) -> Curve:
    """Train `model` one batch per lr of `lrs`, recording each batch's loss (before its update) and the smoothed loss.

    Stops when the smoothed loss exceeds `stop_factor` times its best or the loss is not finite; raises
    RangeTestError when the very first loss is not finite (nothing to learn from: the data or the model is broken).
    """
    curve = Curve(planned=list(lrs))
    smoother = Smoother(beta)
    best = math.inf
    model.train()
    set_mode(optimizer, "train")
    with tqdm(total=len(lrs), desc="lr range test", disable=not progress, leave=False) as bar:
        for step, (lr, (inputs, labels)) in enumerate(zip(lrs, batches, strict=False)):  # batches never end
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss, _ = train_step(model, optimizer, inputs, labels, precision)
            value = loss.item()  # the one read of each step: whether to go on depends on it
            if not math.isfinite(value):
                if step == 0:
                    raise RangeTestError(
                        f"the loss is {value} at the first step, before any update (lr {lr:.3g}): the model or the "
                        "data give a non-finite loss whatever the lr. Check data.normalize and trainer.precision."
                    )
                curve.stop = f"the loss was {value} at step {step} (lr {lr:.3g})"
                break
            smoothed = smoother(value)
            best = min(best, smoothed)
            curve.lrs.append(lr)
            curve.losses.append(value)
            curve.smoothed.append(smoothed)
            bar.update()
            bar.set_postfix(lr=f"{lr:.3g}", loss=f"{smoothed:.4f}")
            if should_stop(smoothed, best, stop_factor):
                curve.stop = (
                    f"the smoothed loss {smoothed:.4g} exceeded {stop_factor:g}x its best ({best:.4g}) at step {step} "
                    f"(lr {lr:.3g})"
                )
                break
    return curve


def find_lr(cfg: DictConfig, dataset: DeviceData, *, progress: bool | None = None) -> Curve:
    """The range test of the run `cfg` describes, on `dataset` (already on its device), with `cfg.lr_find`'s ramp.

    The model starts from the run's initial weights (`torch.manual_seed(seed)`, as `src.train` does) and the batches
    come in the run's order (a generator seeded with `seed`), all inside `fork_rng`: the global CPU and CUDA RNG
    states are restored on the way out, and the model and optimizer are the test's own.
    """
    settings = cfg.lr_find
    lrs = ramp(settings.min_lr, settings.max_lr, settings.num_steps, settings.mode)
    device = dataset.train_x.device
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []  # manual_seed seeds them all
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(cfg.seed)
        model = build_model(cfg.model, dataset).to(device)
        optimizer = build_optimizer(cfg.optimizer, model.parameters())
        order = torch.Generator(device=device).manual_seed(cfg.seed)
        # Epochs back to back: a ramp longer than an epoch goes on into the next.
        batches = itertools.chain.from_iterable(dataset.train_batches(order) for _ in itertools.count())
        return range_test(
            model,
            optimizer,
            batches,
            lrs,
            beta=settings.smooth,
            stop_factor=settings.stop_factor,
            precision=cfg.trainer.precision,
            progress=cfg.trainer.progress if progress is None else progress,
        )


def write_curve(path: Path, curve: Curve) -> None:
    """The curve as CSV: step, lr, raw and smoothed loss, each number as Python writes it (exact)."""
    rows = enumerate(zip(curve.lrs, curve.losses, curve.smoothed, strict=True))
    write_csv(
        path, [{"step": i, "lr": repr(lr), "loss": repr(raw), "smoothed_loss": repr(s)} for i, (lr, raw, s) in rows]
    )


def draw(path: Path, curve: Curve, suggestions: Mapping[str, Suggestion], chosen: str, title: str) -> None:
    """The loss against lr on a log axis, raw (faint) and smoothed, the suggestions as vertical lines, as a PNG."""
    figure, axes = new_figure()
    axes.plot(curve.lrs, curve.losses, color="0.7", linewidth=0.8, label="loss (each batch)")
    axes.plot(curve.lrs, curve.smoothed, color="tab:blue", linewidth=1.8, label="smoothed loss")
    colours = {"valley": "tab:green", "steepest": "tab:orange", "min_div10": "tab:purple"}
    for name, suggestion in suggestions.items():
        line = {"linestyle": "-", "linewidth": 2.0} if name == chosen else {"linestyle": "--", "linewidth": 1.2}
        mark = " (suggestion)" if name == chosen else ""
        axes.axvline(suggestion.lr, color=colours[name], label=f"{name} {suggestion.lr:g}{mark}", **line)
    # The y range of the curve the suggestions read (and its start): neither a raw spike nor the blow-up flattens it.
    kept = [curve.smoothed[i] for i in window(len(curve.smoothed), curve.stopped_early)] or curve.smoothed
    top, bottom = max(curve.smoothed[0], *kept), min(min(kept), min(curve.losses))
    margin = max(top - bottom, 0.05)
    axes.set(xscale="log", xlabel="learning rate (log scale)", ylabel="training loss")
    axes.set_ylim(bottom - 0.1 * margin, top + 0.3 * margin)
    axes.set_title(title, fontsize=9)
    axes.grid(alpha=0.3, which="minor")
    save_figure(figure, axes, path)


def write_tensorboard(folder: Path, curve: Curve, figure: Path | None, report: str) -> None:
    """The curve as scalars against the step (on an exp ramp the step axis is the log-lr axis; `lr_find/lr` maps
    it), both losses on one chart, the figure (the PNG `draw` wrote) as an image and the report as text."""
    with SummaryWriter(log_dir=str(folder)) as writer:
        writer.add_custom_scalars(
            {"lr range test": {"loss against step": ["Multiline", ["^lr_find/(loss|smoothed_loss)$"]]}}
        )
        for step, (lr, loss, smoothed) in enumerate(zip(curve.lrs, curve.losses, curve.smoothed, strict=True)):
            writer.add_scalar("lr_find/lr", lr, step)
            writer.add_scalar("lr_find/loss", loss, step)
            writer.add_scalar("lr_find/smoothed_loss", smoothed, step)
        if figure is not None:
            from matplotlib.image import imread

            writer.add_image("lr_find/curve", imread(figure)[..., :3], 0, dataformats="HWC")
        writer.add_text("lr_find/suggestions", "    " + report.replace("\n", "\n    "), 0)


def train_command(overrides: Sequence[str], extra: str) -> str:
    """`python -m src.train` with the run overrides this test was given (not its own, nor an lr), plus `extra`."""
    kept = [
        item
        for item in overrides
        if not item.lstrip("+~").startswith(("lr_find.", "lr_find=", "optimizer.lr=", "lr_from="))
    ]
    return shlex.join(["python", "-m", "src.train", *kept, extra])


def report_lines(
    curve: Curve,
    suggestions: Mapping[str, Suggestion],
    record: Mapping[str, Any],
    folder: Path,
    overrides: Sequence[str],
) -> list[str]:
    """What the range test found, for the log and TensorBoard; `record` is the suggestion's (suggestions_record)."""
    chosen = record["suggestion"]
    ended = f"stopped at step {len(curve.lrs) - 1}: {curve.stop}" if curve.stop else "ran the whole ramp"
    lines = [
        f"LR range test: {len(curve.lrs)} of {len(curve.planned)} steps, lr {curve.planned[0]:.3g} -> "
        f"{curve.planned[-1]:.3g}; {ended}",
    ]
    for name, suggestion in suggestions.items():
        mark = "  <- suggestion" if name == chosen else ""
        lines.append(f"  {name:<10} {suggestion.lr:<10g} {WHAT_RULES_DO[name]} ({suggestion.detail}){mark}")
    lines += [
        f"suggestion: {chosen} (lr_find.suggestion), because {record['why']}",
        f"use it:  {train_command(overrides, record['override'])}",
        f"     or: {train_command(overrides, f'lr_from={folder}')}",
        f"files:   {folder}",
    ]
    return lines


def title(cfg: DictConfig) -> str:
    choices = group_choices()
    return (
        f"LR range test: {choices.get('model', 'model')}, {choices.get('optimizer', 'optimizer')}, "
        f"batch {cfg.data.batch_size}, seed {cfg.seed}, {cfg.lr_find.mode} ramp over {cfg.lr_find.num_steps} steps"
    )


def run_range_test(cfg: DictConfig, folder: Path) -> float:
    """`python -m src.lr_find`'s work, into `folder`: check the config, load the data, ramp, suggest, write the
    curve, the figure, TensorBoard and suggestions.json; returns the chosen lr. Raises BadInput with the message
    for a bad config or a test that yields no curve or no suggestion."""
    problems = []
    try:
        validate(cfg)
    except ConfigError as error:
        problems = error.problems
    problems += ramp_problems(cfg.lr_find)
    if problems:
        raise BadInput(f"invalid configuration:\n{ConfigError(problems)}")
    configure_threads(cfg.trainer.threads)
    device = select_device(cfg.trainer.device)
    try:
        dataset = data.load(device=device, **OmegaConf.to_container(cfg.data))
    except data.DatasetNotFoundError as error:
        raise BadInput(str(error)) from None
    log.info("lr range test folder: %s (%d training images, device %s)", folder, dataset.train_size, device)
    try:
        with logging_redirect_tqdm():
            curve = find_lr(cfg, dataset)
    except RangeTestError as error:
        raise BadInput(f"lr range test: {error}") from None
    write_curve(folder / CSV_FILE, curve)
    try:
        suggestions = suggest(curve.lrs, curve.smoothed, stopped_early=curve.stopped_early)
    except SuggestionError as error:
        write_tensorboard(folder, curve, None, curve.stop or "")
        raise BadInput(
            f"lr range test: no suggestion, {error}; the test {curve.stop or 'ended'}. lr_find.min_lr="
            f"{cfg.lr_find.min_lr:g} is already too large for this run, or the ramp too steep: lower lr_find.min_lr "
            f"or raise lr_find.num_steps. The curve is in {folder / CSV_FILE}."
        ) from None
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
