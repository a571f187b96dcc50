"""What successive halving and the sequential rule would have decided on a study that ran without them.

    PYTHONPATH=. python scripts/study_what_if.py <study folder> [--halving 2] [--first-rung 0.25] [--rounds 3,6,9]
        [--margin 1,2]

The study must have trained every lr to its budget (study.tune.halving=null) and every schedule over all the seeds
of the rounds (study.confirm.seeds = the last round). A paused run continues bit for bit like one never paused, so
halving's decisions at a rung are the full runs' scores at that epoch: this replays them exactly, and the pick with
halving is compared with the study's own. The sequential rule is replayed on the confirm runs with each spending
function and each equivalence margin (points; the study's own by default). docs/study.md quotes what it printed.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from src.analysis.stats import SPENDING, sequential_verdict
from src.analysis.study.plan import STUDY_FILE, read_plan, rungs_of
from src.analysis.study.stages import confirm_values, pick_lr, promoted, tune


def nothing_to_launch(batch: list[list[str]]) -> None:
    raise SystemExit(f"the study has {len(batch)} jobs not trained to their budget: run it to its end first")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("study", type=Path)
    parser.add_argument("--halving", type=float, default=2.0)
    parser.add_argument("--first-rung", type=float, default=0.25)
    parser.add_argument("--rounds", default="3,6,9")
    parser.add_argument("--margin", default=None, help="equivalence margins in points, comma-separated")
    args = parser.parse_args()
    plan = replace(read_plan(args.study / STUDY_FILE), dir=str(args.study.resolve()))
    if plan.halving is not None:
        raise SystemExit(f"{args.study} was run with halving {plan.halving}: give a study run without it")
    full = tune(plan, nothing_to_launch)
    budget = {name: rungs[-1] for name, rungs in plan.rungs.items()}
    halved_plan = replace(
        plan,
        halving=args.halving,
        rungs={name: rungs_of(epochs, args.halving, args.first_rung) for name, epochs in budget.items()},
    )
    print(f"successive halving {args.halving:g}, rungs {next(iter(halved_plan.rungs.values()))}:")
    epochs_full = epochs_halved = 0
    for name in full:
        alive, done = list(plan.lrs[name]), 0
        rungs = halved_plan.rungs[name]
        for level, rung in enumerate(rungs):
            epochs_halved += len(alive) * (rung - done) * len(plan.tune_seeds)
            done = rung
            if level < len(rungs) - 1:
                alive = promoted(halved_plan, name, alive, rung)
        halved = pick_lr(halved_plan, name, alive)["lr"]
        epochs_full += len(plan.lrs[name]) * budget[name] * len(plan.tune_seeds)
        same = "same" if full[name]["lr"] == halved else "MOVED"
        print(f"  {name}: pick without halving {full[name]['lr']}, with {halved} ({same})")
    print(f"  tuning epochs: {epochs_halved} with halving, {epochs_full} without ({epochs_halved / epochs_full:.2f}x)")
    rounds = [int(count) for count in args.rounds.split(",")]
    values = confirm_values(plan, full)
    margins = [float(m) for m in args.margin.split(",")] if args.margin else [plan.margin]
    for spending in SPENDING:
        for margin in margins:
            result = sequential_verdict(values, plan.confirm_seeds, rounds, spending, margin=margin / 100)
            if result.needed:
                raise SystemExit(f"the study has fewer confirm seeds than the rounds {rounds} need: {result.needed}")
            worse = {name: look.seeds for look in result.looks for name in look.decided}
            tied = {name: look.seeds for look in result.looks for name in look.tied}
            seeds = sum(result.seeds.values())
            print(
                f"sequential rule, {spending}, margin {margin:g} points, looks after {rounds} seeds: worse {worse}, "
                f"tied {tied}; {seeds} confirm runs (fixed {rounds[-1]} seeds: {rounds[-1] * len(values)}); "
                f"states {result.state}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
