"""Bad values on the command line, as a user types them: refused before any training with exit status 2 and a
message naming the key and what is allowed, by `python -m src.train` and `python -m src.preview` alike."""

from __future__ import annotations

import pytest

from tests.conftest import run_preview, run_train

ENTRY_POINTS = {"train": run_train, "preview": run_preview}
FLOAT32_BOUND = "allowed is a number of magnitude <= 3.4028235e+38 (the largest float32"


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
@pytest.mark.parametrize("lr", ["1e39", "1e40", "1e308"])
def test_an_lr_beyond_float32_is_refused_with_exit_2_before_training(tmp_path, entry, lr):
    outputs = tmp_path / "outputs"
    done = ENTRY_POINTS[entry](f"optimizer.lr={lr}", "trainer.threads=1", f"output_root={outputs}")
    assert done.returncode == 2, done.stderr
    assert f"optimizer.lr={float(lr)!r}: {FLOAT32_BOUND}" in done.stderr
    assert "Traceback" not in done.stderr
    assert not outputs.exists()  # refused before any folder is made
    assert not list(tmp_path.rglob("events.out.tfevents*")) and not list(tmp_path.rglob("lr.csv"))


GROUPS = "The groups are: data, experiment, model, optimizer, scheduler, trainer; the other top-level keys: checkpoint,"


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
@pytest.mark.parametrize(
    ("override", "meant"),
    [("schedular=cosine", "scheduler"), ("optimiser.lr=0.1", "optimizer.lr"), ("sed=3", "seed")],
)
def test_a_mistyped_group_or_key_gets_a_did_you_mean_with_exit_2(tmp_path, entry, override, meant):
    done = ENTRY_POINTS[entry](override, f"output_root={tmp_path}")
    typed = override.split("=")[0]
    assert done.returncode == 2, done.stderr
    assert f"lrbench: unknown key '{typed}': did you mean '{meant}'? {GROUPS}" in done.stderr
    assert "+" not in done.stderr and "Traceback" not in done.stderr
    assert not tmp_path.exists() or not any(tmp_path.iterdir())  # refused before Hydra made a folder


def test_hydra_flags_additions_and_deletions_still_reach_hydra(tmp_path):
    done = run_train(
        "--cfg",
        "all",
        "scheduler=cosine",
        "+experiment@_global_=textbook_sqrt",
        "~hydra.callbacks.sweep_summary",
        "hydra.job.chdir=false",
        f"output_root={tmp_path}",
    )
    assert done.returncode == 0, done.stderr
    assert "momentum: 0.0" in done.stdout  # the preset applied
    assert "output_folder_check:" in done.stdout and "sweep_summary:" not in done.stdout  # the hook deleted
