"""`lr_from=<lr_find folder>`: a run takes its peak lr (`optimizer.lr`) from a finished LR range test.

Resolved before the config is validated, so every check, the schedule, the checkpoint's config and the HParams see
the lr the run trains with; metrics.json records it (`peak_lr`) and where it came from (`lr_from`), and so does
`.hydra/config.yaml`, which src.train writes after it (runs of earlier versions hold the config file's lr there:
src.compare reads `peak_lr`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from omegaconf import DictConfig

from src.config.rules import FOLDER, ConfigError, Problem, Rule
from src.lr_range.suggest import SuggestionError, read_suggestion, suggestions_path


def _given(cfg: DictConfig) -> str | None:
    value = cfg.get("lr_from")
    return value if isinstance(value, str) and value.strip() else None


def take_lr_from(cfg: DictConfig, overrides: Sequence[str] = ()) -> float | None:
    """Set `cfg.optimizer.lr` to the suggestion of the range test `cfg.lr_from` names; return it (None without
    `lr_from`). An `optimizer.lr=` among the command-line `overrides` as well is refused: one of them would be
    ignored."""
    source = _given(cfg)
    if source is None:
        return None
    problems = []
    if any(item.lstrip("+").startswith("optimizer.lr=") for item in overrides):
        both = f"lr_from={source!r} and optimizer.lr are both given: keep one (lr_from sets optimizer.lr)"
        problems.append(Problem("lr_from", both))
    try:
        lr = read_suggestion(source)
    except SuggestionError as error:
        problems.append(Problem("lr_from", f"lr_from={source!r}: {error}; allowed is {KEY_RULES['lr_from'].allowed}"))
    if problems:
        raise ConfigError(problems)
    cfg.optimizer.lr = lr
    return lr


def lr_record(cfg: DictConfig) -> dict[str, Any]:
    """metrics.json's record of the lr: the peak lr the run trained with, and the range test it came from."""
    source = _given(cfg)
    return {"peak_lr": cfg.optimizer.lr, "lr_from": str(suggestions_path(source).resolve()) if source else None}


KEY_RULES: dict[str, Rule] = {
    "lr_from": Rule(
        FOLDER.test, "the folder of a finished `python -m src.lr_find` (or its suggestions.json)"
    ).optional(),
}
