"""The whole config is checked before training: one message with every problem (key, value, what is allowed),
typos refused, and a fuzz of malformed overrides that must each end in a short message, never a traceback."""

from __future__ import annotations

import random

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from src import REPO_ROOT
from src.config.overrides import override_key_problem
from src.config.validation import SCHEMA, ConfigError, key_rules, validate
from tests.conftest import CONF_DIR, run_train


def problems_of(compose_cfg, overrides: list[str]) -> list[str]:
    with pytest.raises(ConfigError) as refused:
        validate(compose_cfg(overrides))
    return refused.value.problems


def test_one_message_lists_every_problem_with_key_value_and_what_is_allowed(compose_cfg):
    problems = problems_of(
        compose_cfg,
        [
            "optimizer.lr=-1",
            "trainer.epochs=0",
            "optimizer.momentum=1",
            "data.batch_size=abc",
            "data.train_size=60001",
            "seed=-3",
            "data.download=maybe",
            "trainer.device=tpu",
        ],
    )
    assert problems == [  # in the order of the schema: top-level keys, then group by group
        "seed=-3: allowed is an integer >= 0 and < 2**63",
        "optimizer.lr=-1: allowed is a number > 0",
        "optimizer.momentum=1: allowed is a number with 0 <= momentum < 1",
        "data.download='maybe': allowed is true or false",
        "data.batch_size='abc': allowed is an integer >= 1",
        "data.train_size=60001: allowed is null (all 60000) or an integer 1..60000",
        "trainer.epochs=0: allowed is an integer >= 1 and <= 10000",
        "trainer.device='tpu': allowed is one of auto, cpu, cuda",
    ]


def test_the_default_run_and_every_bound_itself_are_accepted(compose_cfg):
    validate(compose_cfg([]))
    validate(compose_cfg(["trainer.epochs=10000", "data.train_size=60000", "seed=0", "trainer.threads=1"]))


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["optimizer=adam", "optimizer.betas=[0.9,1.0]"], "optimizer.betas=[0.9, 1.0]: allowed is two numbers"),
        (["optimizer.nesterov=true", "optimizer.momentum=0"], "optimizer: Nesterov momentum requires a momentum"),
        (["scheduler.warmup_steps=5000", "trainer.epochs=1"], "scheduler.warmup_steps=5000: a warmup of 5000 steps"),
        (["scheduler.warmup_ratio=1"], "scheduler.warmup_ratio=1: allowed is a number with 0 <= warmup_ratio < 1"),
        (["scheduler.final_lr=abc"], "scheduler.final_lr='abc': allowed is a number"),
        (["trainer.threads=0"], "trainer.threads=0: allowed is null (all cores) or an integer 1..1024"),
        (["optimizer.lr=1e400"], "optimizer.lr=inf: allowed is a number > 0"),
        (["trainer.epochs=1000000000000"], "trainer.epochs=1000000000000: allowed is an integer >= 1 and <= 10000"),
        (["resume=/no/such/run"], "resume='/no/such/run': that folder does not exist"),
        (["trainer.precision=fp8"], "trainer.precision='fp8': allowed is one of fp32, bf16"),
        (["trainer.compile=yes"], "trainer.compile='yes': allowed is true or false"),
        (["scheduler.warmup_steps=abc"], "scheduler.warmup_steps='abc': allowed is null or an integer"),
        (["scheduler=multistep", "scheduler.milestones=[1,x]"], "scheduler.milestones=[1, 'x']: allowed is a list of"),
        (["data._target_=builtins.open"], "data._target_='builtins.open': allowed is a dataset of this project's"),
        (["scheduler._target_=no.such.factory"], "scheduler._target_='no.such.factory': allowed is a schedule"),
    ],
)
def test_each_kind_of_bad_value_names_its_key(compose_cfg, overrides, expected):
    assert any(problem.startswith(expected) for problem in problems_of(compose_cfg, overrides))


HUGE = ["1e39", "1e308", "-1e308", "inf", "nan"]  # as Hydra parses them: floats beyond float32, or not finite
FLOAT_KEYS = [
    ([], "optimizer.lr"),
    ([], "optimizer.weight_decay"),
    (["optimizer=adam"], "optimizer.eps"),
    (["scheduler=one_cycle"], "scheduler.max_lr"),
    (["scheduler=one_cycle"], "scheduler.div_factor"),
    (["scheduler=exponential"], "scheduler.gamma"),
    (["scheduler=cosine"], "scheduler.final_lr"),
    (["scheduler=noam"], "scheduler.factor"),
]


@pytest.mark.parametrize("value", HUGE)
@pytest.mark.parametrize(("choice", "key"), FLOAT_KEYS, ids=[key for _, key in FLOAT_KEYS])
def test_numbers_the_optimizer_cannot_hold_are_refused_naming_the_key(compose_cfg, choice, key, value):
    (problem,) = problems_of(compose_cfg, [*choice, f"{key}={value}"])
    assert problem.startswith(f"{key}="), problem
    if value in ("1e39", "1e308"):
        assert problem.endswith(
            "allowed is a number of magnitude <= 3.4028235e+38 (the largest float32, which the optimizer computes in)"
        ), problem


def test_a_list_holding_a_number_beyond_float32_is_refused(compose_cfg):
    (problem,) = problems_of(compose_cfg, ["scheduler=piecewise", "scheduler.values=[1.0,1e39,0.1]"])
    assert problem.startswith("scheduler.values=[1.0, 1e+39, 0.1]: allowed are numbers of magnitude <= 3.4028235e+38")


def test_a_schedule_whose_lr_grows_beyond_float32_is_refused_at_the_update_it_does(compose_cfg):
    (problem,) = problems_of(compose_cfg, ["scheduler=exponential", "scheduler.gamma=10", "trainer.epochs=50"])
    # 0.1 * 10 ** (t / 235) passes the largest float32 at update 9290, in epoch 40 of 50
    assert problem.startswith("scheduler: the lr reaches 3.403e+38 (optimizer.lr=0.1 times 3.403e+39) at update 9290;")
    assert "allowed is an lr of magnitude <= 3.4028235e+38" in problem


def test_an_lr_whose_first_adam_step_overflows_float32_is_refused(compose_cfg):
    # 1e38 fits float32, but Adam's first step is lr / (1 - 0.9) = 1e39
    (problem,) = problems_of(compose_cfg, ["optimizer=adam", "optimizer.lr=1e38"])
    assert problem.startswith("optimizer.lr=1e+38: Adam's first step at the schedule's peak lr 1e+38 fails")
    validate(compose_cfg(["optimizer=adam", "optimizer.lr=1e36"]))
    validate(compose_cfg(["optimizer.lr=3e38"]))  # plain SGD takes any float32 lr


def test_each_problem_is_a_record_of_its_key_and_its_line_one_per_key(compose_cfg):
    with pytest.raises(ConfigError) as refused:
        validate(compose_cfg(["optimizer.lr=1e39", "scheduler.interval=hour", "trainer.epochs=0", "+optimizer.foo=1"]))
    assert [problem.key for problem in refused.value.problems] == [
        "scheduler.interval",
        "optimizer.lr",
        "trainer.epochs",
        "optimizer.foo",  # and not torch's "unexpected keyword 'foo'" as well
    ]
    assert str(refused.value).splitlines()[0] == "  - scheduler.interval='hour': allowed is one of step, epoch"


def test_a_key_added_with_plus_is_an_unknown_key_listing_the_known_ones(compose_cfg):
    (problem,) = problems_of(compose_cfg, ["+scheduler.warmup_ration=0.1"])
    assert problem.startswith("scheduler.warmup_ration: unknown key (added with +scheduler.warmup_ration=...)")
    assert "scheduler has: interval, warmup_ratio," in problem and "warmup_ration," not in problem


def test_a_typo_without_plus_is_refused_by_hydra_naming_the_key(compose_cfg):
    with pytest.raises(HydraException, match=r"Could not override 'scheduler.warmup_ration'"):
        compose_cfg(["scheduler.warmup_ration=0.1"])


@pytest.mark.parametrize(
    "argv",
    [
        ["-m", "scheduler=cosine,step", "seed=1,2"],
        ["--multirun", "--cfg", "job", "trainer.epochs=3"],
        ["--info", "all"],
        ["+scheduler.warmup_ration=0.1"],  # an addition: validation names it with the group's keys
        ["++labels.stage=tune"],
        ["~hydra.callbacks.sweep_summary", "~labels.stage"],
        ["hydra.run.dir=/tmp/x", "hydra/launcher=basic", "hydra.job.chdir=false"],
        ["+experiment@_global_=textbook_sqrt", "experiment=textbook_cosine"],
        ["lr=0.1", "epochs=3"],  # unknown, and close to nothing: Hydra's own message
        ["optimizer.lr=[0.1"],  # does not parse: Hydra's own message
    ],
)
def test_override_keys_that_are_known_added_or_not_close_to_a_name_pass_on_to_hydra(argv):
    assert override_key_problem(argv) is None


def test_a_key_close_to_a_known_one_is_named_with_the_likely_one():
    assert override_key_problem(["seed=1", "tranier.epochs=3"]).startswith(
        "unknown key 'tranier.epochs': did you mean 'trainer.epochs'? The groups are: data, experiment, model,"
    )
    assert override_key_problem(["~schedular"]).startswith("unknown key 'schedular': did you mean 'scheduler'?")
    assert override_key_problem(["lr_fnd.min_lr=1e-4"], config_name="lr_find").startswith(
        "unknown key 'lr_fnd.min_lr': did you mean 'lr_find.min_lr'?"
    )
    assert override_key_problem(["lr_find.min_lr=1e-4"], config_name="lr_find") is None


GROUP_OPTIONS = [
    f"{group}={path.stem}"
    for group in ("model", "optimizer", "scheduler", "data", "trainer")
    for path in sorted((REPO_ROOT / "conf" / group).glob("*.yaml"))
]


def leaf_keys(node: DictConfig, prefix: str = "") -> set[str]:
    """The dotted keys of a composed config's values, but Hydra's own and the `_target_`-like ones."""
    keys = set()
    for key, value in node.items():
        if key != "hydra" and not str(key).startswith("_"):
            keys |= leaf_keys(value, f"{prefix}{key}.") if isinstance(value, DictConfig) else {f"{prefix}{key}"}
    return keys


@pytest.mark.parametrize("choice", GROUP_OPTIONS)
def test_every_key_of_every_config_file_has_a_declared_rule(compose_cfg, choice):
    """A key added to a YAML file without a rule in SCHEMA (or an annotation in its scheduler factory) fails."""
    cfg = compose_cfg([choice])
    assert sorted(leaf_keys(cfg) - set(key_rules(cfg))) == []


def test_every_declared_rule_is_of_a_key_some_config_file_has(compose_cfg):
    keys = set().union(*(leaf_keys(compose_cfg([choice])) for choice in GROUP_OPTIONS))
    keys |= leaf_keys(OmegaConf.load(REPO_ROOT / "conf" / "lr_find.yaml"))  # the range test's own keys
    declared = set().union(*(key_rules(compose_cfg([choice])) for choice in GROUP_OPTIONS))
    assert sorted({key for key in declared if not key.startswith("scheduler.")} - keys) == []  # the factories' own


def test_every_key_of_the_range_test_has_a_declared_rule():
    own = leaf_keys(OmegaConf.load(REPO_ROOT / "conf" / "lr_find.yaml")) - {"defaults"}
    assert sorted(own - set(SCHEMA)) == []


# ------------------------------------------------------------------------------------------------------ the fuzz

# Bad values for each key. The schedule's own checks (RELATIVE: a warmup longer than the run, an unknown shape) run
# once the keys it is built from are right, so those are tried alone.
BAD_VALUES = {
    "seed": ["-1", "abc", "1.5", "18446744073709551616", "''", "null", "[1]"],
    "trainer.epochs": ["0", "-5", "abc", "2.5", "''", "null", "true", "99999999999999", "[3]", "{a: 1}"],
    "trainer.threads": ["0", "-1", "abc", "100000", "1.5", "''"],
    "trainer.device": ["tpu", "''", "0", "null", "CPU"],
    "trainer.log_every_steps": ["0", "-1", "x", "''", "null"],
    "trainer.eval_batch_size": ["0", "-10", "big", "''", "1e3"],
    "trainer.progress": ["maybe", "2", "''", "null"],
    "trainer.precision": ["fp8", "''", "1", "null"],
    "trainer.compile": ["sometimes", "3"],
    "data.batch_size": ["0", "-256", "abc", "''", "null", "1e2", "[256]"],
    "data.train_size": ["0", "-1", "60001", "1e9", "abc", "''"],
    "data.download": ["maybe", "''", "2"],
    "data.normalize": ["yes", "''", "0"],
    "data.root": ["''", "123"],
    "optimizer.lr": [
        "0",
        "-0.1",
        "-1e9",
        "abc",
        "''",
        "null",
        "nan",
        "inf",
        "1e400",
        "[0.1]",
        "1e39",
        "1e308",
        "-1e308",
    ],
    "optimizer.momentum": ["1", "-0.5", "1.5", "abc", "''", "1e300"],
    "optimizer.weight_decay": ["-1", "abc", "''", "-inf", "1e39", "1e308", "-1e308", "inf", "nan"],
    "optimizer.nesterov": ["maybe", "5"],
    "scheduler.interval": ["hour", "''", "null", "1", "STEP"],
    "scheduler.warmup_ratio": ["1", "-0.1", "2", "abc", "''", "nan"],
    "scheduler.final_lr": ["abc", "''", "[0]", "1e39", "1e308", "inf", "nan"],
    "scheduler.warmup_start_factor": ["1e39", "-1e308", "inf", "nan"],
    "resume": ["/no/such/run", "''", "/proc/self"],
    "checkpoint.keep_best": ["yes", "1.0", "''"],
    "checkpoint.skip_finished": ["please", "0"],
}
RELATIVE = {
    "scheduler.warmup_steps": ["-1", "99999999", "abc"],
    "scheduler.warmup_epochs": ["-2", "11", "abc"],
    "scheduler.final_lr": ["-1", "1e9"],
    "scheduler.warmup_start_factor": ["-1", "abc"],
    "scheduler.warmup_shape": ["cubic", "''", "1"],
}


def typo(key: str, rng: random.Random) -> str:
    """The key with one letter dropped, doubled or swapped for another: a name the config does not have."""
    group, _, name = key.rpartition(".")
    at = rng.randrange(len(name))
    edits = [name[:at] + name[at + 1 :], name[:at] + name[at] + name[at:], name[:at] + "q" + name[at + 1 :]]
    changed = rng.choice([edit for edit in edits if edit and edit != name])
    return f"{group}.{changed}" if group else changed


def fuzz_inputs(count: int, seed: int = 5) -> list[tuple[list[str], set[str]]]:
    """`count` malformed override lists, each with the keys its message must name (any one for Hydra's errors)."""
    rng = random.Random(seed)
    keys = sorted(BAD_VALUES)
    inputs = []
    for index in range(count):
        kind = index % 4
        if kind == 3:  # an unknown key: a typo, plain (Hydra refuses it) or added with + (validation refuses it)
            key = typo(rng.choice(keys), rng)
            plus = "+" if rng.random() < 0.5 else ""
            inputs.append(([f"{plus}{key}={rng.choice(['1', 'abc', '0.1', ''])}"], {key}))
        elif kind == 2:  # one value bad only relative to the run
            key = rng.choice(sorted(RELATIVE))
            inputs.append(([f"{key}={rng.choice(RELATIVE[key])}"], {key.rpartition(".")[2]}))
        else:  # one to three keys with bad values at once: one message must name them all
            chosen = rng.sample(keys, rng.randint(1, 3))
            inputs.append(([f"{key}={rng.choice(BAD_VALUES[key])}" for key in chosen], set(chosen)))
    return inputs


FUZZ = fuzz_inputs(240)


def test_fuzz_every_malformed_override_is_refused_with_a_short_message_naming_its_keys(tmp_path):
    tried = 0
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        for overrides, keys in FUZZ:
            tried += 1
            check_refused(overrides, keys, tmp_path)
    GlobalHydra.instance().clear()
    assert tried == 240


def check_refused(overrides: list[str], keys: set[str], tmp_path) -> None:
    """Compose and validate as the command line does: it must fail with a short message naming the keys."""
    try:
        cfg = compose(config_name="config", overrides=[f"output_root={tmp_path}", *overrides], return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        validate(cfg)
    except ConfigError as error:
        message = str(error)
        named = all(key in message for key in keys)
    except (HydraException, OmegaConfBaseException) as error:  # Hydra stops at the first bad override
        message = str(error)
        named = any(key.rpartition(".")[2] in message for key in keys)
    else:
        pytest.fail(f"accepted: {overrides}")
    assert named, (overrides, message)
    assert "Traceback" not in message and len(message.splitlines()) <= 12, (overrides, message)


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides",
    [
        ["scheduler.warmup_ration=0.1"],
        ["+trainer.epoch=3"],
        ["optimizer.lr=[0.1"],
        ["optimizer.lr=abc", "trainer.epochs=-1", "data.batch_size=''"],
        ["trainer.device=cuda", "seed=abc"],
    ],
    ids=["typo", "plus-typo", "unparsable", "three-bad-values", "device-and-seed"],
)
def test_the_command_line_refuses_malformed_overrides_without_a_traceback_or_clutter(tmp_path, overrides):
    done = run_train(*overrides, f"output_root={tmp_path}", "trainer.threads=1", timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "Traceback" not in output
    assert 0 < len(done.stderr.strip().splitlines()) <= 12, done.stderr
    left = {path.relative_to(tmp_path).parts[-1] for path in tmp_path.rglob("*") if path.is_file()}
    assert left <= {"train.log", "config.yaml", "hydra.yaml", "overrides.yaml"}  # the log and Hydra's record only
