"""Check a composed run config before anything is loaded or trained.

Every problem is collected, so one message lists them all, each with the key, the value and what is allowed:
- types: every key keeps the kind of value its config file gives it (a number stays a number, true/false a
  boolean, a name a string, a list a list), so `trainer.epochs=ten` or `data.download=maybe` name their key;
- keys a `+key=value` override adds to a group that does not have them (a typo Hydra lets through);
- ranges of the keys that have one (CHECKS), the optimizer's own checks, the device, the resume folder;
- numbers the optimizer cannot hold: it computes in float32, so no optimizer or scheduler number, no lr of the
  schedule and no first step's scalar may exceed the largest float32 (FLOAT32_MAX);
- the schedule, built once on the run's timeline and evaluated at its updates, so its own checks run here too.
"""

from __future__ import annotations

import argparse
import difflib
import math
import re
import sys
import tempfile
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import torch
from hydra._internal.utils import get_args_parser
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
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
# The largest number the optimizer can multiply into the weights: torch turns a larger lr (or decay, eps, ...)
# into an error ("value cannot be converted to type float without overflow") at the first step.
FLOAT32_MAX = float(torch.finfo(torch.float32).max)
FLOAT32_BOUND = f"magnitude <= {FLOAT32_MAX:.8g} (the largest float32, which the optimizer computes in)"


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
    problems += _type_problems(cfg) + _added_key_problems(cfg) + _float32_problems(cfg)
    problems += _optimizer_problems(cfg) + speed_problems(cfg.trainer) + _resume_problems(cfg)
    if _get(cfg, "trainer.device") == "cuda" and not torch.cuda.is_available():
        problems.append("trainer.device='cuda': CUDA is not available on this machine; use auto or cpu")
    problems = _one_per_key(problems)
    if not any(problem.startswith(SCHEDULE_INPUTS) for problem in problems):
        schedule_problems, peak_lr = _schedule_problems(cfg)
        problems += schedule_problems
        if not problems:
            problems += _first_step_problems(cfg, peak_lr)
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


def _numbers_in(value: Any) -> list[float | int]:
    """The numbers of a config value: itself, or the elements of a list (booleans are not numbers here)."""
    items = value if isinstance(value, list | ListConfig) else [value]
    return [item for item in items if isinstance(item, int | float) and not isinstance(item, bool)]


def _float32_problems(cfg: DictConfig) -> list[str]:
    """Every optimizer and scheduler number beyond the largest float32, or not finite: the optimizer cannot hold it
    (a key with a range of its own, such as optimizer.lr, is named by that check first)."""
    problems = []
    for group in ("optimizer", "scheduler"):
        node = _get(cfg, group)
        for key, value in node.items() if isinstance(node, DictConfig) else []:
            numbers = _numbers_in(value)
            if not str(key).startswith("_") and any(not abs(n) <= FLOAT32_MAX for n in numbers):  # nan too
                allowed = "are numbers" if isinstance(value, ListConfig) else "is a number"
                problems.append(f"{group}.{key}={_shown(value)}: allowed {allowed} of {FLOAT32_BOUND}")
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


def _schedule_problems(cfg: DictConfig) -> tuple[list[str], float]:
    """Build the schedule on the run's timeline once, and evaluate it at its updates, to catch bad values: the
    problems, and the peak lr of the curve."""
    train_size = cfg.data.train_size or FASHION_MNIST_TRAIN_SIZE
    base_lr = float(cfg.optimizer.lr)
    timeline = Timeline(
        interval=cfg.scheduler.interval,
        steps_per_epoch=math.ceil(train_size / cfg.data.batch_size),
        epochs=cfg.trainer.epochs,
        base_lr=base_lr,
    )
    keys = ", ".join(f"{key}={value!r}" for key, value in cfg.scheduler.items() if not str(key).startswith("_"))
    try:
        schedule = build_schedule(cfg.scheduler, timeline)
        multipliers = [(t, schedule(t)) for t in sampled_updates(timeline.total)]
    except ScheduleConfigError as error:
        return [str(error)], base_lr
    except (TypeError, ValueError, ArithmeticError) as error:  # a value of the wrong type, or out of its domain
        return [f"scheduler: {error} (the schedule's keys: {keys})"], base_lr
    bad = [t for t, multiplier in multipliers if not (math.isfinite(multiplier) and multiplier >= 0)]
    if bad:
        return [
            f"scheduler: the lr multiplier is negative or not finite at update {bad[0]} (the schedule's keys: {keys})"
        ], base_lr
    over = [(t, multiplier) for t, multiplier in multipliers if base_lr * multiplier > FLOAT32_MAX]
    if over:
        t, multiplier = over[0]
        return [
            f"scheduler: the lr reaches {base_lr * multiplier:.4g} (optimizer.lr={base_lr:g} times {multiplier:.4g}) "
            f"at update {t}; allowed is an lr of {FLOAT32_BOUND} (the schedule's keys: {keys})"
        ], base_lr
    peak_lr = base_lr * max((multiplier for _, multiplier in multipliers), default=1.0)
    return [], peak_lr


def sampled_updates(total: int, max_points: int = MAX_SCHEDULE_POINTS) -> list[int]:
    """Every update of a run of `total` updates, or about `max_points` evenly spread ones and the last."""
    stride = max(1, total // max_points)
    return [*range(0, total, stride), total - 1] if total > 0 else []


def _first_step_problems(cfg: DictConfig, lr: float) -> list[str]:
    """One step of the run's optimizer at `lr` on a stand-in weight: numbers that are each within float32 can
    still combine beyond it (Adam's first step divides the lr by 1 - beta1), which torch refuses mid-run."""
    weight = torch.nn.Parameter(torch.ones(1))
    weight.grad = torch.ones(1)
    try:
        optimizer = build_optimizer(cfg.optimizer, [weight])
    except (TypeError, ValueError):  # torch's own checks, reported by _optimizer_problems
        return []
    for group in optimizer.param_groups:
        group["lr"] = lr
    try:
        optimizer.step()
    except RuntimeError as error:
        return [
            f"optimizer.lr={cfg.optimizer.lr!r}: {type(optimizer).__name__}'s first step at the schedule's peak lr "
            f"{lr:g} fails ({error}); allowed is a smaller lr, whose step stays within float32 ({FLOAT32_MAX:.8g})"
        ]
    return []


def _config_names(config_name: str) -> tuple[list[str], list[str]]:
    """The groups the defaults list of `conf/<config_name>.yaml` chooses from, and its top-level keys, following
    defaults entries that name another config file (lr_find.yaml builds on config.yaml)."""
    path = CONF_DIR / f"{config_name}.yaml"
    if not path.is_file():
        return [], []
    content = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    groups, keys = [], [str(key) for key in content if key != "defaults"]
    for entry in content.get("defaults", []):
        if isinstance(entry, dict):
            groups += [str(group).split()[-1].split("@")[0] for group in entry]  # `optional experiment`
        elif entry != "_self_":
            more_groups, more_keys = _config_names(str(entry))
            groups, keys = groups + more_groups, keys + more_keys
    return groups, keys


def override_key_problem(argv: list[str], config_name: str = "config") -> str | None:
    """A command-line override whose key starts with a name the config does not have but is close to one it has
    (`schedular=cosine`): the message with the likely name and the groups. Hydra refuses such a key too, but
    suggests adding it with `+`, which validation then refuses. None when every key is known or not close to
    one, when the arguments do not parse (Hydra says why), and for `+key=` additions.

    Run before Hydra composes anything: its error comes before the task function could check.
    """
    parser = get_args_parser()
    parser.exit_on_error = False
    try:
        args, unknown = parser.parse_known_args(argv)
        overrides = OverridesParser.create().parse_overrides(args.overrides)
    except (argparse.ArgumentError, HydraException):
        return None
    if unknown:
        return None
    groups, keys = _config_names(args.config_name or config_name)
    known = {*groups, *keys, *(path.name for path in CONF_DIR.iterdir() if path.is_dir()), "hydra"}
    for override in overrides:
        if override.is_add() or override.is_force_add():
            continue
        key = override.key_or_group
        first = re.split(r"[./]", key, maxsplit=1)[0]
        if first in known or not (close := difflib.get_close_matches(first, sorted(known), n=1)):
            continue
        return (
            f"unknown key '{key}': did you mean '{close[0]}{key[len(first) :]}'? The groups are: "
            f"{', '.join(sorted(set(groups)))}; the other top-level keys: {', '.join(sorted(set(keys) - {'hydra'}))}"
        )
    return None


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
