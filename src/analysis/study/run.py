"""`python -m src.study [study=<preset>] [study.<key>=<value> ...] [run overrides]`: which schedule wins, and how sure.

Stage 1 (tune) runs each schedule over a log-spaced grid of peak lrs and picks its lr; stage 2 (confirm) runs
every schedule at its own lr over the same seeds (paired: same initial weights, same batch order). Every job is an
ordinary run, launched as an ordinary multirun of `src.train` (so `hydra/launcher=joblib` or the SLURM launcher
spreads it out unchanged), into `<study>/<stage>/<schedule>/lr=<lr>,seed=<seed>/`. The same command again with
`study.dir=<folder>` continues a study: finished jobs are not run again, interrupted ones resume from last.pt, and
a job whose metrics.json cannot be read runs again (the damaged file kept as metrics.json.damaged).
This module runs the stages and picks the lrs; the plan is src.analysis.study.plan's, the report (written into the
study folder at the end) src.analysis.study.report's. Exit status: 0 for a finished study, 2 for bad input (before
any training), 3 when the report cannot be written, a job's own status when a stage fails, 128 + signal when stopped.
"""

from __future__ import annotations

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
from src.analysis.runs import DamagedRunError, Run, read_metrics, scan_runs
from src.analysis.study.plan import JOB_FOLDER, STUDY_FILE, Plan, Schedule, StudyError, presets, resolve
from src.analysis.study.report import build_study_report, write_study_report
from src.runs.errors import EXIT_BAD_INPUT, EXIT_UNWRITABLE, RunError, Stopped, error_reason
from src.runs.files import write_json
from src.runs.folder import glob_settled
from src.runs.parent_watch import PARENT_ENV
from src.runs.signals import StopOnSignal

log = logging.getLogger("src.study")
PICKS_FILE = "picks.json"


class Launcher:
    """Runs one stage of one schedule as `python -m src.train -m ...` in its own process group, its output in
    a log file; a SIGINT or SIGTERM to the study is passed on once, so the running job stops after its step."""

    def __init__(self, plan: Plan, bar: tqdm):
        self.plan = plan
        self.bar = bar
        self.child: subprocess.Popen | None = None
        self.signals = StopOnSignal(on_first=self._forward)  # a second signal ends the study (its jobs follow)

    def __enter__(self) -> Launcher:
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

    def command(self, stage: str, schedule: Schedule, lrs: list[str], seeds: list[int]) -> list[str]:
        return [
            sys.executable,
            "-m",
            "src.train",
            "-m",
            *self.plan.job_overrides(stage, schedule),
            f"optimizer.lr={','.join(lrs)}",
            f"seed={','.join(str(seed) for seed in seeds)}",
            f"labels.stage={stage}",
            f"labels.schedule={schedule.name}",
            "checkpoint.skip_finished=true",
            f"hydra.sweep.dir={self.plan.stage_dir(stage, schedule.name)}",
            f"hydra.sweep.subdir='{JOB_FOLDER}'",
            "~hydra.callbacks.sweep_summary",  # the study writes one report for all
        ]

    def run(self, stage: str, schedule: Schedule, lrs: list[str], seeds: list[int]) -> None:
        """Run the jobs of `lrs` x `seeds` not finished yet; return when all are finished."""
        todo = [
            (lr, seed) for lr in lrs for seed in seeds if not job_finished(self.plan, stage, schedule.name, lr, seed)
        ]
        if not todo:
            return
        if self.received is not None:
            raise Stopped("stopped", self.received)
        # the product of what is left; finished jobs inside it return their recorded result at once
        todo_lrs = [lr for lr in lrs if any(lr == job_lr for job_lr, _ in todo)]
        todo_seeds = [seed for seed in seeds if any(seed == job_seed for _, job_seed in todo)]
        log_path = Path(self.plan.dir) / "logs" / f"{stage}-{schedule.name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.bar.set_postfix_str(f"{stage} {schedule.name}")
        with open(log_path, "a") as output:
            self.child = subprocess.Popen(
                self.command(stage, schedule, todo_lrs, todo_seeds),
                cwd=REPO_ROOT,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C reaches the study, which passes it on once
                env={**os.environ, PARENT_ENV: str(os.getpid())},  # its jobs stop when the study dies, even by kill -9
            )
            while self.child.poll() is None:
                time.sleep(0.5)
                if (done := count_finished(self.plan)) != self.bar.n:
                    self.bar.n = done
                    self.bar.refresh()
        status, self.child = self.child.returncode, None
        self.bar.n = count_finished(self.plan)
        self.bar.refresh()
        if status != 0:
            tail = "".join(log_path.read_text(errors="replace").splitlines(keepends=True)[-15:])
            stopped = self.received is not None or status >= 128 or status < 0
            reason = "stopped" if stopped else f"a job failed (exit {status}); the end of {log_path}:\n{tail}"
            raise RunError(reason, 128 + self.received if self.received else status)


def job_finished(plan: Plan, stage: str, schedule: str, lr: str, seed: int) -> bool:
    """Whether the job has a metrics.json that can be read. One that cannot is set aside as metrics.json.damaged
    (and said), so that the job runs again: from its last.pt when it has one, else from the start."""
    path = plan.job_dir(stage, schedule, lr, seed) / "metrics.json"
    if not path.is_file():
        return False
    try:
        read_metrics(path)
    except DamagedRunError as error:
        path.replace(path.with_name("metrics.json.damaged"))
        log.warning("%s: %s; the job runs again (the file is kept as metrics.json.damaged)", path.parent, error)
        return False
    return True


def count_finished(plan: Plan) -> int:
    """The jobs with a metrics.json, counted while a stage runs (its jobs make and remove folders meanwhile)."""
    return len(glob_settled(Path(plan.dir), "*/*/*/metrics.json"))


def pick_lr(plan: Plan, runs: list[Run], lrs: list[str]) -> dict[str, Any]:
    """The tuned lr of one schedule from its stage-1 runs: the best score among the lrs none of whose runs
    collapsed or diverged (score: the mean of the study metric, or of best_test_acc, over the tuning seeds)."""
    score_of = plan.metric if plan.pick == "metric" else "best_test_acc"
    table = []
    for lr in lrs:
        at_lr = [run for run in runs if run.hparams["optimizer.lr"] == float(lr)]
        ok = [run.value(score_of) for run in at_lr if run.outcome == "ok"]
        failed = len(at_lr) - len(ok)
        score = sum(ok) / len(ok) if ok and not failed else None
        table.append({"lr": lr, "runs": len(at_lr), "failed": failed, "score": score})
    eligible = [row for row in table if row["score"] is not None]
    best = max(eligible, key=lambda row: row["score"], default={"lr": None, "score": None})
    ordered = sorted(lrs, key=float)
    edge = len(ordered) > 1 and best["lr"] in (ordered[0], ordered[-1])
    return {"lr": best["lr"], "score": best["score"], "rule": score_of, "edge": edge, "grid": table}


def run_study(plan: Plan) -> dict[str, Any]:
    """Stage 1 for every schedule, then stage 2 for every schedule with a picked lr; returns the picks.
    picks.json is never read back: every pick is computed again from its tuning runs, so a damaged one is rebuilt."""
    picks_path = Path(plan.dir) / PICKS_FILE
    picks: dict[str, Any] = {}
    total = sum(plan.jobs.values())
    with (
        tqdm(total=total, initial=count_finished(plan), desc="study jobs", unit="job", dynamic_ncols=True) as bar,
        Launcher(plan, bar) as launcher,
    ):
        for schedule in plan.schedules:
            launcher.run("tune", schedule, plan.lrs[schedule.name], plan.tune_seeds)
            runs = scan_runs(plan.stage_dir("tune", schedule.name)).runs  # the report names those it skips
            picked = picks[schedule.name] = pick_lr(plan, runs, plan.lrs[schedule.name])
            write_json(picks_path, picks)
            if picked["lr"] is None:
                tqdm.write(f"{schedule.name}: every lr of the grid collapsed or diverged; it has no confirm stage")
            else:
                edge = " (at the edge of the grid: widen it)" if picked["edge"] else ""
                tqdm.write(f"{schedule.name}: picked lr {picked['lr']} ({picked['rule']} {picked['score']:.4f}){edge}")
        for schedule in plan.schedules:
            if picks[schedule.name]["lr"] is not None:
                launcher.run("confirm", schedule, [picks[schedule.name]["lr"]], plan.confirm_seeds)
        bar.total = bar.n = count_finished(plan)  # stages of schedules with no lr picked do not run
    return picks


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
    print(f"study {plan.preset}: {len(plan.schedules)} schedules, {sum(plan.jobs.values())} jobs, folder {folder}")
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
