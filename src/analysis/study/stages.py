"""What a study runs, batch by batch: every batch is all the jobs one step of the protocol needs, handed whole to
`launch` (the Hydra launcher, through the study sweeper), and the next batch is chosen from the results on disk.

- Stage 1, tune: every schedule's lrs to the first rung; at each rung the best 1/halving of a schedule's lrs go on,
  from their own checkpoint, to the next (`checkpoint.pause_after_epoch`); the pick is made among full-budget runs.
- Stage 2, confirm: every schedule with a pick over its first seeds, then more seeds in rounds for the schedules the
  sequential rule has not decided, and for the best (src.analysis.stats.sequential_verdict).

Every decision is recomputed from the run folders, so a stopped study continued later makes the same ones and
launches only what is not done.
"""

from __future__ import annotations

import logging
import math
import shutil
import statistics
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from src.analysis.runs import TAIL_METRIC, DamagedRunError, read_metrics, tail_mean
from src.analysis.stats import Sequential, sequential_verdict
from src.analysis.study.plan import Plan, Schedule
from src.runs.files import write_json
from src.runs.resume import hydra_quoted

log = logging.getLogger("src.study")
PICKS_FILE = "picks.json"
Launch = Callable[[list[list[str]]], Any]


class BatchFailed(RuntimeError):
    """Jobs of a batch that ended without reaching their epochs (refused: failed.json); the study stops there."""


@dataclass(frozen=True)
class Job:
    """One job of a batch: which run, and the epoch it must reach (a rung, or the budget)."""

    stage: str
    schedule: Schedule
    lr: str
    seed: int
    epochs: int
    pause: bool = False  # stop at `epochs`, a rung before the schedule's budget
    branch_from: Path | None = None  # start from this copy of a trunk's checkpoint (plan.branches)

    def overrides(self, plan: Plan) -> list[str]:
        """The stage's run overrides for the schedule, the lr and seed, the labels, where it pauses, and the
        trunk checkpoint it branches from."""
        return [
            *plan.job_overrides(self.stage, self.schedule),
            f"optimizer.lr={self.lr}",
            f"seed={self.seed}",
            f"labels.stage={self.stage}",
            f"labels.schedule={self.schedule.name}",
            "checkpoint.skip_finished=true",
            *([f"checkpoint.pause_after_epoch={self.epochs}"] if self.pause else []),
            *([f"checkpoint.branch_from={hydra_quoted(str(self.branch_from))}"] if self.branch_from else []),
        ]

    @property
    def key(self) -> tuple[str, str, int]:
        return self.schedule.name, self.lr, self.seed

    def done(self, plan: Plan) -> bool:
        return reached(job_metrics(plan, self.stage, self.schedule.name, self.lr, self.seed), self.epochs)


def run_batch(plan: Plan, launch: Launch, jobs: list[Job]) -> None:
    """Hand the jobs not done yet to `launch` in one call; raise BatchFailed naming those that did not get there.
    Confirm jobs that branch from a trunk in the batch (plan.branches) take more calls: `branched`."""
    if todo := [item for item in jobs if not item.done(plan)]:
        confirming = plan.branches and all(item.stage == "confirm" for item in todo)
        for launched in branched(plan, todo) if confirming else [todo]:
            launch([item.overrides(plan) for item in launched])
            _copy_trunks(plan, launched, todo)
        if missing := [item for item in todo if not item.done(plan)]:
            folders = ", ".join(str(plan.job_dir(i.stage, i.schedule.name, i.lr, i.seed)) for i in missing[:3])
            raise BatchFailed(f"{len(missing)} of {len(todo)} jobs did not finish ({folders}; see failed.json)")


TRUNK_COPY = "trunk.pt"  # in a branch's folder: its trunk's last.pt after the branch epoch, copied before it runs


def _branch_spec(plan: Plan, job: Job) -> tuple[tuple[str, str, int], int] | None:
    """The trunk a confirm job branches from by the plan (its key: the same lr and seed under the longest
    budget) and the epoch; None for a job that trains alone."""
    spec = plan.branches.get(job.schedule.name) if job.stage == "confirm" else None
    return ((spec["trunk"], job.lr, job.seed), spec["epoch"]) if spec else None


def _trunk_of(plan: Plan, job: Job, todo: list[Job]) -> tuple[Job, int] | None:
    """The trunk job (in `todo`) a confirm job can still branch from, and the epoch; None when there is none, or
    it is past that epoch (a continued study) or ended early."""
    found = _branch_spec(plan, job)
    trunk = found and next((item for item in todo if item.key == found[0]), None)
    if not trunk:
        return None
    metrics = job_metrics(plan, "confirm", *trunk.key)
    if metrics is not None and (failed(metrics) or int(metrics.get("epochs") or 0) > found[1]):
        return None
    return trunk, found[1]


def _trunk_copy(plan: Plan, job: Job) -> Path:
    return plan.job_dir(job.stage, *job.key) / TRUNK_COPY


def branched(plan: Plan, todo: list[Job]) -> Iterator[list[Job]]:
    """The calls that run `todo` when some of its jobs branch: each trunk pauses at its branches' epochs in turn;
    after each call its checkpoint there is copied into those branches' folders (`_copy_trunks`), and they run in
    the next call, from the copy, while the trunk goes on. A job whose trunk copy is there runs from it; one
    whose trunk cannot give it one (none in the batch, past the epoch, ended early) trains alone."""
    before = None
    while (waiting := [job for job in todo if not job.done(plan)]) and (now := _progress(plan, todo)) != before:
        before, call, stops = now, [], {}
        for job in waiting:
            if _trunk_copy(plan, job).is_file():
                call.append(replace(job, branch_from=_trunk_copy(plan, job)))
            elif found := _trunk_of(plan, job, todo):
                trunk, epoch = found
                stops[trunk.key] = min(epoch, stops.get(trunk.key, epoch))
            else:
                call.append(job)
        yield [replace(job, epochs=stops[job.key], pause=True) if job.key in stops else job for job in call]


def _progress(plan: Plan, todo: list[Job]) -> tuple[frozenset, frozenset]:
    """The jobs done and the trunk copies made: a call that changes neither (its jobs did not run) ends the
    calls, and run_batch names the jobs that did not finish."""
    done = frozenset(job.key for job in todo if job.done(plan))
    return done, frozenset(job.key for job in todo if _trunk_copy(plan, job).is_file())


def _copy_trunks(plan: Plan, launched: list[Job], todo: list[Job]) -> None:
    """Copy each paused trunk's checkpoint into the folders of the branches waiting for it at that epoch."""
    for trunk in (job for job in launched if job.pause and job.stage == "confirm"):
        metrics = job_metrics(plan, "confirm", *trunk.key)
        if metrics is None or failed(metrics) or int(metrics.get("epochs") or 0) != trunk.epochs:
            continue
        for job in todo:
            if _branch_spec(plan, job) == (trunk.key, trunk.epochs):
                target = _trunk_copy(plan, job)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(plan.job_dir("confirm", *trunk.key) / "last.pt", target)


def job_metrics(plan: Plan, stage: str, schedule: str, lr: str, seed: int) -> dict[str, Any] | None:
    """The job's metrics.json, or None when it has none yet. One that cannot be read is set aside as
    metrics.json.damaged (and said), so that the job runs again: from its last.pt when it has one."""
    path = plan.job_dir(stage, schedule, lr, seed) / "metrics.json"
    if not path.is_file():
        return None
    try:
        return read_metrics(path)
    except DamagedRunError as error:
        path.replace(path.with_name("metrics.json.damaged"))
        log.warning("%s: %s; the job runs again (the file is kept as metrics.json.damaged)", path.parent, error)
        return None


def set_aside_damaged(plan: Plan) -> None:
    """Read every job's metrics.json once before the study goes on, so that one that cannot be read is set aside
    and said where the user sees it (`job_metrics`), not only in the study's log."""
    for schedule in plan.schedules:
        for stage, lrs, seeds in (
            ("tune", plan.lrs[schedule.name], plan.tune_seeds),
            ("confirm", plan.lrs[schedule.name], plan.confirm_seeds),
        ):
            for lr in lrs:
                for seed in seeds:
                    job_metrics(plan, stage, schedule.name, lr, seed)


def failed(metrics: dict[str, Any]) -> bool:
    """A run that collapsed or diverged: a result, but one no mean or pick may use."""
    return bool(metrics.get("diverged") or metrics.get("collapsed"))


def reached(metrics: dict[str, Any] | None, epochs: int) -> bool:
    """Whether a job has trained to `epochs`, or ended before as a result (collapsed, diverged)."""
    return metrics is not None and (failed(metrics) or int(metrics.get("epochs") or 0) >= epochs)


def score_at(metrics: dict[str, Any], epochs: int, rule: str) -> float | None:
    """The score of a run after `epochs` epochs (its history cut there): `test_acc`, `tail_test_acc` (the mean over
    the last 10% of those epochs) or `best_test_acc`; None for a run that had failed by then or is not that far.
    A run that collapsed after a rung still scores at that rung, as it did when the rung was judged."""
    history = metrics.get("history", [])[:epochs]
    collapsed = metrics.get("collapsed") and int(metrics.get("collapsed_epoch") or 0) <= epochs
    if collapsed or len(history) < epochs:  # a diverged run has no history from the epoch it broke in
        return None
    accuracies = [epoch["test_acc"] for epoch in history]
    if rule == "best_test_acc":
        return max(accuracies)
    if rule == TAIL_METRIC:
        return tail_mean(accuracies)
    return accuracies[-1]


def score_rule(plan: Plan) -> str:
    return plan.metric if plan.pick == "metric" else "best_test_acc"


def lr_score(plan: Plan, schedule: str, lr: str, epochs: int) -> float | None:
    """The mean score over the tuning seeds of one lr after `epochs`; None when any of its runs failed or is not
    there yet."""
    scores = [
        score_at(metrics, epochs, score_rule(plan)) if (metrics := job_metrics(plan, "tune", schedule, lr, s)) else None
        for s in plan.tune_seeds
    ]
    return None if None in scores else statistics.fmean(scores)


def kept(lrs: int, halving: float) -> int:
    """How many of `lrs` lrs go on past a rung: the best 1/halving, at least one."""
    return max(1, math.floor(lrs / halving))


def promoted(plan: Plan, schedule: str, alive: Sequence[str], rung: int) -> list[str]:
    """The lrs that go on past `rung`: the best 1/halving of `alive` by their score there (at least one), among
    those whose runs neither failed nor stopped; ties go to the smaller lr, the safer one."""
    scored = [(score, lr) for lr in alive if (score := lr_score(plan, schedule, lr, rung)) is not None]
    keep = kept(len(alive), plan.halving)
    ranked = sorted(scored, key=lambda item: (-item[0], float(item[1])))
    return sorted((lr for _, lr in ranked[:keep]), key=float)


def pick_lr(plan: Plan, schedule: str, alive: Sequence[str]) -> dict[str, Any]:
    """The tuned lr of a schedule: the best full-budget score among `alive` (the lrs that reached the budget).
    `grid` has every lr: its runs, failures, full-budget score, and the rung it was dropped at with its score there."""
    rungs, rule = plan.rungs[schedule], score_rule(plan)
    table = []
    for lr in plan.lrs[schedule]:
        runs = [m for s in plan.tune_seeds if (m := job_metrics(plan, "tune", schedule, lr, s)) is not None]
        last = max((rung for rung in rungs if all(reached(m, rung) for m in runs) and runs), default=None)
        dropped = last if last is not None and last < rungs[-1] and not any(map(failed, runs)) else None
        table.append(
            {
                "lr": lr,
                "runs": len(runs),
                "failed": sum(map(failed, runs)),
                "score": lr_score(plan, schedule, lr, rungs[-1]) if lr in alive else None,
                "dropped_at": dropped,
                "rung_score": lr_score(plan, schedule, lr, dropped) if dropped else None,
            }
        )
    eligible = [row for row in table if row["score"] is not None]
    best = max(eligible, key=lambda row: row["score"], default={"lr": None, "score": None})
    ordered = sorted(plan.lrs[schedule], key=float)
    edge = len(ordered) > 1 and best["lr"] in (ordered[0], ordered[-1])
    return {
        "lr": best["lr"],
        "score": best["score"],
        "rule": rule,
        "edge": edge,
        "rungs": rungs,
        "grid": table,
        "lr_range": lr_range(plan, schedule, [row["lr"] for row in table if not row["failed"] and row["runs"]]),
    }


def lr_range(plan: Plan, schedule: str, usable: Sequence[str]) -> dict[str, Any] | None:
    """How forgiving a schedule is of its lr: the widest run of neighbouring grid lrs, around its best, whose scores
    stay within the margin of that best. Judged at the deepest rung every usable lr (no failed run) reached, so all
    are compared after the same epochs: the budget without halving, the first rung with it (`epoch` says which).
    An lr that failed, or is missing, ends the run of neighbours. None without a usable lr."""
    rungs = plan.rungs[schedule]
    epoch = max(
        (rung for rung in rungs if all(lr_score(plan, schedule, lr, rung) is not None for lr in usable)), default=None
    )
    if not usable or epoch is None:
        return None
    ordered = sorted(plan.lrs[schedule], key=float)
    scores = {lr: lr_score(plan, schedule, lr, epoch) if lr in usable else None for lr in ordered}
    top = max(usable, key=lambda lr: scores[lr])
    floor = scores[top] - plan.margin / 100
    low = high = ordered.index(top)
    while low > 0 and (score := scores[ordered[low - 1]]) is not None and score >= floor:
        low -= 1
    while high < len(ordered) - 1 and (score := scores[ordered[high + 1]]) is not None and score >= floor:
        high += 1
    return {
        "epoch": epoch,
        "best_lr": top,
        "low": ordered[low],
        "high": ordered[high],
        "factor": float(ordered[high]) / float(ordered[low]),
        "at_edge": low == 0 or high == len(ordered) - 1,
        "scores": scores,
    }


def tune(plan: Plan, launch: Launch) -> dict[str, Any]:
    """Stage 1, rung by rung: one batch per rung holding every schedule's lrs still in; returns the picks."""
    alive = {schedule.name: list(plan.lrs[schedule.name]) for schedule in plan.schedules}
    depth = max(len(rungs) for rungs in plan.rungs.values())
    for level in range(depth):
        batch = [
            Job("tune", schedule, lr, seed, rungs[level], pause=level < len(rungs) - 1)
            for schedule in plan.schedules
            if level < len(rungs := plan.rungs[schedule.name])
            for lr in alive[schedule.name]
            for seed in plan.tune_seeds
        ]
        run_batch(plan, launch, batch)
        for schedule in plan.schedules:
            rungs = plan.rungs[schedule.name]
            if level < len(rungs) - 1:
                alive[schedule.name] = promoted(plan, schedule.name, alive[schedule.name], rungs[level])
    return {schedule.name: pick_lr(plan, schedule.name, alive[schedule.name]) for schedule in plan.schedules}


def confirm_values(plan: Plan, picks: dict[str, Any]) -> dict[str, dict[int, float | None]]:
    """Each picked schedule's confirm results so far: {seed: its metric}, None for a failed run."""
    values: dict[str, dict[int, float | None]] = {}
    for name, pick in picks.items():
        if pick["lr"] is None:
            continue
        values[name] = {}
        for seed in plan.confirm_seeds:
            metrics = job_metrics(plan, "confirm", name, pick["lr"], seed)
            if reached(metrics, plan.confirm_epochs[name]):
                values[name][seed] = (
                    None if failed(metrics) else score_at(metrics, len(metrics["history"]), plan.metric)
                )
    return values


def sequentials(plan: Plan, picks: dict[str, Any]) -> dict[str | None, Sequential]:
    """Where the sequential rule stands on the confirm runs in the folder (read once), per condition: each
    condition is a comparison of its own, with its own best and its own error control."""
    values = confirm_values(plan, picks)
    return {
        condition: sequential_verdict(
            {cell.name: values[cell.name] for cell in plan.cells(condition) if cell.name in values},
            plan.confirm_seeds,
            plan.confirm_rounds,
            plan.spending,
            margin=plan.margin / 100,
        )
        for condition in plan.condition_names()
    }


def sequential(plan: Plan, picks: dict[str, Any], condition: str | None = None) -> Sequential:
    """Where the sequential rule stands among the schedules of one condition."""
    return sequentials(plan, picks)[condition]


def confirm(plan: Plan, picks: dict[str, Any], launch: Launch) -> dict[str | None, Sequential]:
    """Stage 2, round by round: one batch per round with the seeds the open comparisons (and the best) need, in
    every condition at once."""
    by_name = {schedule.name: schedule for schedule in plan.schedules}
    while True:
        states = sequentials(plan, picks)
        needed = {name: count for state in states.values() for name, count in state.needed.items()}
        if not needed:
            return states
        batch = [
            Job("confirm", by_name[name], picks[name]["lr"], seed, plan.confirm_epochs[name])
            for name, count in needed.items()
            for seed in plan.confirm_seeds[:count]
        ]
        run_batch(plan, launch, batch)


def run_stages(plan: Plan, launch: Launch, say: Callable[[str], None] = print) -> dict[str, Any]:
    """The whole study: stage 1, its picks (into picks.json, said), stage 2; returns the picks."""
    picks = tune(plan, launch)
    write_json(Path(plan.dir) / PICKS_FILE, picks)
    for line in pick_lines(picks):
        say(line)
    confirm(plan, picks, launch)
    return picks


class _Pending(Exception):
    pass


def _pending(batch: list[list[str]]) -> None:
    raise _Pending


def pending(plan: Plan) -> bool:
    """Whether the study has jobs left to run (its stages replayed on the folder, launching nothing)."""
    try:
        run_stages(plan, _pending, say=lambda line: None)
    except _Pending:
        return True
    return False


def pick_lines(picks: dict[str, Any]) -> list[str]:
    """Each schedule's pick in words."""
    lines = []
    for name, picked in picks.items():
        if picked["lr"] is None:
            lines.append(f"{name}: every lr of the grid collapsed or diverged; it has no confirm stage")
        else:
            edge = " (at the edge of the grid: widen it)" if picked["edge"] else ""
            lines.append(f"{name}: picked lr {picked['lr']} ({picked['rule']} {picked['score']:.4f}){edge}")
    return lines
