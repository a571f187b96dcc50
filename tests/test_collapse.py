"""Collapse is a result: a run that learns nothing is marked, stopped early, and never averaged as if it learned."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from tensorboard.plugins.hparams.api_pb2 import Status

from src.analysis.events import read_events
from src.training.trainer import at_chance
from tests.conftest import read_csv, run_metrics, run_sweep, run_train, write_splits

PLUMBING = ("trainer.threads=1", "trainer.progress=false", "data.batch_size=64")


@pytest.fixture(scope="module")
def random_labels_root(tmp_path_factory) -> Path:
    """Noise images with labels that do not depend on them, exactly balanced: no model can beat chance on the
    test set, and any model that answers one class for every image scores exactly 0.10."""
    rng = np.random.default_rng(0)

    def noise(size: int) -> tuple[np.ndarray, np.ndarray]:
        images = rng.integers(0, 255, size=(size, 28, 28)).astype(np.uint8)
        labels = rng.permutation(np.arange(size) % 10).astype(np.uint8)
        return images, labels

    train = noise(512)  # drawn first, from the same generator as the test split
    return write_splits(tmp_path_factory.mktemp("random_labels"), train, noise(1000))


def test_at_chance_needs_both_the_loss_and_the_accuracy_at_chance():
    chance = math.log(10)
    assert at_chance({"train_loss": chance, "test_acc": 0.10}, 10)
    assert at_chance({"train_loss": 40.0, "test_acc": 0.10}, 10)  # a wrecked but finite model
    assert not at_chance({"train_loss": chance, "test_acc": 0.70}, 10)  # a slow start that already learns
    assert not at_chance({"train_loss": 1.2, "test_acc": 0.11}, 10)


@pytest.mark.slow
def test_a_collapsed_run_is_marked_and_stopped_with_exit_0(random_labels_root, tmp_path):
    run_dir = tmp_path / "run"
    done = run_train(
        f"data.root={random_labels_root}",
        *PLUMBING,
        "scheduler=constant",
        "trainer.epochs=5",
        f"hydra.run.dir={run_dir}",
    )
    assert done.returncode == 0, done.stderr
    metrics = run_metrics(run_dir)
    assert metrics["collapsed"] is True and metrics["collapsed_epoch"] == 1
    assert metrics["epochs"] == 1 and len(metrics["history"]) == 1  # stopped: four epochs of budget saved
    assert "run collapsed: epoch 1 ended at chance" in (run_dir / "train.log").read_text()
    events = read_events(run_dir)
    assert events.values("final/collapsed") == [1.0]
    assert events.hparams["_hparams_/session_end_info"].session_end_info.status == Status.STATUS_FAILURE


@pytest.mark.slow
def test_collapse_is_judged_after_the_warmup_and_can_run_on(random_labels_root, tmp_path):
    run_dir = tmp_path / "run"
    done = run_train(
        f"data.root={random_labels_root}",
        *PLUMBING,
        "scheduler=cosine_warmup",
        "scheduler.warmup_epochs=2",  # the rise to the peak ends after epoch 2
        "trainer.epochs=4",
        "trainer.stop_on_collapse=false",
        f"hydra.run.dir={run_dir}",
    )
    assert done.returncode == 0, done.stderr
    metrics = run_metrics(run_dir)
    assert metrics["collapsed"] is True
    assert metrics["collapsed_epoch"] == 3  # the first whole epoch after the warmup
    assert metrics["epochs"] == 4  # not stopped


@pytest.mark.slow
def test_compare_counts_collapsed_runs_instead_of_averaging_them(random_labels_root, synthetic_root, tmp_path):
    sweep = run_sweep(tmp_path, "-m", f"data.root={random_labels_root}", *PLUMBING, "trainer.epochs=2", "seed=0,1")
    (row,) = read_csv(sweep / "summary.csv")
    assert row["seeds"] == "2" and row["collapsed"] == "2" and row["diverged"] == "0"
    assert row["test_acc_mean"] == ""  # no ordinary run: no mean
    assert "2/2 collapsed" in (sweep / "summary.md").read_text()
