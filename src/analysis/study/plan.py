"""A study's plan: its schedules, lr grids, seeds and job folders, resolved from a preset, the study options and
the run overrides, and checked before anything trains (every job's config is validated as src.train would). A
study continued from its folder is its record (study.json) read back and checked: against the plan its own command
builds, and against the runs already in the folder.
"""

from __future__ import annotations

import fnmatch
import json
import re
import reprlib
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, ListConfig, OmegaConf

from src import REPO_ROOT
from src.analysis.runs import TAIL_METRIC
from src.analysis.stats import SPENDING
from src.config.hooks import register_resolvers
from src.config.rules import INTEGER, NUMBER, POSITIVE_NUMBER, STRING, Rule
from src.lr_range.suggest import rounded_lr
from src.runs.errors import error_reason
from src.runs.resume import override_key

CONF_DIR = REPO_ROOT / "conf"
STUDY_FILE = "study.json"
STAGES = ("tune", "confirm")
# What a study may judge the schedules on (study.metric), in the report's words.
METRICS = {"test_acc": "final test accuracy", TAIL_METRIC: "mean test accuracy over the last 10% of epochs"}
PICK_RULES = ("metric", "best_test_acc")
# Keys a study sets for each job itself; the command line may not set them.
STUDY_OWNED = ("optimizer.lr", "lr_from", "seed", "labels.stage", "labels.schedule", "resume")
STUDY_OWNED += ("checkpoint.skip_finished", "checkpoint.pause_after_epoch", "checkpoint.branch_from")
JOB_FOLDER = "lr=${optimizer.lr},seed=${seed}"
JOB_PATH = "${labels.stage}/${labels.schedule}/" + JOB_FOLDER  # below the study folder
# A schedule's label names its folders (<stage>/<label>/, logs/<stage>-<label>.log): a plain name, never a path.
SCHEDULE_NAME = STRING.where(
    lambda name: re.fullmatch(r"[A-Za-z0-9_.-]{1,100}", name) is not None and name.strip(".") != "",
    "a plain name of 1 to 100 ASCII letters, digits, '_', '-' and '.', not only dots (it names the schedule's folders)",
)
# The most a study runs: far beyond any real comparison (10,000 LeNet jobs are days of GPU time), and small enough
# that a stage's multirun command and the study's records stay ordinary sizes (docs/study.md).
MAX_SCHEDULES = 100
MAX_LRS = 100  # per schedule: study.tune.points, or the length of study.tune.lrs
MAX_SEEDS = 1000  # study.tune.seeds, and study.confirm.seeds
MAX_JOBS = 10_000
NEW_STUDY = "To run this study afresh, give a new folder: python -m src.study ... study.dir=<new folder>"


class StudyError(ValueError):
    """Bad study input; the message names the key, the value and what is allowed."""


@dataclass
class Schedule:
    """One contestant: its label in the study (its folders' name) and the run overrides that set it up. Under
    `study.conditions` a contestant is a schedule under one condition, labelled `<schedule>@<condition>`, its
    overrides the condition's then the schedule's; `family` is the schedule's own label."""

    name: str
    overrides: list[str]
    family: str = ""
    condition: str | None = None

    def __post_init__(self) -> None:
        self.family = self.family or self.name


def cell_name(family: str, condition: str | None) -> str:
    """The label of a schedule under a condition ('@' is not allowed in a label of either, so it is unique)."""
    return family if condition is None else f"{family}@{condition}"


@dataclass
class Plan:
    """Everything a study will run, resolved from the preset, the study options and the run overrides."""

    preset: str
    options: list[str]
    run_overrides: list[str]
    schedules: list[Schedule]
    lrs: dict[str, list[str]]  # per schedule, as written into overrides and folder names
    tune_seeds: list[int]
    tune_overrides: list[str]
    rungs: dict[str, list[int]]  # per schedule, the epochs where successive halving judges its lrs; the last = all
    halving: float | None  # keep the best 1/halving of a schedule's lrs at each rung; None = no halving
    confirm_seeds: list[int]  # the shared sequence, up to the most seeds a schedule may take
    confirm_rounds: list[int]  # the seed counts at which the sequential rule looks
    spending: str  # its alpha-spending function (src.analysis.stats.SPENDING)
    confirm_epochs: dict[str, int]  # per schedule, for the progress bar
    pick: str
    metric: str
    baseline: str | None
    target_acc: float
    margin: float  # accuracy points: a difference within +-margin of the best is tied, once TOST shows it
    conditions: dict[str, list[str]]  # {name: run overrides}; {} = the run overrides alone, one condition
    # {label: {trunk: label, epoch: e}}: the confirm runs of a schedule under a shorter budget that branch from its
    # run under the longest one after epoch e (where their lr curves part), when both have the same lr and seed
    branches: dict[str, dict[str, Any]]
    dir: str
    jobs: dict[str, int]  # per stage, the most jobs it runs

    def condition_names(self) -> list[str | None]:
        """The conditions in their order; [None] for a study without conditions."""
        return list(self.conditions) or [None]

    def cells(self, condition: str | None) -> list[Schedule]:
        """The contestants under one condition (every schedule, once)."""
        return [schedule for schedule in self.schedules if schedule.condition == condition]

    def schedule(self, name: str) -> Schedule | None:
        """The contestant of this label; None for a label the plan does not have."""
        return next((schedule for schedule in self.schedules if schedule.name == name), None)

    def job_overrides(self, stage: str, schedule: Schedule) -> list[str]:
        """The run overrides of a stage's jobs of one schedule, as validated and as launched (without a progress
        bar of their own unless asked: the study shows its own). Hydra's own (`hydra/launcher=...`,
        `hydra.launcher.*`) are the launch's, not a job's: `hydra_overrides`."""
        overrides = _merge(self.run_overrides, self.tune_overrides if stage == "tune" else [], schedule.overrides)
        overrides = [override for override in overrides if not is_hydra_override(override)]
        if "trainer.progress" not in {override_key(override) for override in overrides}:
            overrides.append("trainer.progress=false")
        return overrides

    def hydra_overrides(self) -> list[str]:
        """The run overrides that configure Hydra itself (the launcher and its settings), given to the one launch
        that runs every stage."""
        return [override for override in self.run_overrides if is_hydra_override(override)]

    def stage_dir(self, stage: str, schedule: str) -> Path:
        return Path(self.dir) / stage / schedule

    def job_dir(self, stage: str, schedule: str, lr: str, seed: int) -> Path:
        return self.stage_dir(stage, schedule) / JOB_FOLDER.replace("${optimizer.lr}", lr).replace("${seed}", str(seed))

    def identity(self) -> dict[str, Any]:
        """What must not change when a study is continued."""
        return {key: value for key, value in asdict(self).items() if key not in ("options", "dir", "jobs")}


def is_hydra_override(override: str) -> bool:
    return override_key(override).startswith(("hydra.", "hydra/"))


def rungs_of(epochs: int, halving: float | None, first_rung: float) -> list[int]:
    """The epochs at which successive halving judges a schedule's lrs: the budget, and each 1/halving of the one
    above while it is at least `first_rung` of the budget (at least one epoch apart): 4 epochs, halving 2, first
    rung 0.25 give [1, 2, 4]; 30 epochs, 3, 0.1 give [3, 10, 30]. Without halving: the budget alone."""
    rungs = [epochs]
    if halving is None:
        return rungs
    fraction = 1 / halving
    while fraction >= first_rung - 1e-9 and (rung := max(1, round(epochs * fraction))) < rungs[0]:
        rungs.insert(0, rung)
        fraction /= halving
    return rungs


def rounds_of(first: int, most: int, add: int) -> list[int]:
    """The seed counts at which the sequential rule looks: `first`, then `add` more each round, up to `most`."""
    return [*range(first, most, add), most]


def _list_of(rule: Rule, allowed: str) -> Rule:
    return Rule(lambda value: isinstance(value, list) and all(map(rule.test, value)), allowed)


def _dict_of(rule: Rule, allowed: str) -> Rule:
    return Rule(lambda value: isinstance(value, dict) and all(map(rule.test, value.values())), allowed)


STRINGS = _list_of(STRING, "a list of strings")
SCHEDULE_RECORD = Rule(
    lambda item: (
        isinstance(item, dict)
        and item.keys() == {"name", "overrides", "family", "condition"}
        and STRINGS.test(item["overrides"])
    ),
    "{name: <label>, overrides: [<override>, ...], family: <label>, condition: <name> or null}",
)
# What study.json holds: each key of Plan, with the rule of its type; a record that is not this is refused before it
# is used.
KINDS = {
    "str": STRING,
    "str | None": STRING.optional(),
    "float": NUMBER,
    "list[str]": STRINGS,
    "list[int]": _list_of(INTEGER, "a list of integers"),
    "list[Schedule]": _list_of(SCHEDULE_RECORD, f"a list of {SCHEDULE_RECORD.allowed}"),
    "float | None": NUMBER.optional(),
    "dict[str, list[str]]": _dict_of(STRINGS, "{<name>: [<string>, ...]}"),
    "dict[str, list[int]]": _dict_of(_list_of(INTEGER, "a list of integers"), "{<schedule>: [<epoch>, ...]}"),
    "dict[str, int]": _dict_of(INTEGER, "{<name>: <count>}"),
    "dict[str, dict[str, Any]]": _dict_of(
        Rule(
            lambda v: isinstance(v, dict) and v.keys() == {"trunk", "epoch"} and INTEGER.test(v["epoch"]),
            "{trunk: <label>, epoch: <e>}",
        ),
        "{<label>: {trunk: <label>, epoch: <e>}}",
    ),
}
PLAN_RECORD = {field.name: KINDS[field.type] for field in fields(Plan)}


def parse_args(argv: list[str]) -> tuple[str | None, list[str], list[str]]:
    """Split the command line into the preset (`study=quick`), study options (`study.key=value`, without the
    `study.` prefix) and run overrides (everything else)."""
    preset, options, run = None, [], []
    for arg in argv:
        if arg in ("-m", "--multirun"):
            raise StudyError(f"{arg}: a study runs its multiruns itself; give the run overrides alone")
        if arg.startswith("study="):
            preset = arg.split("=", 1)[1]
        elif arg.startswith("study."):
            options.append(arg.removeprefix("study."))
        else:
            run.append(arg)
    return preset, options, run


def _merge(*override_lists: list[str]) -> list[str]:
    """Overrides in order, a later value of a key replacing an earlier one in its place."""
    merged: dict[str, str] = {}
    for overrides in override_lists:
        for override in overrides:
            merged[override_key(override)] = override  # an existing key keeps its place
    return list(merged.values())


def presets() -> list[str]:
    return sorted(path.stem for path in (CONF_DIR / "study").glob("*.yaml") if path.stem != "base")


def load_spec(preset: str, options: list[str]) -> DictConfig:
    """The study config: conf/study/<preset>.yaml with the study options applied."""
    if preset not in presets():
        raise StudyError(f"study={preset!r}: allowed are {', '.join(presets())}")
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR / "study"), version_base="1.3"):
            return compose(config_name=preset, overrides=options)
    except Exception as error:  # Hydra's own message names the key
        raise StudyError(f"study options {' '.join(options)}: {error}") from None
    finally:
        GlobalHydra.instance().clear()


def compose_run(overrides: list[str]) -> DictConfig:
    """The run config `python -m src.train OVERRIDES` would train, with Hydra's section (for validation)."""
    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return cfg


def _schedules(spec: DictConfig) -> list[Schedule]:
    names = sorted(path.stem for path in (CONF_DIR / "scheduler").glob("*.yaml"))
    schedules: list[Schedule] = []
    for entry in spec.schedules:
        if isinstance(entry, str):
            matched = fnmatch.filter(names, entry)
            if not matched:
                raise StudyError(f"study.schedules: {entry!r} names no schedule; allowed are {', '.join(names)}")
            schedules += [Schedule(name, [f"scheduler={name}"]) for name in matched]
        elif isinstance(entry, DictConfig) and isinstance(entry.get("name"), str) and "overrides" in entry:
            schedules.append(Schedule(entry.name, [str(item) for item in entry.overrides]))
        else:
            raise StudyError(
                f"study.schedules: {OmegaConf.to_container(entry) if isinstance(entry, DictConfig) else entry!r}: "
                "allowed is a schedule name, a pattern, or {name: <label>, overrides: [...]}"
            )
    if unsafe := [schedule.name for schedule in schedules if not SCHEDULE_NAME.test(schedule.name)]:
        raise StudyError(
            "\n".join(f"study.schedules: name {name!r}: allowed is {SCHEDULE_NAME.allowed}" for name in unsafe)
        )
    labels = [schedule.name for schedule in schedules]
    if len(set(labels)) != len(labels):
        raise StudyError(f"study.schedules: a label appears twice ({', '.join(labels)}); give each its own name")
    if len(schedules) < 2:
        raise StudyError(f"study.schedules={labels}: a study compares at least two schedules")
    if spec.baseline is not None and spec.baseline not in labels:
        raise StudyError(
            f"study.baseline={spec.baseline!r}: allowed is null or one of the study's schedules: {', '.join(labels)}"
        )
    conditions = _conditions(spec)
    if not conditions:
        return schedules
    return [
        Schedule(cell_name(schedule.name, name), _merge(overrides, schedule.overrides), schedule.name, name)
        for name, overrides in conditions.items()
        for schedule in schedules
    ]


def _conditions(spec: DictConfig) -> dict[str, list[str]]:
    """study.conditions, checked: [{name: <label>, overrides: [<run override>, ...]}, ...] as {name: overrides},
    each name a plain label given once, no override of a key the study sets itself."""
    entries = spec.get("conditions")
    if entries is None or (isinstance(entries, ListConfig) and len(entries) == 0):
        return {}
    shape = "a list of {name: <label>, overrides: [<run override>, ...]}"
    if not isinstance(entries, ListConfig) or not all(
        isinstance(entry, DictConfig)
        and set(entry.keys()) == {"name", "overrides"}
        and isinstance(entry.overrides, ListConfig)
        and all(isinstance(item, str) for item in entry.overrides)
        for entry in entries
    ):
        shown = OmegaConf.to_container(entries) if isinstance(entries, DictConfig | ListConfig) else entries
        raise StudyError(
            f"study.conditions={shown!r}: allowed is {shape}, e.g. "
            """[{name: short, overrides: ["trainer.epochs=2"]}, {name: long, overrides: ["trainer.epochs=20"]}]"""
        )
    conditions = {str(entry.name): [str(item) for item in entry.overrides] for entry in entries}
    problems = [
        f"study.conditions: name {name!r}: allowed is {SCHEDULE_NAME.allowed}"
        for name in conditions
        if not SCHEDULE_NAME.test(str(name))
    ]
    problems += [
        f"study.conditions.{name}: {override}: the study sets {', '.join(STUDY_OWNED)} itself"
        for name, overrides in conditions.items()
        for override in overrides
        if override_key(override) in STUDY_OWNED or is_hydra_override(override)
    ]
    if len(conditions) != len(entries):
        problems.append(f"study.conditions: a name appears twice ({', '.join(e.name for e in entries)})")
    if len(conditions) == 1:
        problems.append("study.conditions: one condition is the plain study; give two or more, or none")
    if problems:
        raise StudyError("\n".join(problems))
    return conditions


def _run_problem(overrides: tuple[str, ...]) -> Exception | None:
    """What stops the run these overrides describe (a ConfigError listing its problems), or None."""
    from src.config.validation import validate

    try:
        validate(compose_run(list(overrides)))
    except Exception as error:
        return error
    return None


def lr_grid(centre: float, factor: float, points: int) -> list[str]:
    """`points` lrs log-spaced around `centre`, `factor` apart, to 3 significant digits (clean folder names)."""
    middle = (points - 1) / 2
    return [repr(rounded_lr(centre * factor ** (k - middle))) for k in range(points)]


def _check_spec(spec: DictConfig) -> None:
    tune, confirm = spec.tune, spec.confirm
    problems = []
    if spec.metric not in METRICS:
        problems.append(f"study.metric={spec.metric!r}: allowed are {', '.join(METRICS)}")
    if tune.pick not in PICK_RULES:
        problems.append(f"study.tune.pick={tune.pick!r}: allowed are {', '.join(PICK_RULES)}")
    if tune.lrs is None:
        if not (isinstance(tune.points, int) and tune.points >= 2):
            problems.append(f"study.tune.points={tune.points!r}: allowed is an integer >= 2")
        if not (isinstance(tune.factor, int | float) and tune.factor > 1):
            problems.append(f"study.tune.factor={tune.factor!r}: allowed is a number > 1")
        if tune.centre is not None and not (isinstance(tune.centre, int | float) and tune.centre > 0):
            problems.append(f"study.tune.centre={tune.centre!r}: allowed is null or a number > 0")
        if tune.centre is not None and tune.centre_from is not None:
            problems.append("study.tune.centre and study.tune.centre_from are both given: keep one")
    elif not (len(tune.lrs) >= 1 and all(map(POSITIVE_NUMBER.test, tune.lrs))):
        problems.append(f"study.tune.lrs={list(tune.lrs)!r}: allowed is null or a list of numbers > 0")
    seeds = list(tune.seeds) if tune.seeds is not None else None
    if not (seeds and all(isinstance(seed, int) and seed >= 0 for seed in seeds) and len(set(seeds)) == len(seeds)):
        problems.append(f"study.tune.seeds={seeds!r}: allowed is a list of distinct integers >= 0")
    if not (isinstance(confirm.seeds, int) and confirm.seeds >= 2):
        problems.append(f"study.confirm.seeds={confirm.seeds!r}: allowed is an integer >= 2 (a verdict needs spread)")
    if tune.halving is not None and not (isinstance(tune.halving, int | float) and tune.halving > 1):
        problems.append(f"study.tune.halving={tune.halving!r}: allowed is null (no halving) or a number > 1")
    if not (isinstance(tune.first_rung, int | float) and 0 < tune.first_rung < 1):
        problems.append(f"study.tune.first_rung={tune.first_rung!r}: allowed is a fraction of the budget, 0 < f < 1")
    most = confirm.max_seeds
    if most is not None and not (isinstance(most, int) and isinstance(confirm.seeds, int) and most >= confirm.seeds):
        problems.append(
            f"study.confirm.max_seeds={most!r}: allowed is null (study.confirm.seeds, one look) or an integer >= "
            f"study.confirm.seeds ({confirm.seeds!r})"
        )
    if not (isinstance(confirm.add, int) and confirm.add >= 1):
        problems.append(f"study.confirm.add={confirm.add!r}: allowed is an integer >= 1 (seeds per round)")
    if confirm.spending not in SPENDING:
        problems.append(f"study.confirm.spending={confirm.spending!r}: allowed are {', '.join(SPENDING)}")
    if not (isinstance(confirm.first_seed, int) and confirm.first_seed >= 0):
        problems.append(f"study.confirm.first_seed={confirm.first_seed!r}: allowed is an integer >= 0")
    if not (isinstance(spec.target_acc, int | float) and 0 < spec.target_acc <= 1):
        problems.append(f"study.target_acc={spec.target_acc!r}: allowed is a number with 0 < target <= 1")
    if not (isinstance(spec.margin, int | float) and not isinstance(spec.margin, bool) and 0 < spec.margin < 100):
        problems.append(f"study.margin={spec.margin!r}: allowed is a number of accuracy points, 0 < margin < 100")
    if problems:
        raise StudyError("\n".join(problems))


def _check_size(spec: DictConfig, schedules: list[Schedule]) -> None:
    """Refuse a study beyond the bounds before anything is composed or trained: a huge count would train all of
    stage 1 and then fail to launch stage 2 (its seeds overflow the command line), or overflow the lr grid."""
    lrs = spec.tune.points if spec.tune.lrs is None else len(spec.tune.lrs)
    counts = {
        "study.schedules": (len(schedules), MAX_SCHEDULES, "schedules"),
        "study.tune.lrs" if spec.tune.lrs is not None else "study.tune.points": (lrs, MAX_LRS, "lrs"),
        "study.tune.seeds": (len(spec.tune.seeds), MAX_SEEDS, "seeds"),
        "study.confirm.seeds" if spec.confirm.max_seeds is None else "study.confirm.max_seeds": (
            _most_seeds(spec),
            MAX_SEEDS,
            "seeds",
        ),
    }
    problems = [
        f"{key}: {count} {what}; allowed are at most {bound}"
        for key, (count, bound, what) in counts.items()
        if count > bound
    ]
    tune, confirm = len(schedules) * lrs * len(spec.tune.seeds), len(schedules) * _most_seeds(spec)
    if problems or tune + confirm > MAX_JOBS:
        problems.append(
            f"the study would run {tune + confirm} jobs ({tune} to tune, {confirm} to confirm); a study runs at most "
            f"{MAX_JOBS} (docs/study.md): give fewer schedules, lrs or seeds"
        )
        raise StudyError("\n".join(problems))


def _most_seeds(spec: DictConfig) -> int:
    return spec.confirm.seeds if spec.confirm.max_seeds is None else spec.confirm.max_seeds


def make_plan(preset: str, options: list[str], run_overrides: list[str]) -> Plan:
    """Resolve and check the whole study before anything runs: every job's config is validated as src.train
    would validate it (at the smallest and largest lr of its grid, in both stages)."""
    from src.config.rules import ConfigError

    owned = [
        override
        for override in run_overrides
        if override_key(override) in STUDY_OWNED
        or override_key(override).startswith(("hydra.sweep", "hydra.run", "hydra.mode"))
    ]
    if owned:
        raise StudyError(
            f"{' '.join(owned)}: the study sets {', '.join(STUDY_OWNED)} and the sweep folders for each job; "
            "choose lrs with study.tune.lrs, study.tune.centre or study.tune.centre_from=<lr_find folder>, seeds "
            "with study.tune.seeds and study.confirm.seeds"
        )
    spec = load_spec(preset, options)
    _check_spec(spec)
    schedules = _schedules(spec)
    _check_size(spec, schedules)
    run_overrides = _merge([str(item) for item in spec.run], run_overrides)
    tune_seeds = [int(seed) for seed in spec.tune.seeds]
    centre = spec.tune.centre
    if spec.tune.centre_from is not None and spec.tune.lrs is None:
        from src.lr_range.suggest import SuggestionError, read_suggestion

        try:
            centre = read_suggestion(spec.tune.centre_from)
        except SuggestionError as error:
            raise StudyError(f"study.tune.centre_from={spec.tune.centre_from!r}: {error}") from None
    lrs: dict[str, list[str]] = {}
    rungs: dict[str, list[int]] = {}
    confirm_epochs: dict[str, int] = {}
    tune_overrides = [str(item) for item in spec.tune.overrides]
    for schedule in schedules:
        base = _merge(run_overrides, schedule.overrides)
        try:
            cfg = compose_run(base)
            tune_cfg = compose_run(_merge(run_overrides, tune_overrides, schedule.overrides)) if tune_overrides else cfg
        except Exception as error:
            raise StudyError(f"schedule {schedule.name} ({' '.join(base)}): {error}") from None
        confirm_epochs[schedule.name] = int(cfg.trainer.epochs)
        rungs[schedule.name] = rungs_of(int(tune_cfg.trainer.epochs), spec.tune.halving, spec.tune.first_rung)
        if OmegaConf.select(cfg, "hydra.sweeper.params"):
            raise StudyError(
                f"schedule {schedule.name} ({' '.join(base)}): a sweep preset (hydra.sweeper.params "
                f"{OmegaConf.to_container(cfg.hydra.sweeper.params)}); a study runs its own sweeps, so give a "
                "single-run preset"
            )
        if spec.tune.lrs is None:  # around the centre given, else around the schedule's own lr
            try:
                lrs[schedule.name] = lr_grid(centre or float(cfg.optimizer.lr), spec.tune.factor, spec.tune.points)
            except OverflowError:
                raise StudyError(
                    f"study.tune.factor={spec.tune.factor!r} over study.tune.points={spec.tune.points}: the grid's "
                    "outer lrs overflow; allowed is a grid of numbers (a smaller factor or fewer points)"
                ) from None
        else:
            lrs[schedule.name] = [repr(float(lr)) for lr in spec.tune.lrs]
    folder = spec.dir or str(Path(cfg.output_root) / "studies" / datetime.now().strftime("%Y-%m-%d/%H-%M-%S"))
    confirm_seeds = list(range(spec.confirm.first_seed, spec.confirm.first_seed + _most_seeds(spec)))
    plan = Plan(
        preset=preset,
        options=options,
        run_overrides=run_overrides,
        schedules=schedules,
        lrs=lrs,
        tune_seeds=tune_seeds,
        tune_overrides=tune_overrides,
        rungs=rungs,
        halving=None if spec.tune.halving is None else float(spec.tune.halving),
        confirm_seeds=confirm_seeds,
        confirm_rounds=rounds_of(spec.confirm.seeds, _most_seeds(spec), spec.confirm.add),
        spending=spec.confirm.spending,
        confirm_epochs=confirm_epochs,
        pick=spec.tune.pick,
        metric=spec.metric,
        baseline=spec.baseline,
        target_acc=float(spec.target_acc),
        margin=float(spec.margin),
        conditions=_conditions(spec),
        branches={},
        dir=str(Path(folder).expanduser().resolve()),
        jobs={  # the most: without halving's drops and the sequential rule's stops
            "tune": sum(len(grid) for grid in lrs.values()) * len(tune_seeds),
            "confirm": len(schedules) * len(confirm_seeds),
        },
    )
    problems: list[str] = []
    check = cache(_run_problem)  # without tune overrides, both stages of a schedule run the same configs
    seed = max(*tune_seeds, *confirm_seeds)  # the one that may be beyond what a run allows
    for schedule in schedules:
        grid = sorted({float(lr) for lr in lrs[schedule.name]})
        for stage in STAGES:
            job = plan.job_overrides(stage, schedule)
            for lr in {grid[0], grid[-1]}:
                error = check((*job, f"optimizer.lr={lr}", f"seed={seed}"))
                if isinstance(error, ConfigError):
                    problems.append(f"schedule {schedule.name}, {stage} stage, optimizer.lr={lr}:\n{error}")
                elif error is not None:
                    problems.append(f"schedule {schedule.name}, {stage} stage: {error}")
    plan.branches = _branches(plan)
    GlobalHydra.instance().clear()
    if problems:
        raise StudyError("\n".join(dict.fromkeys(problems)))
    return plan


def _branches(plan: Plan) -> dict[str, dict[str, Any]]:
    """Where a schedule's confirm run under a shorter budget can branch from its run under the longest budget
    (src.training.branch): the two configs differ only in what a branch may change, and their lr curves agree on
    at least the first epoch. A schedule whose curve depends on the run's length from the first step (a cosine, a
    warmup given as a ratio) has none: each budget trains once."""
    from src.config.validation import planned_steps_per_epoch
    from src.runs import checkpoints as checkpointing
    from src.training.branch import agreeing_epochs, may_change

    branches: dict[str, dict[str, Any]] = {}
    families: dict[str, list[Schedule]] = {}
    for schedule in plan.schedules:
        families.setdefault(schedule.family, []).append(schedule)
    for cells in families.values():
        if len(cells) < 2:
            continue
        trunk = max(cells, key=lambda cell: plan.confirm_epochs[cell.name])
        lr, seed = plan.lrs[trunk.name][len(plan.lrs[trunk.name]) // 2], plan.confirm_seeds[0]
        trunk_cfg = compose_run([*plan.job_overrides("confirm", trunk), f"optimizer.lr={lr}", f"seed={seed}"])
        for cell in cells:
            if cell is trunk or plan.confirm_epochs[cell.name] >= plan.confirm_epochs[trunk.name]:
                continue
            cfg = compose_run([*plan.job_overrides("confirm", cell), f"optimizer.lr={lr}", f"seed={seed}"])
            changes = checkpointing.changes(checkpointing.run_config(trunk_cfg), checkpointing.run_config(cfg))
            if not all(may_change(change["key"]) for change in changes):
                continue
            epoch = agreeing_epochs(trunk_cfg, cfg, planned_steps_per_epoch(cfg))
            if epoch >= 1:
                branches[cell.name] = {"trunk": trunk.name, "epoch": epoch}
    return branches


def read_plan(path: Path) -> Plan:
    """The plan saved in study.json, its keys and their kinds checked first: a damaged or foreign record is refused
    (with its path and the reason), never half used."""
    try:
        payload = json.loads(path.read_text())
    except (OSError, ValueError) as error:  # ValueError: not UTF-8, not JSON
        raise StudyError(f"{path} cannot be read: {error_reason(error)}. {NEW_STUDY}") from None
    if not isinstance(payload, dict):
        problems = [f"it holds {reprlib.repr(payload)}; allowed is an object with the keys {', '.join(PLAN_RECORD)}"]
    else:
        problems = [f"{key}: missing" for key in PLAN_RECORD if key not in payload]
        problems += [f"{key}: not a key of a study's plan" for key in payload if key not in PLAN_RECORD]
        problems += [
            f"{key}={reprlib.repr(payload[key])}: allowed is {rule.allowed}"
            for key, rule in PLAN_RECORD.items()
            if key in payload and not rule.test(payload[key])
        ]
    if problems:
        listed = "\n".join(f"  - {problem}" for problem in problems)
        raise StudyError(f"{path} is not a study's plan (damaged or edited):\n{listed}\n{NEW_STUDY}")
    schedules = [Schedule(**schedule) for schedule in payload.pop("schedules")]
    return Plan(schedules=schedules, **payload)


def _meaning(parser: OverridesParser, overrides: list[str]) -> dict[tuple[Any, ...], Any]:
    """What overrides set, as Hydra parses them (it records `false` as `False`), but the keys the study sets per
    job: {(kind, key, package): the override}."""
    return {
        (override.type, override.key_or_group, override.package): override
        for override in parser.parse_overrides(overrides)
        if override.key_or_group not in STUDY_OWNED
    }


def _changes(parser: OverridesParser, record: Path, planned: dict[tuple[Any, ...], Any]) -> str:
    """How the job of `record` (its .hydra/overrides.yaml) was trained otherwise than planned, in words; '' when
    it was not, or when the record cannot be read (the report names a run folder it cannot read)."""
    try:
        recorded = _meaning(parser, OmegaConf.to_container(OmegaConf.load(record)))
    except Exception:  # a damaged YAML file, or not a list of overrides, raises many kinds
        return ""
    absent = object()
    changed = [
        key
        for key in {**recorded, **planned}
        if (recorded[key].value() if key in recorded else absent)
        != (planned[key].value() if key in planned else absent)
    ]

    def shown(side: dict[tuple[Any, ...], Any], key: tuple[Any, ...]) -> str:
        return side[key].input_line if key in side else f"no {key[1]}"

    return "; ".join(f"trained with {shown(recorded, key)}, the plan has {shown(planned, key)}" for key in changed)


def runs_problems(plan: Plan) -> list[str]:
    """Each stage and schedule whose jobs in the folder were trained with other overrides than the plan launches:
    continuing would compare runs trained on other settings (a plan edited after its first jobs ran)."""
    parser = OverridesParser.create()
    problems = []
    for stage in STAGES:
        for schedule in plan.schedules:
            planned = _meaning(parser, plan.job_overrides(stage, schedule))
            records = sorted(plan.stage_dir(stage, schedule.name).glob("*/.hydra/overrides.yaml"))
            if differing := [changed for record in records if (changed := _changes(parser, record, planned))]:
                problems.append(f"{stage}/{schedule.name} ({len(differing)} of {len(records)} jobs): {differing[0]}")
    return problems


def resolve(argv: list[str]) -> Plan:
    """The plan of this command: a new study, or the one in `study.dir` continued (its saved command when the
    command line gives nothing else; a different study in that folder is refused). A continued study is checked as
    a new one: its saved command must build its saved plan, and the runs in the folder must have been trained as
    that plan launches them. Its folder is where it is now, whatever folder the record names."""
    preset, options, run_overrides = parse_args(argv)
    folder_option = next((option for option in options if option.startswith("dir=")), None)
    saved_path = Path(folder_option.split("=", 1)[1]).expanduser() / STUDY_FILE if folder_option else None
    if saved_path is not None and saved_path.is_file():
        folder = saved_path.parent.resolve()
        saved = read_plan(saved_path)
        alone = preset is None and not run_overrides and options == [folder_option]
        try:
            current = make_plan(
                *(
                    (saved.preset, saved.options, saved.run_overrides)
                    if alone
                    else (preset or saved.preset, options, run_overrides)
                )
            )
        except StudyError as error:
            if not alone:
                raise
            raise StudyError(
                f"{saved_path}: its saved command is refused, as a new study's would be:\n{error}\n{NEW_STUDY}"
            ) from None
        if changed := [key for key, value in current.identity().items() if saved.identity()[key] != value]:
            if alone:
                raise StudyError(
                    f"{saved_path}: the saved plan is not the one its own command builds (it differs in: "
                    f"{', '.join(changed)}): the file was edited, or written by another version. {NEW_STUDY}"
                )
            raise StudyError(
                f"study.dir={folder} holds another study (it differs in: {', '.join(changed)}). Continue it "
                f"with: python -m src.study study.dir={folder}"
            )
        plan = replace(saved, jobs=current.jobs, dir=str(folder))
        if problems := runs_problems(plan):
            listed = "\n".join(f"  - {problem}" for problem in problems)
            raise StudyError(
                f"{saved_path}: the runs in {folder} were not trained as its plan launches them, so its stages "
                f"would not be comparable:\n{listed}\n{NEW_STUDY}"
            )
        return plan
    if saved_path is not None and saved_path.parent.exists() and any(saved_path.parent.iterdir()):
        raise StudyError(f"study.dir={saved_path.parent}: the folder holds files but no {STUDY_FILE}; pick a new one")
    return make_plan(preset or "quick", options, run_overrides)
