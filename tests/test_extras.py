"""Hydra plugins with old pins of their own are extras, not dependencies: a plain install never downgrades a
user's optuna, and a command that needs a missing one says which extra brings it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from src import REPO_ROOT
from src.config import plugins


def test_the_plugins_are_extras_and_the_set_up_installs_them():
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()  # tomllib is Python 3.11's; 3.10 is supported
    dependencies = pyproject.split("dependencies = [", 1)[1].split("]", 1)[0]
    assert "optuna" not in dependencies and "submitit" not in dependencies
    extras = pyproject.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    assert 'optuna = ["hydra-optuna-sweeper>=1.2,<1.4"]' in extras
    assert 'slurm = ["hydra-submitit-launcher>=1.2,<1.3"]' in extras
    assert "-e '.[dev,optuna,slurm]'" in (REPO_ROOT / "Makefile").read_text()


@pytest.mark.parametrize(
    ("argv", "extra"),
    [(["experiment=optuna_lr"], "optuna"), (["-m", "hydra/launcher=slurm", "seed=0,1"], "slurm")],
)
def test_a_missing_extra_is_named_with_its_install_command(monkeypatch, argv, extra):
    assert plugins.missing_extra_problem(argv) is None  # installed here: nothing to say
    monkeypatch.setattr(plugins, "_installed", lambda package: False)
    problem = plugins.missing_extra_problem(argv)
    assert f"lrbench's '{extra}' extra" in problem and f"pip install -e '.[{extra}]'" in problem
    assert plugins.missing_extra_problem(["scheduler=cosine", "optimizer.lr=0.1"]) is None


def test_train_stops_before_hydra_when_the_extra_is_missing(tmp_path):
    code = (
        "import runpy, sys; import src.config.plugins as p; p._installed = lambda package: False; "
        f"sys.argv = ['src.train', 'experiment=optuna_lr', 'output_root={tmp_path}']; "
        "runpy.run_module('src.train', run_name='__main__')"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "the Optuna sweeper (experiment=optuna_lr) is not installed" in done.stderr
    assert "Traceback" not in done.stderr and not any(tmp_path.iterdir())
