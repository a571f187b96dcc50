"""`python -m src.study [study=<preset>] [study.<key>=<value> ...] [run overrides]`: which schedule wins, and how sure.

Stage 1 (tune) runs each schedule over a log-spaced grid of peak lrs (with `study.tune.halving`, dropping the worse
lrs at rungs) and picks its lr; stage 2 (confirm) runs every schedule at its own lr over the same seeds (paired:
same initial weights, same batch order), adding seeds in rounds where the verdict is open (`study.confirm.max_seeds`).
The study is one multirun of `src.train` with the study sweeper (hydra_plugins/lrbench_study), which hands each batch
whole to the configured Hydra launcher (`hydra/launcher=joblib`, `submitit_local`, `slurm`); every job is an
ordinary run, in `<study>/<stage>/<schedule>/lr=<lr>,seed=<seed>/`. The same command again with
`study.dir=<folder>` continues a study: finished jobs are not run again, interrupted ones resume from last.pt, and
a job whose metrics.json cannot be read runs again (the damaged file kept as metrics.json.damaged).
This module starts that multirun and writes the report; the plan is src.analysis.study.plan's, the batches
src.analysis.study.stages', the report (written into the
study folder at the end) src.analysis.study.report's. Exit status: 0 for a finished study, 2 for bad input (before
any training), 3 when the report cannot be written, a job's own status when a stage fails, 128 + signal when stopped.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tqdm import tqdm

from src import REPO_ROOT
from src.analysis.study.plan import JOB_PATH, STUDY_FILE, Plan, StudyError, presets, resolve
from src.analysis.study.report import build_study_report, write_study_report
from src.analysis.study.stages import PICKS_FILE, kept, pending, pick_lines, set_aside_damaged, tune
from src.runs.errors import EXIT_BAD_INPUT, EXIT_UNWRITABLE, RunError, Stopped, error_reason
from src.runs.files import write_json
from src.runs.folder import glob_settled
from src.runs.parent_watch import PARENT_ENV, identity
from src.runs.resume import hydra_quoted
from src.runs.signals import StopOnSignal

log = logging.getLogger("src.study")


class StudyProcess:
    """The study's one launch, `python -m src.train -m hydra/sweeper=study ...` (src.analysis.study.stages through
    Hydra's launcher), in its own process group, its output in logs/study.log; a SIGINT or SIGTERM to the study is
    passed on once, so the running job stops after its step."""

    def __init__(self, plan: Plan, bar: tqdm):
        self.plan = plan
        self.bar = bar
        self.child: subprocess.Popen | None = None
        self.signals = StopOnSignal(on_first=self._forward)  # a second signal ends the study (its jobs follow)

    def __enter__(self) -> StudyProcess:
        self.signals.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.signals.__exit__(*exc_info)

    @property
    def received(self) -> int | None:
        return self.signals.received

    def _forward(self, signum: int) -> None:
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signum)

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "src.train",
            "-m",
            "hydra/sweeper=study",
            f"hydra.sweeper.plan={hydra_quoted(str(Path(self.plan.dir) / STUDY_FILE))}",
            f"hydra.sweep.dir={hydra_quoted(self.plan.dir)}",
            f"hydra.sweep.subdir='{JOB_PATH}'",
            "~hydra.callbacks.sweep_summary",  # the study writes one report for all
            *self.plan.hydra_overrides(),  # the launcher and its settings
        ]

    def run(self) -> None:
        """Run the study's batches; return when the plan is done."""
        if self.received is not None:
            raise Stopped("stopped", self.received)
        log_path = Path(self.plan.dir) / "logs" / "study.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        progress = EpochsDone(self.plan)
        with open(log_path, "a") as output:
            self.child = subprocess.Popen(
                self.command(),
                cwd=REPO_ROOT,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C reaches the study, which passes it on once
                env={**os.environ, PARENT_ENV: identity()},  # its jobs stop when the study dies, even by kill -9
            )
            while self.child.poll() is None:
                time.sleep(0.5)
                if (done := progress.count()) != self.bar.n:
                    self.bar.n = done
                    self.bar.refresh()
        status, self.child = self.child.returncode, None
        self.bar.n = progress.count()
        self.bar.refresh()
        if status != 0:
            tail = "".join(log_path.read_text(errors="replace").splitlines(keepends=True)[-15:])
            stopped = self.received is not None or status >= 128 or status < 0
            reason = "stopped" if stopped else f"a job failed (exit {status}); the end of {log_path}:\n{tail}"
            raise RunError(reason, 128 + self.received if self.received else status)


class EpochsDone:
    """The epochs the study's jobs have trained, from their metrics.json (read again only when it changed); a
    branched run counts only the epochs after its branch point (its trunk trained the others)."""

    def __init__(self, plan: Plan):
        self.plan = plan
        self.seen: dict[Path, tuple[int, int]] = {}  # metrics.json: (its mtime, its epochs)

    def count(self) -> int:
        for path in glob_settled(Path(self.plan.dir), "*/*/*/metrics.json"):
            try:
                mtime = path.stat().st_mtime_ns
                if self.seen.get(path, (None,))[0] != mtime:
                    metrics = json.loads(path.read_text())
                    inherited = (metrics.get("branched_from") or {}).get("epoch") or 0
                    self.seen[path] = (mtime, int(metrics.get("epochs") or 0) - int(inherited))
            except (OSError, ValueError, TypeError, AttributeError):
                continue  # being replaced, or damaged: the study's own check says so
        return sum(epochs for _, epochs in self.seen.values())


def most_epochs(plan: Plan) -> int:
    """The epochs the study trains at most: every rung's lrs (as halving keeps them), every confirm seed."""
    total = 0
    for schedule in plan.schedules:
        alive, previous = len(plan.lrs[schedule.name]), 0
        for rung in plan.rungs[schedule.name]:
            total += alive * len(plan.tune_seeds) * (rung - previous)
            previous = rung
            alive = kept(alive, plan.halving) if plan.halving else alive
        total += len(plan.confirm_seeds) * plan.confirm_epochs[schedule.name]
    return total


def run_study(plan: Plan) -> dict[str, Any]:
    """Both stages, in one launch of the study sweeper; returns the picks, computed again from the tuning runs
    (picks.json is never read back, so a damaged one is rebuilt)."""
    set_aside_damaged(plan)
    with (
        tqdm(total=most_epochs(plan), desc="study epochs", unit="epoch", dynamic_ncols=True) as bar,
        StudyProcess(plan, bar) as process,
    ):
        bar.n = EpochsDone(plan).count()
        bar.refresh()
        if pending(plan):  # a finished study continued starts nothing
            process.run()
        bar.total = bar.n  # halving and the sequential rule train less than the most
    picks = tune(plan, launch=_nothing_left)
    write_json(Path(plan.dir) / PICKS_FILE, picks)
    for line in pick_lines(picks):
        print(line)
    return picks


def _nothing_left(batch: list[list[str]]) -> None:
    raise RunError(f"the study's launch ended with {len(batch)} jobs not run", 1)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(arg in ("-h", "--help") for arg in argv):
        print(__doc__.strip())
        print(f"\npresets: {', '.join(presets())} (conf/study/); options: conf/study/base.yaml")
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        plan = resolve(argv)
    except StudyError as error:
        print(f"lrbench: invalid study:\n{error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    folder = Path(plan.dir)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / STUDY_FILE, asdict(plan))
    print(
        f"study {plan.preset}: {len(plan.schedules)} schedules, at most {sum(plan.jobs.values())} jobs "
        f"({most_epochs(plan)} epochs), folder {folder}"
    )
    started = time.perf_counter()
    try:
        picks = run_study(plan)
    except RunError as failure:
        print(f"lrbench: study {failure}. To continue:\n  python -m src.study study.dir={folder}", file=sys.stderr)
        return failure.status
    report = build_study_report(plan, picks, wall_seconds=time.perf_counter() - started)
    for item in report.skipped:
        print(f"lrbench: skipped {item.folder}: {item.reason}", file=sys.stderr)
    print(report.summary_text())
    try:
        write_study_report(report)
    except OSError as error:
        print(f"lrbench: cannot write the study's report into {folder}: {error_reason(error)}", file=sys.stderr)
        return EXIT_UNWRITABLE
    print(f"\nreport: {folder / 'report.md'}   (TensorBoard: tensorboard --logdir {folder})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
