"""The tree is the architecture: each package imports only the layers below it (src/__init__.py draws them), no
two modules import each other, and no module imports a command. Read from the source, deferred and type-only
imports included, so a shortcut cannot hide inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

from src import REPO_ROOT

COMMANDS = {"src.train", "src.study", "src.lr_find", "src.preview", "src.compare"}
# package -> the project packages its modules may import besides their own
MAY_IMPORT = {
    "": set(),  # src/__init__.py and the commands: anything
    "src.config.rules": set(),
    "src.runs": {"src.config.rules"},
    "src.schedules": {"src.config.rules"},
    "src.training": {"src.config.rules", "src.runs", "src.schedules"},
    "src.lr_range": {"src.config", "src.runs", "src.schedules", "src.training"},
    "src.config": {"src.runs", "src.schedules", "src.training", "src.lr_range"},
    "src.analysis": {"src.config", "src.runs", "src.schedules", "src.training", "src.lr_range"},
}
# the one upward import: the sweep's end writes the comparison report (a Hydra callback, imported when it runs)
EXCEPTIONS = {("src.config.hooks", "src.analysis.compare")}


def _modules() -> dict[str, Path]:
    return {
        ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts).removesuffix(".__init__"): path
        for path in (REPO_ROOT / "src").rglob("*.py")
    }


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules `path` imports; `from src.runs import resume` imports src.runs.resume."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("src"):
            names = [f"{node.module}.{alias.name}" for alias in node.names]
            found.update(name for name in names if name in modules)
            if not any(name in modules for name in names):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("src."))
    return found


def _package(module: str) -> str | None:
    return max((p for p in MAY_IMPORT if module == p or module.startswith(p + ".")), key=len, default=None)


GRAPH = {name: _imports(path, _modules()) for name, path in _modules().items()}


def test_no_two_modules_import_each_other():
    assert [(a, b) for a in GRAPH for b in GRAPH[a] if a < b and a in GRAPH.get(b, ())] == []


def test_each_package_imports_only_the_layers_below_it():
    wrong = []
    for module, imported in GRAPH.items():
        own = _package(module)
        for other in imported - {"src"}:
            theirs = _package(other)
            inside = theirs is not None and (theirs == own or theirs.startswith(f"{own}."))  # config -> config.rules
            below = theirs is not None and any(theirs == p or theirs.startswith(f"{p}.") for p in MAY_IMPORT[own or ""])
            allowed = own is None or theirs is None or inside or below
            if not allowed and (module, other) not in EXCEPTIONS:
                wrong.append(f"{module} imports {other}")
    assert wrong == []


def test_no_module_imports_a_command():
    assert [(module, sorted(used & COMMANDS)) for module, used in GRAPH.items() if used & COMMANDS] == []


def test_the_commands_are_thin():
    """The five commands parse, choose and report; the work is in the packages."""
    sizes = {command: len(_modules()[command].read_text().splitlines()) for command in COMMANDS}
    assert max(sizes.values()) <= 130, sizes
