"""A run's life around its training: the record of what it is (.hydra/, overrides) that only an accepted command
writes, resumes refused under a changed config or other data (the run's files untouched), one process per run
folder, the command that continues a stopped sweep job, a disk full at the start or at a checkpoint, and sweeps
whose bad jobs fail alone."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from src import REPO_ROOT
from src.runs import checkpoints as checkpointing
from src.runs import resume
from tests.conftest import gate_env, run_metrics, run_module, run_train, wait_at_gate
from tests.test_resume import KILLED, finish, start_train

QUICK = ("trainer.threads=1", "trainer.progress=false", "data.batch_size=32")


@pytest.fixture(scope="module")
def reference_run(synthetic_root, tmp_path_factory):
    """A finished 1-epoch run at lr 0.1 (16 steps), and the overrides it was started with."""
    output_root = tmp_path_factory.mktemp("lifecycle")
    overrides = (f"data.root={synthetic_root}", *QUICK, "trainer.epochs=1", f"output_root={output_root / 'out'}")
    run_dir = output_root / "reference"
    done = run_train(*overrides, f"hydra.run.dir={run_dir}")
    assert done.returncode == 0, done.stderr
    return run_dir, overrides


@pytest.fixture
def finished_run(reference_run, tmp_path):
    """A copy of the reference run to change, and its overrides."""
    run_dir, overrides = reference_run
    shutil.copytree(run_dir, tmp_path / "run")
    return tmp_path / "run", overrides


def hydra_record(run_dir: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in (run_dir / ".hydra").iterdir()}


def run_files(run_dir: Path) -> dict[str, bytes]:
    """Every file of a run folder but its log, which a refused command adds its refusal to."""
    return {str(path.relative_to(run_dir)): path.read_bytes() for path in run_dir.rglob("*") if path.is_file()}


def assert_untouched(run_dir: Path, before: dict[str, bytes], log_before: str) -> None:
    files = run_files(run_dir)
    log = files.pop("train.log").decode()
    assert files == {name: data for name, data in before.items() if name != "train.log"}
    assert log.startswith(log_before)


def unfinished_run(run_dir: Path) -> None:
    """Make the 1-epoch run in `run_dir` a 2-epoch run stopped after its first epoch (what its checkpoint then
    holds), so `trainer.epochs=2` continues it."""
    payload = checkpointing.load(run_dir / checkpointing.LAST)
    payload["config"]["trainer"]["epochs"] = 2
    payload["overrides"] = [*payload["overrides"], "trainer.epochs=2"]
    checkpointing.save(run_dir / checkpointing.LAST, payload)
    (run_dir / "metrics.json").unlink()


def shell_command(command: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """A printed command as a user pastes it into a shell, with this interpreter as `python`."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    return subprocess.run(
        command, shell=True, cwd=REPO_ROOT, env={**os.environ, "PATH": path}, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip


# ------------------------------------------------------------------------------------------------ in-process checks


@pytest.mark.parametrize(
    "value",
    ["/runs/0_seed=0,optimizer.lr=0.1", "/données/é 日本", "it's", "a\\", "${oops}", "a\\${x}", "x\\'y", "123", "null"],
)
def test_a_value_quoted_for_hydra_reads_back_exactly(compose_cfg, value):
    from src.runs.resume import hydra_quoted

    assert compose_cfg([f"resume={hydra_quoted(value)}"]).resume == value


# ------------------------------------------------------------------------- the record only accepted commands write


@pytest.mark.slow
def test_a_refused_resume_leaves_the_runs_record_as_it_was(reference_run):
    run_dir, overrides = reference_run
    record, recorded_metrics = hydra_record(run_dir), run_metrics(run_dir)
    done = run_train(*overrides, "optimizer.lr=0.05", f"hydra.run.dir={run_dir}")
    assert done.returncode == 2 and "optimizer.lr: checkpoint 0.1, now 0.05" in done.stderr
    assert hydra_record(run_dir) == record  # Hydra wrote .hydra/ before the refusal; now nothing does
    assert OmegaConf.load(run_dir / ".hydra" / "config.yaml").optimizer.lr == 0.1
    assert run_metrics(run_dir) == recorded_metrics


@pytest.mark.slow
def test_a_refused_config_or_resume_leaves_no_run_folder_behind(reference_run, tmp_path):
    run_dir, overrides = reference_run
    output_root = tmp_path / "not_yet"
    bad_value = run_train(*overrides, "optimizer.lr=-1", f"output_root={output_root}")
    refused_resume = run_train(*overrides, "optimizer.lr=0.05", f"resume={run_dir}", f"output_root={output_root}")
    assert bad_value.returncode == refused_resume.returncode == 2
    assert "optimizer.lr=-1: allowed is a number > 0" in bad_value.stderr
    assert "cannot resume" in refused_resume.stderr
    assert not output_root.exists()  # the run and date folders this process made are gone, and output_root too


@pytest.mark.slow
def test_resume_naming_a_file_says_so_and_names_the_folder(reference_run):
    run_dir, overrides = reference_run
    done = run_train(*overrides, f"resume={run_dir / 'last.pt'}")
    assert done.returncode == 2
    assert f"that is a file, not a run folder (did you mean resume='{run_dir}'?)" in done.stderr


# ---------------------------------------------------------------------------------- a resume is exact or refused


@pytest.mark.slow
@pytest.mark.parametrize("how", ["resume", "hydra.run.dir"])
def test_a_resume_under_a_changed_config_is_refused_with_the_differences_and_the_command(finished_run, how):
    run_dir, overrides = finished_run
    before, log_before = run_files(run_dir), (run_dir / "train.log").read_text()
    done = run_train(*overrides, "optimizer.lr=0.05", "trainer.epochs=2", "optimizer=adam", f"{how}={run_dir}")
    assert done.returncode == 2, done.stderr
    assert f"cannot resume {run_dir}: this config differs from the checkpoint's" in done.stderr
    for line in (
        "optimizer._target_: checkpoint 'torch.optim.SGD', now 'torch.optim.Adam'",
        "optimizer.lr: checkpoint 0.1, now 0.05",
        "trainer.epochs: checkpoint 1, now 2",
    ):
        assert f"  - {line}" in done.stderr
    command = done.stderr.split("Resume with the same overrides: ")[1].splitlines()[0]
    assert command == resume.command(list(overrides), run_dir)
    assert "force" not in done.stderr and "Traceback" not in done.stderr
    assert_untouched(run_dir, before, log_before)  # weights, record, metrics, curves: byte for byte
    assert shell_command(command).returncode == 0  # the printed command is accepted


@pytest.mark.slow
def test_a_resume_on_other_data_is_refused_and_leaves_the_run_as_it_was(finished_run, synthetic_root, tmp_path):
    run_dir, overrides = finished_run
    other = tmp_path / "other"
    shutil.copytree(synthetic_root, other)
    labels = other / "FashionMNIST" / "raw" / "train-labels-idx1-ubyte"
    changed = bytearray(labels.read_bytes())
    changed[-1] = (changed[-1] + 1) % 10  # one label of 512 differs: still a whole, valid file
    labels.write_bytes(bytes(changed))
    unfinished_run(run_dir)
    before, log_before = run_files(run_dir), (run_dir / "train.log").read_text()

    refused = run_train(*overrides, "trainer.epochs=2", f"data.root={other}", f"resume={run_dir}")
    assert refused.returncode == 2
    assert "the dataset differs from the one its checkpoint was trained on" in refused.stderr
    assert "force" not in refused.stderr and "Traceback" not in refused.stderr
    assert_untouched(run_dir, before, log_before)
    same_data = run_train(*overrides, "trainer.epochs=2", f"resume={run_dir}")
    assert same_data.returncode == 0, same_data.stderr
    assert "resumed after epoch 1/2" in same_data.stdout and run_metrics(run_dir)["epochs"] == 2


# ------------------------------------------------------------------------------------------ one process per folder


@pytest.mark.slow
def test_a_second_process_in_a_run_folder_is_refused_naming_the_one_training_there(reference_run):
    run_dir, overrides = reference_run
    checkpoint = (run_dir / checkpointing.LAST).read_bytes()
    with open(run_dir / ".lock", "w") as lock:  # what a process training there holds
        fcntl.flock(lock, fcntl.LOCK_EX)
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        done = run_train(*overrides, f"resume={run_dir}")
    (run_dir / ".lock").unlink()
    assert done.returncode == 2
    assert f"cannot train in {run_dir}: process {os.getpid()} is training there" in done.stderr
    assert (run_dir / checkpointing.LAST).read_bytes() == checkpoint


@pytest.mark.slow
def test_a_run_that_goes_on_in_its_folder_drops_an_earlier_failed_json(finished_run):
    run_dir, overrides = finished_run
    (run_dir / "failed.json").write_text('{"failed": true, "status": 2, "reason": "an earlier attempt"}')
    done = run_train(*overrides, f"resume={run_dir}")
    assert done.returncode == 0, done.stderr
    assert not (run_dir / "failed.json").exists()  # src.compare would list the run as failed


def test_a_finished_run_whose_metrics_json_is_damaged_is_not_skipped_but_recorded_again(finished_run):
    run_dir, overrides = finished_run
    recorded = run_metrics(run_dir)
    (run_dir / "metrics.json").write_text('{"test_acc": 0.8')  # cut short
    done = run_train(*overrides, f"resume={run_dir}", "checkpoint.skip_finished=true")
    assert done.returncode == 0, done.stderr
    assert "metrics.json cannot be read" in done.stdout + done.stderr
    again = run_metrics(run_dir)
    assert again["test_acc"] == recorded["test_acc"] and again["history"] == recorded["history"]


# --------------------------------------------------------------------------------------------------- a full disk


@pytest.mark.slow
def test_a_full_disk_at_a_checkpoint_exits_3_and_keeps_the_last_one_whole(finished_run):
    run_dir, overrides = finished_run
    unfinished_run(run_dir)
    saved = checkpointing.load(run_dir / checkpointing.LAST)["trainer"]
    # last.pt (513 KB) cannot be written again after epoch 2; the run's small files can
    done = run_module("src.train", *overrides, "trainer.epochs=2", f"hydra.run.dir={run_dir}", file_size_limit=200_000)
    assert done.returncode == 3, done.stderr
    message = f"cannot write the run's files in {run_dir}: File too large"
    assert message in done.stderr and "Traceback" not in done.stderr
    assert message in (run_dir / "train.log").read_text()
    assert not (run_dir / f"{checkpointing.LAST}.partial").exists()
    kept = checkpointing.load(run_dir / checkpointing.LAST)["trainer"]
    assert kept["step"] == saved["step"] == 16 and kept["result"] == saved["result"]


@pytest.mark.slow
def test_a_disk_full_from_the_start_exits_3_and_leaves_no_folder(synthetic_root, tmp_path):
    run_dir = tmp_path / "new" / "run"
    # the log's few lines fit, the run's record (.hydra/hydra.yaml, about 5 KB) does not
    done = run_module(
        "src.train", f"data.root={synthetic_root}", *QUICK, f"hydra.run.dir={run_dir}", file_size_limit=4000
    )
    assert done.returncode == 3, done.stderr
    assert f"cannot write the run's files in {run_dir}: File too large" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "new").exists()


# ---------------------------------------------------------------------------------------------------------- sweeps


@pytest.mark.slow
def test_the_command_printed_after_a_signal_in_a_sweep_job_continues_it_from_a_shell(synthetic_root, tmp_path):
    sweep_dir = tmp_path / "sweep=a,b é"  # a job folder holds '=' and ',' anyway; the sweep's adds non-ASCII
    common = (f"data.root={synthetic_root}", *KILLED, "trainer.epochs=2", f"output_root={tmp_path}")
    reached = tmp_path / "gate"
    gated = gate_env(sweep_dir, 256 + 10, reached)  # job 0 waits inside its epoch 2 for the signal
    process = start_train("-m", *common, "seed=0,1", f"hydra.sweep.dir='{sweep_dir}'", env=gated)
    wait_at_gate(process, reached)
    process.send_signal(signal.SIGTERM)
    status, output = finish(process)
    assert status == 128 + signal.SIGTERM, output
    (job,) = [path for path in sweep_dir.iterdir() if path.is_dir()]  # the signal ended the sweep: no job 1
    assert job.name.startswith("0_") and job.name.endswith(",trainer.epochs=2,seed=0")
    command = output.split("To continue:")[1].strip().splitlines()[0]

    resumed = shell_command(command)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed after epoch 1/2" in resumed.stdout
    assert run_metrics(job)["epochs"] == 2


@pytest.mark.slow
@pytest.mark.parametrize(
    "launcher", [(), ("hydra/launcher=joblib", "hydra.launcher.n_jobs=2")], ids=["in-process", "joblib"]
)
def test_a_bad_sweep_job_fails_alone_and_the_sweep_says_so(synthetic_root, tmp_path, launcher):
    overrides = (f"data.root={synthetic_root}", *QUICK, "trainer.epochs=1", f"output_root={tmp_path}")
    done = run_train("-m", *overrides, "optimizer.lr=-1,0.1", *launcher)
    assert done.returncode == 2  # the first failed job's status
    (sweep,) = (tmp_path / "sweeps").glob("*/*")
    bad, good = sorted(path for path in sweep.iterdir() if path.is_dir())
    assert bad.name.endswith("optimizer.lr=-1") and good.name.endswith("optimizer.lr=0.1")
    assert sorted(path.name for path in bad.iterdir()) == ["failed.json", "train.log"]  # no record of a run
    failed = json.loads((bad / "failed.json").read_text())
    assert failed["failed"] is True and failed["status"] == 2 and failed["job"] == 0
    assert "optimizer.lr=-1: allowed is a number > 0" in failed["reason"]
    assert failed["overrides"][-1] == "optimizer.lr=-1"
    assert run_metrics(good)["epochs"] == 1  # the other job ran
    assert (sweep / "summary.md").is_file()
    assert "1 failed jobs" in done.stdout + done.stderr  # the summary counts it
    assert "lrbench: 1 sweep job failed (the others ran)" in done.stderr
    assert "Traceback" not in done.stdout + done.stderr
