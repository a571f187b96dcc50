"""The study's batches (src.analysis.study.stages) with a stand-in launcher that writes each job's metrics.json
from a formula: every rung and every round is one call, halving promotes exactly the best 1/eta from their own
runs, seeds are added only where the verdict is open, and a continued study launches only what is not done."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from src.analysis.stats import compare, holm, look_levels, sequential_verdict
from src.analysis.study.plan import make_plan, rounds_of, rungs_of
from src.analysis.study.stages import BatchFailed, job_metrics, pick_lr, run_stages, sequential

LRS = ("0.01", "0.03", "0.1", "0.3")


def settings(overrides: list[str]) -> dict[str, str]:
    return dict(override.split("=", 1) for override in overrides)


class StandIn:
    """A launcher whose jobs "train" instantly: test accuracy after epoch e is `accuracy(schedule, lr, seed, e)`.
    A job continues its own metrics.json (a promoted run goes on from its rung) and stops at its pause."""

    def __init__(self, plan, accuracy, fail_at: int | None = None):
        self.plan, self.accuracy, self.batches, self.fail_at = plan, accuracy, [], fail_at

    def __call__(self, batch: list[list[str]]) -> None:
        self.batches.append([settings(overrides) for overrides in batch])
        for number, overrides in enumerate(self.batches[-1]):
            if self.fail_at is not None and sum(map(len, self.batches)) - len(batch) + number == self.fail_at:
                raise KeyboardInterrupt  # the study is stopped here, mid-batch
            stage, name, lr, seed = (overrides[k] for k in ("labels.stage", "labels.schedule", "optimizer.lr", "seed"))
            folder = self.plan.job_dir(stage, name, lr, int(seed))
            epochs = int(overrides.get("checkpoint.pause_after_epoch", overrides["trainer.epochs"]))
            before = job_metrics(self.plan, stage, name, lr, int(seed)) or {"history": []}
            if "checkpoint.branch_from" in overrides and not before["history"]:  # the trunk's copy: its record
                before = json.loads(Path(overrides["checkpoint.branch_from"].strip("'")).read_text())
            history = before["history"] + [
                {"epoch": e, "step": 10 * e, "test_acc": self.accuracy(name, float(lr), int(seed), e)}
                for e in range(len(before["history"]) + 1, epochs + 1)
            ]
            folder.mkdir(parents=True, exist_ok=True)
            record = {"epochs": epochs, "test_acc": history[-1]["test_acc"], "history": history}
            (folder / "metrics.json").write_text(json.dumps(record))
            (folder / "last.pt").write_text(json.dumps(record))  # what a branch starts from


def smooth(name: str, lr: float, seed: int, epoch: int) -> float:
    """Best at lr 0.1 for constant, 0.03 for cosine_warmup; rising with the epochs; a little seed noise."""
    best = {"constant": 0.1, "cosine_warmup": 0.03}[name]
    return 0.5 + 0.05 * epoch - 0.05 * abs(math.log10(lr / best)) + 0.001 * ((seed * 7) % 5)


@pytest.fixture
def plan(tmp_path):
    def _plan(*options: str):
        return make_plan(
            "quick",
            ["schedules=[constant,cosine_warmup]", f"tune.lrs=[{','.join(LRS)}]", f"dir={tmp_path}", *options],
            ["trainer.epochs=4"],
        )

    return _plan


def test_rungs_and_rounds_are_where_the_docs_say():
    assert rungs_of(4, 2, 0.25) == [1, 2, 4]
    assert rungs_of(30, 3, 0.1) == [3, 10, 30]
    assert rungs_of(30, 2, 0.25) == [8, 15, 30]
    assert rungs_of(4, None, 0.25) == [4]
    assert rungs_of(2, 3, 0.1) == [1, 2]  # never two rungs on one epoch
    assert rounds_of(3, 10, 3) == [3, 6, 9, 10] and rounds_of(5, 5, 2) == [5]


def test_every_rung_is_one_batch_and_halving_promotes_exactly_the_best_half_from_their_own_runs(plan):
    study = plan("tune.halving=2", "confirm.seeds=2")
    launch = StandIn(study, smooth)
    picks = run_stages(study, launch, say=lambda line: None)
    rung1, rung2, full = launch.batches[:3]
    assert len(rung1) == 2 * len(LRS) and {job["checkpoint.pause_after_epoch"] for job in rung1} == {"1"}
    # the best two of four per schedule at epoch 1 go on to epoch 2, then the best one to the budget
    assert sorted((j["labels.schedule"], j["optimizer.lr"]) for j in rung2) == [
        ("constant", "0.1"),
        ("constant", "0.3"),
        ("cosine_warmup", "0.01"),
        ("cosine_warmup", "0.03"),
    ]
    assert {job["checkpoint.pause_after_epoch"] for job in rung2} == {"2"}
    assert sorted(j["optimizer.lr"] for j in full) == ["0.03", "0.1"] and all(
        "checkpoint.pause_after_epoch" not in job for job in full
    )
    assert picks["constant"]["lr"] == "0.1" and picks["cosine_warmup"]["lr"] == "0.03"
    grid = {row["lr"]: row for row in picks["constant"]["grid"]}
    assert grid["0.03"]["dropped_at"] == 1 and grid["0.3"]["dropped_at"] == 2 and grid["0.1"]["score"] is not None
    # stage 1 trained 4 + 2 + 2 epochs per schedule instead of 16
    assert sum(len(job_metrics(study, "tune", "constant", lr, 0)["history"]) for lr in LRS) == 8
    confirm = launch.batches[3]
    assert {(j["labels.schedule"], j["seed"]) for j in confirm} == {
        (name, seed) for name in ("constant", "cosine_warmup") for seed in ("100", "101")
    }


def write_tuning_run(study, lr: str, seed: int, test_acc: float, best: float | None = None, collapsed=False):
    history = [{"epoch": 1, "step": 10, "test_acc": best or test_acc}, {"epoch": 2, "step": 20, "test_acc": test_acc}]
    folder = study.job_dir("tune", "constant", lr, seed)
    folder.mkdir(parents=True)
    record = {"epochs": 2, "test_acc": test_acc, "collapsed": collapsed, "history": history}
    (folder / "metrics.json").write_text(json.dumps({**record, "collapsed_epoch": 2 if collapsed else None}))


def test_pick_takes_the_best_mean_among_lrs_where_nothing_collapsed(tmp_path):
    options = ["schedules=[constant,cosine]", "tune.lrs=[0.01,0.1,1.0]", "tune.seeds=[0,1]"]
    study = make_plan("quick", [*options, f"dir={tmp_path / 'a'}"], ["trainer.epochs=2"])
    for lr, seed, accuracy in [("0.01", 0, 0.80), ("0.01", 1, 0.82), ("0.1", 0, 0.86), ("0.1", 1, 0.84)]:
        write_tuning_run(study, lr, seed, accuracy)
    write_tuning_run(study, "1.0", 0, 0.90)  # the best single run, but its lr also collapsed once: not eligible
    write_tuning_run(study, "1.0", 1, 0.10, collapsed=True)
    picked = pick_lr(study, "constant", ["0.01", "0.1", "1.0"])
    assert picked["lr"] == "0.1" and picked["score"] == pytest.approx(0.85) and not picked["edge"]
    assert [row["failed"] for row in picked["grid"]] == [0, 0, 1]
    by_best = make_plan(
        "quick", [*options[:2], "tune.pick=best_test_acc", f"dir={tmp_path / 'b'}"], ["trainer.epochs=2"]
    )
    write_tuning_run(by_best, "0.01", 0, 0.80, best=0.88)
    write_tuning_run(by_best, "0.1", 0, 0.85, best=0.86)
    assert pick_lr(by_best, "constant", ["0.01", "0.1"])["lr"] == "0.01"  # and at the grid's edge
    assert pick_lr(by_best, "constant", ["0.01", "0.1"])["edge"]


def test_an_lr_that_collapsed_at_a_rung_is_never_promoted(plan):
    study = plan("tune.halving=4", "confirm.seeds=2")  # rungs at epochs 1 and 4: one lr of four goes on
    launch = StandIn(study, smooth)

    def marking(batch):
        launch(batch)
        path = study.job_dir("tune", "constant", "0.1", 0) / "metrics.json"  # the best lr collapses at epoch 1
        record = json.loads(path.read_text())
        path.write_text(json.dumps({**record, "collapsed": True, "collapsed_epoch": 1}))

    picks = run_stages(study, marking, say=lambda line: None)
    assert [job["optimizer.lr"] for job in launch.batches[1] if job["labels.schedule"] == "constant"] == ["0.3"]
    assert picks["constant"]["lr"] == "0.3"  # the next best at epoch 1, promoted instead


def test_seeds_are_added_only_where_the_verdict_is_open_and_for_the_best(tmp_path):
    def separated(name, lr, seed, epoch):  # constant far worse, with a little noise: decided at the first look
        return (0.6 if name == "constant" else 0.8) + 0.002 * ((seed * 7) % 5) + 0.01 * epoch

    study = make_plan(
        "quick",
        [
            "schedules=[constant,cosine_warmup,linear_warmup]",
            "tune.lrs=[0.1]",
            "tune.halving=null",
            *("confirm.seeds=3", "confirm.max_seeds=7", "confirm.add=2"),
            f"dir={tmp_path}",
        ],
        ["trainer.epochs=2"],
    )

    def close(name, lr, seed, epoch):  # linear_warmup is a hair below cosine_warmup: never decided
        noise = 0.01 * (((seed * 7) % 5) - 2) * (1 if name != "linear_warmup" else -1)
        return separated(name, lr, seed, epoch) + noise - (0.001 if name == "linear_warmup" else 0)

    launch = StandIn(study, close)
    run_stages(study, launch, say=lambda line: None)
    rounds = [[(j["labels.schedule"], int(j["seed"])) for j in batch] for batch in launch.batches[1:]]
    assert sorted(rounds[0]) == [
        (n, s) for n in ("constant", "cosine_warmup", "linear_warmup") for s in (100, 101, 102)
    ]
    state = sequential(study, {n: {"lr": "0.1"} for n in ("constant", "cosine_warmup", "linear_warmup")})
    assert state.looks[0].decided == ("constant",) and state.state["constant"] == "worse"
    assert sorted(rounds[1]) == [(n, s) for n in ("cosine_warmup", "linear_warmup") for s in (103, 104)]
    assert sorted(rounds[2]) == [(n, s) for n in ("cosine_warmup", "linear_warmup") for s in (105, 106)]
    assert len(rounds) == 3 and state.seeds == {"constant": 3, "cosine_warmup": 7, "linear_warmup": 7}
    assert state.needed == {} and {state.state["cosine_warmup"], state.state["linear_warmup"]} == {"best", "open"}


def test_the_sequential_rule_stops_exactly_when_its_boundary_is_crossed():
    best = [0.80, 0.81, 0.79, 0.80, 0.82, 0.80, 0.81, 0.79, 0.80, 0.81]
    other = [
        b - gap for b, gap in zip(best, (0.02, -0.01, 0.03, 0.0, 0.02, 0.01, 0.02, 0.015, 0.01, 0.02), strict=True)
    ]
    seeds, rounds = list(range(10)), [3, 5, 7, 10]
    levels = look_levels(rounds)
    expected = next(
        (k for k, n in enumerate(rounds) if compare(best[:n], other[:n]).p_paired <= levels[k]),
        None,
    )
    assert expected is not None and expected > 0, "the data should cross the boundary after the first look"
    result = sequential_verdict(
        {"a": dict(zip(seeds, best, strict=True)), "b": dict(zip(seeds, other, strict=True))}, seeds, rounds
    )
    assert [look.seeds for look in result.looks] == rounds[: expected + 1]
    assert result.looks[-1].decided == ("b",) and result.seeds == {"a": rounds[expected], "b": rounds[expected]}
    for k, look in enumerate(result.looks[:-1]):  # not decided before: each earlier p was above its level
        assert look.p_holm["b"] > levels[k] and look.decided == ()


def test_the_looks_spend_exactly_alpha_and_holm_applies_within_a_look():
    for spending in ("pocock", "obrien_fleming"):
        levels = look_levels([3, 5, 7, 10], spending)
        assert sum(levels) == pytest.approx(0.05) and all(level > 0 for level in levels)
    assert look_levels([3, 5, 7, 10])[0] == pytest.approx(0.05 * math.log(1 + (math.e - 1) * 0.3))
    assert look_levels([5]) == [0.05]  # one look: the plain test at 0.05
    values = {
        "a": {0: 0.80, 1: 0.82, 2: 0.81},
        "b": {0: 0.70, 1: 0.71, 2: 0.705},
        "c": {0: 0.79, 1: 0.815, 2: 0.80},
    }
    result = sequential_verdict(values, [0, 1, 2], [3])
    p = [compare(list(values["a"].values()), list(values[n].values())).p_paired for n in ("b", "c")]
    assert result.looks[0].p_holm == dict(zip(("b", "c"), holm(p), strict=True))


def test_a_failed_seed_ends_a_schedules_rounds_and_a_missing_one_is_asked_for():
    values = {"a": {0: 0.8, 1: 0.81}, "b": {0: 0.7, 1: None}, "c": {0: 0.79}}
    result = sequential_verdict(values, [0, 1, 2, 3], [2, 4])
    assert result.needed == {"c": 2} and result.looks == ()  # the look waits for c's second seed
    values["c"][1] = 0.815
    result = sequential_verdict(values, [0, 1, 2, 3], [2, 4])
    assert result.state["b"] == "failed" and result.needed == {"a": 4, "c": 4}


def test_a_stopped_study_continues_with_the_same_decisions_and_runs_nothing_twice(plan):
    study = plan("tune.halving=2", "confirm.seeds=2", "confirm.max_seeds=4")
    stopped = StandIn(study, smooth, fail_at=9)  # mid-way through the second rung's batch
    with pytest.raises(KeyboardInterrupt):
        run_stages(study, stopped, say=lambda line: None)
    continued = StandIn(study, smooth)
    picks = run_stages(study, continued, say=lambda line: None)
    first_rest = len(stopped.batches[-1]) - 1  # the stopped batch had run one job of the second rung
    assert len(continued.batches[0]) == first_rest
    again = StandIn(study, smooth)
    assert run_stages(study, again, say=lambda line: None) == picks and again.batches == []  # nothing left to run


def test_a_job_that_did_not_finish_stops_the_study_with_its_folder(plan):
    study = plan("confirm.seeds=2")
    with pytest.raises(BatchFailed, match=r"8 of 8 jobs did not finish .*tune/constant/lr=0.01,seed=0"):
        run_stages(study, lambda batch: None, say=lambda line: None)
