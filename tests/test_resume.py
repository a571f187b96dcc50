"""Checkpoints and resume: atomic writes, best.pt, resumes refused under a changed config, and runs killed mid-epoch
by a real signal that, resumed, end bit for bit where the uninterrupted run ends (weights, optimizer, metrics,
curves)."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import tempfile

import pytest
import torch

from src import REPO_ROOT
from src.analysis.events import read_scalars
from src.runs import checkpoints as checkpointing
from src.runs import resume
from src.runs.errors import BadInput
from src.schedules import Warmup
from src.train import StopOnSignal, run
from src.training.run import paused
from tests.conftest import gate_env, run_metrics, run_train, wait_at_gate

SMALL = ("trainer.threads=1", "trainer.progress=false", "data.batch_size=32", "trainer.log_every_steps=5")
# The killed runs: 512 synthetic images in batches of 2, 256 steps per epoch; the progress bar shows when an epoch
# starts, and a point per step means a stop after any step leaves points past the checkpoint for resume to drop.
# Batches of 2 at lr 0.1 collapse to chance by epoch 2; the run goes on, as the kills need all four epochs.
KILLED = (
    "trainer.threads=1",
    "trainer.progress=true",
    "data.batch_size=2",
    "trainer.log_every_steps=1",
    "trainer.stop_on_collapse=false",
)
EPOCHS = 4
GATE_STEP = 2 * 256 + 100  # where the killed runs are signalled: the 101st step of epoch 3


def assert_same_state(a, b, path="state"):
    """Equal nested checkpoints: tensors bit for bit, everything else by value."""
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), path
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            assert_same_state(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), path
        for index, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_state(x, y, f"{path}[{index}]")
    else:
        assert a == b, path


TIMINGS = ("wall_seconds", "epoch_seconds")


def without_wall_time(metrics: dict) -> dict:
    return {key: value for key, value in metrics.items() if key not in TIMINGS}


# ---------------------------------------------------------------------------------------------- in-process checks


def test_a_failed_write_keeps_the_previous_checkpoint_whole(tmp_path):
    target = tmp_path / checkpointing.LAST
    checkpointing.save(target, {"format": checkpointing.FORMAT_VERSION, "value": 1})
    (tmp_path / f"{checkpointing.LAST}.partial").symlink_to("/dev/full")  # every write there fails: disk full
    with pytest.raises(OSError):
        checkpointing.save(target, {"format": checkpointing.FORMAT_VERSION, "value": 2})
    assert torch.load(target, weights_only=True)["value"] == 1
    assert not (tmp_path / f"{checkpointing.LAST}.partial").exists()


def test_a_damaged_checkpoint_is_a_clear_error(tmp_path):
    damaged = tmp_path / checkpointing.LAST
    damaged.write_bytes(b"\x80\x02 not a checkpoint")
    with pytest.raises(checkpointing.CheckpointError, match=r"cannot be read .*Start the run afresh"):
        checkpointing.load(damaged)


def test_differences_name_what_changes_the_run_and_ignore_plumbing():
    saved = {"optimizer": {"lr": 0.1}, "data": {"batch_size": 256, "root": "/a"}, "trainer": {"threads": 1}}
    current = {"optimizer": {"lr": 0.05}, "data": {"batch_size": 256, "root": "/b"}, "trainer": {"threads": 2}}

    def differences(current: dict) -> list[str]:
        return [checkpointing.describe(change) for change in checkpointing.changes(saved, current)]

    assert differences(current) == ["optimizer.lr: checkpoint 0.1, now 0.05"]
    assert differences({**saved, "seed": 1}) == ["seed: checkpoint (absent), now 1"]


def test_stop_on_signal_turns_the_first_signal_into_a_request():
    previous = signal.getsignal(signal.SIGTERM)
    with StopOnSignal() as stop:
        assert not stop()
        signal.raise_signal(signal.SIGTERM)  # its handler has run when this returns
        assert stop() and stop.received == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is previous


@pytest.fixture
def in_process_run(compose_cfg, synthetic_root, tmp_path):
    """run(overrides) trains in this process into tmp_path/run; returns (cfg, run_dir, result)."""

    def _run(*overrides, resume_point=None):
        cfg = compose_cfg([f"data.root={synthetic_root}", *SMALL, *overrides])
        run_dir = tmp_path / "run"
        run_dir.mkdir(exist_ok=True)
        return cfg, run_dir, run(cfg, run_dir, resume_point)

    return _run


def test_keep_best_keeps_the_epoch_with_the_best_test_accuracy(in_process_run):
    _, run_dir, result = in_process_run("trainer.epochs=3", "checkpoint.keep_best=true", "optimizer.lr=0.02")
    best = checkpointing.load(run_dir / checkpointing.BEST)["trainer"]["result"]["history"]
    accuracies = [entry["test_acc"] for entry in result.history]
    assert best[-1]["test_acc"] == max(accuracies)
    assert best[-1]["epoch"] == accuracies.index(max(accuracies)) + 1  # the first epoch reaching it
    assert checkpointing.load(run_dir / checkpointing.LAST)["trainer"]["result"]["epochs"] == 3


def test_a_config_that_changes_the_run_is_refused_with_the_differences(in_process_run, compose_cfg):
    _, run_dir, _ = in_process_run("trainer.epochs=1")
    changed = compose_cfg([f"data.root={run_dir}", *SMALL, "data.batch_size=64", "optimizer.lr=0.05"])
    with pytest.raises(BadInput) as refused:
        resume.find(changed, run_dir)
    assert refused.value.status == 2
    message = str(refused.value)
    assert "data.batch_size: checkpoint 32, now 64" in message
    assert "optimizer.lr: checkpoint 0.1, now 0.05" in message
    assert "trainer.epochs: checkpoint 1, now 10" in message
    assert "data.root:" not in message  # where the data lives does not change the run
    started = checkpointing.load(run_dir / checkpointing.LAST)["overrides"]
    assert f"Resume with the same overrides: {resume.command(started, run_dir)}\n" in message
    assert "force" not in message and "Traceback" not in message


def test_the_same_config_resumes_with_the_checkpoints_lr_and_counters(in_process_run, compose_cfg):
    cfg, run_dir, first = in_process_run("trainer.epochs=2", "scheduler=cosine")
    point = resume.find(cfg, run_dir)
    assert point.epochs == 2 and point.step == 2 * 16
    _, _, again = in_process_run("trainer.epochs=2", "scheduler=cosine", resume_point=point)
    assert again.history == first.history  # a finished run resumed has nothing left to do


def test_a_run_paused_at_rungs_and_continued_equals_one_never_paused(in_process_run, compose_cfg, tmp_path):
    """What successive halving relies on: a run paused after epochs 1 and 2 (its schedule keeps its length) and
    continued ends bit for bit like the run never paused; a command asking for a reached pause does nothing."""
    overrides = ("trainer.epochs=3", "scheduler=cosine_warmup", "optimizer.lr=0.05")
    point = None
    for until in (1, 2):
        cfg, run_dir, result = in_process_run(*overrides, f"checkpoint.pause_after_epoch={until}", resume_point=point)
        point = resume.find(cfg, run_dir)
        assert result.epochs == until and point.epochs == until
        assert paused(result, cfg) and resume.finished(run_dir, cfg)["epochs"] == until
        assert resume.finished(run_dir, compose_cfg([f"data.root={run_dir}", *SMALL, *overrides])) is None
    paused_history = result.history
    _, _, continued = in_process_run(*overrides, resume_point=point)
    resumed_state = checkpointing.load(run_dir / checkpointing.LAST)["trainer"]
    (run_dir / checkpointing.LAST).rename(tmp_path / "paused.pt")
    for name in (*run_dir.glob("events.out.tfevents.*"), run_dir / "metrics.json"):
        name.unlink()
    _, _, whole = in_process_run(*overrides)
    assert continued.history == whole.history and continued.history[:2] == paused_history
    assert_same_state(
        {key: value for key, value in resumed_state.items() if key != "result"},
        {
            key: value
            for key, value in checkpointing.load(run_dir / checkpointing.LAST)["trainer"].items()
            if key != "result"
        },
    )


# ------------------------------------------------------------------------- real processes killed mid-epoch


def start_train(*overrides: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`python -m src.train OVERRIDES` started in the background, its output (log lines and progress bars) going to
    a file that `finish` reads, so a test that waits on something else never blocks the run on a full pipe."""
    output = tempfile.TemporaryFile()  # noqa: SIM115  (finish reads and closes it)
    process = subprocess.Popen(
        [sys.executable, "-m", "src.train", *overrides],
        cwd=REPO_ROOT,
        env=env or {**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=output,
        stderr=subprocess.STDOUT,
    )
    process.output = output
    return process


def finish(process: subprocess.Popen, timeout: float = 120) -> tuple[int, str]:
    process.wait(timeout=timeout)
    with process.output as output:
        output.seek(0)
        return process.returncode, output.read().decode(errors="replace")


@pytest.fixture(scope="module")
def uninterrupted(synthetic_root, tmp_path_factory):
    """The reference: the same run, never stopped."""
    output_root = tmp_path_factory.mktemp("outputs")
    overrides = (f"data.root={synthetic_root}", *KILLED, f"trainer.epochs={EPOCHS}", f"output_root={output_root}")
    run_dir = output_root / "uninterrupted"
    status, output = finish(start_train(*overrides, f"hydra.run.dir={run_dir}"))
    assert status == 0, output
    return overrides, run_dir


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_a_run_killed_mid_epoch_and_resumed_ends_bit_for_bit_like_an_uninterrupted_one(uninterrupted, signum):
    overrides, reference_dir = uninterrupted
    run_dir = reference_dir.parent / f"killed_{signum.name}"
    reached = run_dir.parent / f"{run_dir.name}.gate"
    process = start_train(*overrides, f"hydra.run.dir={run_dir}", env=gate_env(run_dir, GATE_STEP, reached))
    wait_at_gate(process, reached)  # the run waits inside epoch 3 until the signal comes
    process.send_signal(signum)
    status, output = finish(process)

    assert not (run_dir / "metrics.json").exists()  # an interrupted run has no final metrics
    saved = checkpointing.load(run_dir / checkpointing.LAST)["trainer"]
    assert saved["result"]["epochs"] == 2
    if signum == signal.SIGKILL:
        assert status == -signal.SIGKILL
        assert (run_dir / resume.LOCK).exists()  # left behind, but its lock died with the process
        resume_command = [*overrides, f"hydra.run.dir={run_dir}"]  # the same command again, in the same folder
    else:
        assert status == 128 + signum, output
        assert f"stopped by {signum.name} during epoch" in output and "Traceback" not in output
        # the message's command resumes the run; it was stopped mid-epoch, past the checkpoint's step
        resume_command = shlex.split(output.split("To continue:")[1].strip().splitlines()[0])[3:]
        assert resume_command[-1] == f"resume='{run_dir}'"  # quoted for Hydra
        assert max(step for step, _ in read_scalars(run_dir)["train/lr"]) == GATE_STEP

    status, output = finish(start_train(*resume_command))
    assert status == 0, output
    assert f"resumed after epoch {saved['result']['epochs']}/{EPOCHS}" in output

    reference = run_metrics(reference_dir)
    resumed = run_metrics(run_dir)
    assert without_wall_time(resumed) == without_wall_time(reference)
    final, expected = (
        checkpointing.load(folder / checkpointing.LAST)["trainer"] for folder in (run_dir, reference_dir)
    )
    for state in (final, expected):
        for key in TIMINGS:
            state["result"].pop(key)
    assert_same_state(final, expected)  # weights, optimizer moments, scheduler, RNGs, data order, counters
    assert read_scalars(run_dir) == read_scalars(reference_dir)  # every curve: same steps, same values, none twice
    assert not (run_dir.parent / "runs").exists()  # resume=<folder> leaves no extra run folder behind
    assert not (run_dir / resume.LOCK).exists()


# ------------------------------------------------------------------------- what a checkpoint may hold


class WritesAMarker:
    """Unpickled, it creates the file `marker`: what a hostile last.pt could do with any other call."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def shared_run_folder(tmp_path, payload) -> tuple:
    """A run folder holding `payload` as its last.pt, with an earlier session's `.hydra/` record and metrics.json
    (their bytes, to compare with afterwards)."""
    folder = tmp_path / "shared_run"
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text("seed: 0\n")
    (folder / "metrics.json").write_text('{"epochs": 1}\n')
    torch.save(payload, folder / checkpointing.LAST)
    return folder, {name: (folder / name).read_bytes() for name in (".hydra/config.yaml", "metrics.json")}


@pytest.mark.parametrize("how", ["hydra.run.dir", "resume"])
def test_a_checkpoint_that_would_run_code_is_refused_unread(tmp_path, synthetic_root, how):
    marker = tmp_path / "marker"
    payload = {"format": checkpointing.FORMAT_VERSION, "trainer": WritesAMarker(marker)}
    folder, before = shared_run_folder(tmp_path, payload)
    done = run_train(f"data.root={synthetic_root}", *SMALL, "trainer.epochs=1", f"{how}={folder}")
    assert not marker.exists()
    assert done.returncode == 2, done.stderr
    assert f"{folder / checkpointing.LAST} is refused unread" in done.stderr
    assert "unpickling it could run code" in done.stderr and "Traceback" not in done.stderr
    assert {name: (folder / name).read_bytes() for name in before} == before


def test_a_checkpoint_of_an_older_lrbench_with_schedule_objects_is_refused_unread(tmp_path):
    path = tmp_path / checkpointing.LAST
    torch.save({"format": 1, "trainer": {"lr_driver": {"lr_lambdas": [{"first": Warmup(5, 0.1)}]}}}, path)
    with pytest.raises(checkpointing.CheckpointError, match=r"refused unread.*Warmup.*older lrbench"):
        checkpointing.load(path)


@pytest.mark.parametrize(
    "overrides",
    [
        ("scheduler=cosine_warmup",),
        ("optimizer=adam", "scheduler=reduce_on_plateau", "scheduler.warmup_epochs=1", "scheduler.patience=0"),
    ],
    ids=["sgd_cosine_warmup", "adam_plateau_after_warmup"],
)
def test_a_checkpoint_holds_only_what_torch_loads_with_weights_only(in_process_run, overrides):
    _, run_dir, _ = in_process_run("trainer.epochs=2", *overrides)
    saved = torch.load(run_dir / checkpointing.LAST, weights_only=True)["trainer"]
    assert saved["lr_driver"]["updates"] == 2 * 16
    if "optimizer=adam" in overrides:
        assert saved["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)
        assert set(saved["lr_driver"]["schedule"]["then"]) == {"scale", "best", "bad_epochs", "cooldown_left"}
    else:
        assert saved["optimizer"]["state"][0]["momentum_buffer"].shape == (6, 1, 5, 5)


NOT_A_CHECKPOINT = [
    ({}, ["config: missing", "overrides: missing", "trainer: missing"]),
    (
        {"trainer": "x", "config": [], "overrides": "a=1", "dataset_sha256": 3},
        [
            "config: a list, allowed is a dict",
            "overrides: a string, allowed is a list of strings",
            "dataset_sha256: an integer, allowed is a string",
            "trainer: a string, allowed is a dict",
        ],
    ),
]


@pytest.mark.parametrize("entries, named", NOT_A_CHECKPOINT, ids=["nothing", "wrong_kinds"])
def test_a_foreign_checkpoint_is_refused_naming_each_missing_or_wrong_entry(tmp_path, synthetic_root, entries, named):
    folder, before = shared_run_folder(tmp_path, {"format": checkpointing.FORMAT_VERSION, **entries})
    done = run_train(f"data.root={synthetic_root}", *SMALL, "trainer.epochs=1", f"hydra.run.dir={folder}")
    assert done.returncode == 2, done.stderr
    assert f"{folder / checkpointing.LAST} is not a checkpoint lrbench can continue" in done.stderr
    for line in named:
        assert f"  - {line}" in done.stderr
    assert "Start the run afresh in a new folder" in done.stderr and "Traceback" not in done.stderr
    assert {name: (folder / name).read_bytes() for name in before} == before


def test_every_entry_the_trainer_reads_is_checked(in_process_run):
    _, run_dir, _ = in_process_run("trainer.epochs=1")
    path = run_dir / checkpointing.LAST
    payload = checkpointing.load(path)
    trainer = payload["trainer"]
    del trainer["order"], trainer["lr_driver"]["updates"], trainer["result"]["epochs"]
    trainer["torch_rng"] = [1, 2]
    trainer["result"]["history"] = "none"
    trainer["result"]["surprise"] = 1
    payload["config"]["optimizer"] = "sgd"
    checkpointing.save(path, payload)
    with pytest.raises(checkpointing.CheckpointError) as refused:
        checkpointing.load(path)
    assert str(refused.value).splitlines()[1:-1] == [
        "  - config.optimizer: a string, allowed is a dict",
        "  - trainer.lr_driver.updates: missing",
        "  - trainer.torch_rng: a list, allowed is a tensor",
        "  - trainer.order: missing",
        "  - trainer.result: holds surprise, which a run's result has not",
        "  - trainer.result.epochs: missing",
        "  - trainer.result.history: a string, allowed is a list of dicts",
    ]


@pytest.mark.parametrize("kind", ["directory", "link to nothing"])
def test_a_last_pt_that_is_no_file_is_refused_before_anything_is_written(tmp_path, synthetic_root, kind):
    folder, before = shared_run_folder(tmp_path, {})
    (folder / checkpointing.LAST).unlink()
    if kind == "directory":
        (folder / checkpointing.LAST).mkdir()
    else:
        (folder / checkpointing.LAST).symlink_to(tmp_path / "moved.pt")
    done = run_train(f"data.root={synthetic_root}", *SMALL, "trainer.epochs=1", f"hydra.run.dir={folder}")
    assert done.returncode == 2, done.stderr
    assert f"{folder / checkpointing.LAST} is a {kind}, not a checkpoint" in done.stderr
    assert "Traceback" not in done.stderr
    assert {name: (folder / name).read_bytes() for name in before} == before
    assert sorted(path.name for path in folder.iterdir()) == [".hydra", checkpointing.LAST, "metrics.json", "train.log"]


def test_an_empty_checkpoint_is_a_clear_error(tmp_path):
    empty = tmp_path / checkpointing.LAST
    empty.touch()
    with pytest.raises(checkpointing.CheckpointError, match=r"cannot be read \(it is empty\)\. Start the run afresh"):
        checkpointing.load(empty)
