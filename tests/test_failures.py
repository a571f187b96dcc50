"""Failures that explain themselves: a damaged dataset, CUDA asked for without CUDA, a diverging run, a full disk
and an unwritable output folder each end with a clear message (no traceback) and no half-written metrics."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from src.analysis.events import read_events
from src.config.hooks import OutputFolderCheck, output_folder_problem
from src.config.validation import ConfigError, validate
from src.runs import checkpoints as checkpointing
from src.training import data
from src.training.datasets import fashion_mnist
from src.training.device import select_device
from tests.conftest import run_metrics, run_train, write_fashion_mnist, write_idx

QUICK = ("trainer.threads=1", "trainer.progress=false", "data.batch_size=32", "trainer.epochs=2")


@pytest.fixture
def dataset_copy(synthetic_root, tmp_path) -> Path:
    """A copy of the synthetic dataset to damage; returns its raw folder."""
    shutil.copytree(synthetic_root, tmp_path / "copy")
    return tmp_path / "copy" / "FashionMNIST" / "raw"


def corrupt_error(root: Path) -> str:
    with pytest.raises(data.DatasetCorruptError) as refused:
        data.load(device=torch.device("cpu"), batch_size=32, root=str(root), download=False)
    return str(refused.value)


def test_a_truncated_file_is_named_with_its_size_and_the_promised_one(dataset_copy):
    images = dataset_copy / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:100_000])
    message = corrupt_error(dataset_copy.parent.parent)
    promised = 16 + 512 * 28 * 28
    assert f"train-images-idx3-ubyte: 100000 bytes where its header promises {promised} (truncated)" in message
    assert "Delete that folder and run again" in message


def test_a_file_of_the_official_size_with_another_checksum_is_refused(dataset_copy):
    write_idx(dataset_copy / "t10k-labels-idx1-ubyte", torch.zeros(10_000, dtype=torch.uint8).numpy())
    message = corrupt_error(dataset_copy.parent.parent)
    assert "t10k-labels-idx1-ubyte: the size of the official file but another SHA-256" in message


def test_a_foreign_file_and_mismatched_counts_are_named(dataset_copy, tmp_path):
    (dataset_copy / "train-labels-idx1-ubyte").write_bytes(b"<html>not found</html>")
    assert "train-labels-idx1-ubyte: 22 bytes that do not start like an IDX ubyte file" in corrupt_error(
        dataset_copy.parent.parent
    )
    mixed = write_fashion_mnist(tmp_path / "mixed", train_size=64)
    shutil.copy(dataset_copy / "t10k-images-idx3-ubyte", mixed / "FashionMNIST" / "raw" / "train-images-idx3-ubyte")
    assert "train-images-idx3-ubyte holds 256 images but train-labels-idx1-ubyte 64 labels" in corrupt_error(mixed)


def test_the_real_dataset_passes_its_checks():
    if not (fashion_mnist.PROJECT_DATA_DIR / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").is_file():
        pytest.skip("the real Fashion-MNIST is not prepared in data/")
    files, _ = fashion_mnist.read_checked(fashion_mnist.PROJECT_DATA_DIR)
    assert [tuple(files[name].shape) for name in fashion_mnist.RAW_FILES] == [
        (60_000, 28, 28),
        (60_000,),
        (10_000, 28, 28),
        (10_000,),
    ]


@pytest.mark.slow
def test_the_command_line_names_a_damaged_dataset_without_a_traceback(dataset_copy, tmp_path):
    labels = dataset_copy / "t10k-labels-idx1-ubyte"
    labels.write_bytes(labels.read_bytes()[:-10])
    done = run_train(f"data.root={dataset_copy.parent.parent}", *QUICK, f"output_root={tmp_path / 'out'}")
    assert done.returncode == 2
    assert "t10k-labels-idx1-ubyte: 254 bytes where its header promises 264 (truncated)" in done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert not list((tmp_path / "out").rglob("metrics.json"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_a_clear_error_and_auto_falls_back_with_a_log_line(compose_cfg, caplog):
    with pytest.raises(ConfigError, match=r"trainer.device='cuda': CUDA is not available on this machine"):
        validate(compose_cfg(["trainer.device=cuda"]))
    with caplog.at_level(logging.INFO, logger="src.training.device"):
        assert select_device("auto") == torch.device("cpu")
    assert "CUDA is not available: training on the CPU" in caplog.text


@pytest.mark.slow
def test_a_diverging_run_stops_records_the_step_keeps_its_curves_and_exits_zero(synthetic_root, tmp_path):
    run_dir = tmp_path / "run"
    diverging = ("scheduler=constant", "optimizer.lr=10000", "trainer.log_every_steps=1")
    done = run_train(f"data.root={synthetic_root}", *QUICK, *diverging, f"hydra.run.dir={run_dir}")
    assert done.returncode == 0, done.stderr  # a diverging schedule is a result: a sweep goes on
    metrics = run_metrics(run_dir)
    assert metrics["diverged"] is True
    assert isinstance(metrics["diverged_step"], int) and 0 <= metrics["diverged_step"] < 16
    assert metrics["epochs"] == 0 and metrics["test_acc"] is None
    # readable, with the steps before the divergence
    assert read_events(run_dir).steps("train/lr") == list(range(metrics["diverged_step"] + 1))
    assert checkpointing.load(run_dir / checkpointing.LAST)["trainer"]["step"] == 0  # the last sound state
    assert "run diverged: training loss is not finite at step" in done.stdout + done.stderr


@pytest.mark.slow
def test_a_full_disk_is_a_clear_error_and_leaves_no_half_written_metrics(synthetic_root, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.json.partial").symlink_to("/dev/full")  # every write there fails: no space left
    done = run_train(f"data.root={synthetic_root}", *QUICK, f"hydra.run.dir={run_dir}")
    assert done.returncode == 3
    assert f"cannot write the run's files in {run_dir}: No space left on device" in done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert not (run_dir / "metrics.json").exists() and not (run_dir / "metrics.json.partial").exists()
    assert checkpointing.load(run_dir / checkpointing.LAST)["trainer"]["result"]["epochs"] == 2  # work kept


def test_an_output_folder_below_a_file_or_unwritable_is_named(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert output_folder_problem(blocker / "runs" / "x") == f"{blocker} is a file, not a folder"
    assert output_folder_problem(tmp_path / "new" / "runs") is None
    assert not (tmp_path / "new").exists()  # checking makes nothing
    with pytest.raises(SystemExit) as stopped:
        OutputFolderCheck().on_run_start(config=OmegaConf.create({"hydra": {"run": {"dir": str(blocker / "runs")}}}))
    assert stopped.value.code == 3
    assert "Pick a writable folder with output_root=<folder>" in capsys.readouterr().err


@pytest.mark.slow
def test_the_command_line_refuses_an_unwritable_output_root_before_making_anything(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    done = run_train("trainer.threads=1", f"output_root={blocker}")
    assert done.returncode == 3
    assert f"cannot write the run folder {blocker}/runs/" in done.stderr and "is a file, not a folder" in done.stderr
    assert "Traceback" not in done.stdout + done.stderr
