"""The three answers against the best (worse, tied, open), from the sequential rule to verdict.csv and report.md:
the same schedule under two labels is tied, one that trains as if its lr were 100x too small is worse, and gaps the
size of the seed noise over three seeds stay open; stage 1's lr range; and the equivalence tests' numbers."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from src.analysis.stats import compare, holm, look_levels
from src.analysis.study import report as study_report
from src.analysis.study.plan import make_plan
from src.analysis.study.stages import run_stages, sequential
from tests.conftest import read_csv, write_confirm_run
from tests.test_study_stages import StandIn


def landscape(lr: float, seed: int, epoch: int) -> float:
    """Test accuracy of a run: best at lr 0.1, 20 points lower 100x away from it, a little seed noise."""
    return 0.6 + 0.04 * epoch - 0.1 * abs(math.log10(lr / 0.1)) + 0.002 * ((seed * 7) % 5)


def study_plan(tmp_path, schedules: str, *options: str):
    return make_plan(
        "quick",
        [f"schedules={schedules}", "tune.lrs=[0.01,0.1,1.0]", "tune.halving=null", f"dir={tmp_path}", *options],
        ["trainer.epochs=2"],
    )


def test_the_same_schedule_under_two_labels_is_tied_at_the_first_look(tmp_path):
    plan = study_plan(tmp_path, "[constant,{name:twin,overrides:['scheduler=constant']}]", "confirm.max_seeds=9")
    launch = StandIn(plan, lambda name, lr, seed, epoch: landscape(lr, seed, epoch))  # the label changes nothing
    picks = run_stages(plan, launch, say=lambda line: None)
    state = sequential(plan, picks)
    loser = next(name for name in ("constant", "twin") if state.state[name] == "tied")
    assert state.looks[0].tied == (loser,) and state.looks[0].p_tied_holm[loser] == 0.0  # every difference is 0
    assert len(launch.batches) == 2 and state.seeds == {"constant": 3, "twin": 3}  # no seed after the first look


def test_a_schedule_that_trains_as_if_its_lr_were_100x_too_small_is_worse(tmp_path):
    plan = study_plan(tmp_path, "[constant,cosine_warmup]", "confirm.max_seeds=9")

    def accuracy(name, lr, seed, epoch):  # cosine_warmup's runs go as constant's would at a 100x smaller lr
        return landscape(lr / 100 if name == "cosine_warmup" else lr, seed, epoch)

    picks = run_stages(plan, StandIn(plan, accuracy), say=lambda line: None)
    state = sequential(plan, picks)
    assert state.state == {"constant": "best", "cosine_warmup": "worse"} and state.looks[0].decided == (
        "cosine_warmup",
    )


def test_gaps_the_size_of_the_seed_noise_over_three_seeds_stay_open(tmp_path):
    plan = study_plan(tmp_path, "[constant,cosine_warmup]", "confirm.max_seeds=null")

    def accuracy(name, lr, seed, epoch):  # +-1.5 points of seed noise, the other way round for cosine_warmup
        noise = 0.015 * (((seed * 7) % 3) - 1) * (1 if name == "constant" else -1)
        return landscape(lr, seed, epoch) + noise

    picks = run_stages(plan, StandIn(plan, accuracy), say=lambda line: None)
    state = sequential(plan, picks)
    assert sorted(state.state.values()) == ["best", "open"] and state.seeds == {"constant": 3, "cosine_warmup": 3}
    look = state.looks[0]
    assert look.decided == () and look.tied == () and look.level == 0.05


def test_worse_and_tied_share_one_holm_family_per_look():
    best, tied, worse = [0.80, 0.82, 0.81, 0.83], [0.799, 0.819, 0.811, 0.829], [0.70, 0.73, 0.71, 0.72]
    values = {"a": dict(enumerate(best)), "b": dict(enumerate(tied)), "c": dict(enumerate(worse))}
    from src.analysis.stats import sequential_verdict

    result = sequential_verdict(values, [0, 1, 2, 3], [4], margin=0.01)
    b, c = compare(best, tied, margin=0.01), compare(best, worse, margin=0.01)
    adjusted = holm([b.p_paired, c.p_paired, b.p_equivalent, c.p_equivalent])
    assert result.looks[0].p_holm == {"b": adjusted[0], "c": adjusted[1]}
    assert result.looks[0].p_tied_holm == {"b": adjusted[2], "c": adjusted[3]}
    assert result.state == {"a": "best", "b": "tied", "c": "worse"} and look_levels([4]) == [0.05]


# ------------------------------------------------------------------------------------------------ the lr range


def tuned_range(tmp_path, lrs: str, halving: str, margin: int, epochs: int) -> dict:
    """Stage 1 of constant and cosine_warmup on `landscape`, run by the stand-in; constant's lr range."""
    options = [f"tune.lrs={lrs}", f"tune.halving={halving}", f"margin={margin}", "confirm.max_seeds=null"]
    plan = make_plan(
        "quick", ["schedules=[constant,cosine_warmup]", *options, f"dir={tmp_path}"], [f"trainer.epochs={epochs}"]
    )
    launch = StandIn(plan, lambda name, lr, seed, epoch: landscape(lr, seed, epoch))
    return run_stages(plan, launch, say=lambda line: None)["constant"]["lr_range"]


def test_the_lr_range_is_the_neighbours_within_the_margin_of_the_schedules_best(tmp_path):
    robust = tuned_range(tmp_path, "[0.01,0.03,0.1,0.3,1.0]", "null", margin=6, epochs=2)
    # 0.03 and 0.3 are 4.8 points below 0.1, 0.01 and 1.0 are 10 below
    assert (robust["low"], robust["high"], robust["epoch"], robust["at_edge"]) == ("0.03", "0.3", 2, False)
    assert robust["factor"] == pytest.approx(10)


def test_with_halving_the_lr_range_is_judged_at_the_first_rung_where_every_lr_still_runs(tmp_path):
    robust = tuned_range(tmp_path, "[0.01,0.1,1.0,10.0]", "2", margin=15, epochs=4)
    assert robust["epoch"] == 1 and set(robust["scores"]) == {"0.01", "0.1", "1.0", "10.0"}
    assert (robust["low"], robust["high"], robust["at_edge"]) == ("0.01", "1.0", True)  # 10 lies 20 points below


# ------------------------------------------------------------------------------------------------ the report


def confirm_run(compose_cfg, plan, label: str, scheduler: str, seed: int, test_acc: float) -> None:
    """A finished confirm job of the study in its folder (at lr 0.1)."""
    write_confirm_run(compose_cfg, plan.job_dir("confirm", label, "0.1", seed), label, scheduler, seed, test_acc)


def picks_of(plan) -> dict:
    grid = [{"lr": "0.1", "runs": 1, "failed": 0, "score": 0.8}]
    pick = {"lr": "0.1", "score": 0.8, "rule": "test_acc", "edge": False, "rungs": [2], "grid": grid, "lr_range": None}
    return {schedule.name: pick for schedule in plan.schedules}


SEEDS = (100, 101, 102)
BEST = (0.85, 0.86, 0.84)
ANSWERS = {  # label: (scheduler, accuracies by seed, the verdict expected)
    "constant": ("constant", BEST, "best"),
    "twin": ("constant", BEST, "tied"),  # the same runs under another label
    "far": ("cosine_warmup", (0.65, 0.66, 0.64), "worse"),  # 20 points below on every seed
    "noisy": ("linear_warmup", (0.87, 0.83, 0.84), "open"),  # within the noise, 3 seeds
}


def test_verdict_csv_and_report_md_give_each_answer_with_its_numbers(tmp_path, compose_cfg):
    names = ",".join(ANSWERS)
    plan = make_plan(
        "quick",
        [
            "schedules=[constant,{name:twin,overrides:['scheduler=constant']},{name:far,overrides:['scheduler=cosine_warmup']},"
            "{name:noisy,overrides:['scheduler=linear_warmup']}]",
            "confirm.max_seeds=null",
            f"dir={tmp_path / 'study'}",
        ],
        [],
    )
    assert [s.name for s in plan.schedules] == names.split(",")
    for label, (scheduler, accuracies, _) in ANSWERS.items():
        for seed, test_acc in zip(SEEDS, accuracies, strict=True):
            confirm_run(compose_cfg, plan, label, scheduler, seed, test_acc)
    report = study_report.build_study_report(plan, picks_of(plan), wall_seconds=1.0)
    study_report.write_study_report(report)
    rows = {row["schedule"]: row for row in read_csv(Path(plan.dir) / "verdict.csv")}
    best = next(name for name, row in rows.items() if row["verdict"] == "best")
    assert best in ("constant", "twin")  # the two are equal: either may be the best, the other is tied with it
    expected = {label: answer for label, (_, _, answer) in ANSWERS.items()}
    expected.update({best: "best", ({"constant", "twin"} - {best}).pop(): "tied"})
    assert {name: row["verdict"] for name, row in rows.items()} == expected
    tied = rows[({"constant", "twin"} - {best}).pop()]
    assert float(tied["p_tied_holm"]) == 0.0 and float(tied["p_beats_best"]) == 0.5
    assert float(tied["margin"]) == 0.01
    far = rows["far"]
    assert float(far["p_beats_best"]) == 0.0 and far["seeds_to_tie"] == ""
    assert far["stopped"].startswith("worse at 3")
    noisy = rows["noisy"]
    comparison = compare(list(BEST), list(ANSWERS["noisy"][1]), margin=0.01)
    assert float(noisy["p_tost_lower"]) == pytest.approx(comparison.p_tost_lower)
    assert float(noisy["p_beats_best"]) == 0.5 and noisy["seeds_to_tie"] != ""  # a win, a loss and a tie
    markdown = (Path(plan.dir) / "report.md").read_text()
    assert "Tied with" in markdown and "Worse than" in markdown and "Open: noisy" in markdown
    assert "| TOST p (Holm) |" in markdown and "| P(beats best) |" in markdown
