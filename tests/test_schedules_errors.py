"""Bad schedule parameters stop a run before training, with the key, the value and what is allowed."""

from __future__ import annotations

import pytest

from src.config.validation import ConfigError, validate
from tests.conftest import run_train

BAD = [
    (["scheduler=cosine_warmup", "scheduler.warmup_ratio=1.0"], ["scheduler.warmup_ratio=1.0", "< 1"]),
    (["scheduler=linear_warmup", "scheduler.warmup_ratio=-0.1"], ["scheduler.warmup_ratio=-0.1", "0 <="]),
    (
        ["scheduler=constant", "scheduler.warmup_epochs=10"],
        ["scheduler.warmup_epochs=10: a warmup of 100 steps", "shorter than"],
    ),
    (["scheduler=constant", "scheduler.warmup_steps=5", "scheduler.warmup_epochs=1"], ["warmup_steps=5", "at most"]),
    (["scheduler=multistep", "scheduler.milestones=[5,3]"], ["scheduler.milestones=[5, 3]", "strictly increasing"]),
    (["scheduler=piecewise", "scheduler.boundaries=[2,2]"], ["scheduler.boundaries=[2, 2]", "strictly increasing"]),
    (["scheduler=piecewise", "scheduler.values=[1.0,0.1]"], ["scheduler.values=[1.0, 0.1]", "3 multipliers"]),
    (["scheduler=cosine", "scheduler.final_lr=0.5"], ["scheduler.final_lr=0.5", "<= the peak lr (0.1)"]),
    (["scheduler=polynomial", "scheduler.final_lr=0.2"], ["scheduler.final_lr=0.2", "the peak lr"]),
    (["scheduler=cyclic", "scheduler.min_lr=0.3"], ["scheduler.min_lr=0.3", "the peak lr (0.1)"]),
    (["scheduler=step", "scheduler.gamma=-0.5"], ["scheduler.gamma=-0.5", "gamma > 0"]),
    (["scheduler=multistep", "scheduler.gamma=-1"], ["scheduler.gamma=-1", "gamma > 0"]),
    (["scheduler=exponential", "scheduler.gamma=-0.9"], ["scheduler.gamma=-0.9", "gamma > 0"]),
    (["scheduler=cosine_warmup", "scheduler.warmup_shape=cubic"], ["scheduler.warmup_shape='cubic'", "linear, exp"]),
    (["scheduler=constant_warmup", "scheduler.warmup_start_factor=1.5"], ["warmup_start_factor=1.5", "0 <= f <= 1"]),
    (["scheduler=warmup_stable_decay", "scheduler.decay_shape=step"], ["decay_shape='step'", "linear, cosine, 1-sqrt"]),
    (["scheduler=warmup_stable_decay", "scheduler.decay_ratio=0.95"], ["decay_ratio=0.95", "left after the warmup"]),
    (["scheduler=one_cycle", "scheduler.pct_start=1.0"], ["scheduler.pct_start=1.0", "0 < pct_start < 1"]),
    (["scheduler=one_cycle", "scheduler.pct_start=0.05"], ["scheduler.pct_start=0.05", "no phase", "zero length"]),
    (["scheduler=one_cycle", "scheduler.anneal_strategy=exp"], ["anneal_strategy='exp'", "cos, linear"]),
    (["scheduler=cyclic", "scheduler.mode=sawtooth"], ["scheduler.mode='sawtooth'", "triangular, triangular2"]),
    (["scheduler=cosine_restarts", "scheduler.cycle_mult=0.5"], ["scheduler.cycle_mult=0.5", ">= 1"]),
    (["scheduler=reduce_on_plateau", "scheduler.monitor=val_loss"], ["monitor='val_loss'", "test_loss, test_acc"]),
    (["scheduler=reduce_on_plateau", "scheduler.factor=1.5"], ["scheduler.factor=1.5", "0 < factor < 1"]),
    (["scheduler=noam", "scheduler.warmup_ratio=0"], ["warmup_ratio/warmup_steps/warmup_epochs=0", "at least 1"]),
    (["scheduler=noam", "scheduler.warmup_shape=exponential"], ["warmup_shape='exponential'", "part of its formula"]),
    (["scheduler=cosine", "+scheduler.warmup_length=3"], ["scheduler.warmup_length"]),
]


@pytest.mark.parametrize(("overrides", "expected"), BAD, ids=[" ".join(o[1:]) for o, _ in BAD])
def test_bad_parameter_is_reported_with_key_value_and_allowed_range(compose_cfg, overrides, expected):
    cfg = compose_cfg([*overrides, "trainer.epochs=2", "data.train_size=2560"])  # 10 steps per epoch
    with pytest.raises(ConfigError) as error:
        validate(cfg)
    for fragment in expected:
        assert fragment in str(error.value)


@pytest.mark.slow
def test_cli_rejects_a_bad_schedule_before_training_without_a_traceback(tmp_path):
    result = run_train(
        "scheduler=multistep",
        "scheduler.milestones=[5,3]",
        "data.root=/nonexistent/data",  # never reached: the config is refused first
        "trainer.threads=1",
        f"output_root={tmp_path}",
    )
    assert result.returncode == 2
    assert (
        "scheduler.milestones=[5, 3]: allowed is a non-empty list of epochs > 0, strictly increasing" in result.stderr
    )
    assert "Traceback" not in result.stderr + result.stdout
