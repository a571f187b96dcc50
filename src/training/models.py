"""Models that can be chosen with `model=NAME` (conf/model/): nn.Module classes taking the dataset's
`input_shape` (channels, height, width) and `num_classes`, besides the keys of their own config."""

from collections.abc import Sequence

from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from src.config.rules import Rule
from src.training.data import DeviceData


class LeNet(nn.Module):
    """LeNet-5 with ReLU and max-pooling (the classic textbook variant), for 1x28x28 inputs by default."""

    def __init__(self, input_shape: Sequence[int] = (1, 28, 28), num_classes: int = 10):
        super().__init__()
        channels, height, width = input_shape
        self.features = nn.Sequential(
            nn.Conv2d(channels, 6, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, kernel_size=5),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * ((height // 2 - 4) // 2) * ((width // 2 - 4) // 2), 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


def build_model(model_cfg: DictConfig, data: DeviceData) -> nn.Module:
    """The model the config names, built for the data's input shape and number of classes."""
    return instantiate(model_cfg, _partial_=True)(input_shape=data.input_shape, num_classes=data.num_classes)


KEY_RULES: dict[str, Rule] = {}  # LeNet has no keys of its own
