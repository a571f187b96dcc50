"""`python -m src.train` as a user runs it: on the real dataset, from a sub-folder, and with bad input."""

import pytest

from src import REPO_ROOT
from src.analysis.events import read_events
from tests.conftest import run_metrics, run_train

QUICK = ("data.train_size=2048", "trainer.epochs=1", "trainer.threads=1", "trainer.progress=false")


def only_run_dir(output_root):
    runs = [path.parent for path in output_root.rglob("metrics.json")]
    assert len(runs) == 1, runs
    return runs[0]


@pytest.mark.slow
def test_real_data_run_from_a_sub_folder_leaves_metrics_events_and_config(tmp_path):
    done = run_train(*QUICK, "trainer.epochs=3", f"output_root={tmp_path}", cwd=REPO_ROOT / "tests")
    assert done.returncode == 0, done.stderr
    run_dir = only_run_dir(tmp_path)

    metrics = run_metrics(run_dir)
    assert metrics["epochs"] == 3 and metrics["steps"] == 24  # 2048 images / 256 per batch, 3 epochs
    assert 0.4 < metrics["test_acc"] <= 1.0  # well above chance (0.1) after 24 steps (0.54 with seed 0)
    assert "data.train_size=2048" in metrics["overrides"]

    events = read_events(run_dir)
    assert {"train/loss", "train/acc", "train/lr", "test/loss", "test/acc"} <= set(events.scalars)
    assert events.steps("train/lr") == list(range(24))
    assert events.steps("test/acc") == [8, 16, 24]

    assert (run_dir / ".hydra" / "config.yaml").is_file()
    log = (run_dir / "train.log").read_text()
    assert "epoch 3/3 step 24: train_loss" in log


@pytest.mark.slow
def test_two_runs_with_one_seed_give_identical_metrics(tmp_path):
    results = []
    for name in ("first", "second"):
        done = run_train(*QUICK, "data.train_size=1024", "seed=3", f"output_root={tmp_path / name}")
        assert done.returncode == 0, done.stderr
        results.append(run_metrics(only_run_dir(tmp_path / name)))
    assert results[0]["history"] == results[1]["history"]


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("scheduler=no_such_schedule", "Could not find 'scheduler/no_such_schedule'"),
        ("optimizer.lr=-1", "optimizer.lr=-1: allowed is a number > 0"),
        ("trainer.epochs=0", "trainer.epochs=0: allowed is an integer >= 1"),
        ("data.batch_size=0", "data.batch_size=0: allowed is an integer >= 1"),
    ],
)
def test_bad_input_exits_non_zero_naming_the_problem_before_training(tmp_path, override, expected):
    done = run_train(override, f"output_root={tmp_path}", "trainer.threads=1", timeout=120)
    assert done.returncode != 0
    assert expected in done.stderr
    assert "Traceback" not in done.stderr
    assert not list(tmp_path.rglob("events.out.tfevents*")), "training must not start"


def test_missing_dataset_exits_non_zero_saying_how_to_get_it(tmp_path):
    done = run_train(
        f"data.root={tmp_path / 'nothing-here'}", "data.download=false", f"output_root={tmp_path}", timeout=120
    )
    assert done.returncode == 2
    assert "Fashion-MNIST is not in data.root=" in done.stderr
    assert "apt-get install dataset-fashion-mnist" in done.stderr
    assert "Traceback" not in done.stderr
    assert not list(tmp_path.rglob("events.out.tfevents*"))


def test_each_command_chooses_its_hooks_through_a_config_group(compose_cfg):
    hooks = {name: list(compose_cfg([], config_name=name).hydra.callbacks) for name in ("train", "lr_find")}
    assert hooks == {
        "train": ["failed_jobs", "sweep_summary", "output_folder_check"],  # the report before the exit status
        "lr_find": ["failed_jobs", "output_folder_check"],  # a range test reports on no trained runs
    }
    assert compose_cfg(["~hydra.callbacks.sweep_summary"], config_name="train").hydra.callbacks.failed_jobs


def test_resume_makes_its_folder_the_run_folder_of_hydra_when_it_holds_a_checkpoint(compose_cfg, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    assert compose_cfg([f"resume={run_dir}"]).hydra.run.dir.startswith(f"{tmp_path}/runs/")  # no last.pt: refused
    (run_dir / "last.pt").touch()
    assert compose_cfg([f"resume={run_dir}"]).hydra.run.dir == str(run_dir)  # Hydra logs into its train.log
    assert compose_cfg([]).hydra.run.dir.startswith(f"{tmp_path}/runs/")
