"""Optuna search through Hydra (`experiment=optuna_lr`): the preset, the objective a run returns, and a 3-trial
sweep on synthetic data in which diverged trials score the worst objective and the best trial is recorded."""

from __future__ import annotations

import logging
import runpy
import sys

import pytest
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from src.train import WORST_OBJECTIVE, objective
from tests.conftest import run_metrics


def test_the_preset_searches_lr_log_uniform_and_warmup_with_seeded_tpe(compose_cfg):
    cfg = compose_cfg(["experiment=optuna_lr"])
    assert cfg.hydra.mode.name == "MULTIRUN"
    assert cfg.hydra.runtime.choices["hydra/sweeper"] == "optuna"
    sweeper = cfg.hydra.sweeper
    assert sweeper.direction == "maximize" and sweeper.n_trials == 20
    assert sweeper.sampler._target_ == "optuna.samplers.TPESampler" and sweeper.sampler.seed == 0
    assert OmegaConf.to_container(sweeper.params) == {
        "optimizer.lr": "tag(log, interval(0.001, 1.0))",
        "scheduler.warmup_ratio": "interval(0.0, 0.3)",
    }


def test_the_objective_is_the_final_test_accuracy_and_the_worst_for_a_failed_run():
    finished = {"test_acc": 0.87, "diverged": False}
    assert objective(finished) == 0.87
    assert objective({**finished, "diverged": True}) == WORST_OBJECTIVE == 0.0
    assert objective({**finished, "collapsed": True, "collapsed_epoch": 3}) == 0.0
    assert objective({"test_acc": None, "diverged": True}) == 0.0  # diverged in its first epoch


@pytest.fixture
def in_process_sweep(monkeypatch):
    """in_process_sweep(*overrides) -> the Optuna study of `python -m src.train OVERRIDES`, run in this process
    (the sweeper keeps its study to itself; `optuna.create_study` is wrapped to catch it)."""
    import optuna

    studies = []
    create_study = optuna.create_study

    def catching(*args, **kwargs):
        studies.append(create_study(*args, **kwargs))
        return studies[-1]

    monkeypatch.setattr(optuna, "create_study", catching)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level

    def _sweep(*overrides: str):
        monkeypatch.setattr(sys, "argv", ["src/train.py", *overrides])
        runpy.run_module("src.train", run_name="__main__")
        (study,) = studies
        return study

    yield _sweep
    for handler in root.handlers:  # Hydra pointed the logging at the last job's folder: put it back
        if handler not in handlers:
            handler.close()
    root.handlers[:], root.level = handlers, level
    GlobalHydra.instance().clear()


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:'src.train' found in sys.modules:RuntimeWarning")  # runpy runs it as __main__
def test_a_3_trial_sweep_scores_diverged_trials_worst_and_records_the_best(in_process_sweep, tmp_path, synthetic_root):
    study = in_process_sweep(
        "experiment=optuna_lr",
        "hydra.sweeper.n_trials=3",
        "optimizer.lr=tag(log,interval(1e-4,1e5))",  # wide enough that some trials diverge
        f"data.root={synthetic_root}",
        "data.batch_size=32",
        "trainer.epochs=1",
        "trainer.threads=1",
        "trainer.progress=false",
        f"output_root={tmp_path}",
    )
    (sweep,) = (tmp_path / "sweeps").glob("*/*")
    jobs = sorted((path for path in sweep.iterdir() if (path / "metrics.json").is_file()), key=lambda p: p.name)
    assert len(jobs) == len(study.trials) == 3
    diverged = 0
    for job, trial in zip(jobs, study.trials, strict=True):
        metrics = run_metrics(job)
        assert job.name.startswith(f"{trial.number}_optimizer.lr={trial.params['optimizer.lr']}")
        assert metrics["peak_lr"] == pytest.approx(trial.params["optimizer.lr"])
        assert trial.state.name == "COMPLETE"
        assert trial.value == (0.0 if metrics["diverged"] else metrics["test_acc"])
        diverged += metrics["diverged"]
    assert 0 < diverged < 3  # the seeded sampler drew both kinds, so both paths ran

    best = OmegaConf.load(sweep / "optimization_results.yaml")
    assert best.best_value == max(trial.value for trial in study.trials) > 0.0
    assert OmegaConf.to_container(best.best_params) == study.best_trial.params
    assert (sweep / "summary.md").is_file() and (sweep / "summary.csv").is_file()  # the report, as for any multirun
