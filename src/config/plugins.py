"""Hydra plugins that come as extras (pyproject's optional dependencies): a command that needs one that is not
installed is told which extra brings it, before Hydra stops with "Could not load 'hydra/sweeper/optuna'"."""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Sequence

# extra -> (the words of a command line that need it, the plugin's package, what it is for)
EXTRAS = {
    "optuna": (r"\boptuna", "hydra_plugins.hydra_optuna_sweeper", "the Optuna sweeper (experiment=optuna_lr)"),
    "slurm": (
        r"\b(slurm|submitit)",
        "hydra_plugins.hydra_submitit_launcher",
        "the SLURM launcher (hydra/launcher=slurm)",
    ),
}


def _installed(package: str) -> bool:
    try:
        return importlib.util.find_spec(package) is not None
    except ModuleNotFoundError:  # its parent namespace is not there either
        return False


def missing_extra_problem(argv: Sequence[str]) -> str | None:
    """The message for a command line that chooses a plugin whose extra is not installed, or None."""
    for extra, (words, package, what) in EXTRAS.items():
        if any(re.search(words, arg) for arg in argv) and not _installed(package):
            return (
                f"{what} is not installed: it comes with lrbench's '{extra}' extra. Install it with "
                f"pip install -e '.[{extra}]' (make setup installs every extra)"
            )
    return None
