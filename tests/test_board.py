"""TensorBoard side by side: hparams and the custom-scalars layout in each run's own folder, served by a real server."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from src.analysis.events import read_events
from src.training.tracking import FINAL_TAGS
from tests.conftest import run_metrics, run_sweep

SERVER_TIMEOUT = 90.0


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, synthetic_root) -> Path:
    """A finished 2-job sweep (constant and cosine schedules, 1 epoch of 16 steps on the synthetic data: enough to
    leave chance, so neither run is marked collapsed)."""
    return run_sweep(
        tmp_path_factory.mktemp("board"),
        "-m",
        "scheduler=constant,cosine",
        "trainer.epochs=1",
        "data.batch_size=32",
        f"data.root={synthetic_root}",
        "trainer.threads=1",
        "trainer.progress=false",
    )


RUNS = [
    "0_scheduler=constant,trainer.epochs=1,data.batch_size=32",
    "1_scheduler=cosine,trainer.epochs=1,data.batch_size=32",
]


@pytest.mark.slow
def test_each_run_folder_holds_its_hparams_without_an_extra_run(sweep):
    for name in RUNS:
        folder = sweep / name
        assert len(list(folder.glob("events.out.tfevents.*"))) == 1
        assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == [".hydra"]  # add_hparams would add one
        events = read_events(folder)
        start = events.hparams["_hparams_/session_start_info"].session_start_info.hparams
        assert start["scheduler"].string_value == name.split("=")[1].split(",")[0]
        assert start["optimizer"].string_value == "sgd"
        assert start["optimizer.lr"].number_value == 0.1
        assert start["data.batch_size"].number_value == 32
        assert start["trainer.epochs"].number_value == 1
        assert start["seed"].number_value == 0
        experiment = events.hparams["_hparams_/experiment"].experiment
        assert [info.name.tag for info in experiment.metric_infos] == list(FINAL_TAGS)
        # the dashboard lists differing hyperparameters first: the schedule, its lr and warmup are marked so
        leading = {info.name for info in experiment.hparam_infos if info.differs}
        assert leading == {"scheduler", "optimizer.lr", "scheduler.warmup_ratio"}  # warmup_steps is null: not shown
        metrics = run_metrics(folder)
        assert events.values("final/test_acc") == [pytest.approx(metrics["test_acc"])]
        assert "custom_scalars__config__" in events.tensors


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _get(url: str, body: dict | None = None) -> object:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture
def board(sweep):
    """A TensorBoard server on 127.0.0.1 serving the sweep; yields its base URL once it lists both runs."""
    port = _free_port()
    tensorboard = shutil.which("tensorboard", path=str(Path(sys.executable).parent)) or "tensorboard"
    server = subprocess.Popen(
        [tensorboard, "--logdir", str(sweep), "--host", "127.0.0.1", "--port", str(port), "--reload_interval", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_TIMEOUT
        while True:
            try:
                if sorted(_get(f"{base}/data/runs")) == RUNS:
                    break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"TensorBoard did not list the runs: {server.stderr.read().decode()[-2000:]}")
            time.sleep(0.5)
        yield base
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.mark.slow
def test_tensorboard_serves_the_runs_tags_layout_and_hparams(board, sweep):
    tags = _get(f"{board}/data/plugin/scalars/tags")
    assert sorted(tags) == RUNS
    for name in RUNS:
        assert {"train/lr", "train/loss", "test/acc", *FINAL_TAGS} <= set(tags[name])

    layout = _get(f"{board}/data/plugin/custom_scalars/layout")
    (category,) = layout["category"]
    assert [chart["title"] for chart in category["chart"]] == ["learning rate", "train loss", "test accuracy"]

    experiment = _get(f"{board}/data/plugin/hparams/experiment", {"experimentName": ""})
    hparams = {info["name"]: info for info in experiment["hparamInfos"]}
    assert {"scheduler", "optimizer", "optimizer.lr", "data.batch_size", "trainer.epochs", "seed"} <= set(hparams)
    assert [info["name"]["tag"] for info in experiment["metricInfos"]] == list(FINAL_TAGS)

    groups = _get(
        f"{board}/data/plugin/hparams/session_groups",
        {"experimentName": "", "allowedStatuses": ["STATUS_SUCCESS"], "startIndex": 0, "sliceSize": 10},
    )
    sessions = {group["sessions"][0]["name"]: group for group in groups["sessionGroups"]}
    assert sorted(sessions) == RUNS
    for name, group in sessions.items():
        assert group["hparams"]["scheduler"] == name.split("=")[1].split(",")[0]
        metrics = run_metrics(sweep / name)
        values = {value["name"]["tag"]: value["value"] for value in group["metricValues"]}
        assert values["final/diverged"] == 0.0
        assert values["final/test_acc"] == pytest.approx(metrics["test_acc"])
        assert values["final/train_loss"] == pytest.approx(metrics["train_loss"])
