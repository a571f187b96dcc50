"""study.conditions: every schedule tuned and confirmed under each condition (its runs `<schedule>@<condition>`),
one sequential rule per condition, a verdict per condition, the table of where the best changes and the
performance profile; and study=budgets as the preset that asks the budget question."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from src.analysis.study import report as study_report
from src.analysis.study.plan import StudyError, make_plan
from src.analysis.study.run import EpochsDone
from src.analysis.study.stages import run_stages, sequential
from tests.conftest import read_csv, run_metrics, run_module, run_train, write_fashion_mnist
from tests.test_study_stages import StandIn
from tests.test_study_verdict import SEEDS, confirm_run, landscape, picks_of

TWO = "conditions=[{name:short,overrides:['trainer.epochs=1']},{name:long,overrides:['trainer.epochs=3']}]"


def test_budgets_is_every_family_of_quick_under_four_budgets():
    plan = make_plan("budgets", ["dir=/tmp/not-made"], [])
    families = ["constant", "multistep", "cosine_warmup", "linear_warmup", "one_cycle", "warmup_stable_decay"]
    assert list(plan.conditions) == ["e2", "e5", "e10", "e20"]
    assert [s.name for s in plan.schedules] == [f"{f}@{c}" for c in plan.conditions for f in families]
    multistep = plan.schedule("multistep@e10")
    assert multistep.overrides == ["trainer.epochs=10", "scheduler=multistep", "scheduler.milestone_ratios=[0.5,0.75]"]
    assert (multistep.family, multistep.condition) == ("multistep", "e10")
    assert plan.confirm_epochs["constant@e20"] == 20 and plan.rungs["constant@e20"] == [5, 10, 20]
    assert plan.rungs["constant@e2"] == [1, 2] and plan.run_overrides == ["data.train_size=15000"]
    assert str(plan.job_dir("confirm", "constant@e5", "0.1", 100)).endswith("confirm/constant@e5/lr=0.1,seed=100")
    # constant's lr never depends on the budget: each shorter budget is the 20-epoch run read after its epochs;
    # multistep's milestones are at half and three quarters, so it shares the first half; warmup_stable_decay's
    # plateau lasts until the last 20% (its warmup is 30 steps at every budget); the rest decay or warm up over a
    # share of the whole run and train once per budget
    wsd = "warmup_stable_decay"
    assert plan.branches == {
        **{f"constant@e{b}": {"trunk": "constant@e20", "epoch": b} for b in (2, 5, 10)},
        **{f"multistep@e{b}": {"trunk": "multistep@e20", "epoch": e} for b, e in ((2, 1), (5, 2), (10, 5))},
        **{f"{wsd}@e{b}": {"trunk": f"{wsd}@e20", "epoch": e} for b, e in ((2, 1), (5, 4), (10, 8))},
    }


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("conditions=[short,long]", r"study.conditions=\['short', 'long'\]: allowed is a list of \{name: <label>"),
        ("conditions=[{name:'a@b',overrides:[]},{name:c,overrides:[]}]", r"name 'a@b': allowed is a plain name"),
        ("conditions=[{name:a,overrides:['seed=3']},{name:b,overrides:[]}]", r"study.conditions.a: seed=3: the study"),
        ("conditions=[{name:a,overrides:[]}]", r"one condition is the plain study; give two or more"),
        ("conditions=[{name:a,overrides:[]},{name:a,overrides:[]}]", r"a name appears twice \(a, a\)"),
    ],
)
def test_bad_conditions_are_refused_naming_the_key_and_what_is_allowed(option, message, tmp_path):
    with pytest.raises(StudyError, match=message):
        make_plan("quick", ["schedules=[constant,cosine_warmup]", option, f"dir={tmp_path}"], [])


def test_each_condition_is_tuned_and_confirmed_in_the_same_batches_with_its_own_sequential_rule(tmp_path):
    plan = make_plan(
        "quick",
        [
            "schedules=[constant,cosine_warmup]",
            "tune.lrs=[0.01,0.1]",
            "tune.halving=null",
            TWO,
            "confirm.seeds=3",
            "confirm.max_seeds=6",
            f"dir={tmp_path}",
        ],
        [],
    )

    def accuracy(name, lr, seed, epoch):  # short: cosine_warmup far behind; long: the two are the same runs
        family, condition = name.split("@")
        gap = 0.2 if condition == "short" and family == "cosine_warmup" else 0.0
        return landscape(lr, seed, epoch) - gap

    launch = StandIn(plan, accuracy)
    picks = run_stages(plan, launch, say=lambda line: None)
    assert plan.branches == {"constant@short": {"trunk": "constant@long", "epoch": 1}}  # a cosine never branches
    # stage 1 (no halving), then the first look in two calls: constant@long pauses after epoch 1, then
    # constant@short runs from a copy of that checkpoint while constant@long goes on; every condition in each
    assert len(launch.batches) == 3
    assert {job["labels.schedule"] for job in launch.batches[0]} == {s.name for s in plan.schedules}
    first, second = (
        {(j["labels.schedule"], j.get("checkpoint.pause_after_epoch")) for j in b} for b in launch.batches[1:]
    )
    assert first == {("constant@long", "1"), ("cosine_warmup@short", None), ("cosine_warmup@long", None)}
    assert second == {("constant@long", None), ("constant@short", None)}
    branch = [j for j in launch.batches[2] if j["labels.schedule"] == "constant@short"]
    copy = plan.job_dir("confirm", "constant@short", picks["constant@short"]["lr"], 100) / "trunk.pt"
    assert len(branch) == 3 and branch[0]["checkpoint.branch_from"] == f"'{copy}'" and copy.is_file()
    short, long = sequential(plan, picks, "short"), sequential(plan, picks, "long")
    assert short.state == {"constant@short": "best", "cosine_warmup@short": "worse"}
    assert sorted(long.state.values()) == ["best", "tied"]


def test_the_report_gives_a_verdict_per_condition_where_the_best_changes_and_the_profile(tmp_path, compose_cfg):
    plan = make_plan("quick", ["schedules=[constant,cosine_warmup]", TWO, f"dir={tmp_path / 'study'}"], [])
    accuracies = {  # cosine_warmup wins the short budget by 10 points, constant the long one by 2
        "constant@short": (0.70, 0.71, 0.69),
        "cosine_warmup@short": (0.80, 0.81, 0.79),
        "constant@long": (0.86, 0.87, 0.85),
        "cosine_warmup@long": (0.84, 0.85, 0.83),
    }
    for label, values in accuracies.items():
        for seed, test_acc in zip(SEEDS, values, strict=True):
            confirm_run(compose_cfg, plan, label, label.split("@")[0], seed, test_acc)
    report = study_report.build_study_report(plan, picks_of(plan), wall_seconds=1.0)
    study_report.write_study_report(report)
    folder = Path(plan.dir)
    rows = read_csv(folder / "verdict.csv")
    assert [(row["condition"], row["schedule"], row["verdict"]) for row in rows] == [
        ("short", "cosine_warmup", "best"),
        ("short", "constant", "worse"),
        ("long", "constant", "best"),
        ("long", "cosine_warmup", "worse"),
    ]
    flips = read_csv(folder / "conditions.csv")
    assert [(row["condition"], row["best"], row["worse"]) for row in flips] == [
        ("short", "cosine_warmup", "constant"),
        ("long", "constant", "cosine_warmup"),
    ]
    assert report.profile(0.0) == {"constant": 0.5, "cosine_warmup": 0.5}
    assert report.profile(2.0) == {"constant": 0.5, "cosine_warmup": 1.0}  # 2 points behind under long
    assert report.profile(10.0) == {"constant": 1.0, "cosine_warmup": 1.0}
    markdown = (folder / "report.md").read_text()
    assert "The winner changes with the condition (short: cosine_warmup; long: constant)." in markdown
    assert "## Verdict under short (`trainer.epochs=1`)" in markdown and "![profile.png](profile.png)" in markdown
    assert all((folder / name).is_file() for name in (*study_report.FIGURES, study_report.PROFILE_FIGURE))


@pytest.mark.slow
def test_a_branched_confirm_run_of_the_study_is_the_run_trained_alone(tmp_path):
    root = write_fashion_mnist(tmp_path / "data", train_size=16 * 256, test_size=512)
    folder = tmp_path / "study"
    done = run_module(
        "src.study",
        *("study.schedules=[constant,cosine_warmup]", "study.tune.lrs=[0.05]", "study.tune.halving=null"),
        *("study.confirm.seeds=2", "study.confirm.max_seeds=null", "study.baseline=null", f"study.{TWO}"),
        *(f"data.root={root}", "trainer.threads=1", f"study.dir={folder}"),
    )
    assert done.returncode == 0, done.stderr
    branch = folder / "confirm/constant@short/lr=0.05,seed=100"
    assert run_metrics(branch)["branched_from"]["epoch"] == 1 and (branch / "trunk.pt").is_file()
    job = [o for o in OmegaConf.load(branch / ".hydra/overrides.yaml") if not o.startswith("checkpoint.branch_from")]
    alone = run_train(*job, f"hydra.run.dir={tmp_path / 'alone'}")
    assert alone.returncode == 0, alone.stderr
    assert run_metrics(branch)["history"] == run_metrics(tmp_path / "alone")["history"]
    report = (folder / "report.md").read_text()
    assert "Confirm runs branched from the same schedule's run under the longest budget" in report
    assert "constant@short after epoch 1 (2 of 2 runs)" in report and "Trained once per budget: cosine_warmup" in report


def test_the_progress_bar_counts_a_branched_runs_epochs_from_its_branch_point(tmp_path):
    plan = make_plan("quick", ["schedules=[constant,cosine_warmup]", TWO, f"dir={tmp_path}"], [])
    trunk, branch = (plan.job_dir("confirm", name, "0.1", 100) for name in ("constant@long", "constant@short"))
    for folder, record in ((trunk, {"epochs": 3}), (branch, {"epochs": 1, "branched_from": {"epoch": 1}})):
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps(record))
    assert EpochsDone(plan).count() == 3  # the branch trained no epoch of its own: its one is the trunk's
