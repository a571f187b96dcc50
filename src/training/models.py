"""Models that can be chosen with `model=NAME` (conf/model/)."""

from torch import nn

from src.config.rules import INTEGER, Rule


class LeNet(nn.Module):
    """LeNet-5 with ReLU and max-pooling, for 1x28x28 inputs (the classic textbook variant)."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, kernel_size=5),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * 5 * 5, 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


KEY_RULES: dict[str, Rule] = {
    "model.num_classes": INTEGER.where(lambda v: v >= 10, "an integer >= 10 (Fashion-MNIST has 10 classes)"),
}
