"""`hydra/sweeper=study`: a study's stages as Hydra sweeps, each batch (a rung of the tuning stage, a round of
confirm seeds) handed whole to the configured launcher in one call, the next batch chosen from the results.

It is what Hydra offers for "a sweep that picks its next jobs from the last ones' results" (the Optuna sweeper is
one too), so the basic launcher runs a study in one process and joblib, submitit_local or submitit_slurm run each
batch at once. `python -m src.study` starts it; the study's logic is src.analysis.study.stages. Hydra looks for
plugins only under `hydra_plugins`, so this module is here and imports lrbench lazily (Hydra imports it at every
start, of every command).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class StudySweeper(Sweeper):
    """Runs the study whose plan is `plan` (its study.json): batch after batch through the launcher."""

    def __init__(self, plan: str | None = None) -> None:
        self.plan = plan
        self.launcher: Launcher | None = None
        self.launched = 0

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from src.runs.parent_watch import stop_with_parent

        stop_with_parent()  # this process ends with the study, and the launcher's workers with this process
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> Any:
        from src.analysis.study.plan import StudyError, read_plan
        from src.analysis.study.stages import BatchFailed, run_stages

        if self.plan is None or arguments:
            raise StudyError(
                "hydra/sweeper=study runs the jobs of a study's plan: start it with python -m src.study "
                f"(it was given hydra.sweeper.plan={self.plan} and the overrides {arguments})"
            )
        path = Path(self.plan)
        plan = read_plan(path)
        plan.dir = str(path.parent)  # the study is where its plan is now
        try:
            run_stages(plan, self._launch)
        except BatchFailed as error:
            print(f"lrbench: study stopped: {error}")  # the end-of-sweep hook exits with the job's status

    def _launch(self, batch: list[list[str]]) -> Any:
        """One call of the launcher for the whole batch; a job that raised re-raises here."""
        print(f"lrbench: launching {len(batch)} jobs", flush=True)
        returns = self.launcher.launch(batch, initial_job_idx=self.launched)
        self.launched += len(batch)
        for job in returns:
            _ = job.return_value  # raises the job's exception, as Hydra's basic sweeper does
        return returns
