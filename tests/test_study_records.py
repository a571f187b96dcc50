"""src.study's records and folder: a study continues where its folder is now, its saved records are checked before
they are used (study.json refused with the reason, picks.json rebuilt), a continued plan is checked as a new one and
against its runs, schedule names stay inside the study, and a study's size is bounded."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from src.analysis.study.plan import MAX_JOBS, StudyError, make_plan
from src.analysis.study.run import main
from src.runs.resume import hydra_quoted
from tests.conftest import run_metrics, run_module

SMALL = (
    "study.schedules=[constant,cosine_warmup]",
    "study.tune.lrs=[0.003,0.1]",
    "study.tune.seeds=[0]",
    "study.confirm.seeds=2",
    "study.tune.halving=null",
    "study.confirm.max_seeds=null",
    "study.baseline=null",
    "trainer.epochs=1",
    "trainer.threads=1",
    "trainer.progress=false",
    "data.batch_size=64",
    "data.train_size=null",
)


@pytest.fixture(scope="module")
def finished(tmp_path_factory, synthetic_root) -> Path:
    """A finished study of 2 schedules x 2 lrs x 1 tuning seed, then 2 confirm seeds each, 8 steps a job."""
    folder = tmp_path_factory.mktemp("finished") / "study"
    done = run_module("src.study", *SMALL, f"data.root={synthetic_root}", f"study.dir={folder}")
    assert done.returncode == 0, done.stderr
    return folder


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under `folder` with its bytes and modification time: equal snapshots = nothing written."""
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()
    }


def refused(capsys, *args: str) -> str:
    """main(ARGS) refuses the study (exit 2, no traceback); its message."""
    assert main(list(args)) == 2
    err = capsys.readouterr().err
    assert err.startswith("lrbench: invalid study:\n") and "Traceback" not in err, err
    return err


# ------------------------------------------------------------------------------------------------ A: its own folder


@pytest.mark.slow
def test_a_copied_study_continues_in_the_copy_and_leaves_the_original_alone(finished, tmp_path):
    """`cp -r` keeps study.json's folder; the copy's missing job runs in the copy and its report is written there."""
    original = snapshot(finished)
    copy = Path(shutil.copytree(finished, tmp_path / "copy"))
    missing = next((copy / "confirm" / "constant").glob("lr=*,seed=101"))
    shutil.rmtree(missing)
    (copy / "report.md").unlink()
    assert main([f"study.dir={copy}"]) == 0
    assert run_metrics(missing)["epochs"] == 1 and (copy / "report.md").is_file()
    assert json.loads((copy / "study.json").read_text())["dir"] == str(copy)
    assert f"Folder `{copy}`" in (copy / "report.md").read_text()
    assert snapshot(finished) == original


# ------------------------------------------------------------------------------------------------ B: damaged records


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["[]", '{"constant": 3, "gone": 3}', '{"constant": {"lr"'])
def test_a_damaged_picks_json_is_rebuilt_from_the_tuning_runs(finished, tmp_path, damage):
    copy = Path(shutil.copytree(finished, tmp_path / "copy"))
    (copy / "picks.json").write_text(damage)
    assert main([f"study.dir={copy}"]) == 0
    assert json.loads((copy / "picks.json").read_text()) == json.loads((finished / "picks.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda plan: "{bad", "study.json cannot be read: Expecting property name enclosed in double quotes"),
        (lambda plan: "[]", "study.json is not a study's plan (damaged or edited):\n  - it holds []; allowed is an "),
        (lambda plan: {**plan, "schedules": "x"}, "  - schedules='x': allowed is a list of {name: <label>, overrides"),
        (lambda plan: {k: v for k, v in plan.items() if k != "lrs"}, "  - lrs: missing"),
        (
            lambda plan: {**plan, "lrs": {"constant": 3}},
            "  - lrs={'constant': 3}: allowed is {<name>: [<string>, ...]}",
        ),
        (lambda plan: {**plan, "tune_seeds": [0.5]}, "  - tune_seeds=[0.5]: allowed is a list of integers"),
        (lambda plan: {**plan, "extra": 1}, "  - extra: not a key of a study's plan"),
    ],
)
def test_a_damaged_study_json_is_refused_with_its_path_and_the_reason(finished, tmp_path, capsys, edit, reason):
    folder = tmp_path / "study"
    folder.mkdir()
    changed = edit(json.loads((finished / "study.json").read_text()))
    (folder / "study.json").write_text(changed if isinstance(changed, str) else json.dumps(changed))
    before = snapshot(folder)
    err = refused(capsys, f"study.dir={folder}")
    assert f"{folder / 'study.json'} " in err and reason in err, err
    assert "give a new folder: python -m src.study ... study.dir=<new folder>" in err
    assert snapshot(folder) == before


# ------------------------------------------------------------------------------------------------ C: schedule names

ESCAPES = ["../../../escape_sched", "/tmp/lrbench_escape", "..", ".", "a/b", "", "naïve", "tab\there", "x" * 101]


@pytest.mark.parametrize("name", ESCAPES)
def test_a_schedule_name_that_is_not_a_plain_name_is_refused(name):
    entry = f"{{name:{hydra_quoted(name)},overrides:['scheduler=constant']}}"
    with pytest.raises(StudyError) as caught:
        make_plan("quick", [f"schedules=[constant,{entry}]"], [])
    assert str(caught.value) == (
        f"study.schedules: name {name!r}: allowed is a plain name of 1 to 100 ASCII letters, digits, '_', '-' and "
        "'.', not only dots (it names the schedule's folders)"
    )


@pytest.mark.parametrize("name", ["step.v2", "my-cosine_3", "...x"])
def test_plain_schedule_names_are_accepted(name):
    entry = f"{{name:{hydra_quoted(name)},overrides:['scheduler=constant']}}"
    assert [s.name for s in make_plan("quick", [f"schedules=[constant,{entry}]"], []).schedules] == ["constant", name]


def test_a_study_with_a_path_for_a_schedule_name_writes_nothing(tmp_path, capsys, synthetic_root):
    folder = tmp_path / "one" / "two" / "study"
    err = refused(
        capsys,
        f"study.dir={folder}",
        "study.schedules=[constant,{name:'../../../escape',overrides:['scheduler=constant']}]",
        *SMALL[1:],
        f"data.root={synthetic_root}",
    )
    assert "study.schedules: name '../../../escape': allowed is a plain name" in err
    assert list(tmp_path.rglob("*")) == []


# ------------------------------------------------------------------------------------------------ D: continue, checked


@pytest.mark.slow
@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda plan: {**plan, "lrs": {**plan["lrs"], "constant": ["0.003", "0.3"]}}, "(it differs in: lrs)"),
        (lambda plan: {**plan, "confirm_seeds": [100, 101, 102]}, "(it differs in: confirm_seeds)"),
        (
            lambda plan: {**plan, "run_overrides": [*plan["run_overrides"], "data.train_size=256"]},
            "(it differs in: run_overrides)",
        ),
        (lambda plan: {**plan, "pick": "best"}, "(it differs in: pick)"),
    ],
)
def test_a_continued_plan_that_its_own_command_does_not_build_is_refused(finished, tmp_path, capsys, edit, reason):
    folder = tmp_path / "study"
    folder.mkdir()
    (folder / "study.json").write_text(json.dumps(edit(json.loads((finished / "study.json").read_text()))))
    before = snapshot(folder)
    err = refused(capsys, f"study.dir={folder}")
    assert f"{folder / 'study.json'}: the saved plan is not the one its own command builds {reason}" in err, err
    assert snapshot(folder) == before


@pytest.mark.slow
def test_a_continued_plan_whose_saved_command_is_refused_is_refused(finished, tmp_path, capsys):
    folder = tmp_path / "study"
    folder.mkdir()
    plan = json.loads((finished / "study.json").read_text())
    (folder / "study.json").write_text(json.dumps({**plan, "options": [*plan["options"], "confirm.seeds=1"]}))
    err = refused(capsys, f"study.dir={folder}")
    assert f"{folder / 'study.json'}: its saved command is refused, as a new study's would be:\n" in err
    assert "study.confirm.seeds=1: allowed is an integer >= 2" in err


@pytest.mark.slow
def test_a_plan_edited_after_stage_1_is_refused_before_stage_2_runs_on_other_data(finished, tmp_path, capsys):
    """The saved command was edited too, so the plan is what it builds; the tuning runs' .hydra/ say otherwise."""
    copy = Path(shutil.copytree(finished, tmp_path / "copy"))
    shutil.rmtree(copy / "confirm")
    plan = json.loads((copy / "study.json").read_text())
    edited = [item.replace("data.train_size=null", "data.train_size=256") for item in plan["run_overrides"]]
    (copy / "study.json").write_text(json.dumps({**plan, "run_overrides": edited}))
    before = snapshot(copy)
    err = refused(capsys, f"study.dir={copy}")
    assert (
        f"{copy / 'study.json'}: the runs in {copy} were not trained as its plan launches them, so its stages would "
        "not be comparable:\n"
        "  - tune/constant (2 of 2 jobs): trained with data.train_size=null, the plan has data.train_size=256\n"
        "  - tune/cosine_warmup (2 of 2 jobs): trained with data.train_size=null, the plan has data.train_size=256\n"
        "To run this study afresh, give a new folder"
    ) in err, err
    assert snapshot(copy) == before and not (copy / "confirm").exists()


# ------------------------------------------------------------------------------------------------ E: bounds


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            ["confirm.seeds=100000"],
            "study.confirm.seeds: 100000 seeds; allowed are at most 1000\n"
            "the study would run 200004 jobs (4 to tune, 200000 to confirm); a study runs at most 10000",
        ),
        (
            ["tune.lrs=null", "tune.points=10000"],
            "study.tune.points: 10000 lrs; allowed are at most 100\n"
            "the study would run 20004 jobs (20000 to tune, 4 to confirm)",
        ),
        (
            ["tune.lrs=[0.1]", "tune.seeds=[0,1]", "confirm.seeds=1000", "schedules=['*']"],
            "the study would run 19038 jobs (38 to tune, 19000 to confirm)",
        ),
        (
            ["tune.lrs=null", "tune.points=5", "tune.factor=1e300"],
            "study.tune.factor=1e+300 over study.tune.points=5: the grid's outer lrs overflow",
        ),
    ],
)
def test_a_study_beyond_the_bounds_is_refused_with_its_job_count(options, message):
    with pytest.raises(StudyError) as caught:
        fixed = ["confirm.max_seeds=null"]  # quick's rounds off: confirm.seeds is the count
        make_plan(
            "quick", ["schedules=[constant,cosine]", "tune.lrs=[0.01,0.1]", "confirm.seeds=2", *fixed, *options], []
        )
    assert message in str(caught.value)


def test_the_largest_study_allowed_is_planned(tmp_path):
    options = ["schedules=[constant,cosine]", "tune.lrs=[0.1]", "confirm.seeds=2", "confirm.max_seeds=1000"]
    plan = make_plan("quick", options, [])
    assert sum(plan.jobs.values()) == 2002 <= MAX_JOBS


def test_a_huge_study_is_refused_before_anything_is_written(tmp_path, capsys):
    err = refused(capsys, f"study.dir={tmp_path / 'study'}", "study.confirm.max_seeds=100000", "study.baseline=null")
    assert "the study would run 600024 jobs (24 to tune, 600000 to confirm)" in err
    assert not (tmp_path / "study").exists()
