"""What Hydra says of the session a command runs in: the overrides it was given and the config file each group
took. Outside a Hydra run (a test calling src.train.run in-process) there are none."""

from __future__ import annotations

from typing import Any

from hydra.core.hydra_config import HydraConfig


def task_overrides() -> list[str]:
    """The command line's overrides of this Hydra run (none outside one)."""
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def group_choices() -> dict[str, Any]:
    """Which config file each group took (`scheduler: cosine_warmup`, ...), as Hydra recorded it."""
    return dict(HydraConfig.get().runtime.choices) if HydraConfig.initialized() else {}
