"""The LR range test on the synthetic dataset: its curve and suggestions, that nothing leaks into a following run,
`python -m src.lr_find` and its files, a run taking its lr from the test, and bad input."""

from __future__ import annotations

import json
import math
import subprocess

import pytest
import torch
from omegaconf import OmegaConf

from src.analysis.events import read_events
from src.analysis.runs import read_run_folder
from src.config.validation import ConfigError, validate
from src.lr_range.find import RangeTestError, find_lr, ramp_problems, range_test
from src.lr_range.lr_from import take_lr_from
from src.lr_range.suggest import suggest
from src.training import data
from src.training.device import configure_threads
from tests.conftest import read_csv, run_metrics, run_module, run_train

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PLUMBING = ("trainer.threads=1", "trainer.progress=false")


def lr_find_cli(*overrides: str, code: str | None = None) -> subprocess.CompletedProcess:
    """`python -m src.lr_find OVERRIDES` as a user runs it (`code`: Python run first, in the same process)."""
    return run_module("src.lr_find", *overrides, prelude=code)


@pytest.fixture
def lr_find_cfg(compose_cfg):
    """lr_find_cfg(*overrides) -> the config `python -m src.lr_find` composes (conf/lr_find.yaml)."""
    return lambda *overrides: compose_cfg(overrides, config_name="lr_find")


def load_dataset(cfg) -> data.DeviceData:
    configure_threads(cfg.trainer.threads)  # as src.lr_find does: one thread keeps a busy CI machine's steps short
    return data.load(device=torch.device("cpu"), **OmegaConf.to_container(cfg.data))


def test_range_test_on_synthetic_data_ramps_stops_and_suggests_inside_the_range(lr_find_cfg, synthetic_root):
    cfg = lr_find_cfg(
        f"data.root={synthetic_root}",
        "data.batch_size=32",
        "lr_find.min_lr=1e-4",
        "lr_find.max_lr=100",
        "lr_find.num_steps=100",
        *PLUMBING,
    )
    curve = find_lr(cfg, load_dataset(cfg), progress=False)
    assert curve.stopped_early and "exceeded 4x its best" in curve.stop  # lr 100 blows the loss up
    assert 20 <= len(curve.lrs) < 100  # batches run on past the 16 of one epoch
    assert curve.lrs == curve.planned[: len(curve.lrs)] and curve.planned[0] == pytest.approx(1e-4)
    assert min(curve.smoothed) < 0.9 * curve.smoothed[0]  # it learned on the way up
    for suggestion in suggest(curve.lrs, curve.smoothed, stopped_early=True).values():
        assert 1e-4 <= suggestion.lr <= 100


def test_a_following_run_sees_the_same_weights_batches_and_rng_with_or_without_a_range_test(
    compose_cfg, lr_find_cfg, synthetic_root, tmp_path
):
    from src.train import run

    common = (f"data.root={synthetic_root}", "trainer.epochs=2", "data.batch_size=64", *PLUMBING)
    results, rng_after = [], []
    for name, with_test in (("plain", False), ("after_lr_find", True)):
        torch.manual_seed(1234)
        before = torch.get_rng_state()
        if with_test:
            cfg = lr_find_cfg(*common, "lr_find.num_steps=30")
            find_lr(cfg, load_dataset(cfg), progress=False)
        assert torch.equal(torch.get_rng_state(), before)  # the test ran on a forked RNG
        cfg = compose_cfg(list(common))
        result = run(cfg, tmp_path / name)
        weights = torch.load(tmp_path / name / "last.pt", weights_only=False)["trainer"]["model"]
        results.append((result.history, weights))
        rng_after.append(torch.get_rng_state())
    (history_a, weights_a), (history_b, weights_b) = results
    assert history_a == history_b
    assert weights_a.keys() == weights_b.keys()
    assert all(torch.equal(weights_a[key], weights_b[key]) for key in weights_a)
    assert torch.equal(rng_after[0], rng_after[1])


def test_a_loss_not_finite_from_the_first_step_is_an_error_naming_it():
    class Broken(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(1))

        def forward(self, inputs):
            return torch.full((inputs.shape[0], 10), math.nan) * self.scale

    model = Broken()
    batches = iter([(torch.zeros(4, 1, 28, 28), torch.zeros(4, dtype=torch.long))] * 5)
    with pytest.raises(RangeTestError, match="at the first step, before any update"):
        range_test(model, torch.optim.SGD(model.parameters(), lr=0.1), batches, [1e-3] * 5, progress=False)


def test_bad_settings_name_the_key_and_what_is_allowed(lr_find_cfg):
    validate(lr_find_cfg("lr_find.stop_factor=null", "lr_find.suggestion=valley"))
    cfg = lr_find_cfg("lr_find.num_steps=5", "lr_find.smooth=1.0", "lr_find.suggestion=best", "lr_find.mode=log")
    with pytest.raises(ConfigError) as refused:
        validate(cfg)
    assert refused.value.problems == [
        "lr_find.num_steps=5: allowed is an integer 20..1000000 (too few steps leave no curve to read; 300 is the "
        "default)",
        "lr_find.mode='log': allowed is one of exp, linear",
        "lr_find.smooth=1.0: allowed is a number with 0 <= smooth < 1 (0.98 is fastai's)",
        "lr_find.suggestion='best': allowed is one of min_div10, valley, steepest",
    ]
    with pytest.raises(ConfigError) as refused:
        validate(lr_find_cfg("lr_find.min_lr=0", "lr_find.stop_factor=0.5"))
    assert refused.value.problems == [
        "lr_find.min_lr=0: allowed is a number > 0",
        "lr_find.stop_factor=0.5: allowed is null (never stop early) or a number > 1",
    ]
    with pytest.raises(ConfigError) as refused:  # the ramp sets the optimizer's lr to these: float32 bounds them
        validate(lr_find_cfg("lr_find.max_lr=1e40"))
    assert refused.value.problems == [
        "lr_find.max_lr=1e+40: allowed is a number of magnitude <= 3.4028235e+38 (the largest float32, which the "
        "optimizer computes in)"
    ]
    assert ramp_problems({"min_lr": 1.0, "max_lr": 0.5}) == [
        "lr_find.min_lr=1.0, lr_find.max_lr=0.5: allowed is min_lr < max_lr (the ramp rises)"
    ]
    assert ramp_problems({"min_lr": 1e-5, "max_lr": 10.0}) == ramp_problems({"min_lr": 0, "max_lr": 0.5}) == []


def test_lr_from_refuses_a_missing_test_and_a_second_lr(compose_cfg, tmp_path):
    cfg = compose_cfg([f"lr_from={tmp_path / 'nowhere'}"])
    with pytest.raises(ConfigError, match=r"lr_from=.*nowhere.*does not exist"):
        take_lr_from(cfg)
    (tmp_path / "suggestions.json").write_text(json.dumps({"lr": 0.0123}))
    cfg = compose_cfg([f"lr_from={tmp_path}", "optimizer.lr=0.5"])
    with pytest.raises(ConfigError, match=r"optimizer\.lr are both given"):
        take_lr_from(cfg, [f"lr_from={tmp_path}", "optimizer.lr=0.5"])
    cfg = compose_cfg([f"lr_from={tmp_path}"])
    assert take_lr_from(cfg, [f"lr_from={tmp_path}"]) == 0.0123 and cfg.optimizer.lr == 0.0123


@pytest.mark.slow
def test_cli_writes_every_file_and_a_run_takes_its_lr_from_them(tmp_path, synthetic_root):
    common = (f"data.root={synthetic_root}", f"output_root={tmp_path}", *PLUMBING)
    done = lr_find_cli("data.batch_size=32", "lr_find.num_steps=40", *common)
    assert done.returncode == 0, done.stderr
    (folder,) = (tmp_path / "lr_find").glob("*/*")
    names = {path.name for path in folder.iterdir()}
    assert {"lr_find.csv", "lr_find.png", "suggestions.json", "lr_find.log", ".hydra"} <= names
    assert len(list(folder.glob("events.out.tfevents.*"))) == 1

    rows = read_csv(folder / "lr_find.csv")
    assert list(rows[0]) == ["step", "lr", "loss", "smoothed_loss"]
    assert [int(row["step"]) for row in rows] == list(range(len(rows))) and 10 <= len(rows) <= 40
    assert float(rows[0]["lr"]) == pytest.approx(1e-5)
    assert (folder / "lr_find.png").read_bytes()[:8] == PNG_MAGIC

    record = json.loads((folder / "suggestions.json").read_text())
    assert record["suggestion"] == "min_div10" and list(record["suggestions"]) == ["min_div10", "valley", "steepest"]
    assert record["lr"] == record["suggestions"]["min_div10"]["lr"]
    assert record["override"] == f"optimizer.lr={record['lr']:g}"
    assert record["steps_run"] == len(rows)
    assert f"optimizer.lr={record['lr']:g}" in done.stdout  # the report, with the exact override to use
    assert "<- suggestion" in done.stdout

    events = read_events(folder)
    assert {"lr_find/lr", "lr_find/loss", "lr_find/smoothed_loss"} <= set(events.scalars)
    smoothed = events.values("lr_find/smoothed_loss")
    assert smoothed == pytest.approx([float(row["smoothed_loss"]) for row in rows])
    assert "lr_find/curve" in events.images

    run = run_train(f"lr_from={folder}", "trainer.epochs=1", *common)
    assert run.returncode == 0, run.stderr
    (run_dir,) = (path.parent for path in (tmp_path / "runs").rglob("metrics.json"))
    metrics = run_metrics(run_dir)
    assert metrics["peak_lr"] == record["lr"]
    assert metrics["lr_from"] == str(folder / "suggestions.json")
    run_events = read_events(run_dir)
    hparams = run_events.hparams["_hparams_/session_start_info"].session_start_info.hparams
    assert hparams["optimizer.lr"].number_value == record["lr"]
    assert hparams["lr_from"].string_value == str(folder)
    assert max(run_events.values("train/lr")) == pytest.approx(record["lr"])
    assert read_run_folder(run_dir).hparams["optimizer.lr"] == record["lr"]  # the comparison report's lr


@pytest.mark.slow
def test_cli_bad_input_exits_2_naming_the_problem_without_a_traceback(tmp_path, synthetic_root):
    common = (f"data.root={synthetic_root}", f"output_root={tmp_path}", *PLUMBING)
    bad = lr_find_cli("lr_find.min_lr=1", "lr_find.max_lr=0.1", "lr_find.num_steps=5", *common)
    assert bad.returncode == 2
    assert "lr_find.min_lr=1, lr_find.max_lr=0.1: allowed is min_lr < max_lr" in bad.stderr
    assert "lr_find.num_steps=5: allowed is an integer 20..1000000" in bad.stderr
    assert "Traceback" not in bad.stderr

    nan_model = (  # NaN logits that still depend on the weights, as a real model's do (the step backpropagates)
        "import torch, src.training.models; "
        "src.training.models.LeNet.forward = lambda m, x: torch.full((len(x), 10), torch.nan) * m.classifier[-1].bias"
    )
    broken = lr_find_cli(*common, code=nan_model)
    assert broken.returncode == 2
    assert "lr range test: the loss is nan at the first step, before any update" in broken.stderr
    assert "Traceback" not in broken.stderr
    assert not list(tmp_path.rglob("lr_find.csv"))
