"""The README's recipe for a new schedule, followed from scratch: one factory, one YAML stating only what differs
from conf/scheduler/shared/, and the run, the checks, the catalogue's table and its figure pick it up."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
from hydra.core.global_hydra import GlobalHydra

from scripts import schedule_table
from src import REPO_ROOT
from src.config.validation import ConfigError, validate
from src.schedules import Constant, Decay, Join, Schedule, ScheduleConfigError, Timeline, lr_curve
from tests.conftest import conf_with

SAMPLE_YAML = """\
# Hold the lr for the first hold_ratio of the decay, then a half cosine down to 0.
# lr at update t: `lr` for t < ⌈hold_ratio·T⌉, then a cosine to 0
defaults:
  - shared/warmup@_here_
  - _self_
_target_: tests.test_adding_a_schedule.hold_then_cosine
_partial_: true
# Share of the decay spent at the peak, 0 <= hold_ratio < 1.
hold_ratio: 0.5
"""


def hold_then_cosine(timeline: Timeline, *, hold_ratio: float, **common) -> Schedule:
    """The sample factory: a composition of existing pieces, checked like the catalogue's."""
    if not 0 <= hold_ratio < 1:
        raise ScheduleConfigError(f"scheduler.hold_ratio={hold_ratio!r}: allowed is 0 <= hold_ratio < 1")

    def make(length: int) -> Schedule:
        hold = math.ceil(length * hold_ratio)
        return Join(Constant(1.0), Decay(length - hold, shape="cosine"), hold)

    return timeline.with_warmup(make, **common)


@pytest.fixture
def conf_with_sample(tmp_path):
    return conf_with(tmp_path, "scheduler/hold_then_cosine.yaml", SAMPLE_YAML)


def test_a_new_schedule_is_one_factory_and_one_yaml(conf_with_sample, compose_cfg):
    base = ["scheduler=hold_then_cosine", "trainer.epochs=2", "optimizer.lr=0.1"]  # compose_cfg adds output_root
    cfg = compose_cfg(base, config_dir=conf_with_sample)
    validate(cfg)
    assert cfg.scheduler.interval == "step" and cfg.scheduler.warmup_ratio == 0.0  # from the shared file

    lrs = lr_curve(cfg, steps_per_epoch=10)  # 20 updates, no warmup: 10 at the peak, then a cosine to 0
    assert lrs[:10] == [0.1] * 10
    assert lrs[10] == pytest.approx(0.1) and lrs[15] == pytest.approx(0.05)
    assert lrs[19] == pytest.approx(0.05 * (1 + math.cos(math.pi * 9 / 10)))

    warm = lr_curve(compose_cfg([*base, "scheduler.warmup_steps=4"], config_dir=conf_with_sample), steps_per_epoch=10)
    assert warm[0] == pytest.approx(0.1 / 5) and warm[4] == pytest.approx(0.1)  # the shared warmup comes free

    with pytest.raises(ConfigError, match=r"scheduler.hold_ratio=1.5: allowed is 0 <= hold_ratio < 1"):
        validate(compose_cfg([*base, "scheduler.hold_ratio=1.5"], config_dir=conf_with_sample))
    GlobalHydra.instance().clear()

    row = schedule_table.table(conf_with_sample / "scheduler").splitlines()
    assert "| `hold_then_cosine` | `lr` for t < ⌈hold_ratio·T⌉, then a cosine to 0 | `hold_ratio` 0.5 |  |" in row


def test_the_catalogue_table_in_the_docs_is_current():
    result = subprocess.run(
        [sys.executable, "scripts/schedule_table.py", "--check"], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
