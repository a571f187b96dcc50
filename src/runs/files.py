"""Every file lrbench writes, written so that a reader never sees half of one and a crash or a full disk leaves
the previous one whole: JSON records, CSV and markdown tables, PNG figures drawn outside pyplot.

`write_aside` writes one file, `written_together` several that replace the old ones together (a report's).
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, BinaryIO


def _finite_or_none(value: Any) -> Any:
    """`value` with every NaN or infinite float (at any depth of dicts, lists and tuples) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {key: _finite_or_none(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_none(item) for item in value]
    return value


def write_aside(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """`write(handle)` into `<path>.partial`, flushed to the disk, then renamed to `path`: a reader never sees half
    a file, and a crash or a full disk leaves the previous one whole (and no partial file behind)."""
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    try:
        with open(partial, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        partial.replace(path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """JSON, written aside (`write_aside`). A non-finite number is written as null: NaN and Infinity are not JSON,
    and strict parsers refuse a file holding them."""
    text = json.dumps(_finite_or_none(payload), indent=2, allow_nan=False) + "\n"
    write_aside(path, lambda handle: handle.write(text.encode()))


@contextmanager
def written_together(folder: Path, names: Iterable[str]) -> Iterator[dict[str, Path]]:
    """Where to write the files `names` of `folder`: each at a partial name (`summary.partial.md`), all synced to
    disk and renamed into place when the block ends. An error half-way removes the partial files (and `folder`,
    when this made it), so the folder keeps its old files and holds no half-written one."""
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    partials = {name: folder / f"{Path(name).stem}.partial{Path(name).suffix}" for name in names}
    try:
        yield partials
        for partial in partials.values():
            descriptor = os.open(partial, os.O_RDONLY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
        for name, partial in partials.items():
            partial.replace(folder / name)
    except BaseException:
        for partial in partials.values():
            with suppress(OSError):
                partial.unlink(missing_ok=True)
        if created:
            with suppress(OSError):
                folder.rmdir()
        raise


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


def new_figure() -> tuple[Any, Any]:
    """A figure outside pyplot: no GUI backend, nothing kept alive after it is saved (matplotlib is imported
    here, so a command that draws nothing never loads it)."""
    figure, (axes,) = new_panels(1)
    return figure, axes


def new_panels(count: int) -> tuple[Any, list[Any]]:
    """A figure of `count` panels side by side sharing the y axis (one per condition of a study), each with the
    same colour cycle, so that a line's colour means the same in every panel."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9 if count == 1 else 3.2 * count + 2, 5))
    panels = list(figure.subplots(1, count, sharey=True, squeeze=False)[0])
    for axes in panels:
        axes.set_prop_cycle(color=colormaps["tab20"].colors)  # a zoo has more lines than the default ten colours
    return figure, panels


def save_figure(figure: Any, axes: Any, path: Path) -> None:
    """The figure with its legend (beside the last panel, when it has lines with labels) and a light grid, as a
    PNG; `axes` is one panel or a list of them."""
    panels = axes if isinstance(axes, list) else [axes]
    if panels[-1].get_legend_handles_labels()[0]:
        panels[-1].legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5))
    for panel in panels:
        panel.grid(alpha=0.3)
    figure.savefig(path, dpi=110, bbox_inches="tight")
