"""Every config in conf/ composes with Hydra and builds the objects a run uses."""

import inspect
import math
from pathlib import Path

import pytest
import torch
from hydra.utils import get_method, instantiate
from omegaconf import OmegaConf

from src import REPO_ROOT
from src.config.validation import validate
from src.schedules import Timeline, build_lr_driver
from src.training.optimizers import build_optimizer

CONF = REPO_ROOT / "conf"


def options(group: str) -> list[str]:
    return sorted(path.stem for path in (CONF / group).glob("*.yaml"))


def test_default_run_is_lenet_sgd_cosine_warmup_ten_epochs_batch_256(compose_cfg):
    cfg = compose_cfg()
    assert cfg.model._target_ == "src.training.models.LeNet"
    assert cfg.optimizer._target_ == "torch.optim.SGD"
    assert cfg.hydra.runtime.choices.scheduler == "cosine_warmup"
    assert cfg.trainer.epochs == 10 and cfg.data.batch_size == 256
    assert cfg.trainer.device == "auto" and cfg.data.train_size is None


def test_keys_other_tools_rely_on_exist(compose_cfg):
    cfg = compose_cfg()
    keys = ("seed", "trainer.epochs", "trainer.device", "data.root", "data.batch_size", "data.train_size")
    for key in (*keys, "optimizer.lr", "scheduler.interval", "scheduler.warmup_ratio", "scheduler.warmup_steps"):
        assert OmegaConf.select(cfg, key, default="<absent>") != "<absent>", key
    for scheduler in options("scheduler"):
        cfg = compose_cfg([f"scheduler={scheduler}"])
        for key in ("interval", "warmup_ratio", "warmup_steps"):
            assert key in cfg.scheduler, f"scheduler={scheduler} lacks {key}"


@pytest.mark.parametrize("model", options("model"))
def test_every_model_builds_and_maps_an_image_batch_to_ten_logits(compose_cfg, model):
    net = instantiate(compose_cfg([f"model={model}"]).model)
    assert net(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


@pytest.mark.parametrize("optimizer", options("optimizer"))
def test_every_optimizer_builds_with_its_configured_lr(compose_cfg, optimizer):
    cfg = compose_cfg([f"optimizer={optimizer}"])
    built = build_optimizer(cfg.optimizer, [torch.nn.Parameter(torch.zeros(2))])
    assert built.param_groups[0]["lr"] == cfg.optimizer.lr
    validate(cfg)


@pytest.mark.parametrize("scheduler", options("scheduler"))
@pytest.mark.parametrize("interval", ["step", "epoch"])
def test_every_scheduler_builds_a_driver_with_finite_lrs(compose_cfg, scheduler, interval):
    cfg = compose_cfg([f"scheduler={scheduler}", f"scheduler.interval={interval}", "trainer.epochs=3"])
    validate(cfg)
    optimizer = build_optimizer(cfg.optimizer, [torch.nn.Parameter(torch.zeros(1))])
    driver = build_lr_driver(cfg, optimizer, steps_per_epoch=5)
    assert math.isfinite(driver.lr) and driver.lr >= 0
    assert optimizer.param_groups[0]["lr"] == driver.lr


SHARED_SCHEDULER_KEYS = {
    key for name in ("warmup", "length") for key in OmegaConf.load(CONF / "scheduler" / "shared" / f"{name}.yaml")
}


@pytest.mark.parametrize("scheduler", options("scheduler"))
def test_every_schedule_default_lives_in_its_yaml_alone(compose_cfg, scheduler):
    """A factory's keywords are exactly its file's own keys, none with a Python default that could drift from
    the YAML; the file states only what differs from conf/scheduler/shared/."""
    own = OmegaConf.load(CONF / "scheduler" / f"{scheduler}.yaml")
    assert own.defaults[0] == "shared/warmup@_here_" and own.defaults[-1] == "_self_"
    composed = compose_cfg([f"scheduler={scheduler}"]).scheduler
    factory = inspect.signature(get_method(composed._target_))
    keywords = {name: p for name, p in factory.parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    assert [name for name, p in keywords.items() if p.default is not inspect.Parameter.empty] == []
    assert set(keywords) == set(composed) - SHARED_SCHEDULER_KEYS - {"_target_", "_partial_"}
    shared = OmegaConf.merge(
        *(OmegaConf.load(CONF / "scheduler" / "shared" / f"{name}.yaml") for name in ("warmup", "length"))
    )
    restated = [key for key in set(own) & SHARED_SCHEDULER_KEYS if own[key] == shared[key]]
    assert restated == [], f"{scheduler}.yaml restates shared defaults"


def test_the_shared_warmup_keys_have_no_python_default():
    warmup = inspect.signature(Timeline.warmup).parameters
    shared = set(OmegaConf.load(CONF / "scheduler" / "shared" / "warmup.yaml"))
    assert shared <= set(warmup)
    assert all(warmup[key].default is inspect.Parameter.empty for key in shared)


@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_experiment_preset_composes_and_validates(compose_cfg, experiment):
    cfg = compose_cfg([f"experiment={experiment}"])
    validate(cfg)


def test_conf_groups_mirror_the_code():
    groups = {path.name for path in CONF.iterdir() if path.is_dir()}
    assert {"model", "optimizer", "scheduler", "data", "trainer", "experiment"} <= groups
    assert Path(CONF / "config.yaml").is_file()
