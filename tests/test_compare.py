"""The comparison report: its numbers are the runs' metrics.json numbers, grouped over seeds, plus its figures."""

from __future__ import annotations

import json
import os
import shutil
import statistics
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from src.analysis.compare import FIGURES, Configuration, main, varying_keys
from src.analysis.runs import scan_runs
from tests.conftest import read_csv, run_metrics, run_module, run_sweep

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
    rows = {row["schedule"]: row for row in read_rows(sweep)}
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
    runs = scan_runs(sweep).runs
    assert len(runs) == 4
    for run in runs:
        steps, lrs = run.scalars("train/lr")
        assert steps == list(range(16))
        assert lrs[0] == pytest.approx(0.1)
        _, accuracies = run.scalars("test/acc")
        assert accuracies == pytest.approx([epoch["test_acc"] for epoch in run.metrics["history"]])


@pytest.mark.slow
def test_outputs_root_groups_the_same_configuration_across_folders(sweep, tmp_path):
    """Runs copied into two folders of one root form one row per configuration; the copies are duplicates of the
    same seeds, not extra seeds."""
    for copy in ("a", "b"):
        shutil.copytree(sweep, tmp_path / copy, ignore=shutil.ignore_patterns("summary.*", "*.png"))
    assert main([str(tmp_path)]) == 0
    rows = read_rows(tmp_path)
    assert sorted((row["schedule"], row["seeds"], row["runs"], row["duplicates"]) for row in rows) == [
        ("constant", "2", "4", "2"),
        ("cosine", "2", "4", "2"),
    ]


def read_rows(folder: Path) -> list[dict[str, str]]:
    return read_csv(folder / "summary.csv")


def copy_sweep(sweep: Path, into: Path) -> Path:
    """A copy of the sweep's runs (without its report) to damage."""
    return Path(shutil.copytree(sweep, into, ignore=shutil.ignore_patterns("summary.*", "*.png")))


def job(folder: Path, schedule: str, seed: int) -> Path:
    (found,) = folder.glob(f"*_scheduler={schedule},seed={seed},*")
    return found


def final_acc(run: Path) -> float:
    return run_metrics(run)["test_acc"]


def write_metrics(run: Path, **changes) -> None:
    metrics = run_metrics(run)
    (run / "metrics.json").write_text(json.dumps({**metrics, **changes}))


def bad_utf8(run: Path) -> None:
    (run / "metrics.json").write_bytes(b'{"test_acc": \xff\xfe}')


def unreadable(run: Path) -> None:
    """Reading /proc/self/mem from offset 0 fails with EIO for every user, root too (chmod would not stop root)."""
    (run / "metrics.json").unlink()
    (run / "metrics.json").symlink_to("/proc/self/mem")


DAMAGES = {
    "truncated metrics.json": (
        lambda run: (run / "metrics.json").write_text('{"test_acc": 0.8, "hist'),
        "not valid JSON",
    ),
    "metrics.json []": (lambda run: (run / "metrics.json").write_text("[]"), "metrics.json holds an array"),
    "metrics.json not UTF-8": (bad_utf8, "metrics.json cannot be read"),
    "metrics.json unreadable": (unreadable, "metrics.json cannot be read: Input/output error"),
    "metrics.json a string test_acc": (
        lambda run: write_metrics(run, test_acc="0.8"),
        "test_acc is a string, not a number",
    ),
    "bad YAML in .hydra/config.yaml": (
        lambda run: (run / ".hydra" / "config.yaml").write_text("optimizer: {lr: 0.1\n"),
        ".hydra/config.yaml is not valid YAML (line 2",
    ),
    ".hydra/hydra.yaml missing": (lambda run: (run / ".hydra" / "hydra.yaml").unlink(), ".hydra/hydra.yaml is missing"),
    "failed.json without a status": (
        lambda run: (run / "failed.json").write_text('{"failed": true, "reason": "?"}'),
        "failed.json needs an integer status",
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_run_is_skipped_and_named(sweep, tmp_path, capsys, damage):
    """One unreadable run does not cost the report: it is left out, named with its reason in summary.md and on
    stderr, and the other runs are reported as they are."""
    copy = copy_sweep(sweep, tmp_path / "sweep")
    damaged, intact = job(copy, "constant", 0), job(copy, "constant", 1)
    make_damage, reason = DAMAGES[damage]
    make_damage(damaged)
    assert main([str(copy)]) == 0
    err = capsys.readouterr().err
    assert f"lrbench: skipped {damaged}: " in err and reason in err
    summary = (copy / "summary.md").read_text()
    skipped = summary.split("## Skipped runs")[1]
    assert f"- `{damaged.name}`: " in skipped and reason in skipped
    rows = {row["schedule"]: row for row in read_rows(copy)}
    assert rows["constant"]["seeds"] == "1" and float(rows["constant"]["test_acc_mean"]) == final_acc(intact)
    assert rows["cosine"]["seeds"] == "2"


@pytest.mark.slow
def test_nothing_but_damaged_runs_exits_2_naming_them(sweep, tmp_path, capsys):
    copy = copy_sweep(sweep, tmp_path / "sweep")
    for run in copy.glob("*_scheduler=*"):
        (run / "metrics.json").write_text("[]")
    assert main([str(copy)]) == 2
    err = capsys.readouterr().err
    assert f"lrbench: no runs under {copy}" in err
    assert err.count("metrics.json holds an array, not an object") == 4
    assert not (copy / "summary.md").exists()


@pytest.mark.slow
def test_a_folder_that_cannot_hold_the_report_gets_it_written_elsewhere(sweep, tmp_path):
    """A folder where summary.md is taken by a folder refuses the report for real, for root too (root ignores
    chmod, so a read-only folder cannot be made here): the report goes to outputs/compare/ and says so, and the
    compared folder is left as it was (no half-written report, no partial files)."""
    copy = copy_sweep(sweep, tmp_path / "sweep")
    (copy / "summary.md").mkdir()
    before = sorted(path.name for path in copy.iterdir())
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    done = run_module("src.compare", str(copy), cwd=cwd)
    assert done.returncode == 0, done.stderr
    (fallback,) = (cwd / "outputs" / "compare").glob("sweep-*")
    assert f"lrbench: cannot write the report into {copy}: Is a directory" in done.stderr
    assert f"lrbench: wrote the report into {fallback} instead" in done.stderr
    assert f"into {fallback}" in done.stdout and "Traceback" not in done.stderr
    assert sorted(path.name for path in fallback.iterdir()) == sorted(["summary.md", "summary.csv", *FIGURES])
    assert sorted(path.name for path in copy.iterdir()) == before
    assert {row["schedule"]: row["seeds"] for row in read_rows(fallback)} == {"constant": "2", "cosine": "2"}


@pytest.mark.slow
def test_a_report_written_nowhere_is_printed_and_exits_3(sweep, tmp_path):
    """With every file write failing (RLIMIT_FSIZE 0: EFBIG, "File too large"), the table is still printed, both
    places are named with the reason, and nothing half-written is left behind."""
    copy = copy_sweep(sweep, tmp_path / "sweep")
    before = sorted(path.name for path in copy.iterdir())
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    done = run_module("src.compare", str(copy), cwd=cwd, file_size_limit=0)
    assert done.returncode == 3, done.stderr
    assert "| constant |" in done.stdout and "| cosine |" in done.stdout
    assert f"lrbench: cannot write the report into {copy}: File too large" in done.stderr
    assert f"lrbench: cannot write the report into {cwd}/outputs/compare/sweep-" in done.stderr
    assert "written nowhere; give a writable folder with --out" in done.stderr and "Traceback" not in done.stderr
    assert sorted(path.name for path in copy.iterdir()) == before
    assert list((cwd / "outputs" / "compare").iterdir()) == []


@pytest.mark.slow
def test_out_writes_the_report_into_another_folder(sweep, tmp_path, capsys):
    copy = copy_sweep(sweep, tmp_path / "sweep")
    assert main([str(copy), "--out", str(tmp_path / "report")]) == 0
    assert f"into {tmp_path / 'report'}" in capsys.readouterr().out
    assert sorted(path.name for path in (tmp_path / "report").iterdir()) == sorted(
        ["summary.md", "summary.csv", *FIGURES]
    )
    assert not (copy / "summary.md").exists()


@pytest.mark.slow
def test_a_repeated_seed_counts_once_the_newest_run(sweep, tmp_path):
    """Two runs of one configuration and seed are one seed: the newest counts, the other is listed as a duplicate."""
    old, new = copy_sweep(sweep, tmp_path / "old"), copy_sweep(sweep, tmp_path / "new")
    for run in old.glob("*/metrics.json"):
        os.utime(run, (run.stat().st_mtime - 60,) * 2)
    write_metrics(job(new, "constant", 0), test_acc=0.5)
    assert main([str(tmp_path)]) == 0
    rows = {row["schedule"]: row for row in read_rows(tmp_path)}
    assert [rows["constant"][key] for key in ("seeds", "runs", "duplicates")] == ["2", "4", "2"]
    assert float(rows["constant"]["test_acc_mean"]) == statistics.fmean([0.5, final_acc(job(new, "constant", 1))])
    summary = (tmp_path / "summary.md").read_text()
    assert "| constant | 2 (+2 duplicates) |" in summary
    duplicates = summary.split("## Duplicate seeds")[1].split("##")[0]
    counted, set_aside = job(new, "constant", 0).relative_to(tmp_path), job(old, "constant", 0).relative_to(tmp_path)
    assert f"- constant seed=0: `{counted}` counts, `{set_aside}` not" in duplicates
    assert duplicates.count("\n- ") == 4


@pytest.mark.slow
def test_unfinished_runs_are_listed_not_averaged(sweep, tmp_path):
    """last.pt without metrics.json, or fewer epochs than trainer.epochs, is unfinished; a run that collapsed in
    its first epoch stopped early on purpose and counts (as collapsed)."""
    copy = copy_sweep(sweep, tmp_path / "sweep")
    stopped, cut_short, collapsed = job(copy, "constant", 0), job(copy, "cosine", 0), job(copy, "cosine", 1)
    (stopped / "metrics.json").unlink()
    first_epoch = run_metrics(cut_short)["history"][:1]
    write_metrics(cut_short, epochs=1, history=first_epoch)
    write_metrics(collapsed, epochs=1, history=first_epoch, collapsed=True, collapsed_epoch=1)
    assert main([str(copy)]) == 0
    rows = {row["schedule"]: row for row in read_rows(copy)}
    assert [rows["constant"][key] for key in ("seeds", "unfinished", "collapsed")] == ["1", "1", "0"]
    assert float(rows["constant"]["test_acc_mean"]) == final_acc(job(copy, "constant", 1))
    assert [rows["cosine"][key] for key in ("seeds", "unfinished", "collapsed", "test_acc_mean")] == ["1", "1", "1", ""]
    summary = (copy / "summary.md").read_text()
    unfinished = summary.split("## Unfinished runs")[1].split("##")[0]
    assert f"- `{stopped.name}`: last.pt but no metrics.json" in unfinished
    assert f"- `{cut_short.name}`: metrics.json has 1 of the 2 epochs" in unfinished
    assert unfinished.count("\n- ") == 2
    assert "| constant | 1 |" in summary and "| 1 unfinished |" in summary


@pytest.mark.slow
def test_failed_jobs_are_listed_with_their_overrides_and_reason(sweep, tmp_path, capsys):
    """A sweep job refused before training leaves failed.json (and Hydra's .hydra/): it gets a row of its own
    configuration with no numbers, and a line with its overrides and reason; it is never averaged."""
    copy = copy_sweep(sweep, tmp_path / "sweep")
    reason = "lrbench: invalid configuration:\n  - optimizer.lr=-1: allowed is a number > 0"
    refused = copy / "4_scheduler=cosine,optimizer.lr=-1"
    shutil.copytree(job(copy, "cosine", 0) / ".hydra", refused / ".hydra")
    config = OmegaConf.load(refused / ".hydra" / "config.yaml")
    config.optimizer.lr = -1
    OmegaConf.save(config, refused / ".hydra" / "config.yaml")
    overrides = ["scheduler=cosine", "optimizer.lr=-1", "seed=0"]
    (refused / "failed.json").write_text(
        json.dumps({"failed": True, "status": 2, "reason": reason, "overrides": overrides})
    )
    (refused / "train.log").write_text(reason + "\n")
    bare = copy / "5_trainer.epochs=abc"  # no .hydra/: listed, in no row
    bare.mkdir()
    (bare / "failed.json").write_text(
        json.dumps({"failed": True, "status": 2, "reason": "bad epochs", "overrides": []})
    )
    retried = job(copy, "constant", 0)  # refused once, trained since: its newer metrics.json counts
    (retried / "failed.json").write_text(json.dumps({"failed": True, "status": 2, "reason": "old", "overrides": []}))
    os.utime(retried / "failed.json", ((retried / "metrics.json").stat().st_mtime - 60,) * 2)
    assert main([str(copy)]) == 0
    rows = read_rows(copy)
    assert sorted((row["schedule"], row["optimizer.lr"], row["seeds"], row["failed_jobs"]) for row in rows) == [
        ("constant", "0.1", "2", "0"),
        ("cosine", "-1", "0", "1"),
        ("cosine", "0.1", "2", "0"),
    ]
    (failed_row,) = (row for row in rows if row["failed_jobs"] == "1")
    assert failed_row["test_acc_mean"] == "" and rows[-1] is failed_row  # no numbers: sorted last
    failed = (copy / "summary.md").read_text().split("## Failed jobs")[1].split("##")[0]
    assert (
        f"- `{refused.name}` (exit 2): lrbench: invalid configuration: - optimizer.lr=-1: allowed is a number > 0 "
        "Overrides: `scheduler=cosine optimizer.lr=-1 seed=0`"
    ) in failed
    assert f"- `{bare.name}` (exit 2): bad epochs Overrides: `(none)`" in failed
    assert failed.count("\n- ") == 2
    assert "| 1 failed job |" in capsys.readouterr().out


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
