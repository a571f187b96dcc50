"""lrbench: compare learning-rate schedules on LeNet / Fashion-MNIST."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
