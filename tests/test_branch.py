"""`checkpoint.branch_from`: a run branched from a trunk's checkpoint equals the run trained from scratch under its
own config, bit for bit (its history, its weights, its curves), and a branch that could not be is refused before
any training, naming why."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from src.analysis.events import read_events
from src.runs.errors import EXIT_BAD_INPUT
from tests.conftest import run_metrics, run_train, write_fashion_mnist

# 4096 synthetic images, batch 256: 16 steps an epoch. No warmup, half of each run decays: a 2-epoch run decays from
# step 16, a 4-epoch run from step 32, so the two agree on epoch 1 and a 2-epoch run may branch there.
WSD = ("scheduler=warmup_stable_decay", "scheduler.warmup_ratio=0", "scheduler.decay_ratio=0.5")
STEPS = 16


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory) -> Path:
    """Enough synthetic images for LeNet to learn them in two epochs at lr 0.05 (well off chance after the first)."""
    return write_fashion_mnist(tmp_path_factory.mktemp("learnable"), train_size=16 * 256, test_size=512)


def train(folder: Path, synthetic_root: Path, *overrides: str):
    common = (f"data.root={synthetic_root}", "optimizer.lr=0.05", "trainer.threads=1", "trainer.progress=false")
    return run_train(*common, *overrides, f"hydra.run.dir={folder}")


def same_run(branch: Path, alone: Path) -> None:
    """The two runs computed the same: every epoch's numbers, the final weights, the curves' steps and values."""
    ours, theirs = run_metrics(branch), run_metrics(alone)
    assert [ours[key] for key in ("history", "test_acc", "epochs", "steps")] == [
        theirs[key] for key in ("history", "test_acc", "epochs", "steps")
    ]
    weights = [torch.load(folder / "last.pt", weights_only=True)["trainer"]["model"] for folder in (branch, alone)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])
    ours, theirs = read_events(branch).scalars, read_events(alone).scalars
    for tag in ("test/acc", "test/loss", "train/epoch_loss", "train/lr"):
        assert ours[tag] == theirs[tag]
    # the per-step training loss starts at the branch point (the trunk's folder has the steps before it)
    start = run_metrics(branch)["branched_from"]["step"]  # none at all for a branch that trains no further step
    assert ours.get("train/loss", []) == [point for point in theirs["train/loss"] if point[0] >= start]


def test_a_cooldown_branched_from_a_wsd_trunk_is_the_run_trained_from_scratch(tmp_path, synthetic_root):
    trunk = train(tmp_path / "trunk", synthetic_root, *WSD, "trainer.epochs=4", "checkpoint.pause_after_epoch=1")
    assert trunk.returncode == 0, trunk.stderr
    branch = tmp_path / "branch"
    done = train(
        branch, synthetic_root, *WSD, "trainer.epochs=2", f"checkpoint.branch_from={tmp_path / 'trunk/last.pt'}"
    )
    assert done.returncode == 0, done.stderr
    alone = train(tmp_path / "alone", synthetic_root, *WSD, "trainer.epochs=2")
    assert alone.returncode == 0, alone.stderr
    same_run(branch, tmp_path / "alone")
    assert run_metrics(branch)["branched_from"] == {
        "checkpoint": str(tmp_path / "trunk/last.pt"),
        "epoch": 1,
        "step": STEPS,
    }
    history = run_metrics(branch)["history"]
    assert len(history) == 2 and history[-1]["test_acc"] > 0.5 and not run_metrics(branch)["collapsed"]
    assert "branched from" in (branch / "train.log").read_text()


def test_a_constant_trunk_branches_into_a_shorter_budget_that_needs_no_further_step(tmp_path, synthetic_root):
    constant = ("scheduler=constant",)
    assert (
        train(
            tmp_path / "trunk", synthetic_root, *constant, "trainer.epochs=3", "checkpoint.pause_after_epoch=2"
        ).returncode
        == 0
    )
    done = train(
        tmp_path / "b",
        synthetic_root,
        *constant,
        "trainer.epochs=2",
        f"checkpoint.branch_from={tmp_path / 'trunk/last.pt'}",
    )
    assert done.returncode == 0, done.stderr
    assert train(tmp_path / "alone", synthetic_root, *constant, "trainer.epochs=2").returncode == 0
    same_run(tmp_path / "b", tmp_path / "alone")


@pytest.mark.parametrize(
    ("trunk", "branch", "message"),
    [
        (  # a cosine decays over the whole run: 2 and 4 epochs differ from the first step on
            ("scheduler=cosine", "trainer.epochs=4"),
            ("scheduler=cosine", "trainer.epochs=2"),
            r"this run's schedule leaves the trunk's at step 1 \(epoch 1\).*Branch after epoch 0 at most",
        ),
        (  # a warmup of 10% of the run is longer in a longer run
            ("scheduler=warmup_stable_decay", "scheduler.warmup_ratio=0.25", "trainer.epochs=4"),
            ("scheduler=warmup_stable_decay", "scheduler.warmup_ratio=0.25", "trainer.epochs=2"),
            r"leaves the trunk's at step 0 \(epoch 1\)",  # ramps of 8 and 16 steps: other slopes
        ),
        (
            (*WSD, "trainer.epochs=4"),
            (*WSD, "trainer.epochs=2", "optimizer.lr=0.02"),
            r"a branch may differ from its trunk only in trainer.epochs, scheduler; this config also changes:\n"
            r"  - optimizer.lr: checkpoint 0.05, now 0.02",
        ),
    ],
)
def test_a_branch_that_would_not_be_its_own_run_is_refused_before_training(
    tmp_path, synthetic_root, trunk, branch, message
):
    assert train(tmp_path / "trunk", synthetic_root, *trunk, "checkpoint.pause_after_epoch=1").returncode == 0
    done = train(tmp_path / "b", synthetic_root, *branch, f"checkpoint.branch_from={tmp_path / 'trunk/last.pt'}")
    assert done.returncode == EXIT_BAD_INPUT
    assert "checkpoint.branch_from=" in done.stderr
    assert re.search(message, done.stderr, re.DOTALL), done.stderr
    assert not (tmp_path / "b" / "metrics.json").exists()


def test_a_missing_trunk_is_named_with_what_is_allowed(tmp_path, synthetic_root):
    done = train(tmp_path / "b", synthetic_root, f"checkpoint.branch_from={tmp_path / 'nothing.pt'}")
    assert done.returncode == EXIT_BAD_INPUT and "checkpoint.branch_from" in done.stderr
    assert "a trunk run's checkpoint file" in done.stderr
