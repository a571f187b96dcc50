"""The recipe for a new column of a study's report, followed from scratch: one entry in VERDICT_COLUMNS (its name in
verdict.csv, and how a schedule fills it), one in VERDICT_TABLE (its header in report.md, and how the row's values
make its cell), both in src/analysis/study/report.py. The report is built from run folders written without training."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from src.analysis.study import report as study_report
from src.analysis.study.plan import Plan, Schedule
from tests.conftest import read_csv, write_confirm_run

SEEDS = (100, 101, 102)
# Each schedule's final test accuracy by confirm seed: cosine ahead of constant on every seed.
ACCURACY = {"constant": (0.80, 0.82, 0.79), "cosine": (0.84, 0.85, 0.83)}


@pytest.fixture
def study(compose_cfg, tmp_path) -> tuple[Plan, dict]:
    """A finished study's folder, plan and picks: two schedules, one lr each, three paired confirm seeds."""
    folder = tmp_path / "study"
    for schedule, accuracies in ACCURACY.items():
        for seed, test_acc in zip(SEEDS, accuracies, strict=True):
            run = folder / "confirm" / schedule / f"lr=0.1,seed={seed}"
            write_confirm_run(compose_cfg, run, schedule, schedule, seed, test_acc)
    plan = Plan(
        preset="quick",
        options=[],
        run_overrides=[],
        schedules=[Schedule(name, [f"scheduler={name}"]) for name in ACCURACY],
        lrs={name: ["0.1"] for name in ACCURACY},
        tune_seeds=[0],
        tune_overrides=[],
        rungs={name: [1] for name in ACCURACY},
        halving=None,
        confirm_seeds=list(SEEDS),
        confirm_rounds=[len(SEEDS)],
        spending="pocock",
        confirm_epochs={name: 1 for name in ACCURACY},
        pick="metric",
        metric="test_acc",
        baseline="constant",
        target_acc=0.85,
        margin=1.0,
        conditions={},
        branches={},
        dir=str(folder),
        jobs={"tune": 2, "confirm": 6},
    )
    grid = [{"lr": "0.1", "runs": 1, "failed": 0, "score": 0.8}]
    picks = {name: {"lr": "0.1", "score": 0.8, "rule": "test_acc", "edge": False, "grid": grid} for name in ACCURACY}
    return plan, picks


def written_report(plan: Plan, picks: dict) -> tuple[list[dict[str, str]], str]:
    """verdict.csv's rows and report.md, as the study writes them at its end."""
    study_report.write_study_report(study_report.build_study_report(plan, picks, wall_seconds=1.0))
    return read_csv(Path(plan.dir) / "verdict.csv"), (Path(plan.dir) / "report.md").read_text()


def test_a_report_column_is_one_entry_per_table(study, monkeypatch):
    # 1. verdict.csv: the column's name, and its value from the schedule (its runs, its ok values by seed)
    monkeypatch.setitem(
        study_report.VERDICT_COLUMNS, "worst_seed", lambda report, contestant, versus: min(contestant.values.values())
    )
    # 2. report.md: the column's header, and its cell from the row of verdict.csv
    monkeypatch.setitem(study_report.VERDICT_TABLE, "worst seed", lambda row: f"{row['worst_seed']:.4f}")

    rows, markdown = written_report(*study)
    assert [row["schedule"] for row in rows] == ["cosine", "constant"] and rows[0]["verdict"] == "best"
    assert [float(row["worst_seed"]) for row in rows] == [0.83, 0.79]
    header = next(line for line in markdown.splitlines() if line.startswith("| schedule | lr |"))
    assert header.endswith("| failed | worst seed |")
    assert "| 0.8300 |" in markdown and "| 0.7900 |" in markdown


def test_without_the_column_the_report_is_as_before(study):
    rows, markdown = written_report(*study)
    assert "worst_seed" not in rows[0] and "worst seed" not in markdown
    assert float(rows[0]["mean"]) == pytest.approx(statistics.fmean(ACCURACY["cosine"]))
    diffs = [a - b for a, b in zip(ACCURACY["constant"], ACCURACY["cosine"], strict=True)]
    assert float(rows[1]["diff_vs_best"]) == pytest.approx(statistics.fmean(diffs))
    baseline = read_csv(Path(study[0].dir) / "baseline.csv")
    assert [(row["schedule"], row["baseline"]) for row in baseline] == [("cosine", "constant")]
