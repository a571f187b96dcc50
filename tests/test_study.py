"""src.study: the plan and its checks, the lr pick, a tiny end-to-end study, and a study killed and continued."""

from __future__ import annotations

import ast
import json
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from src import REPO_ROOT
from src.analysis.stats import compare, holm
from src.analysis.study.plan import StudyError, _merge, lr_grid, make_plan, parse_args, presets
from src.analysis.study.report import FIGURES, RESULT_COLUMNS
from src.analysis.study.run import main
from src.runs import checkpoints as checkpointing
from tests.conftest import gate_env, read_csv, run_metrics, run_module, wait_at_gate

PLUMBING = ("trainer.threads=1", "data.batch_size=64", "data.train_size=null")
TINY = ("study.schedules=[constant,cosine_warmup]", "study.tune.lrs=[0.003,0.1]", "study.tune.seeds=[0,1]")
FIXED = ("study.tune.halving=null", "study.confirm.max_seeds=null")  # quick's halving and rounds off: fixed stages


def run_study(*args: str) -> subprocess.CompletedProcess:
    """`python -m src.study ARGS` in a subprocess, as a user runs it."""
    return run_module("src.study", *args)


# ------------------------------------------------------------------------------------------------ the plan


def test_the_command_line_splits_into_preset_options_and_run_overrides():
    preset, options, run = parse_args(
        ["study=textbook", "study.confirm.seeds=3", "optimizer=adamw", "trainer.epochs=2"]
    )
    assert (preset, options, run) == ("textbook", ["confirm.seeds=3"], ["optimizer=adamw", "trainer.epochs=2"])
    assert _merge(["trainer.epochs=4", "data.train_size=15000"], ["trainer.epochs=2"]) == [
        "trainer.epochs=2",
        "data.train_size=15000",
    ]
    assert {"quick", "textbook", "zoo"} <= set(presets())


def test_the_lr_grid_is_log_spaced_around_its_centre():
    assert lr_grid(0.1, 3.0, 3) == ["0.0333", "0.1", "0.3"]
    assert lr_grid(0.1, 2.0, 4) == ["0.0354", "0.0707", "0.141", "0.283"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["study=fast"], "study='fast': allowed are budgets, quick, textbook, zoo"),
        (["study.metric=loss"], "study.metric='loss': allowed are test_acc, tail_test_acc"),
        (["study.tune.pick=last"], "study.tune.pick='last': allowed are metric, best_test_acc"),
        (["study.confirm.seeds=1"], "study.confirm.seeds=1: allowed is an integer >= 2"),
        (["study.schedules=[cosine]"], "a study compares at least two schedules"),
        (["study.schedules=[cosine,nope*]"], "'nope*' names no schedule"),
        (["study.baseline=step"], "study.baseline='step': allowed is null or one of the study's schedules"),
        (["optimizer.lr=0.1"], "the study sets optimizer.lr"),
        (["-m"], "a study runs its multiruns itself"),
        (["trainer.epochs=0"], "trainer.epochs=0: allowed is an integer >= 1"),
        (["study.tune.overrides=['scheduler.warmup_ratio=1.5']"], "schedule constant, tune stage, optimizer.lr="),
    ],
)
def test_bad_input_is_refused_before_any_training(args, message, tmp_path, capsys):
    assert main([*args, f"output_root={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "studies").exists()


def imports(module: Path) -> set[str]:
    """The src modules `module` imports, at any depth of its code (type-only and deferred imports included)."""
    found = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.startswith("src.")}


def test_the_analysis_layer_has_no_import_loop_and_only_the_commands_import_it():
    """The plan knows nothing of its report (the report imports the plan); no two modules import each other; outside
    src/analysis/ only the commands and the sweep's summary hook import it."""
    modules = {
        ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts).removesuffix(".__init__"): path
        for path in (REPO_ROOT / "src").rglob("*.py")
    }
    graph = {name: imports(path) for name, path in modules.items()}
    assert "src.analysis.study.report" not in graph["src.analysis.study.plan"]
    loops = [(a, b) for a in graph for b in graph[a] if a < b and a in graph.get(b, ())]
    assert loops == []
    users = {name for name, used in graph.items() if any(m.startswith("src.analysis") for m in used)}
    assert {name for name in users if not name.startswith("src.analysis")} == {
        "src.compare",
        "src.preview",
        "src.study",
        "src.config.hooks",
    }


# ------------------------------------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory, synthetic_root) -> tuple[Path, subprocess.CompletedProcess]:
    """2 schedules x 2 lrs x 2 seeds x 1 epoch of 8 steps on the synthetic data, then 2 confirm seeds each."""
    output_root = tmp_path_factory.mktemp("study")
    done = run_study(
        *TINY,
        *FIXED,
        "study.confirm.seeds=2",
        f"data.root={synthetic_root}",
        "trainer.epochs=1",
        *PLUMBING,
        f"output_root={output_root}",
    )
    assert done.returncode == 0, done.stderr
    (folder,) = (output_root / "studies").glob("*/*")
    return folder, done


@pytest.mark.slow
def test_a_tiny_study_picks_each_schedules_best_lr_and_writes_every_file(tiny_study):
    folder, done = tiny_study
    for name in ("report.md", "results.csv", "verdict.csv", "baseline.csv", "picks.json", "study.json", *FIGURES):
        assert (folder / name).is_file(), name
    results = read_csv(folder / "results.csv")
    assert list(results[0]) == list(RESULT_COLUMNS)
    assert len(results) == 2 * 2 * 2 + 2 * 2
    picks = json.loads((folder / "picks.json").read_text())
    for schedule in ("constant", "cosine_warmup"):
        # the right lr, read independently from the tuning runs' own metrics.json
        means = {}
        for lr in ("0.003", "0.1"):
            values = [run_metrics(folder / "tune" / schedule / f"lr={lr},seed={seed}") for seed in (0, 1)]
            if not any(value["collapsed"] or value["diverged"] for value in values):
                means[lr] = statistics.fmean(value["test_acc"] for value in values)
        assert picks[schedule]["lr"] == max(means, key=means.get)
        confirm = [row for row in results if row["stage"] == "confirm" and row["schedule"] == schedule]
        assert {row["lr"] for row in confirm} == {picks[schedule]["lr"]}
        assert sorted(int(row["seed"]) for row in confirm) == [100, 101]  # paired seeds, apart from tuning's
        for row in confirm:
            run_dir = folder / row["run_dir"]
            assert (run_dir / ".hydra" / "config.yaml").is_file() and list(run_dir.glob("events.out.tfevents.*"))
    verdict = {row["schedule"]: row for row in read_csv(folder / "verdict.csv")}
    for column in ("schedule", "lr", "n", "mean", "std", "diff_vs_best", "diff_ci_low", "diff_ci_high", "p_holm"):
        assert column in next(iter(verdict.values()))
    best = next(row for row in verdict.values() if row["verdict"] == "best")
    assert best["diff_ci_low"] == "" and best["p_holm"] == ""
    assert "## Verdict" in (folder / "report.md").read_text() and f"Best: {best['schedule']}" in done.stdout


@pytest.mark.slow
def test_the_verdict_numbers_are_the_confirm_runs_numbers(tiny_study):
    folder, _ = tiny_study
    results = read_csv(folder / "results.csv")
    verdict = {row["schedule"]: row for row in read_csv(folder / "verdict.csv")}
    ok = {}
    for schedule in verdict:
        rows = [r for r in results if r["stage"] == "confirm" and r["schedule"] == schedule]
        ok[schedule] = {
            int(r["seed"]): float(r["test_acc"]) for r in rows if r["collapsed"] == r["diverged"] == "False"
        }
        if ok[schedule]:
            assert float(verdict[schedule]["mean"]) == pytest.approx(statistics.fmean(ok[schedule].values()))
        assert verdict[schedule]["collapsed"] == f"{sum(r['collapsed'] == 'True' for r in rows)}/{len(rows)}"
    best = next(name for name, row in verdict.items() if row["verdict"] == "best")
    for name, row in verdict.items():
        seeds = sorted(ok[best].keys() & ok[name].keys())
        if name == best or len(seeds) < 2:
            continue
        expected = compare([ok[best][s] for s in seeds], [ok[name][s] for s in seeds], margin=0.01)  # 1 point
        assert float(row["diff_vs_best"]) == pytest.approx(expected.diff)
        # the difference and the equivalence test of one comparison: Holm over both
        p_holm, p_tied_holm = holm([expected.p_paired, expected.p_equivalent])
        assert float(row["p_holm"]) == pytest.approx(p_holm)
        assert float(row["p_tied_holm"]) == pytest.approx(p_tied_holm)
        assert float(row["p_beats_best"]) == pytest.approx(expected.p_beats)


# ------------------------------------------------------------------------------------------------ kill, continue


def process_gone(pid: int) -> bool:
    """Whether the process has ended (a zombie nobody reaps yet counts as ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def processes_naming(text: str) -> list[int]:
    """The live processes whose command line holds `text` (what `ps` would list)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text in cmdline.read_bytes().decode(errors="replace") and not process_gone(int(cmdline.parent.name)):
                found.append(int(cmdline.parent.name))
        except OSError:
            continue  # it ended while we looked
    return found


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_a_killed_study_continues_without_running_finished_jobs_again(tmp_path, synthetic_root, signum):
    folder = tmp_path / "study"
    args = (
        "study.schedules=[constant,cosine_warmup]",
        "study.tune.lrs=[0.005]",
        "study.tune.seeds=[0]",
        *FIXED,
        "study.confirm.seeds=2",
        f"study.dir={folder}",
        f"data.root={synthetic_root}",
        "trainer.epochs=3",
        "trainer.threads=1",
        "data.batch_size=4",  # 128 steps an epoch
        "data.train_size=null",
        "trainer.stop_on_collapse=false",
    )
    first = folder / "tune" / "constant" / "lr=0.005,seed=0"
    second = folder / "tune" / "cosine_warmup" / "lr=0.005,seed=0"
    reached = tmp_path / "gate"
    process = subprocess.Popen(
        [sys.executable, "-m", "src.study", *args],
        cwd=REPO_ROOT,
        env=gate_env(second, 128 + 10, reached),  # the second job waits inside its epoch 2 for the signal
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_at_gate(process, reached)  # the first job finished, the second is mid-epoch
    job_process = int(reached.read_text().split()[1])
    process.send_signal(signum)
    _, err = process.communicate(timeout=120)
    if signum == signal.SIGKILL:  # nothing passed the signal on: the stage's process sees its parent gone
        assert process.returncode == -signal.SIGKILL
        deadline = time.monotonic() + 120  # bounds a hang only
        while not process_gone(job_process):
            assert time.monotonic() < deadline, "the stage's process trained on after its study died"
            time.sleep(0.05)
    else:
        assert process.returncode == 128 + signal.SIGTERM, err
        assert f"python -m src.study study.dir={folder}" in err
    assert process_gone(job_process) and processes_naming(str(folder)) == []  # nothing of the study runs on
    assert "stopped by SIGTERM during epoch 2/3" in (second / "train.log").read_text()  # its checkpoint kept
    assert (first / "metrics.json").is_file() and not (second / "metrics.json").exists()
    finished = (first / "metrics.json").read_bytes(), (first / "metrics.json").stat().st_mtime_ns
    assert not list((folder / "confirm").glob("*/*/metrics.json")) if (folder / "confirm").exists() else True

    done = run_study(f"study.dir={folder}")  # the folder alone: its saved command
    assert done.returncode == 0, done.stderr
    assert ((first / "metrics.json").read_bytes(), (first / "metrics.json").stat().st_mtime_ns) == finished
    assert "resumed after epoch 1/3" in (second / "train.log").read_text()  # from its checkpoint, not afresh
    assert len(list(folder.glob("*/*/*/metrics.json"))) == 2 + 2 * 2
    assert (folder / "report.md").is_file()

    again = run_study(f"study.dir={folder}", "study.confirm.seeds=3")
    assert again.returncode == 2 and "holds another study" in again.stderr


def test_the_grid_can_centre_on_an_lr_range_test(tmp_path):
    (tmp_path / "suggestions.json").write_text(json.dumps({"lr": 0.2}))
    plan = make_plan("quick", ["schedules=[constant,cosine]", f"tune.centre_from={tmp_path}"], [])
    assert plan.lrs == {"constant": lr_grid(0.2, 3.0, 4), "cosine": lr_grid(0.2, 3.0, 4)}
    with pytest.raises(StudyError, match=r"centre_from=.*does not exist; give the folder of a finished"):
        make_plan("quick", ["schedules=[constant,cosine]", f"tune.centre_from={tmp_path / 'none'}"], [])


# ------------------------------------------------------------------------------------------------ damaged runs


def copy_study(folder: Path, into: Path) -> Path:
    """A copy of a finished study to damage; its study.json points at the copy, so `study.dir=` continues it."""
    copy = Path(shutil.copytree(folder, into))
    plan = json.loads((copy / "study.json").read_text())
    (copy / "study.json").write_text(json.dumps({**plan, "dir": str(copy)}))
    return copy


def confirm_job(folder: Path, schedule: str, seed: int) -> Path:
    (found,) = (folder / "confirm" / schedule).glob(f"lr=*,seed={seed}")
    return found


@pytest.mark.slow
def test_a_job_whose_metrics_json_cannot_be_read_runs_again(tiny_study, tmp_path):
    """A truncated metrics.json is not a finished job: it is set aside, said, and the job runs again (from its
    last.pt, to the same result), so the report counts every seed."""
    copy = copy_study(tiny_study[0], tmp_path / "study")
    damaged = confirm_job(copy, "constant", 101)
    recorded = run_metrics(damaged)
    (damaged / "metrics.json").write_text('{"test_acc": 0.8, "hist')
    done = run_study(f"study.dir={copy}")
    assert done.returncode == 0, done.stderr
    assert f"{damaged}: metrics.json is not valid JSON" in done.stderr and "the job runs again" in done.stderr
    assert (damaged / "metrics.json.damaged").read_text() == '{"test_acc": 0.8, "hist'
    assert run_metrics(damaged)["test_acc"] == recorded["test_acc"]
    results = read_csv(copy / "results.csv")
    assert len(results) == 2 * 2 * 2 + 2 * 2 and "Skipped runs" not in (copy / "report.md").read_text()


@pytest.mark.slow
def test_a_run_that_cannot_be_read_is_skipped_named_and_its_seed_not_counted(tiny_study, tmp_path):
    copy = copy_study(tiny_study[0], tmp_path / "study")
    damaged = confirm_job(copy, "constant", 101)
    (damaged / ".hydra" / "config.yaml").write_text("optimizer: {lr: 0.1\n")
    done = run_study(f"study.dir={copy}")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert f"lrbench: skipped {damaged}: .hydra/config.yaml is not valid YAML (line 2" in done.stderr
    report = (copy / "report.md").read_text()
    skipped = report.split("## Skipped runs")[1]
    assert f"- `{damaged.relative_to(copy)}`: .hydra/config.yaml is not valid YAML" in skipped
    flag = "Flag: constant has 1 of the 2 planned confirm seeds; no finished run can be read for seed 101."
    assert flag in report and flag in done.stdout
    verdict = {row["schedule"]: row for row in read_csv(copy / "verdict.csv")}
    assert verdict["constant"]["runs"] == "1" and verdict["cosine_warmup"]["runs"] == "2"
    results = read_csv(copy / "results.csv")
    assert len(results) == 2 * 2 * 2 + 2 * 2 - 1
    assert str(damaged.relative_to(copy)) not in {row["run_dir"] for row in results}


@pytest.mark.slow
def test_a_report_that_cannot_be_written_leaves_the_old_files_and_no_partial_ones(tiny_study, tmp_path):
    """With writes past 8 KiB failing (RLIMIT_FSIZE: EFBIG, for root too), the CSV files fit and the first figure
    does not: the report's files stay as they were, none is half-replaced, no partial file is left, exit 3."""
    copy = copy_study(tiny_study[0], tmp_path / "study")
    (copy / "results.csv").write_text("the previous report\n")
    names = ("results.csv", "verdict.csv", "baseline.csv", "report.md", *FIGURES)
    before = {name: (copy / name).read_bytes() for name in names}
    done = run_module("src.study", f"study.dir={copy}", cwd=REPO_ROOT, file_size_limit=8192)
    assert done.returncode == 3, done.stderr
    assert f"lrbench: cannot write the study's report into {copy}: File too large" in done.stderr
    assert "Traceback" not in done.stderr and "Best: " in done.stdout
    assert {name: (copy / name).read_bytes() for name in names} == before
    assert not list(copy.glob("*.partial.*"))


# ------------------------------------------------------------------------------------------------ one launch, rungs


@pytest.fixture(scope="module")
def halving_study(tmp_path_factory, synthetic_root) -> Path:
    """2 schedules x 4 lrs, rungs at epochs 1, 2 and 4 (halving 2), then 2 to 4 confirm seeds in rounds."""
    folder = tmp_path_factory.mktemp("halving") / "study"
    done = run_study(
        "study.schedules=[constant,cosine_warmup]",
        "study.tune.lrs=[0.003,0.03,0.1,0.3]",
        "study.tune.halving=2",
        "study.confirm.seeds=2",
        "study.confirm.max_seeds=4",
        f"study.dir={folder}",
        f"data.root={synthetic_root}",
        "trainer.epochs=4",
        *PLUMBING,
    )
    assert done.returncode == 0, done.stderr
    return folder


@pytest.mark.slow
def test_each_rung_is_one_launcher_call_in_one_process(halving_study):
    log = (halving_study / "logs" / "study.log").read_text()
    calls = [int(line.split()[2]) for line in log.splitlines() if line.startswith("lrbench: launching")]
    assert calls[:3] == [2 * 4, 2 * 2, 2 * 1]  # every schedule's lrs at a rung, in one call each
    assert all(count > 0 for count in calls[3:]) and sum(calls[3:]) >= 2 * 2  # the confirm rounds
    picks = json.loads((halving_study / "picks.json").read_text())
    for name, pick in picks.items():
        epochs = {
            row["lr"]: run_metrics(halving_study / "tune" / name / f"lr={row['lr']},seed=0")["epochs"]
            for row in pick["grid"]
        }
        assert sorted(epochs.values()) == [1, 1, 2, 4]  # 8 epochs of tuning where 16 were planned
        assert epochs[pick["lr"]] == 4


@pytest.mark.slow
def test_a_promoted_run_equals_a_run_never_paused_bit_for_bit(halving_study, tmp_path):
    """The picked lr's tuning run was paused at epochs 1 and 2 and continued in later batches; trained again in
    one go by src.train, it has the same history and the same final weights."""
    picks = json.loads((halving_study / "picks.json").read_text())
    promoted = halving_study / "tune" / "constant" / f"lr={picks['constant']['lr']},seed=0"
    started = yaml.safe_load((promoted / ".hydra" / "overrides.yaml").read_text())
    assert "checkpoint.pause_after_epoch=1" in started
    again = tmp_path / "again"
    overrides = [item for item in started if not item.startswith(("checkpoint.", "labels."))]
    done = run_module("src.train", *overrides, f"hydra.run.dir={again}")
    assert done.returncode == 0, done.stderr
    assert run_metrics(again)["history"] == run_metrics(promoted)["history"]
    weights = [checkpointing.load(folder / checkpointing.LAST)["trainer"]["model"] for folder in (promoted, again)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])


@pytest.mark.slow
def test_the_report_says_how_many_seeds_each_schedule_took_and_why(halving_study):
    verdict = {row["schedule"]: row for row in read_csv(halving_study / "verdict.csv")}
    report = (halving_study / "report.md").read_text()
    for row in verdict.values():
        assert int(row["seeds"]) in (2, 4) and row["stopped"] != "-"
        assert f"{row['seeds']}: {row['stopped']}" in report
    assert "dropped at epoch 1" in report and "dropped at epoch 2" in report  # the stage-1 table


@pytest.mark.slow
def test_a_study_runs_through_the_submitit_launcher(tmp_path, synthetic_root):
    """The path a SLURM cluster takes (hydra/launcher=slurm is submitit_slurm), run with submitit_local: each
    batch is submitted at once, every job a process of its own, resumed across rungs from its checkpoint."""
    folder = tmp_path / "study"
    done = run_study(
        "study.schedules=[constant,cosine_warmup]",
        "study.tune.lrs=[0.03,0.1]",
        "study.tune.halving=2",
        "study.confirm.seeds=2",
        "study.confirm.max_seeds=null",
        f"study.dir={folder}",
        f"data.root={synthetic_root}",
        "trainer.epochs=2",
        *PLUMBING,
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=10",
    )
    assert done.returncode == 0, done.stderr
    log = (folder / "logs" / "study.log").read_text()
    assert [line for line in log.splitlines() if line.startswith("lrbench: launching")] == [
        "lrbench: launching 4 jobs",  # rung 1: both schedules' two lrs
        "lrbench: launching 2 jobs",  # the better lr of each, from its checkpoint
        "lrbench: launching 4 jobs",  # two confirm seeds each
    ]
    assert len(list((folder / ".submitit").iterdir())) >= 4 + 2 + 4  # every job a submitit job (and its batch)
    assert (folder / "report.md").is_file() and len(list(folder.glob("confirm/*/*/metrics.json"))) == 2 * 2
    overrides = yaml.safe_load((folder / "confirm" / "constant").glob("*/.hydra/overrides.yaml").__next__().read_text())
    assert not any(item.startswith("hydra") for item in overrides)  # the launcher is the launch's, not a job's
