"""A whole run in-process on synthetic data: what it logs, what it writes, and that it learns."""

import json
import logging

import pytest
import torch

from src.analysis.events import read_events, read_scalars
from src.runs.files import write_json
from src.schedules import build_lr_driver, lr_curve
from src.train import run
from src.training.data import load
from src.training.device import available_cores
from src.training.models import LeNet
from src.training.tracking import Tracker
from src.training.trainer import Trainer, TrainerSettings
from tests.conftest import run_metrics


def scalars(run_dir, tag):
    return read_scalars(run_dir)[tag]


@pytest.fixture
def synthetic_run(compose_cfg, synthetic_root, tmp_path):
    def _run(*overrides):
        cfg = compose_cfg(
            [
                f"data.root={synthetic_root}",
                "data.batch_size=64",
                "trainer.epochs=3",
                "trainer.progress=false",
                "trainer.log_every_steps=3",
                "trainer.threads=1",
                *overrides,
            ]
        )
        run_dir = tmp_path / "run"
        run_dir.mkdir(exist_ok=True)
        result = run(cfg, run_dir)
        return cfg, run_dir, result

    return _run


def test_run_leaves_metrics_json_with_the_final_numbers(synthetic_run):
    _, run_dir, result = synthetic_run()
    metrics = run_metrics(run_dir)
    assert metrics["epochs"] == 3 and metrics["steps"] == 3 * 8
    assert metrics["test_acc"] == result.history[-1]["test_acc"]
    for key in ("test_acc", "test_loss", "train_loss", "train_acc", "wall_seconds"):
        assert isinstance(metrics[key], float), key
    assert metrics["diverged"] is False
    assert any(override.startswith("data.root=") for override in metrics["overrides"])
    assert [entry["epoch"] for entry in metrics["history"]] == [1, 2, 3]


def test_it_learns_the_synthetic_task(synthetic_run):
    _, _, result = synthetic_run("optimizer.lr=0.05", "trainer.epochs=4")
    assert result.history[-1]["test_acc"] > 0.6
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]


def test_every_step_logs_the_lr_it_used(synthetic_run):
    cfg, run_dir, _ = synthetic_run()
    logged = scalars(run_dir, "train/lr")
    assert [step for step, _ in logged] == list(range(24))
    expected = lr_curve(cfg, steps_per_epoch=8)
    assert [value for _, value in logged] == pytest.approx(expected, rel=1e-6)
    assert logged[0][1] == pytest.approx(cfg.optimizer.lr / 4)  # warmup ceil(24 * 0.1) = 3 steps, 1/(3+1)


def test_epoch_interval_holds_the_lr_through_each_epoch(synthetic_run):
    _, run_dir, _ = synthetic_run("scheduler=cosine", "scheduler.interval=epoch", "optimizer.lr=0.1")
    lrs = [value for _, value in scalars(run_dir, "train/lr")]
    per_epoch = [lrs[0:8], lrs[8:16], lrs[16:24]]
    assert all(len(set(epoch)) == 1 for epoch in per_epoch)
    assert [epoch[0] for epoch in per_epoch] == pytest.approx([0.1, 0.075, 0.025])


def test_tags_sit_on_the_global_step_axis(synthetic_run):
    _, run_dir, _ = synthetic_run()
    assert [step for step, _ in scalars(run_dir, "train/loss")] == [2, 5, 7, 10, 13, 15, 18, 21, 23]
    assert [step for step, _ in scalars(run_dir, "train/acc")] == [2, 5, 7, 10, 13, 15, 18, 21, 23]
    for tag in ("test/loss", "test/acc", "train/epoch_loss", "train/epoch_acc"):
        assert [step for step, _ in scalars(run_dir, tag)] == [8, 16, 24], tag


def test_same_seed_same_numbers(synthetic_run):
    _, _, first = synthetic_run("seed=7")
    _, _, second = synthetic_run("seed=7")
    _, _, other = synthetic_run("seed=8")
    assert first.history == second.history
    assert first.history != other.history


def strict_json(path):
    """metrics.json as a strict parser reads it: NaN and Infinity are not JSON."""

    def refuse(constant):
        raise ValueError(f"{path} holds {constant}, which is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_write_json_turns_non_finite_numbers_into_null(tmp_path):
    payload = {"nan": float("nan"), "list": [float("inf"), 1.5], "nested": {"low": float("-inf"), "n": 3}}
    write_json(tmp_path / "out.json", payload)
    assert strict_json(tmp_path / "out.json") == {"nan": None, "list": [None, 1.5], "nested": {"low": None, "n": 3}}


@pytest.mark.parametrize(
    ("breaking", "found"),
    [
        (["optimizer.lr=1e30"], "the test loss is not finite after step 0 (epoch 1)"),  # huge weights: NaN logits
        (["optimizer.lr=100", "optimizer.weight_decay=1e38"], "the weights are not finite after step 0 (epoch 1)"),
    ],
    ids=["test-loss", "weights"],
)
def test_a_model_broken_by_the_last_update_makes_the_run_diverged_at_that_epoch(synthetic_run, caplog, breaking, found):
    # One step in the run: its loss (of the initial weights) is finite, the update it makes is not.
    with caplog.at_level(logging.WARNING, logger="src.training.trainer"):
        _, run_dir, result = synthetic_run(
            "scheduler=constant", "optimizer.momentum=0", "data.train_size=64", "trainer.epochs=1", *breaking
        )
    assert f"run diverged: {found}" in caplog.text
    assert result.diverged and result.diverged_step == 0 and result.diverged_epoch == 1
    metrics = strict_json(run_dir / "metrics.json")
    assert metrics["diverged"] is True and metrics["diverged_step"] == 0 and metrics["diverged_epoch"] == 1
    assert metrics["epochs"] == 0 and metrics["history"] == [] and metrics["test_loss"] is None
    # TensorBoard: the step's lr and loss are there, no epoch point of broken weights, and the session failed
    events = read_events(run_dir)
    assert events.steps("train/lr") == [0]
    assert "test/loss" not in events.scalars and "final/test_loss" not in events.scalars
    assert events.scalars["final/diverged"] == [(0, 1.0)]


def test_the_thread_count_used_is_recorded_in_metrics_and_hparams(synthetic_run):
    # trainer.threads=null takes every core this process may use: the count itself is what a repeat needs
    _, run_dir, _ = synthetic_run("trainer.threads=null", "trainer.epochs=1")
    assert run_metrics(run_dir)["threads"] == available_cores()
    start = read_events(run_dir).hparams["_hparams_/session_start_info"].session_start_info
    assert start.hparams["threads"].number_value == available_cores()


def test_a_run_continued_on_another_thread_count_says_its_digits_may_differ(compose_cfg, synthetic_root, caplog):
    cfg = compose_cfg(["scheduler=constant"])
    dataset = load(device=torch.device("cpu"), batch_size=256, root=str(synthetic_root), train_size=256)

    def trainer(epochs: int, folder) -> Trainer:
        torch.manual_seed(0)
        model = LeNet()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        driver = build_lr_driver(cfg, optimizer, dataset.steps_per_epoch)
        tracker = Tracker(folder)
        settings = TrainerSettings(epochs=epochs, progress=False, stop_on_collapse=False)
        return Trainer(model, optimizer, driver, dataset, tracker, settings)

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        first = trainer(1, cfg.output_root + "/first")
        first.fit()
        first.tracker.close()
        torch.set_num_threads(2)
        second = trainer(2, cfg.output_root + "/second")
        second.load_state_dict(first.state_dict())
        with caplog.at_level(logging.WARNING, logger="src.training.trainer"):
            result = second.fit()
        second.tracker.close()
    finally:
        torch.set_num_threads(before)
    assert result.threads == 2 and result.epochs == 2
    assert "the run continues on 2 threads after 1: its numbers can differ in the last digits" in caplog.text
