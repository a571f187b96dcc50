"""The comparison report: its numbers are the runs' metrics.json numbers, grouped over seeds, plus its figures."""

from __future__ import annotations

import csv
import json
import shutil
import statistics
from pathlib import Path

import pytest

from src.compare import FIGURES, Configuration, find_runs, main, varying_keys
from tests.conftest import run_sweep

TARGET = 0.3
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, synthetic_root) -> Path:
    """Two schedules x two seeds, 2 epochs of 8 steps on the synthetic data."""
    return run_sweep(
        tmp_path_factory.mktemp("compare"),
        "-m",
        "scheduler=constant,cosine",
        "seed=0,1",
        "trainer.epochs=2",
        "data.batch_size=64",
        f"data.root={synthetic_root}",
        "trainer.threads=1",
        "trainer.progress=false",
    )


def metrics_by_schedule(sweep: Path) -> dict[str, list[dict]]:
    runs: dict[str, list[dict]] = {}
    for path in sorted(sweep.glob("*/metrics.json")):
        schedule = path.parent.name.split(",")[0].split("=")[1]
        runs.setdefault(schedule, []).append(json.loads(path.read_text()))
    return runs


def steps_to_target(metrics: dict) -> int | None:
    return next((epoch["step"] for epoch in metrics["history"] if epoch["test_acc"] >= TARGET), None)


@pytest.mark.slow
def test_report_numbers_equal_the_runs_metrics(sweep, capsys):
    assert main([str(sweep), "--target-acc", str(TARGET)]) == 0
    printed = capsys.readouterr().out
    with open(sweep / "summary.csv", newline="") as handle:
        rows = {row["schedule"]: row for row in csv.DictReader(handle)}
    expected = metrics_by_schedule(sweep)
    assert sorted(rows) == sorted(expected) == ["constant", "cosine"]
    for schedule, runs in expected.items():
        row = rows[schedule]
        assert row["seeds"] == "2" and row["diverged"] == "0"
        for name in ("test_acc", "best_test_acc", "train_loss", "wall_seconds"):
            values = [run[name] for run in runs]
            assert float(row[f"{name}_mean"]) == statistics.fmean(values)
            assert float(row[f"{name}_std"]) == statistics.stdev(values)
        reached = [steps_to_target(run) for run in runs if steps_to_target(run) is not None]
        assert row["reached_target"] == str(len(reached))
        if reached:
            assert float(row["steps_to_target_mean"]) == statistics.fmean(reached)
        mean, std = statistics.fmean(r["test_acc"] for r in runs), statistics.stdev(r["test_acc"] for r in runs)
        assert f"| {schedule} | " in printed and f"{mean:.4f} ± {std:.4f}" in printed
    assert printed.splitlines()[0].split(" | ")[:2] == ["| schedule", "seeds"]  # no key differs but the schedule
    assert (sweep / "summary.md").read_text().count("\n| ") == 1 + 2  # header row (after the title) and two rows


@pytest.mark.slow
def test_report_figures_and_curves_come_from_the_event_files(sweep):
    assert main([str(sweep)]) == 0
    for name in FIGURES:
        assert (sweep / name).read_bytes().startswith(PNG_MAGIC)
    runs = find_runs(sweep)
    assert len(runs) == 4
    for run in runs:
        steps, lrs = run.scalars("train/lr")
        assert steps == list(range(16))
        assert lrs[0] == pytest.approx(0.1)
        _, accuracies = run.scalars("test/acc")
        assert accuracies == pytest.approx([epoch["test_acc"] for epoch in run.metrics["history"]])


@pytest.mark.slow
def test_outputs_root_groups_the_same_configuration_across_folders(sweep, tmp_path):
    """Runs copied into two folders of one root form one row per configuration, with every run counted."""
    for copy in ("a", "b"):
        shutil.copytree(sweep, tmp_path / copy, ignore=shutil.ignore_patterns("summary.*", "*.png"))
    assert main([str(tmp_path)]) == 0
    with open(tmp_path / "summary.csv", newline="") as handle:
        assert sorted((row["schedule"], row["seeds"]) for row in csv.DictReader(handle)) == [
            ("constant", "4"),
            ("cosine", "4"),
        ]


def test_key_columns_are_the_sweep_axes_not_each_schedules_own_parameters():
    def configuration(**hparams):
        return Configuration(hparams={key.replace("__", "."): value for key, value in hparams.items()})

    zoo = [
        configuration(scheduler="cosine", scheduler__warmup_ratio=0.0, scheduler__final_lr=0.0, optimizer__lr=0.1),
        configuration(scheduler="step", scheduler__warmup_ratio=0.1, scheduler__gamma=0.1, optimizer__lr=0.1),
    ]
    assert varying_keys(zoo) == ["scheduler.warmup_ratio"]
    swept = [
        *zoo,
        configuration(scheduler="step", scheduler__warmup_ratio=0.1, scheduler__gamma=0.5, optimizer__lr=0.1),
    ]
    assert varying_keys(swept) == ["scheduler.gamma", "scheduler.warmup_ratio"]


def test_bad_input_exits_2_with_a_message(tmp_path, capsys):
    assert main([str(tmp_path / "missing")]) == 2
    assert "folder=" in capsys.readouterr().err
    assert main([str(tmp_path)]) == 2
    assert f"no runs under {tmp_path}" in capsys.readouterr().err
    assert main([str(tmp_path), "--target-acc", "1.5"]) == 2
    assert "--target-acc=1.5: allowed is a number with 0 < target <= 1" in capsys.readouterr().err
