"""What a run pays besides its epochs: a run imports no plotting or torchvision code, and the jobs of an in-process
sweep read the dataset once. How long any of it takes is measured by scripts/bench.py, not here."""

import subprocess
import sys

import pytest

from src import REPO_ROOT
from tests.conftest import run_metrics, run_train

QUICK = ("trainer.threads=1", "trainer.progress=false", "data.batch_size=64", "trainer.epochs=1")
HEAVY = ("torchvision", "matplotlib")


def imported_modules(importtime_report: str) -> set[str]:
    """Every module `python -X importtime` reports as imported."""
    return {
        line.rsplit("|", 1)[1].strip()
        for line in importtime_report.splitlines()
        if line.startswith("import time:") and "cumulative" not in line
    }


def heavy(modules: set[str]) -> list[str]:
    return sorted(name for name in modules if name.split(".")[0] in HEAVY)


@pytest.mark.slow
def test_a_fresh_run_never_imports_torchvision_or_matplotlib(synthetic_root, tmp_path):
    command = [sys.executable, "-X", "importtime", "-m", "src.train", f"data.root={synthetic_root}", *QUICK]
    done = subprocess.run(
        [*command, f"output_root={tmp_path}"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    modules = imported_modules(done.stderr)
    assert {
        "torch",
        "src.training.data",
        "src.training.trainer",
        "src.training.tracking",
    } <= modules  # the report covers the run
    assert heavy(modules) == []
    assert len(list(tmp_path.rglob("metrics.json"))) == 1


@pytest.mark.slow
def test_the_jobs_of_an_in_process_sweep_read_the_dataset_once(synthetic_root, tmp_path):
    done = run_train("-m", "seed=0,0", f"data.root={synthetic_root}", *QUICK, f"output_root={tmp_path}", timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    first, second = sorted((tmp_path / "sweeps").glob("*/*/[0-9]_*"))
    assert "Fashion-MNIST read from" in (first / "train.log").read_text()
    second_log = (second / "train.log").read_text()
    assert "Fashion-MNIST from memory" in second_log and "Fashion-MNIST read from" not in second_log
    # The same job twice: the dataset kept in memory trains exactly as the one just read.
    runs = [run_metrics(job) for job in (first, second)]
    for run in runs:
        del run["wall_seconds"], run["epoch_seconds"]
    assert runs[0] == runs[1] and runs[0]["steps"] == 8
