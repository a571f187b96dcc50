"""Sweeps: job folder names, presets without -m, paired comparisons, diverged jobs, joblib and submitit launchers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from tensorboard.plugins.hparams.api_pb2 import Status

from src import REPO_ROOT
from src.analysis.events import read_events
from src.config.hooks import job_folder_name
from src.training.device import available_cores
from tests.conftest import read_csv, run_metrics, run_sweep, run_train

PLUMBING = ("trainer.threads=1", "trainer.progress=false")


def sweep_folders(output_root: Path) -> list[Path]:
    return sorted(path for path in (output_root / "sweeps").glob("*/*") if path.is_dir())


def job_names(sweep: Path) -> list[str]:
    return sorted((path.name for path in sweep.iterdir() if (path / "metrics.json").is_file()), key=_job_number)


def _job_number(name: str) -> int:
    return int(name.split("_", 1)[0])


def test_job_folder_name_keeps_the_sweep_order_and_drops_plumbing():
    overrides = ["scheduler=cosine_warmup", "scheduler.warmup_ratio=0.1", "seed=1", "data.root=/tmp/x", "+a/b=c/d"]
    excluded = ["data.root", "trainer.threads"]
    assert job_folder_name(overrides, excluded) == "scheduler=cosine_warmup,scheduler.warmup_ratio=0.1,seed=1,+a_b=c_d"
    preset_per_job = ["+experiment@_global_=textbook_sqrt", "experiment=textbook", "trainer.epochs=2"]
    assert job_folder_name(preset_per_job, ["experiment"]) == "experiment=textbook_sqrt,trainer.epochs=2"


def test_presets_are_multiruns_over_their_axes(compose_cfg):
    warmup = compose_cfg(["experiment=warmup_sweep"])
    assert warmup.hydra.mode.name == "MULTIRUN"
    assert OmegaConf.to_container(warmup.hydra.sweeper.params) == {
        "scheduler": "cosine_warmup,linear_warmup",
        "scheduler.warmup_ratio": "0,0.05,0.1,0.2",
        "seed": "0,1",
    }
    zoo = compose_cfg(["experiment=schedule_zoo"])
    assert zoo.hydra.mode.name == "MULTIRUN"
    assert OmegaConf.to_container(zoo.hydra.sweeper.params) == {"scheduler": "glob(*)"}


def test_negative_joblib_n_jobs_counts_back_from_the_cores(compose_cfg):
    from src.training.run import parallel_jobs as _parallel_jobs

    compose_cfg(["hydra/launcher=joblib"])  # n_jobs: -1, one job per core
    assert _parallel_jobs() == available_cores()
    compose_cfg(["hydra/launcher=joblib", "hydra.launcher.n_jobs=3"])
    assert _parallel_jobs() == 3


@pytest.fixture(scope="module")
def two_sweeps(tmp_path_factory, synthetic_root):
    """The warmup preset shrunk to 4 jobs, then a 2-job sweep whose second job diverges, in one output_root."""
    output_root = tmp_path_factory.mktemp("sweeps")
    common = (f"data.root={synthetic_root}", f"output_root={output_root}", *PLUMBING)
    first = run_train(  # a preset sweeps without -m; command-line values replace its axes
        "experiment=warmup_sweep",
        "scheduler=cosine_warmup",
        "scheduler.warmup_ratio=0,0.5",
        "seed=0,1",
        "trainer.epochs=1",
        *common,
    )
    assert first.returncode == 0, first.stderr
    (sweep,) = sweep_folders(output_root)
    first_metrics = {name: (sweep / name / "metrics.json").read_bytes() for name in job_names(sweep)}
    second = run_train(
        "-m", "scheduler=constant", "optimizer.lr=0.05,10000", "data.batch_size=32", "trainer.epochs=2", *common
    )
    assert second.returncode == 0, second.stderr
    return output_root, first_metrics


@pytest.mark.slow
def test_job_folders_are_named_after_their_overrides_and_no_sweep_overwrites_another(two_sweeps):
    output_root, first_metrics = two_sweeps
    first, second = sweep_folders(output_root)
    assert job_names(first) == [
        "0_scheduler=cosine_warmup,scheduler.warmup_ratio=0,seed=0,trainer.epochs=1",
        "1_scheduler=cosine_warmup,scheduler.warmup_ratio=0,seed=1,trainer.epochs=1",
        "2_scheduler=cosine_warmup,scheduler.warmup_ratio=0.5,seed=0,trainer.epochs=1",
        "3_scheduler=cosine_warmup,scheduler.warmup_ratio=0.5,seed=1,trainer.epochs=1",
    ]
    assert job_names(second) == [
        "0_scheduler=constant,optimizer.lr=0.05,data.batch_size=32,trainer.epochs=2",
        "1_scheduler=constant,optimizer.lr=10000,data.batch_size=32,trainer.epochs=2",
    ]
    assert {name: (first / name / "metrics.json").read_bytes() for name in job_names(first)} == first_metrics
    # the end-of-sweep callback wrote each sweep's summary: one row per warmup ratio, two seeds each
    rows = read_csv(first / "summary.csv")
    assert sorted((row["scheduler.warmup_ratio"], row["seeds"]) for row in rows) == [("0", "2"), ("0.5", "2")]
    for name in ("summary.md", "lr_curves.png", "test_acc.png", "final_acc_vs_warmup.png"):
        assert (first / name).stat().st_size > 0 and (second / name).stat().st_size > 0


@pytest.mark.slow
def test_a_diverged_job_is_recorded_and_the_sweep_goes_on(two_sweeps):
    output_root, _ = two_sweeps
    sweep = sweep_folders(output_root)[1]
    finished, diverged = (sweep / name for name in job_names(sweep))
    finished_metrics = run_metrics(finished)
    diverged_metrics = run_metrics(diverged)
    assert finished_metrics["diverged"] is False and finished_metrics["epochs"] == 2
    assert diverged_metrics["diverged"] is True and diverged_metrics["epochs"] < 2
    assert isinstance(diverged_metrics["diverged_step"], int)

    for folder, flag, status in ((finished, 0.0, Status.STATUS_SUCCESS), (diverged, 1.0, Status.STATUS_FAILURE)):
        events = read_events(folder)
        assert events.values("final/diverged") == [flag]
        assert events.hparams["_hparams_/session_end_info"].session_end_info.status == status

    rows = {row["optimizer.lr"]: row for row in read_csv(sweep / "summary.csv")}
    assert rows["10000"]["diverged"] == "1" and rows["0.05"]["diverged"] == "0"
    assert "| constant | 10000 | 1 |" in (sweep / "summary.md").read_text()


def _record_start(monkeypatch) -> list[dict]:
    """Make src.train's Trainer note the initial weights and every training batch's labels of each run."""
    import src.training.run

    records: list[dict] = []

    class RecordingTrainer(src.training.run.Trainer):
        def fit(self, until_epoch=None):
            record = {"weights": {k: v.clone() for k, v in self.model.state_dict().items()}, "batches": []}
            records.append(record)
            serve = self.data.train_batches

            def recorded_batches(generator):
                for inputs, labels in serve(generator):
                    record["batches"].append(labels.clone())
                    yield inputs, labels

            self.data.train_batches = recorded_batches
            return super().fit(until_epoch)

    monkeypatch.setattr(src.training.run, "Trainer", RecordingTrainer)
    return records


@pytest.mark.parametrize("seed_b", [3, 4])
def test_same_seed_same_initial_weights_and_batch_order_whatever_the_schedule(
    compose_cfg, synthetic_root, tmp_path, monkeypatch, seed_b
):
    from src.train import run

    records = _record_start(monkeypatch)
    common = [f"data.root={synthetic_root}", "trainer.epochs=2", "data.batch_size=128", *PLUMBING]
    run(compose_cfg(["seed=3", "scheduler=cosine_warmup", "optimizer=sgd", *common]), tmp_path / "a")
    run(
        compose_cfg([f"seed={seed_b}", "scheduler=constant", "optimizer=adam", "optimizer.lr=0.003", *common]),
        tmp_path / "b",
    )
    a, b = records
    assert len(a["batches"]) == len(b["batches"]) == 8  # 512 images / 128, two epochs
    same_weights = all(torch.equal(a["weights"][key], b["weights"][key]) for key in a["weights"])
    same_order = all(torch.equal(x, y) for x, y in zip(a["batches"], b["batches"], strict=True))
    assert same_weights == same_order == (seed_b == 3)
    assert not torch.equal(a["batches"][0], a["batches"][4])  # each epoch draws a new order


@pytest.mark.slow
def test_schedule_zoo_runs_every_schedule_of_the_catalogue(tmp_path, synthetic_root):
    sweep = run_sweep(
        tmp_path,
        "experiment=schedule_zoo",
        "trainer.epochs=2",
        "data.batch_size=64",
        f"data.root={synthetic_root}",
        *PLUMBING,
    )
    schedules = sorted(path.stem for path in (REPO_ROOT / "conf" / "scheduler").glob("*.yaml"))
    ran = sorted(name.split(",")[0].removeprefix(name.split("_", 1)[0] + "_scheduler=") for name in job_names(sweep))
    assert ran == schedules
    assert sorted(row["schedule"] for row in read_csv(sweep / "summary.csv")) == schedules


@pytest.mark.slow
def test_joblib_jobs_share_the_cores(tmp_path, synthetic_root):
    sweep = run_sweep(
        tmp_path,
        "-m",
        "seed=0,1",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "trainer.threads=null",
        "trainer.progress=false",
        "trainer.epochs=1",
        f"data.root={synthetic_root}",
    )
    expected = max(1, available_cores() // 2)
    for name in job_names(sweep):
        log = (sweep / name / "train.log").read_text()
        assert f"training on the CPU with {expected} threads" in log
    assert [row["seeds"] for row in read_csv(sweep / "summary.csv")] == ["2"]


@pytest.mark.slow
def test_submitit_local_launcher_runs_the_sweep(tmp_path, synthetic_root):
    sweep = run_sweep(
        tmp_path,
        "-m",
        "seed=0,1",
        "hydra/launcher=submitit_local",
        "trainer.epochs=1",
        f"data.root={synthetic_root}",
        *PLUMBING,
    )
    assert job_names(sweep) == ["0_seed=0,trainer.epochs=1", "1_seed=1,trainer.epochs=1"]
    assert (sweep / ".submitit").is_dir()
    for name in job_names(sweep):
        assert run_metrics(sweep / name)["epochs"] == 1
    assert (sweep / "summary.md").is_file()
