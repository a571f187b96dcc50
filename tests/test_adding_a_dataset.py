"""The recipe for a new dataset, followed from scratch: one module (here this file) with a loader returning a
DeviceData, its INFO and its KEY_RULES, and one YAML naming the loader; validation, the model and the run pick it
up with no other edit."""

from __future__ import annotations

import pytest
import torch

from src.config.rules import Rule, integer_in
from src.config.validation import ConfigError, planned_steps_per_epoch, validate
from src.train import run
from src.training.data import DatasetInfo, DeviceData
from src.training.models import build_model
from tests.conftest import conf_with, run_metrics

SAMPLE_YAML = """\
# Squares: 3x32x32 images of 4 classes, a bright square whose colour and place is the class, over noise.
_target_: tests.test_adding_a_dataset.squares
batch_size: 32
train_size: null
# The largest value of the noise under the squares, 0..255.
noise: 60
"""

INFO = DatasetInfo(train_size=256, num_classes=4, input_shape=(3, 32, 32))
KEY_RULES: dict[str, Rule] = {**INFO.size_rules(), "data.noise": integer_in(0, 255)}


def _split(generator: torch.Generator, count: int, noise: int) -> tuple[torch.Tensor, torch.Tensor]:
    labels = torch.randint(0, INFO.num_classes, (count,), generator=generator)
    images = torch.randint(0, noise + 1, (count, *INFO.input_shape), generator=generator).to(torch.uint8)
    for k in range(INFO.num_classes):
        row, col = 4 + 12 * (k // 2), 4 + 12 * (k % 2)
        images[labels == k, k % 3, row : row + 12, col : col + 12] = 230
    return images, labels


def squares(*, device: torch.device, batch_size: int, train_size: int | None = None, noise: int = 60) -> DeviceData:
    """The sample dataset, made from a seeded generator (the same images in every process)."""
    generator = torch.Generator().manual_seed(0)
    (train_x, train_y), (test_x, test_y) = _split(generator, INFO.train_size, noise), _split(generator, 128, noise)
    tensors = [tensor.to(device) for tensor in (train_x, train_y, test_x, test_y)]
    data = DeviceData(*tensors, batch_size, 0.2, 0.3, f"squares-noise-{noise}", INFO.num_classes)
    return data.keep_first(train_size)


@pytest.fixture
def conf_with_sample(tmp_path):
    return conf_with(tmp_path, "data/squares.yaml", SAMPLE_YAML)


def test_a_new_dataset_is_one_module_and_one_yaml(conf_with_sample, compose_cfg, tmp_path):
    base = ["data=squares", "trainer.epochs=2", "trainer.threads=1", "trainer.progress=false", "optimizer.lr=0.05"]
    cfg = compose_cfg(base, config_dir=conf_with_sample)
    validate(cfg)
    assert planned_steps_per_epoch(cfg) == 8  # 256 images of its INFO, batches of 32

    # its own key rules, and the size bound from its INFO (not Fashion-MNIST's 60,000)
    with pytest.raises(ConfigError) as refused:
        validate(compose_cfg([*base, "data.noise=300", "data.train_size=257"], config_dir=conf_with_sample))
    assert refused.value.problems == [
        "data.train_size=257: allowed is null (all 256) or an integer 1..256",
        "data.noise=300: allowed is an integer 0..255",
    ]

    cfg = compose_cfg(base, config_dir=conf_with_sample)
    dataset = squares(device=torch.device("cpu"), batch_size=32)
    model = build_model(cfg.model, dataset)  # LeNet, built for the data's shape and classes
    assert model(dataset.to_input(dataset.test_x[:5])).shape == (5, 4)

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    result = run(cfg, run_dir)
    metrics = run_metrics(run_dir)
    assert metrics["epochs"] == 2 and metrics["steps"] == 16 and not metrics["diverged"]
    assert result.history[-1]["test_acc"] > 0.5, result.history  # chance is 0.25
    weights = torch.load(run_dir / "last.pt", weights_only=False)["trainer"]["model"]
    assert weights["features.0.weight"].shape == (6, 3, 5, 5)  # three input channels
    assert weights["classifier.5.weight"].shape == (4, 84)  # four classes
