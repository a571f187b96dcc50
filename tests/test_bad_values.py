"""Bad values on the command line, as a user types them: refused before any training with exit status 2 and a
message naming the key and what is allowed, by `python -m src.train` and `python -m src.preview` alike."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from src import REPO_ROOT
from tests.conftest import run_train


def run_preview(*overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "src.preview", *overrides, "trainer.threads=1"],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )


ENTRY_POINTS = {"train": run_train, "preview": run_preview}
FLOAT32_BOUND = "allowed is a number of magnitude <= 3.4028235e+38 (the largest float32"


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
@pytest.mark.parametrize("lr", ["1e39", "1e308"])
def test_an_lr_beyond_float32_is_refused_with_exit_2_before_training(tmp_path, entry, lr):
    done = ENTRY_POINTS[entry](f"optimizer.lr={lr}", "trainer.threads=1", f"output_root={tmp_path}")
    assert done.returncode == 2, done.stderr
    assert f"optimizer.lr={float(lr)!r}: {FLOAT32_BOUND}" in done.stderr
    assert "Traceback" not in done.stderr
    assert not list(tmp_path.rglob("events.out.tfevents*")) and not list(tmp_path.rglob("lr.csv"))
