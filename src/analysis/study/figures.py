"""The figures of a study's report, drawn from its StudyReport (src.analysis.study.report): lr sensitivity and test
accuracy per epoch, one panel per condition; the paired differences to the best with the margin; and under
conditions, the performance profile.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from src.analysis.study.verdict import Contestant
from src.runs.files import new_panels, save_figure

StudyReport = Any  # src.analysis.study.report's, which imports this module

FIGURES = ("lr_sensitivity.png", "forest.png", "test_acc_curves.png")
PROFILE_FIGURE = "profile.png"  # under conditions


def _panels(report: StudyReport) -> tuple[Any, list[Any]]:
    figure, panels = new_panels(len(report.verdicts))
    for panel, condition in zip(panels, report.verdicts, strict=True):
        if condition is not None:
            panel.set_title(f"{condition}: {' '.join(report.plan.conditions[condition])}", fontsize="small")
    return figure, panels


def plot(report: StudyReport, paths: Mapping[str, Path]) -> None:
    """The figures, each into its path of `paths`."""
    margin = report.plan.margin / 100
    figure, panels = _panels(report)
    for panel, verdict in zip(panels, report.verdicts.values(), strict=True):
        for name, pick in verdict.picks.items():
            _plot_lr_sensitivity(panel, verdict.contestants[name].family, pick, margin)
        panel.set_xscale("log")
        panel.set(xlabel="peak lr")
    rule = report.picks and next(iter(report.picks.values()))["rule"]
    panels[0].set(ylabel=f"{rule} (stage 1 mean)")
    figure.suptitle(
        "lr sensitivity: line at the epoch every lr reached; bar: lrs within the margin of the schedule's best; "
        "star: picked (at the full budget); x at 0.1: collapsed or diverged",
        fontsize="small",
    )
    save_figure(figure, panels, paths[FIGURES[0]])

    figure, panels = new_panels(1)
    axes, rows = panels[0], [row for row in report.verdict_rows() if row["diff_vs_best"] is not None]
    for index, row in enumerate(rows):
        low, high = (100 * (row[key] - row["diff_vs_best"]) for key in ("diff_ci_low", "diff_ci_high"))
        label = row["schedule"] + (f" @ {row['condition']}" if row["condition"] else "")
        axes.errorbar(
            [100 * row["diff_vs_best"]],
            [index],
            xerr=[[-low], [high]],
            fmt="o",
            capsize=4,
            label=f"{label}: {row['verdict']}",
        )
    axes.axvline(0, color="grey", linewidth=1)
    for edge in (-100 * margin, 100 * margin):
        axes.axvline(edge, color="grey", linestyle="--", linewidth=1)
    axes.set_yticks(
        range(len(rows)), [row["schedule"] + (f" @ {row['condition']}" if row["condition"] else "") for row in rows]
    )
    axes.set(xlabel=f"paired difference to the best (points, 95% CI); dashed: the margin ±{report.plan.margin:g}")
    axes.set_title("Paired differences to the best schedule" + (" of each condition" if report.across else ""))
    save_figure(figure, axes, paths[FIGURES[1]])

    figure, panels = _panels(report)
    for panel, verdict in zip(panels, report.verdicts.values(), strict=True):
        for contestant in verdict.contestants.values():
            _plot_curves(panel, contestant)
        panel.set(xlabel="epoch")
    panels[0].set(ylabel="test accuracy (mean; band: min to max over seeds)")
    figure.suptitle("Stage 2 test accuracy per epoch", fontsize="small")
    save_figure(figure, panels, paths[FIGURES[2]])

    if report.across:
        figure, (axes,) = new_panels(1)
        gaps = [gap for by in report.gaps().values() for gap in by.values() if gap is not None]
        taus = sorted({0.0, *gaps, max([*gaps, 3 * report.plan.margin]) * 1.05})
        for family in report.gaps():
            axes.step(taus, [report.profile(tau)[family] for tau in taus], where="post", label=family)
        axes.axvline(report.plan.margin, color="grey", linestyle="--", linewidth=1)
        axes.set(
            xlabel="tau: points below the best's mean", ylabel="share of conditions within tau", ylim=(-0.03, 1.03)
        )
        axes.set_title(f"Performance profile over {len(report.plan.conditions)} conditions (dashed: the margin)")
        save_figure(figure, axes, paths[PROFILE_FIGURE])


def _plot_lr_sensitivity(axes: Any, label: str, pick: dict[str, Any], margin: float) -> None:
    """One schedule's stage 1 on the lr-sensitivity panel: its scores at the epoch every lr reached, the range of
    lrs within the margin of its best there, its failed lrs and its picked lr."""
    robust = pick.get("lr_range")
    scores = robust["scores"] if robust else {}
    points = sorted((float(lr), score) for lr, score in scores.items() if score is not None)
    epoch = f", epoch {robust['epoch']}" if robust and robust["epoch"] != pick["rungs"][-1] else ""
    line = axes.plot(*zip(*points, strict=True), marker="o", label=f"{label}{epoch}")[0] if points else None
    color = line.get_color() if line else None
    if robust:
        level = scores[robust["best_lr"]] - margin
        axes.hlines(level, float(robust["low"]), float(robust["high"]), color=color, linewidth=5, alpha=0.35)
    if failed := [float(row["lr"]) for row in pick["grid"] if row["failed"]]:
        axes.scatter(failed, [0.1] * len(failed), marker="x", color=color)
    if pick["lr"] is not None:
        axes.scatter([float(pick["lr"])], [pick["score"]], marker="*", s=160, color=color, zorder=3)


def _plot_curves(axes: Any, contestant: Contestant) -> None:
    curves = [
        [epoch["test_acc"] for epoch in run.metrics.get("history", [])]
        for seed, run in contestant.runs.items()
        if seed in contestant.values
    ]
    if not curves:
        return
    by_epoch = list(zip(*curves, strict=False))  # as many epochs as the shortest curve has
    epochs = list(range(1, len(by_epoch) + 1))
    means = [statistics.fmean(accuracies) for accuracies in by_epoch]
    lows, highs = [min(accuracies) for accuracies in by_epoch], [max(accuracies) for accuracies in by_epoch]
    line = axes.plot(epochs, means, marker="o", label=f"{contestant.family} (lr {contestant.lr:g})")[0]
    axes.fill_between(epochs, lows, highs, color=line.get_color(), alpha=0.2)
