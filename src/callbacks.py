"""Hydra callbacks: the comparison report written into the sweep folder when a multirun ends."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from src.compare import DEFAULT_TARGET_ACC, NoRunsError, write_report

log = logging.getLogger(__name__)


class SweepSummary(Callback):
    """After the last job, `python -m src.compare <sweep folder>` in-process: summary.md, summary.csv, figures.

    The runs are already safe on disk, so a report that cannot be written is logged, not raised: the sweep
    still ends with the jobs' own status, and the command to rebuild the report is in the message.
    """

    def __init__(self, target_acc: float = DEFAULT_TARGET_ACC):
        self.target_acc = target_acc

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        folder = Path(config.hydra.sweep.dir)
        try:
            report = write_report(folder, self.target_acc)
        except NoRunsError as error:
            log.warning("no sweep summary: %s", error)
            return
        except Exception as error:  # the report is a convenience; the runs are what matter
            log.error("sweep summary failed (%s); rebuild it with: python -m src.compare %s", error, folder)
            return
        diverged = sum(row["diverged"] for row in report.rows())
        log.info(
            "sweep summary: %s/summary.md (%d configurations, %d diverged runs)", folder, len(report.rows()), diverged
        )
        print(report.markdown())
