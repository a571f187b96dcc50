"""Check a composed run config before anything is loaded or trained.

Every problem is collected, so one message lists them all, each with the key, the value and what is allowed:
- types: every key keeps the kind of value its config file gives it (a number stays a number, true/false a
  boolean, a name a string, a list a list), so `trainer.epochs=ten` or `data.download=maybe` name their key;
- keys a `+key=value` override adds to a group that does not have them (a typo Hydra lets through);
- ranges of the keys that have one (CHECKS), the optimizer's own checks, the device, the resume folder;
- the schedule, built once on the run's timeline and evaluated at its updates, so its own checks run here too.
"""

from __future__ import annotations

import math
import sys
import tempfile
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, ListConfig, OmegaConf

from src import REPO_ROOT
from src.checkpointing import LAST
from src.device import DEVICES, speed_problems
from src.optimizers import build_optimizer
from src.schedules import ScheduleConfigError, Timeline, build_schedule
from src.schedules.timeline import INTERVALS

CONF_DIR = REPO_ROOT / "conf"
GROUPS = ("model", "optimizer", "scheduler", "data", "trainer")
FASHION_MNIST_TRAIN_SIZE = 60_000
MAX_EPOCHS = 10_000
MAX_THREADS = 1024
# The schedule is built from these keys; it is checked once none of them has a problem of its own.
SCHEDULE_INPUTS = ("scheduler", "trainer.epochs", "data.batch_size", "data.train_size", "optimizer.lr")
# The schedule is evaluated at every update up to this many, and at evenly spread ones beyond.
MAX_SCHEDULE_POINTS = 200_000


class ConfigError(ValueError):
    """The config has problems; the message lists every one of them."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(f"  - {problem}" for problem in problems))
        self.problems = problems


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _int_between(low: int, high: int | None = None) -> Callable[[Any], bool]:
    return lambda value: _is_int(value) and value >= low and (high is None or value <= high)


def _optional(test: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: value is None or test(value)


def _text(value: Any) -> bool:
    return isinstance(value, str) and value.strip() != ""


def _get(cfg: DictConfig, key: str) -> Any:
    return OmegaConf.select(cfg, key, default=None, throw_on_missing=False)


# key, test, what is allowed
CHECKS: list[tuple[str, Callable[[Any], bool], str]] = [
    ("seed", _int_between(0, 2**63 - 1), "an integer >= 0 and < 2**63"),
    ("trainer.epochs", _int_between(1, MAX_EPOCHS), f"an integer >= 1 and <= {MAX_EPOCHS}"),
    ("trainer.device", lambda v: v in DEVICES, f"one of {', '.join(DEVICES)}"),
    ("trainer.threads", _optional(_int_between(1, MAX_THREADS)), f"null (all cores) or an integer 1..{MAX_THREADS}"),
    ("trainer.log_every_steps", _int_between(1), "an integer >= 1"),
    ("trainer.eval_batch_size", _int_between(1), "an integer >= 1"),
    ("trainer.progress", lambda v: isinstance(v, bool), "true or false"),
    ("data.batch_size", _int_between(1), "an integer >= 1"),
    (
        "data.train_size",
        _optional(_int_between(1, FASHION_MNIST_TRAIN_SIZE)),
        f"null (all {FASHION_MNIST_TRAIN_SIZE}) or an integer 1..{FASHION_MNIST_TRAIN_SIZE}",
    ),
    ("data.root", _optional(_text), "null or a folder"),
    ("data.std", _optional(lambda v: _is_number(v) and v > 0), "a number > 0"),
    ("optimizer.lr", lambda v: _is_number(v) and v > 0, "a number > 0"),
    ("scheduler.interval", lambda v: v in INTERVALS, f"one of {', '.join(INTERVALS)}"),
    (
        "scheduler.warmup_ratio",
        lambda v: v is None or (_is_number(v) and 0 <= v < 1),
        "a number with 0 <= warmup_ratio < 1",
    ),
    ("resume", _optional(_text), f"null or the folder of an earlier run (holding {LAST})"),
    ("lr_from", _optional(_text), "null or the folder of an lr range test (python -m src.lr_find)"),
    ("checkpoint.keep_best", lambda v: isinstance(v, bool), "true or false"),
    ("checkpoint.force_resume", lambda v: isinstance(v, bool), "true or false"),
    ("checkpoint.skip_finished", lambda v: isinstance(v, bool), "true or false"),
    ("trainer.stop_on_collapse", lambda v: isinstance(v, bool), "true or false"),
    ("labels.stage", _optional(_text), "null or a name"),
    ("labels.schedule", _optional(_text), "null or a name"),
]


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError listing every problem of `cfg`; return quietly when it can run."""
    problems = []
    for key, test, allowed in CHECKS:
        value = _get(cfg, key)
        if not test(value):
            problems.append(f"{key}={_shown(value)}: allowed is {allowed}")
    problems += _type_problems(cfg) + _added_key_problems(cfg)
    problems += _optimizer_problems(cfg) + speed_problems(cfg.trainer) + _resume_problems(cfg)
    if _get(cfg, "trainer.device") == "cuda" and not torch.cuda.is_available():
        problems.append("trainer.device='cuda': CUDA is not available on this machine; use auto or cpu")
    problems = _one_per_key(problems)
    if not any(problem.startswith(SCHEDULE_INPUTS) for problem in problems):
        problems += _schedule_problems(cfg)
    if problems:
        raise ConfigError(problems)


def _one_per_key(problems: list[str]) -> list[str]:
    """A key found wrong by two checks (its range, then its type) is listed once, by the first."""
    kept, keys = [], set()
    for problem in problems:
        key = problem.split("=", 1)[0] if "=" in problem.split(":", 1)[0] else problem
        if key not in keys:
            kept.append(problem)
            keys.add(key)
    return kept


@cache
def _group_defaults(group: str, choice: str) -> dict[str, Any]:
    """The values `conf/<group>/<choice>.yaml` gives its keys (unresolved), those of the files its defaults list
    extends (`shared/warmup@_here_`) included, or {} when there is no such file."""
    path = CONF_DIR / group / f"{choice}.yaml"
    if not path.is_file():
        return {}
    own = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    values: dict[str, Any] = {}
    for entry in own.pop("defaults", []):
        if entry != "_self_":
            values.update(_group_defaults(group, entry.removesuffix("@_here_")))
    return {**values, **own}


def _kind(value: Any) -> str | None:
    """The kind of value a config file's default asks for; None when anything may go there (null, ${...}).
    A string key may also be null (e.g. `data.system_dir=null`); the range checks say which strings are allowed."""
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return None if "${" in value else "a string"
    if isinstance(value, list | ListConfig):
        return "a list"
    return None


def _has_kind(value: Any, kind: str) -> bool:
    return {
        "true or false": lambda: isinstance(value, bool),
        "a number": lambda: _is_number(value),
        "a string": lambda: value is None or isinstance(value, str),
        "a list": lambda: isinstance(value, list | ListConfig),
    }[kind]()


def _choices() -> dict[str, str]:
    if not HydraConfig.initialized():
        return {}
    return {group: str(choice) for group, choice in HydraConfig.get().runtime.choices.items() if choice}


def _type_problems(cfg: DictConfig) -> list[str]:
    """Every key of a group whose value is not of the kind the group's config file gives it."""
    problems = []
    for group, choice in _choices().items():
        if group not in GROUPS:
            continue
        for key, default in _group_defaults(group, choice).items():
            kind = _kind(default)
            value = _get(cfg, f"{group}.{key}")
            if kind is not None and not key.startswith("_") and not _has_kind(value, kind):
                problems.append(f"{group}.{key}={_shown(value)}: allowed is {kind}")
    return problems


def _shown(value: Any) -> str:
    return repr(OmegaConf.to_container(value) if isinstance(value, DictConfig | ListConfig) else value)


def _added_key_problems(cfg: DictConfig) -> list[str]:
    """`+group.key=value` adds a key the group does not have: a typo Hydra accepts, so it is refused here."""
    if not HydraConfig.initialized():
        return []
    problems = []
    for override in OverridesParser.create().parse_overrides(list(HydraConfig.get().overrides.task)):
        key = override.key_or_group
        if override.is_add() and not (CONF_DIR / key).is_dir():  # `+experiment@_global_=x` picks a config file
            group, _, added = key.rpartition(".")
            node = _get(cfg, group) if group else None
            known = ", ".join(str(k) for k in node if not str(k).startswith("_") and k != added) if node else ""
            where = f"; {group} has: {known}" if isinstance(node, DictConfig) else ""
            problems.append(f"{key}: unknown key (added with +{key}=...){where}")
    return problems


def _optimizer_problems(cfg: DictConfig) -> list[str]:
    problems = []
    momentum = _get(cfg, "optimizer.momentum")
    if momentum is not None and not (_is_number(momentum) and 0 <= momentum < 1):
        problems.append(f"optimizer.momentum={momentum!r}: allowed is a number with 0 <= momentum < 1")
    betas = _get(cfg, "optimizer.betas")
    betas_ok = isinstance(betas, ListConfig) and len(betas) == 2 and all(_is_number(b) and 0 <= b < 1 for b in betas)
    if betas is not None and not betas_ok:
        problems.append(f"optimizer.betas={_shown(betas)}: allowed is two numbers, each 0 <= beta < 1")
    for key in ("weight_decay", "eps"):
        value = _get(cfg, f"optimizer.{key}")
        if value is not None and not (_is_number(value) and value >= 0):
            problems.append(f"optimizer.{key}={value!r}: allowed is a number >= 0")
    lr = _get(cfg, "optimizer.lr")
    if not problems and _is_number(lr) and lr > 0:  # torch's own checks (e.g. nesterov needs momentum)
        try:
            build_optimizer(cfg.optimizer, [torch.nn.Parameter(torch.zeros(1))])
        except (TypeError, ValueError) as error:
            problems.append(f"optimizer: {error}")
    return problems


def _resume_problems(cfg: DictConfig) -> list[str]:
    resume = _get(cfg, "resume")
    if not _text(resume):
        return []
    folder = Path(resume).expanduser()
    if not (folder / LAST).is_file():
        found = "does not exist" if not folder.exists() else f"holds no {LAST}"
        return [f"resume={resume!r}: that folder {found}; allowed is the folder of an earlier run (holding {LAST})"]
    return []


def _schedule_problems(cfg: DictConfig) -> list[str]:
    """Build the schedule on the run's timeline once, and evaluate it at its updates, to catch bad values."""
    train_size = cfg.data.train_size or FASHION_MNIST_TRAIN_SIZE
    timeline = Timeline(
        interval=cfg.scheduler.interval,
        steps_per_epoch=math.ceil(train_size / cfg.data.batch_size),
        epochs=cfg.trainer.epochs,
        base_lr=float(cfg.optimizer.lr),
    )
    stride = max(1, timeline.total // MAX_SCHEDULE_POINTS)
    updates = [*range(0, timeline.total, stride), timeline.total - 1]
    keys = ", ".join(f"{key}={value!r}" for key, value in cfg.scheduler.items() if not str(key).startswith("_"))
    try:
        schedule = build_schedule(cfg.scheduler, timeline)
        bad = [t for t in updates if not (math.isfinite(schedule(t)) and schedule(t) >= 0)]
    except ScheduleConfigError as error:
        return [str(error)]
    except (TypeError, ValueError, ArithmeticError) as error:  # a value of the wrong type, or out of its domain
        return [f"scheduler: {error} (the schedule's keys: {keys})"]
    if bad:
        return [
            f"scheduler: the lr multiplier is negative or not finite at update {bad[0]} (the schedule's keys: {keys})"
        ]
    return []


def output_folder_problem(folder: Path) -> str | None:
    """Why runs cannot be written below `folder` (the nearest existing parent is a file, or takes no new
    folder), or None when they can. A folder is made and removed there, so a full disk or a read-only mount shows."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    try:
        Path(tempfile.mkdtemp(prefix=".lrbench-", dir=existing)).rmdir()
    except OSError as error:
        return f"no new folder can be made in {existing} ({error.strerror or error})"
    return None


class OutputFolderCheck(Callback):
    """Hydra callback: before Hydra makes the run (or sweep) folder, check that it can; Hydra itself would stop
    with a traceback from inside pathlib. Exit status 3, as for any run folder that cannot be written."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "hydra.sweep.dir")

    @staticmethod
    def _check(config: DictConfig, key: str) -> None:
        folder = Path(str(OmegaConf.select(config, key))).expanduser()
        if problem := output_folder_problem(folder):
            print(
                f"lrbench: cannot write the run folder {folder}: {problem}. "
                "Pick a writable folder with output_root=<folder>.",
                file=sys.stderr,
            )
            sys.exit(3)
