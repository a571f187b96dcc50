"""Write the table of docs/schedules.md ("Every schedule") from conf/scheduler/, the one place a schedule is described.

    python scripts/schedule_table.py            # rewrite the table in docs/schedules.md (make docs)
    python scripts/schedule_table.py --check    # exit 1 when the table is not what the configs say (a test runs it)

A row comes from one file, `conf/scheduler/<name>.yaml`: its `# lr at update t:` and `# torch:` comment lines, and
the keys it states itself with their defaults (the shared warmup keys of conf/scheduler/shared/ are described
once, above the table; `total_*` marks the schedules that take the shared length keys). A new schedule's file
is a new row.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from omegaconf import OmegaConf

from src import REPO_ROOT

SCHEDULER_DIR = REPO_ROOT / "conf" / "scheduler"
DOC = REPO_ROOT / "docs" / "schedules.md"
BEGIN = "<!-- schedule table: written by scripts/schedule_table.py (make docs) from conf/scheduler/ -->"
END = "<!-- end of the schedule table -->"
HEADER = (
    "| `scheduler=` | lr at update t (after the warmup) | its own keys (defaults) | torch equivalent (tested to 1e-9) |"
)
PLUMBING = {"defaults", "_target_", "_partial_"}


def _comment(lines: list[str], label: str) -> str:
    prefix = f"# {label}:"
    return next((line.removeprefix(prefix).strip() for line in lines if line.startswith(prefix)), "")


def _value(value: object) -> str:
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, list):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    return f"{value:g}" if isinstance(value, float) else str(value)


def row(path: Path) -> str:
    lines = path.read_text().splitlines()
    config = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    keys = [f"`{key}` {_value(value)}" for key, value in config.items() if key not in PLUMBING]
    if "shared/length@_here_" in config.get("defaults", []):
        keys.append("`total_steps`/`total_epochs` null")
    cells = [f"`{path.stem}`", _comment(lines, "lr at update t"), ", ".join(keys) or "—", _comment(lines, "torch")]
    return "| " + " | ".join(cells) + " |"


def table(scheduler_dir: Path = SCHEDULER_DIR) -> str:
    rows = [row(path) for path in sorted(scheduler_dir.glob("*.yaml"))]
    return "\n".join([HEADER, "|---|---|---|---|", *rows])


def with_table(doc: str) -> str:
    """`doc` with the text between the markers replaced by the current table."""
    if BEGIN not in doc or END not in doc:
        raise SystemExit(f"{DOC}: the markers of the table are missing ({BEGIN} ... {END})")
    head, rest = doc.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{table()}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when docs/schedules.md's table is out of date")
    args = parser.parse_args(argv)
    doc = DOC.read_text()
    current = with_table(doc)
    if args.check:
        if current != doc:
            print(f"{DOC} does not match conf/scheduler/: run `make docs`", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(current)
    print(f"wrote the table of {DOC} ({len(list(SCHEDULER_DIR.glob('*.yaml')))} schedules)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
