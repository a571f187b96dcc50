"""Previews without training: `python -m src.preview`, scripts/plot_schedules.py, and the textbook presets' curves."""

from __future__ import annotations

import math

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from scripts.plot_schedules import main as plot_main
from src import REPO_ROOT
from src.schedules import lr_curve, schedule_curves
from src.schedules.driver import MAX_SCHEDULE_POINTS, previewed_curves
from tests.conftest import read_csv, run_preview

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NO_DATA = ("data.root=/nonexistent/fashion-mnist", "data.download=false")  # a preview must not need the dataset


@pytest.mark.slow
def test_preview_writes_the_trained_curve_as_csv_and_png_without_the_dataset(tmp_path, compose_cfg):
    overrides = ["scheduler=one_cycle", "trainer.epochs=2", "data.train_size=1000", "data.batch_size=100"]
    result = run_preview(*overrides, *NO_DATA, f"output_root={tmp_path}")
    assert result.returncode == 0, result.stderr
    (csv_path,) = (tmp_path / "previews").glob("*/*/lr.csv")
    assert (csv_path.parent / "lr.png").read_bytes()[:8] == PNG_MAGIC
    assert not (tmp_path / "runs").exists()
    rows = read_csv(csv_path)
    expected = schedule_curves(compose_cfg(overrides), steps_per_epoch=10)
    assert [int(row["step"]) for row in rows] == list(range(20))
    assert [float(row["epoch"]) for row in rows][10] == 1.0
    assert [float(row["lr"]) for row in rows] == expected["lr"]
    assert [float(row["momentum"]) for row in rows] == expected["momentum"]
    assert float(rows[0]["momentum"]) == 0.95 and float(rows[0]["lr"]) == pytest.approx(0.1 / 25)


@pytest.mark.slow
def test_preview_multirun_writes_one_folder_per_job_and_no_training_report(tmp_path):
    result = run_preview(
        "-m", "scheduler=step,cosine_restarts", "trainer.epochs=2", *NO_DATA, f"output_root={tmp_path}"
    )
    assert result.returncode == 0, result.stderr
    folders = sorted(path.parent.name for path in (tmp_path / "previews").glob("*/*/*/lr.csv"))
    assert len(folders) == 2 and folders[0].startswith("0_") and "scheduler=step" in folders[0]
    assert not list(tmp_path.rglob("summary.md"))


@pytest.mark.slow
def test_preview_refuses_a_bad_config_with_exit_2_and_no_traceback(tmp_path):
    result = run_preview("scheduler=cosine", "scheduler.final_lr=1.0", f"output_root={tmp_path}")
    assert result.returncode == 2
    assert "scheduler.final_lr=1.0: allowed is 0 <= final_lr <= the peak lr (0.1)" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "overrides",
    [
        ["scheduler=one_cycle"],  # moves the momentum
        ["scheduler=cosine_warmup", "scheduler.interval=epoch"],
        ["scheduler=cyclic", "scheduler.cycle_momentum=true", "scheduler.warmup_steps=5"],  # warmup: own momentum
        ["optimizer=adam", "scheduler=step"],
    ],
    ids=["one_cycle", "epoch-interval", "cyclic-after-warmup", "adam-step"],
)
def test_a_sampled_preview_holds_the_trained_values_at_its_steps(compose_cfg, overrides):
    cfg = compose_cfg([*overrides, "trainer.epochs=3", "data.train_size=1000", "data.batch_size=50"])
    every = schedule_curves(cfg, steps_per_epoch=20)
    steps, sampled = previewed_curves(cfg, steps_per_epoch=20, max_points=7)
    assert steps == [0, 8, 16, 24, 32, 40, 48, 56, 59]  # 60 steps, every 60 // 7 = 8th, and the last
    assert list(sampled) == list(every)
    for name, values in sampled.items():
        assert values == [every[name][step] for step in steps], name


def test_a_run_just_over_the_point_limit_is_previewed_once_per_step(compose_cfg):
    cfg = compose_cfg(["trainer.epochs=3", "data.train_size=1000", "data.batch_size=50"])
    steps, sampled = previewed_curves(cfg, steps_per_epoch=20, max_points=40)
    assert steps == list(range(60))  # every 60 // 40 = 1st step: the last is not listed twice
    assert sampled["lr"] == schedule_curves(cfg, steps_per_epoch=20)["lr"]


@pytest.mark.slow
def test_preview_of_a_huge_run_is_sampled_to_a_bounded_number_of_rows(tmp_path):
    result = run_preview("trainer.epochs=10000", "data.batch_size=1", *NO_DATA, f"output_root={tmp_path}")
    assert result.returncode == 0, result.stderr
    (csv_path,) = (tmp_path / "previews").glob("*/*/lr.csv")
    rows = read_csv(csv_path)
    assert len(rows) == MAX_SCHEDULE_POINTS + 1  # every 3000th of 600,000,000 steps, and the last
    assert [int(rows[i]["step"]) for i in (0, 1, -1)] == [0, 3000, 599_999_999]
    assert float(rows[-1]["epoch"]) == pytest.approx(10000, rel=1e-6)
    assert (csv_path.parent / "lr.png").read_bytes()[:8] == PNG_MAGIC
    assert "sampled: 200001 of the 600000000 steps, evenly spread" in result.stdout + result.stderr


def test_preview_folders_are_defaults_the_user_can_replace_and_its_only_hook_checks_the_folder(compose_cfg):
    preview = compose_cfg(["output_root=/out"], config_name="preview")
    assert preview.hydra.run.dir.startswith("/out/previews/") and preview.hydra.sweep.dir.startswith("/out/previews/")
    assert list(preview.hydra.callbacks) == ["output_folder_check"]  # no sweep report, no failed-job count
    assert compose_cfg(["hydra.run.dir=/somewhere"], config_name="preview").hydra.run.dir == "/somewhere"
    assert compose_cfg([], config_name="preview").optimizer == compose_cfg([]).optimizer  # the run's own config


def test_plot_script_draws_chosen_schedules_and_presets(tmp_path, capsys):
    grid, overlay, presets = tmp_path / "grid.png", tmp_path / "overlay.png", tmp_path / "textbook.png"
    assert plot_main(["cosine", "step", "--set", "trainer.epochs=2", "--out", str(grid)]) == 0
    assert plot_main(["cosine", "one_cycle", "--overlay", "--set", "trainer.epochs=2", "--out", str(overlay)]) == 0
    assert plot_main(["--experiments", "textbook_sqrt", "textbook_cosine", "--overlay", "--out", str(presets)]) == 0
    for path in (grid, overlay, presets):
        assert path.read_bytes()[:8] == PNG_MAGIC
    assert str(grid) in capsys.readouterr().out
    with pytest.raises(SystemExit) as stop:
        plot_main(["cosine", "sgdr"])
    assert stop.value.code == 2
    assert "unknown scheduler(s) sgdr: allowed are constant, constant_warmup" in capsys.readouterr().err


TEXTBOOK = ["textbook_constant", "textbook_sqrt", "textbook_multistep", "textbook_cosine", "textbook_cosine_warmup"]


def textbook_cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


@pytest.mark.parametrize("preset", TEXTBOOK)
def test_textbook_presets_share_plain_sgd_batch_256_thirty_epochs_per_epoch_updates_raw_pixels(preset):
    cfg = textbook_cfg(f"experiment={preset}")
    assert cfg.optimizer._target_ == "torch.optim.SGD" and cfg.optimizer.momentum == 0.0
    assert cfg.data.batch_size == 256 and cfg.data.normalize is False
    assert cfg.trainer.epochs == 30 and cfg.scheduler.interval == "epoch"


def per_epoch(preset: str) -> list[float]:
    """The lr of each of the 30 epochs (every step of an epoch has it)."""
    curve = lr_curve(textbook_cfg(f"experiment={preset}"), steps_per_epoch=3)
    assert all(curve[3 * e] == curve[3 * e + 2] for e in range(30))
    return curve[::3]


def textbook_cosine(epoch: int, warmup: int) -> float:
    if epoch < warmup:
        return 0.3 * (epoch + 1) / (warmup + 1)
    if epoch >= 20:
        return 0.01
    return 0.01 + (0.3 - 0.01) * 0.5 * (1 + math.cos(math.pi * (epoch - warmup) / (20 - warmup)))


def test_textbook_curves_follow_the_textbook_formulas():
    assert per_epoch("textbook_constant") == [0.3] * 30
    assert per_epoch("textbook_sqrt") == pytest.approx([0.1 * (e + 1) ** -0.5 for e in range(30)], rel=1e-12)
    assert per_epoch("textbook_multistep") == pytest.approx([0.5] * 15 + [0.25] * 15, rel=1e-12)
    assert per_epoch("textbook_cosine") == pytest.approx([textbook_cosine(e, 0) for e in range(30)], rel=1e-12)
    warm = per_epoch("textbook_cosine_warmup")
    assert warm == pytest.approx([textbook_cosine(e, 5) for e in range(30)], rel=1e-12)
    assert warm[5] == 0.3 and warm[20:] == [pytest.approx(0.01)] * 10


def test_textbook_sweep_runs_each_of_the_five_presets_on_top_of_the_shared_settings():
    sweep = OmegaConf.load(REPO_ROOT / "conf" / "experiment" / "textbook.yaml")
    jobs = sweep.hydra.sweeper.params["+experiment@_global_"].split(",")
    assert jobs == TEXTBOOK and sweep.hydra.mode == "MULTIRUN"
    for preset in jobs:
        alone = textbook_cfg(f"experiment={preset}")
        in_sweep = textbook_cfg("experiment=textbook", f"+experiment@_global_={preset}")
        assert lr_curve(in_sweep, 2) == lr_curve(alone, 2)
        assert in_sweep.optimizer == alone.optimizer and in_sweep.data == alone.data
