"""Check a composed run config before anything is loaded or trained, and list every problem in one message, each
with the key, the value and what is allowed.

Each key has one rule (src.config.rules), declared beside the code that reads it: each owner's KEY_RULES (the
trainer's in src.training.trainer, the range test's in src.lr_range.suggest, ...). A group that names its code
with `_target_` takes its rules from that code's module: a dataset's keys from the dataset's module (and its size
from its INFO), a model's from the model's, an optimizer factory's from its module (torch's optimizers from
src.training.optimizers), so a new dataset or optimizer needs no edit here (`key_rules`).

Each `_target_` (the model's, the optimizer's, the data's, the schedule's) must name one of the project's own
(TARGETS) before anything is imported from it or built: any importable callable would otherwise run as a model.

The scheduler's keys take their kinds from its factory's annotations; their ranges are the factory's own, checked
when the schedule is built here, on the run's timeline, once none of its inputs has a problem. Numbers must also
fit the float32 the optimizer computes in (FLOAT32_MAX), and so must the schedule's lrs and the first step.
"""

from __future__ import annotations

import importlib
import math
import typing
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import torch
from hydra._internal.utils import _locate
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import get_method
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import nn

from src import REPO_ROOT
from src.config.rules import (
    BOOLEAN,
    FLOAT32_BOUND,
    FLOAT32_MAX,
    FOLDER,
    INTEGER,
    NAME,
    NUMBER,
    NUMBERS,
    STRING,
    ConfigError,
    Problem,
    Rule,
)
from src.lr_range import lr_from, suggest
from src.runs import resume
from src.runs.checkpoints import LAST
from src.runs.resume import RUN_FOLDER, hydra_quoted
from src.schedules import Schedule, ScheduleConfigError, Timeline, build_schedule, run_timeline, timeline
from src.schedules.driver import sampled_updates
from src.training import data, optimizers, trainer
from src.training.optimizers import stand_in_optimizer

CONF_DIR = REPO_ROOT / "conf"
# The schedule is built from these keys (and the scheduler group's); it is checked once none has a problem.
SCHEDULE_INPUTS = ("trainer.epochs", "data.batch_size", "data.train_size", "data._target_", "optimizer.lr")


# The run's own keys; every other group's rules sit with the code that reads them (KEY_RULES). SCHEMA holds the
# keys whatever the groups' choices; `key_rules` adds those of the chosen scheduler, model, optimizer and dataset
# (tests/test_validation.py checks that each key of each config file has one), in the message's order.
RUN_KEYS: dict[str, Rule] = {
    "seed": INTEGER.where(lambda v: 0 <= v < 2**63, "an integer >= 0 and < 2**63"),
    "output_root": FOLDER,
    "labels.stage": NAME.optional(),
    "labels.schedule": NAME.optional(),
}
# The keys every run has, named first in the message; the chosen groups' own follow, then the rest of SCHEMA.
LEADING_KEYS: dict[str, Rule] = RUN_KEYS | resume.KEY_RULES | lr_from.KEY_RULES
SCHEMA: dict[str, Rule] = LEADING_KEYS | trainer.KEY_RULES | timeline.KEY_RULES | suggest.KEY_RULES


def _in_project(module: str) -> bool:
    """Whether `module` is one of this repository's packages (src, and tests, where the recipe's sample lives):
    decided from its name alone, so nothing else is imported to find out."""
    return (REPO_ROOT / module.partition(".")[0] / "__init__.py").is_file()


def _returns(kind: type) -> Callable[[Any], bool]:
    """Whether an object is a function annotated to return a `kind` (a factory of one)."""

    def test(target: Any) -> bool:
        if isinstance(target, type) or not callable(target):
            return False
        try:
            returned = typing.get_type_hints(target).get("return")
        except (NameError, TypeError):  # annotations that do not resolve name no kind
            return False
        try:
            return returned is kind or (isinstance(returned, type) and issubclass(returned, kind))
        except TypeError:  # `kind` is a Protocol (Schedule): only the annotation naming it says so
            return False

    return test


def _subclass(kind: type) -> Callable[[Any], bool]:
    return lambda target: isinstance(target, type) and issubclass(target, kind)


@dataclass(frozen=True)
class Target:
    """What a group's `_target_` may name: a dotted path in `modules` (checked before it is imported) whose object
    passes `test` (the group's kind), and the words that say it."""

    modules: Callable[[str], bool]
    test: Callable[[Any], bool]
    allowed: str


# The groups that build an object from `_target_`; no other key of a run config may have one.
TARGETS: dict[str, Target] = {
    "model": Target(
        _in_project, _subclass(nn.Module), "an nn.Module subclass of this project's src/ (src.training.models.LeNet)"
    ),
    "optimizer": Target(
        lambda module: module.startswith("torch.optim.") or _in_project(module),
        lambda target: _subclass(torch.optim.Optimizer)(target) or _returns(torch.optim.Optimizer)(target),
        "a torch.optim.Optimizer subclass (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW, ...), or a "
        "function of this project's src/ returning one",
    ),
    "data": Target(
        _in_project,
        _returns(data.DeviceData),
        "a dataset of this project's src/: a function returning a DeviceData "
        "(src.training.datasets.fashion_mnist.load, one per conf/data/<name>.yaml)",
    ),
    "scheduler": Target(
        _in_project,
        _returns(Schedule),
        "a schedule factory of this project: a function of src/ taking the Timeline and returning a Schedule "
        "(src.schedules.catalogue.<name>, one per conf/scheduler/<name>.yaml)",
    ),
}

# The rule a scheduler factory's annotation declares; `X | None` adds null.
KINDS: dict[Any, Rule] = {
    bool: BOOLEAN,
    int: INTEGER.in_float32(),
    float: NUMBER.in_float32(),
    str: STRING,
    Sequence[float]: NUMBERS.in_float32(),
}


def _kind(hint: Any) -> Rule | None:
    args = typing.get_args(hint)
    if type(None) in args:
        (inner,) = (_kind(arg) for arg in args if arg is not type(None))
        return inner and inner.optional()
    return KINDS.get(hint)


@cache
def _scheduler_rules(target: str) -> dict[str, Rule]:
    """The kinds the scheduler factory `target` annotates its keywords with (and Timeline's methods the shared
    keys); raises ImportError or ValueError when `target` names no function."""
    hints = {}
    for function in (Timeline.warmup, Timeline.with_warmup, get_method(target)):
        hints |= typing.get_type_hints(function)
    return {f"scheduler.{key}": rule for key, hint in hints.items() if (rule := _kind(hint))}


def _owner_rules(cfg: DictConfig, group: str, refused: Collection[str]) -> dict[str, Rule]:
    """The KEY_RULES of the module the group's `_target_` names, when it is this project's and accepted (a
    dataset's, a model's, an optimizer factory's); for a torch.optim class (or a target refused), torch's table."""
    fallback = optimizers.KEY_RULES if group == "optimizer" else {}
    module = str(_get(cfg, f"{group}._target_", data.FASHION_MNIST if group == "data" else "")).rpartition(".")[0]
    if group in refused or not module or not _in_project(module):
        return fallback
    return getattr(importlib.import_module(module), "KEY_RULES", fallback)


def key_rules(cfg: DictConfig, refused: Collection[str] = ()) -> dict[str, Rule]:
    """Every key a run config may have, with its rule: SCHEMA's, its scheduler factory's kinds, and the KEY_RULES
    of its model's, optimizer's and dataset's modules; a group in `refused` (its `_target_` is not accepted) has
    none of its own."""
    scheduler = {} if "scheduler" in refused else _scheduler_rules(str(cfg.scheduler._target_))
    owned = {group: _owner_rules(cfg, group, refused) for group in ("model", "optimizer", "data")}
    return scheduler | LEADING_KEYS | owned["model"] | owned["optimizer"] | owned["data"] | SCHEMA


def _get(cfg: DictConfig, key: str, default: Any = None) -> Any:
    return OmegaConf.select(cfg, key, default=default, throw_on_missing=False)


def _shown(value: Any) -> str:
    return repr(OmegaConf.to_container(value) if isinstance(value, DictConfig | ListConfig) else value)


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError listing every problem of `cfg`; return quietly when it can run."""
    problems = _target_problems(cfg)
    problems += _key_problems(cfg, {problem.key.removesuffix("._target_") for problem in problems})
    problems += _added_key_problems(cfg) + _machine_problems(cfg)
    if not any(problem.key.startswith("optimizer") for problem in problems):
        problems += _optimizer_problems(cfg)
    if not any(problem.key in SCHEDULE_INPUTS or problem.key.startswith("scheduler") for problem in problems):
        schedule_problem, peak_lr = _schedule_problems(cfg)
        problems += [Problem("scheduler", schedule_problem)] if schedule_problem else []
        if not problems:
            problems += _first_step_problems(cfg, peak_lr)
    if problems:
        raise ConfigError(problems)


def _target_problems(cfg: DictConfig) -> list[Problem]:
    """Each `_target_` of the run config (Hydra's own section aside) that is not one of its group's TARGETS: a
    module outside those allowed is refused by its name, before anything imports it."""
    problems = []
    for key in _target_keys(cfg):
        group = key.removesuffix("._target_")
        target, rule = _get(cfg, key), TARGETS.get(group)
        allowed = rule.allowed if rule else f"no _target_ here (only {', '.join(TARGETS)} name one)"
        if rule and isinstance(target, str) and rule.modules(target) and rule.test(_located(target)):
            continue
        problems.append(Problem(key, f"{key}={_shown(target)}: allowed is {allowed}"))
    return problems


def _target_keys(node: DictConfig, prefix: str = "") -> list[str]:
    """The dotted keys of every `_target_` below `node`, but in Hydra's section."""
    keys = []
    for key, value in node.items_ex(resolve=False) if isinstance(node, DictConfig) else []:
        if key == "_target_":
            keys.append(f"{prefix}{key}")
        elif isinstance(value, DictConfig) and f"{prefix}{key}" != "hydra":
            keys += _target_keys(value, f"{prefix}{key}.")
    return keys


def _located(target: str) -> Any:
    """The object a dotted path names (its module imported), or None when there is none."""
    try:
        return _locate(target)
    except (ImportError, AttributeError, ValueError):
        return None


def _key_problems(cfg: DictConfig, refused: Collection[str] = ()) -> list[Problem]:
    """Each key whose value its rule refuses (a group's own keys once its `_target_` is accepted, not `refused`);
    then each optimizer, scheduler or ramp number beyond float32."""
    problems, missing = [], object()
    for key, rule in key_rules(cfg, refused).items():
        value = _get(cfg, key, missing)
        if value is missing:  # another option's key (SGD's momentum under Adam)
            continue
        numbers = value if isinstance(value, ListConfig) else [value]
        if not rule.test(value):
            problems.append(Problem(key, f"{key}={_shown(value)}: allowed is {rule.allowed}"))
        elif rule.float32 and any(NUMBER.test(n) and abs(n) > FLOAT32_MAX for n in numbers):
            allowed = "are numbers" if isinstance(value, ListConfig) else "is a number"
            problems.append(Problem(key, f"{key}={_shown(value)}: allowed {allowed} of {FLOAT32_BOUND}"))
    return problems


def _added_key_problems(cfg: DictConfig) -> list[Problem]:
    """`+group.key=value` adds a key the group does not have: a typo Hydra accepts, so it is refused here."""
    if not HydraConfig.initialized():
        return []
    overrides = OverridesParser.create().parse_overrides(list(HydraConfig.get().overrides.task))
    # `+experiment@_global_=x` picks a config file
    added = [o.key_or_group for o in overrides if o.is_add() and not (CONF_DIR / o.key_or_group).is_dir()]
    problems = []
    for key in added:
        group = key.rpartition(".")[0]
        node = _get(cfg, group) if group else None
        own = own_keys(node, group, added) if isinstance(node, DictConfig) else None
        where = "" if own is None else f"; {group} has: {own}" if own else f"; {group} has no keys of its own"
        problems.append(Problem(key, f"{key}: unknown key (added with +{key}=...){where}"))
    return problems


def own_keys(node: DictConfig, group: str, added: Collection[str] = ()) -> str:
    """The keys the group `node` (at `group`) has of its own: not Hydra's `_target_`-like ones, nor the `added`."""
    return ", ".join(str(k) for k in node if not str(k).startswith("_") and f"{group}.{k}" not in added)


def _machine_problems(cfg: DictConfig) -> list[Problem]:
    """Values this machine cannot serve: a resume folder without last.pt (or a file, such as the run's last.pt,
    named instead of its folder), CUDA where there is none."""
    problems = []
    resume = _get(cfg, "resume")
    allowed = f"allowed is {RUN_FOLDER.allowed}"
    if FOLDER.test(resume) and (path := Path(resume).expanduser()).is_file():
        parent = path.resolve().parent
        meant = (
            f"did you mean resume={hydra_quoted(str(parent))}?"
            if (parent / LAST).is_file()
            else f"its folder {parent} holds no {LAST} either"
        )
        problems.append(Problem("resume", f"resume={resume!r}: that is a file, not a run folder ({meant}); {allowed}"))
    elif FOLDER.test(resume) and not (path / LAST).is_file():
        found = "does not exist" if not path.exists() else f"holds no {LAST}"
        problems.append(Problem("resume", f"resume={resume!r}: that folder {found}; {allowed}"))
    if _get(cfg, "trainer.device") == "cuda" and not torch.cuda.is_available():
        message = "trainer.device='cuda': CUDA is not available on this machine; use auto or cpu"
        problems.append(Problem("trainer.device", message))
    return problems


def _optimizer_problems(cfg: DictConfig) -> list[Problem]:
    """torch's own checks of keys that are each fine (e.g. nesterov needs momentum)."""
    try:
        stand_in_optimizer(cfg.optimizer)
    except (TypeError, ValueError) as error:
        return [Problem("optimizer", f"optimizer: {error}")]
    return []


def planned_steps_per_epoch(cfg: DictConfig) -> int:
    """Optimizer steps per epoch of the run `cfg` describes, from its sizes alone (the last batch may be short)."""
    return math.ceil((cfg.data.train_size or data.info(cfg.data).train_size) / cfg.data.batch_size)


def _schedule_problems(cfg: DictConfig) -> tuple[str | None, float]:
    """Build the schedule on the run's timeline once, and evaluate it at its updates, to catch bad values: the
    problem (None without one), and the peak lr of the curve."""
    timeline = run_timeline(cfg, planned_steps_per_epoch(cfg))
    base_lr = timeline.base_lr
    keys = ", ".join(f"{key}={value!r}" for key, value in cfg.scheduler.items() if not str(key).startswith("_"))
    about = f" (the schedule's keys: {keys})"  # ends each message below
    try:
        schedule = build_schedule(cfg.scheduler, timeline)
        multipliers = [(t, schedule(t)) for t in sampled_updates(timeline.total)]
    except ScheduleConfigError as error:
        return str(error), base_lr
    except (TypeError, ValueError, ArithmeticError) as error:  # a value out of its domain
        return f"scheduler: {error}{about}", base_lr
    bad = [t for t, multiplier in multipliers if not (math.isfinite(multiplier) and multiplier >= 0)]
    if bad:
        return f"scheduler: the lr multiplier is negative or not finite at update {bad[0]}{about}", base_lr
    over = [(t, multiplier) for t, multiplier in multipliers if base_lr * multiplier > FLOAT32_MAX]
    if over:
        t, multiplier = over[0]
        return (
            f"scheduler: the lr reaches {base_lr * multiplier:.4g} (optimizer.lr={base_lr:g} times {multiplier:.4g}) "
            f"at update {t}; allowed is an lr of {FLOAT32_BOUND}{about}"
        ), base_lr
    return None, base_lr * max(multiplier for _, multiplier in multipliers)


def _first_step_problems(cfg: DictConfig, lr: float) -> list[Problem]:
    """One step of the run's optimizer at `lr` on a stand-in weight: numbers that are each within float32 can
    still combine beyond it (Adam's first step divides the lr by 1 - beta1), which torch refuses mid-run."""
    optimizer = stand_in_optimizer(cfg.optimizer, with_gradient=True)  # builds: _optimizer_problems found nothing
    for group in optimizer.param_groups:
        group["lr"] = lr
    try:
        optimizer.step()
    except RuntimeError as error:
        message = (
            f"optimizer.lr={cfg.optimizer.lr!r}: {type(optimizer).__name__}'s first step at the schedule's peak lr "
            f"{lr:g} fails ({error}); allowed is a smaller lr, whose step stays within float32 ({FLOAT32_MAX:.8g})"
        )
        return [Problem("optimizer.lr", message)]
    return []
