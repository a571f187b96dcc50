"""Inputs a careless or hostile user can give: a sweep job folder outside its sweep, a `_target_` that names any
importable callable, a key the group lacks, impossible numbers in a run's metrics.json, an empty
`.hydra/config.yaml`, a damaged failed.json. Each is refused (exit 2, a message naming the key and what is allowed)
or set aside as a damaged run, the same way by src.compare, the study and the sweep's end."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from src.analysis.compare import build_report, main
from src.analysis.runs import scan_runs
from src.config.hooks import FailedJobs
from src.config.overrides import override_key_problem
from src.config.validation import ConfigError, validate
from src.runs import checkpoints as checkpointing
from src.runs import folder as run_folder
from src.runs.files import write_json
from tests.conftest import run_module, run_train

# ------------------------------------------------------------------------- numbers read back from metrics.json


def fake_run(compose_cfg, folder: Path, schedule: str, seed: int, test_acc: float) -> Path:
    """A finished two-epoch run folder as src.train leaves it (its `.hydra/` record written by the run's own
    writer), without training: metrics.json with `test_acc` as the last epoch's accuracy."""
    cfg = compose_cfg([f"scheduler={schedule}", f"seed={seed}", "trainer.epochs=2"])
    run_folder.write_hydra_record(folder, checkpointing.without_hydra(cfg), HydraConfig.instance().cfg, [])
    history = [
        {"epoch": 1, "step": 8, "train_loss": 1.0, "train_acc": 0.6, "test_loss": 0.9, "test_acc": 0.6},
        {"epoch": 2, "step": 16, "train_loss": 0.8, "train_acc": 0.7, "test_loss": 0.7, "test_acc": test_acc},
    ]
    metrics = {"test_acc": test_acc, "test_loss": 0.7, "train_loss": 0.8, "train_acc": 0.7}
    metrics |= {"best_test_acc": max(0.6, test_acc), "epochs": 2, "steps": 16, "wall_seconds": 1.5}
    metrics |= {"diverged": False, "collapsed": False, "history": history, "epoch_seconds": [0.7, 1.4]}
    write_json(folder / "metrics.json", metrics)
    return folder


@pytest.fixture
def sweep(compose_cfg, tmp_path) -> Path:
    """Two schedules x two seeds; constant ahead (0.80, 0.82 against 0.70, 0.72)."""
    folder = tmp_path / "sweep"
    for index, (schedule, seed, acc) in enumerate(
        [("constant", 0, 0.80), ("constant", 1, 0.82), ("cosine", 0, 0.70), ("cosine", 1, 0.72)]
    ):
        fake_run(compose_cfg, folder / f"{index}_scheduler={schedule},seed={seed}", schedule, seed, acc)
    return folder


def set_metric(run: Path, text: str, where: str = "test_acc") -> None:
    """Put `text` (JSON as written, e.g. NaN) as the run's final test accuracy, or as another top-level number."""
    metrics = json.loads((run / "metrics.json").read_text())
    metrics[where] = "PLACEHOLDER"
    if where == "test_acc":
        metrics["history"][-1]["test_acc"] = "PLACEHOLDER"
    (run / "metrics.json").write_text(json.dumps(metrics).replace('"PLACEHOLDER"', text))


@pytest.mark.parametrize(
    ("where", "text", "reason"),
    [
        ("test_acc", "7.5", "metrics.json: test_acc is 7.5, not a fraction 0..1 or null"),
        ("test_acc", "-0.1", "metrics.json: test_acc is -0.1, not a fraction 0..1 or null"),
        ("test_acc", "NaN", "metrics.json: test_acc is nan, not a fraction 0..1 or null"),
        ("test_acc", "1e300", "metrics.json: test_acc is 1e+300, not a fraction 0..1 or null"),
        ("train_loss", "Infinity", "metrics.json: train_loss is inf, not a finite number or null"),
        ("epochs", "2.5", "metrics.json: epochs is 2.5, not a whole number >= 0 or null"),
        ("steps", "-16", "metrics.json: steps is -16, not a whole number >= 0 or null"),
        ("wall_seconds", "NaN", "metrics.json: wall_seconds is nan, not a finite number >= 0 or null"),
    ],
)
def test_an_impossible_number_sets_the_run_aside_as_damaged(sweep, where, text, reason):
    damaged = sweep / "2_scheduler=cosine,seed=0"
    set_metric(damaged, text, where)
    scan = scan_runs(sweep)
    assert [(item.folder, item.reason) for item in scan.skipped] == [(damaged, reason)]
    assert len(scan.runs) == 3


def test_an_impossible_epoch_in_the_history_sets_the_run_aside(sweep):
    damaged = sweep / "0_scheduler=constant,seed=0"
    metrics = json.loads((damaged / "metrics.json").read_text())
    metrics["history"][0]["test_loss"] = math.inf
    (damaged / "metrics.json").write_text(json.dumps(metrics))  # json writes Infinity
    (skipped,) = scan_runs(sweep).skipped
    assert skipped.reason == "metrics.json: history[0].test_loss is inf, not a finite number"


def test_an_accuracy_of_7_5_does_not_flip_the_verdict(sweep):
    set_metric(sweep / "3_scheduler=cosine,seed=1", "7.5")
    rows = build_report(sweep).rows()
    assert [(row["schedule"], row["seeds"]) for row in rows] == [("constant", 2), ("cosine", 1)]
    assert rows[1]["test_acc_mean"] == pytest.approx(0.70)


def test_compare_reports_around_a_nan_accuracy_instead_of_crashing(sweep):
    damaged = sweep / "3_scheduler=cosine,seed=1"
    set_metric(damaged, "NaN")
    done = run_module("src.compare", str(sweep), timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"lrbench: skipped {damaged}: metrics.json: test_acc is nan, not a fraction 0..1 or null" in done.stderr
    assert "Traceback" not in done.stderr
    assert "## Skipped runs" in (sweep / "summary.md").read_text()


# ------------------------------------------------------------------------- one verdict on a damaged run folder


def test_compare_sets_a_run_with_an_empty_config_record_aside_like_the_study(sweep, capsys):
    damaged = sweep / "1_scheduler=constant,seed=1"
    (damaged / ".hydra" / "config.yaml").write_text("")
    assert main([str(sweep)]) == 0
    reason = ".hydra/config.yaml has no model, optimizer, scheduler, data, trainer, which every run's config has"
    assert f"lrbench: skipped {damaged}: {reason}" in capsys.readouterr().err
    rows = [(row["schedule"], row["seeds"]) for row in build_report(sweep).rows()]
    assert rows == [("constant", 1), ("cosine", 2)]  # no unlabelled row


# ------------------------------------------------------------------------------------- what a `_target_` may name

MODEL = "an nn.Module subclass of this project's src/ (src.training.models.LeNet)"
OPTIMIZER = "a torch.optim.Optimizer subclass (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW, ...), or a "
OPTIMIZER += "function of this project's src/ returning one"
SCHEDULE = "a schedule factory of this project: a function of src/ taking the Timeline and returning a Schedule"


@pytest.mark.parametrize(
    ("override", "allowed"),
    [
        ("model._target_=builtins.dict", MODEL),
        ("model._target_=builtins.print", MODEL),
        ("model._target_=torch.nn.Identity", MODEL),  # a module, but no model of Fashion-MNIST
        ("model._target_=os.system", MODEL),
        ("model._target_=src.training.data.load", MODEL),  # the project's, but not a model
        ("optimizer._target_=builtins.dict", OPTIMIZER),
        ("optimizer._target_=os.system", OPTIMIZER),
        ("optimizer._target_=torch.optim.lr_scheduler.StepLR", OPTIMIZER),
        ("scheduler._target_=builtins.print", SCHEDULE),
        ("scheduler._target_=antigravity.fly", SCHEDULE),  # refused by its name: never imported
        ("scheduler._target_=src.schedules.core.Constant", SCHEDULE),  # a piece, not a factory
        ("++trainer._target_=os.system", "no _target_ here (only model, optimizer, data, scheduler name one)"),
    ],
)
def test_a_target_must_name_one_of_the_groups_own_kind(compose_cfg, override, allowed):
    key, _, value = override.lstrip("+").partition("=")
    with pytest.raises(ConfigError) as refused:
        validate(compose_cfg([override]))
    assert f"{key}={value!r}: allowed is {allowed}" in refused.value.problems[0]
    assert refused.value.problems[0].key == key
    assert "antigravity" not in sys.modules


def test_the_projects_own_targets_are_accepted(compose_cfg):
    for overrides in (["optimizer=adam"], ["optimizer=adamw"], ["scheduler=one_cycle"], ["scheduler=cyclic"]):
        validate(compose_cfg(overrides))


def test_unknown_keys_added_beside_a_bad_target_name_the_groups_real_keys(compose_cfg):
    with pytest.raises(ConfigError) as refused:
        validate(compose_cfg(["model._target_=builtins.open", "+model.file=x", "+model.mode=w"]))
    assert refused.value.problems[1:] == [
        "model.file: unknown key (added with +model.file=...); model has no keys of its own",
        "model.mode: unknown key (added with +model.mode=...); model has no keys of its own",
    ]


def test_a_model_target_of_any_callable_is_refused_with_exit_2_leaving_no_folder(tmp_path, synthetic_root):
    done = run_train("model._target_=builtins.dict", f"output_root={tmp_path}", f"data.root={synthetic_root}")
    assert done.returncode == 2, done.stderr
    assert done.stderr == (f"lrbench: invalid configuration:\n  - model._target_='builtins.dict': allowed is {MODEL}\n")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------- a key its group lacks

COSINE_KEYS = "interval, warmup_ratio, warmup_steps, warmup_epochs, warmup_start_factor, warmup_shape, total_steps, "
COSINE_KEYS += "total_epochs, final_lr"


def test_a_key_the_chosen_group_lacks_is_named_with_the_groups_keys():
    assert override_key_problem(["scheduler=cosine", "scheduler.min_lr=1e40"]) == (
        f"scheduler.min_lr: unknown key; scheduler has: {COSINE_KEYS}"
    )
    assert override_key_problem(["checkpoint.keep_bset=true"]) == (
        "checkpoint.keep_bset: unknown key; checkpoint has: keep_best, skip_finished, pause_after_epoch, branch_from"
    )
    # a sweep: the first job (cosine) has no step_size, and Hydra would stop there
    assert override_key_problem(["-m", "scheduler=step,cosine", "scheduler.step_size=3"]).startswith(
        f"scheduler.step_size: unknown key; scheduler has: {COSINE_KEYS}"
    )
    assert override_key_problem(["-m", "scheduler=step,multistep", "scheduler.gamma=0.5", "seed=0,1"]) is None


def test_a_key_the_group_lacks_exits_2_with_the_message(tmp_path):
    done = run_train("scheduler=cosine", "scheduler.min_lr=1e40", f"output_root={tmp_path}")
    assert done.returncode == 2, done.stderr
    assert done.stderr == f"lrbench: scheduler.min_lr: unknown key; scheduler has: {COSINE_KEYS}\n"
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------- job folders inside the sweep


def test_a_sweep_subdir_leaving_the_sweep_is_refused_before_any_job(tmp_path, synthetic_root):
    root = tmp_path / "outputs"
    done = run_train(
        "-m",
        "hydra.sweep.subdir=../../../x",
        "seed=0,1",
        f"output_root={root}",
        f"data.root={synthetic_root}",
        "data.train_size=64",
        "data.batch_size=16",
        "trainer.epochs=1",
        "trainer.threads=1",
        "trainer.progress=false",
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines()[-1] == (
        "lrbench: hydra.sweep.subdir='../../../x': allowed is a relative folder inside the sweep folder (no '..' "
        "part, not absolute); the default names each job after its overrides"
    )
    assert not root.exists()  # the job would have trained in outputs/x, beside the sweeps


@pytest.mark.parametrize(
    "text",
    [
        "[]",
        "{bad",
        '{"failed": true, "status": "x", "reason": "r"}',
        '{"failed": true, "status": 2, "reason": "r", "job": "x"}',
    ],
    ids=["a list", "not JSON", "a string status", "a string job"],
)
def test_a_damaged_failed_json_ends_the_sweep_as_a_failed_job_naming_the_file(tmp_path, capsys, text):
    good, bad = tmp_path / "0_a", tmp_path / "1_b"
    run_folder.write_failed(good, 2, "bad lr", ["optimizer.lr=-1"], 0)
    bad.mkdir()
    (bad / "failed.json").write_text(text)
    records = run_folder.failed_jobs(tmp_path)
    assert [record["status"] for record in records] == [2, 1]  # the readable record first, by its job number
    assert records[1]["reason"].startswith(f"{bad / 'failed.json'}")
    with pytest.raises(SystemExit) as ended:  # the sweep's end: the first failed job's status, no traceback
        FailedJobs().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}}))
    assert ended.value.code == 2
    assert "1_b: " in capsys.readouterr().err


def test_a_folder_that_vanishes_under_a_scan_is_scanned_again(tmp_path, monkeypatch):
    """A run starting beside a scan (the study's progress count, compare during a sweep) makes and removes a folder
    to check it can write there; pathlib's glob raises FileNotFoundError when that folder goes mid-scan."""
    finished = tmp_path / "tune" / "constant" / "lr=0.1,seed=0" / "metrics.json"
    finished.parent.mkdir(parents=True)
    finished.write_text("{}")
    real_glob, scans = Path.glob, []

    def vanishing_once(self, pattern):
        scans.append(pattern)
        yield from real_glob(self, pattern)
        if len(scans) == 1:
            raise FileNotFoundError(2, "No such file or directory", str(tmp_path / "tune" / ".lrbench-gone"))

    monkeypatch.setattr(Path, "glob", vanishing_once)
    assert run_folder.glob_settled(tmp_path, "*/*/*/metrics.json") == [finished]
    assert len(scans) == 2
    assert run_folder.glob_settled(tmp_path / "none", "*") == []
