"""The recipe for a new optimizer, followed from scratch: the optimizer and its KEY_RULES in one module (here this
file), one YAML naming it; validation checks its own key, and the run and the range test switch its train/eval
modes as schedule-free optimizers need (train before the training steps, eval before evaluating and saving)."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from src.config.rules import NUMBER, Rule
from src.config.validation import ConfigError, validate
from src.lr_range.find import find_lr
from src.train import run
from src.training import data, optimizers
from tests.conftest import conf_with, run_metrics

SAMPLE_YAML = """\
# SGD with every gradient scaled by `damping` before its step.
_target_: tests.test_adding_an_optimizer.DampedSGD
_partial_: true
lr: 0.05
# The share of each gradient the step uses, 0 < damping <= 1.
damping: 0.5
"""

KEY_RULES: dict[str, Rule] = {
    **optimizers.KEY_RULES,  # lr (and the other torch keys) as torch's optimizers have them
    "optimizer.damping": NUMBER.where(lambda v: 0 < v <= 1, "a number with 0 < damping <= 1").in_float32(),
}
BUILT: list[DampedSGD] = []


class DampedSGD(torch.optim.SGD):
    """The sample optimizer; `calls` records its train/eval switches and its saves, in order."""

    def __init__(self, params, lr: float, damping: float):
        super().__init__(params, lr=lr)
        self.damping = damping
        self.calls: list[str] = []
        BUILT.append(self)

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for weight in group["params"]:
                if weight.grad is not None:
                    weight.grad.mul_(self.damping)
        return super().step(closure)

    def train(self) -> None:
        self.calls.append("train")

    def eval(self) -> None:
        self.calls.append("eval")

    def state_dict(self):
        self.calls.append("save")
        return super().state_dict()


@pytest.fixture
def conf_with_sample(tmp_path):
    return conf_with(tmp_path, "optimizer/damped_sgd.yaml", SAMPLE_YAML)


def test_a_new_optimizer_is_one_module_and_one_yaml(conf_with_sample, compose_cfg, synthetic_root, tmp_path):
    base = [
        "optimizer=damped_sgd",
        f"data.root={synthetic_root}",
        "data.batch_size=64",
        "trainer.epochs=2",
        "trainer.threads=1",
        "trainer.progress=false",
    ]
    cfg = compose_cfg(base, config_dir=conf_with_sample)
    validate(cfg)

    with pytest.raises(ConfigError) as refused:
        validate(compose_cfg([*base, "optimizer.damping=2", "optimizer.lr=-1"], config_dir=conf_with_sample))
    assert refused.value.problems == [
        "optimizer.lr=-1: allowed is a number > 0",
        "optimizer.damping=2: allowed is a number with 0 < damping <= 1",
    ]

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    cfg = compose_cfg(base, config_dir=conf_with_sample)
    run(cfg, run_dir)
    assert run_metrics(run_dir)["epochs"] == 2
    optimizer = BUILT[-1]
    assert optimizer.damping == 0.5
    # saved before the first epoch (a run interrupted in it resumes), then each epoch: train, eval, save
    assert optimizer.calls == ["save", "train", "eval", "save", "train", "eval", "save"]

    lr_find_cfg = compose_cfg([*base, "lr_find.num_steps=20"], config_name="lr_find", config_dir=conf_with_sample)
    dataset = data.load(device=torch.device("cpu"), **OmegaConf.to_container(lr_find_cfg.data))
    curve = find_lr(lr_find_cfg, dataset, progress=False)
    assert len(curve.lrs) == 20 and BUILT[-1].calls == ["train"]  # the range test trains in train mode
