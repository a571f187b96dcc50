"""Shared fixtures: a tiny synthetic Fashion-MNIST in torchvision's raw format, and composed configs."""

from __future__ import annotations

import csv
import json
import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig

from src import REPO_ROOT
from src.config.hooks import register_resolvers

register_resolvers()

CONF_DIR = str(REPO_ROOT / "conf")
GATE_DIR = Path(__file__).parent / "gate"
RAW_NAMES = {
    (True, "images"): "train-images-idx3-ubyte",
    (True, "labels"): "train-labels-idx1-ubyte",
    (False, "images"): "t10k-images-idx3-ubyte",
    (False, "labels"): "t10k-labels-idx1-ubyte",
}

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def make_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Learnable 28x28 uint8 images: class k is a bright 6x6 patch at one of ten places, over noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=n).astype(np.uint8)
    images = rng.integers(0, 60, size=(n, 28, 28)).astype(np.uint8)
    for index, label in enumerate(labels):
        row, col = divmod(int(label), 5)
        images[index, 4 + 12 * row : 10 + 12 * row, 2 + 5 * col : 8 + 5 * col] = 230
    return images, labels


def write_idx(path: Path, array: np.ndarray) -> None:
    """The IDX format torchvision reads: magic 0x08 (ubyte), the rank, big-endian sizes, then the bytes."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.tobytes())


def write_splits(root: Path, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]) -> Path:
    """The (images, labels) of the training and the test split as the four raw files torchvision reads under root."""
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for is_train, (images, labels) in ((True, train), (False, test)):
        write_idx(raw / RAW_NAMES[(is_train, "images")], images)
        write_idx(raw / RAW_NAMES[(is_train, "labels")], labels)
    return root


def write_fashion_mnist(root: Path, train_size: int = 512, test_size: int = 256) -> Path:
    return write_splits(root, make_images(train_size, 1), make_images(test_size, 2))


def conf_with(folder: Path, name: str, text: str) -> Path:
    """A copy of conf/ in `folder` with one more config file `name` (`scheduler/x.yaml`): a recipe's sample."""
    conf = folder / "conf"
    shutil.copytree(REPO_ROOT / "conf", conf)
    (conf / name).write_text(text)
    return conf


def read_csv(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV file with a header line, as dicts of strings."""
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def run_metrics(run_dir: Path) -> dict:
    """The run's metrics.json."""
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """A data.root with 512 training and 256 test images in torchvision's raw layout."""
    return write_fashion_mnist(tmp_path_factory.mktemp("synthetic"))


@pytest.fixture
def compose_cfg(tmp_path):
    """compose_cfg(overrides) -> the run config Hydra would build, with its output folder under tmp_path;
    `config_name` another primary config of conf/, `config_dir` another conf folder."""

    def _compose(
        overrides: list[str] | tuple[str, ...] = (), *, config_name: str = "config", config_dir: str | Path = CONF_DIR
    ):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
            cfg = compose(
                config_name=config_name,
                overrides=[f"output_root={tmp_path}", *overrides],
                return_hydra_config=True,
            )
        HydraConfig.instance().set_config(cfg)
        return cfg

    yield _compose
    GlobalHydra.instance().clear()


def run_module(
    module: str,
    *args: str,
    cwd: Path | None = None,
    timeout: float = 600,
    file_size_limit: int | None = None,
    prelude: str | None = None,
) -> subprocess.CompletedProcess:
    """`python -m MODULE ARGS` in a subprocess, as a user runs it. With `file_size_limit` (bytes) no file can grow
    past it: a write beyond fails with EFBIG (Python ignores SIGXFSZ), as one on a full disk fails with ENOSPC, and
    that works as root too. With `prelude` (Python code), the child runs it first, in the same process."""
    command = [sys.executable, "-m", module, *args]
    if file_size_limit is not None:  # set in the child before the module runs (preexec_fn is unsafe with threads)
        limit = f"import resource; resource.setrlimit(resource.RLIMIT_FSIZE, ({file_size_limit},) * 2)"
        prelude = limit if prelude is None else f"{limit}; {prelude}"
    if prelude is not None:
        code = f"{prelude}; import runpy; runpy.run_module({module!r}, run_name='__main__', alter_sys=True)"
        command = [sys.executable, "-c", code, *args]
    return subprocess.run(
        command,
        cwd=cwd or REPO_ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_train(*overrides: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """`python -m src.train OVERRIDES` in a subprocess, as a user runs it."""
    return run_module("src.train", *overrides, cwd=cwd, timeout=timeout)


def run_preview(*overrides: str) -> subprocess.CompletedProcess:
    """`python -m src.preview OVERRIDES` on one thread, in a subprocess."""
    return run_module("src.preview", *overrides, "trainer.threads=1", timeout=300)


def run_sweep(output_root: Path, *overrides: str) -> Path:
    """Run a sweep (`-m ...` or a sweep preset) with its folders under `output_root`; return the sweep's folder."""
    done = run_train(*overrides, f"output_root={output_root}")
    assert done.returncode == 0, done.stderr
    (sweep,) = (output_root / "sweeps").glob("*/*")
    return sweep


def gate_env(folder: Path, step: int, reached: Path) -> dict[str, str]:
    """The environment of a process whose first run in `folder` (or under it) waits for a signal once it has logged
    `step`, after writing the file `reached` (tests/gate/sitecustomize.py): the test then signals it at a step it
    knows, however fast the machine trains."""
    return {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join((str(GATE_DIR), str(REPO_ROOT))),
        "LRBENCH_TEST_GATE": f"{folder}:{step}",
        "LRBENCH_TEST_GATE_REACHED": str(reached),
    }


def wait_at_gate(process: subprocess.Popen, reached: Path, timeout: float = 300) -> None:
    """Return once the gated run waits at its step; fail if the process ends before (the timeout bounds a hang)."""
    deadline = time.monotonic() + timeout
    while not reached.is_file():
        assert process.poll() is None, f"the process ended (status {process.returncode}) before its gate"
        assert time.monotonic() < deadline, f"no run reached the gate within {timeout} s"
        time.sleep(0.05)


def write_confirm_run(compose_cfg, folder: Path, label: str, scheduler: str, seed: int, test_acc: float) -> None:
    """A finished confirm job of a study labelled `label`, trained with `scheduler` at lr 0.1 for 2 epochs, as
    src.train leaves it (its `.hydra/` record by the run's own writer), without training: a report's input."""
    from src.runs import checkpoints as checkpointing
    from src.runs import folder as run_folder
    from src.runs.files import write_json

    labels = ["labels.stage=confirm", f"labels.schedule={label}"]
    cfg = compose_cfg([f"scheduler={scheduler}", f"seed={seed}", "trainer.epochs=2", "optimizer.lr=0.1", *labels])
    run_folder.write_hydra_record(folder, checkpointing.without_hydra(cfg), HydraConfig.instance().cfg, [])
    history = [{"epoch": 1, "step": 8, "test_acc": 0.6}, {"epoch": 2, "step": 16, "test_acc": test_acc}]
    metrics = {"test_acc": test_acc, "best_test_acc": test_acc, "epochs": 2, "steps": 16, "wall_seconds": 1.5}
    write_json(folder / "metrics.json", metrics | {"history": history, "epoch_seconds": [0.7, 1.4]})
