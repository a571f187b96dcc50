"""How the reports (src.compare's and the study's) write their files: CSV tables, markdown tables and figures drawn
outside pyplot (a report's files replace the old ones together: `src.tracking.written_together`).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib import colormaps
from matplotlib.figure import Figure


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> None:
    """One line per row under a header of `columns` (the first row's keys when not given); None is an empty cell,
    keys outside `columns` are left out."""
    columns = list(columns or (rows[0].keys() if rows else []))
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({key: "" if row.get(key) is None else row[key] for key in columns})


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def new_figure() -> tuple[Figure, Any]:
    """A figure outside pyplot: no GUI backend, nothing kept alive after it is saved."""
    figure = Figure(figsize=(9, 5))
    axes = figure.subplots()
    axes.set_prop_cycle(color=colormaps["tab20"].colors)  # a zoo has more lines than the default ten colours
    return figure, axes


def save_figure(figure: Figure, axes: Any, path: Path) -> None:
    """The figure with its legend (beside the plot, when it has lines with labels) and a light grid, as a PNG."""
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5))
    axes.grid(alpha=0.3)
    figure.savefig(path, dpi=110, bbox_inches="tight")
