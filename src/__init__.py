"""lrbench: compare learning-rate schedules on LeNet / Fashion-MNIST.

The packages are the layers, each importing only those below it:

    config.rules      what a key allows (imports nothing of the project; every layer declares its KEY_RULES)
    runs              a run's folder and files: errors, safe writes, checkpoints, resume, the lock, signals
    schedules         pure lr schedules and the driver that applies one to an optimizer
    training          data on the device, datasets, models, optimizers, the loop, TensorBoard tracking
    lr_range          the LR range test, its suggestion rules, `lr_from`
    config            validation (gathers every KEY_RULES), Hydra hooks and session facts
    analysis          reading run folders back, compare, the study, statistics

and the five commands users type (`python -m src.train`, `src.study`, `src.lr_find`, `src.preview`,
`src.compare`) are thin entry points at the top.
"""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
