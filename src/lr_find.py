"""`python -m src.lr_find [run overrides]`: the LR range test (Smith 2017) for the run those overrides describe.

The same model, optimizer, data, batch size, seed, precision and device as `python -m src.train [run overrides]`,
but from the run's initial weights the lr ramps from `lr_find.min_lr` to `lr_find.max_lr` over `lr_find.num_steps`
steps, one batch per step in the run's batch order, until the smoothed loss exceeds `lr_find.stop_factor` times its
best. Settings: conf/lr_find.yaml; the test itself: src/lr_range/find.py; the ramp, the smoothing and the rules:
src/lr_range/suggest.py. Nothing leaks into a run started afterwards, even in this process (see `find_lr`).

Written into `${output_root}/lr_find/<date>/<time>/`: lr_find.csv (step, lr, raw and smoothed loss), lr_find.png
(loss against lr on a log axis, the suggestions marked), the curve in TensorBoard (scalars against the step, and the
figure), and suggestions.json, which `python -m src.train lr_from=<folder>` and `read_suggestion` read.
Exit status 2 for a bad config or a test that yields no curve (a loss not finite from the first step, a blow-up
after a handful of steps), with a message and no traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from src.config.hooks import register_resolvers
from src.config.overrides import override_key_problem
from src.lr_range.find import run_range_test
from src.runs.errors import RunError, fail

register_resolvers()


@hydra.main(version_base="1.3", config_path="../conf", config_name="lr_find")
def main(cfg: DictConfig) -> float:
    try:
        return run_range_test(cfg, Path(HydraConfig.get().runtime.output_dir))
    except RunError as error:
        fail(str(error), error.status)


if __name__ == "__main__":
    if key_problem := override_key_problem(sys.argv[1:], "lr_find"):  # a mistyped group, before Hydra's `+` hint
        fail(key_problem)
    main()
