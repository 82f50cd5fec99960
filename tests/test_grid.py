"""Study grids: expansion, dependencies, resumable runs, failures, status, CLI."""

from __future__ import annotations

import textwrap

import pytest
import yaml
from typer.testing import CliRunner

from kdlens.cli.main import app
from kdlens.errors import KdlensError
from kdlens.store import RunIndex
from kdlens.studies.grid import deep_merge, load_study, run_study, status_rows, task_states

TINY = {
    "name": "tiny",
    "defaults": {"data": {"name": "digits"}, "model": {"name": "baseline_student"}, "epochs": 1},
    "groups": {
        "teacher": {"kind": "train", "grid": {"seed": [0]}},
        "student": {"kind": "distill", "needs": ["teacher"], "config": {"teacher": {"run": "${teacher}"}},
                    "grid": {"loss.T": [2, 4], "seed": [0, 1]}},
    },
    "scales": {"smoke": {"groups": {"student": {"grid": {"seed": [0]}}}}, "small": {}},
    "default_scale": "small",
}


def flat(text: str) -> str:
    return " ".join(text.split())


def write(tmp_path, doc, name="study.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_deep_merge_replaces_lists_and_merges_maps():
    assert deep_merge({"a": {"b": 1, "c": [1, 2]}}, {"a": {"c": [3]}, "d": 1}) == {"a": {"b": 1, "c": [3]}, "d": 1}


def test_expand_grid_levels_dependencies_and_scales(tmp_path):
    study = load_study(write(tmp_path, TINY), out=tmp_path / "s")
    assert study.scale == "small"
    ids = [t.id for t in study.tasks]
    assert ids == ["teacher_seed-0", "student_T-2_seed-0", "student_T-2_seed-1", "student_T-4_seed-0", "student_T-4_seed-1"]
    student = study.task("student_T-4_seed-1")
    assert student.levels == {"loss.T": 4, "seed": 1}
    assert student.config["loss"] == {"T": 4} and student.config["seed"] == 1 and student.config["epochs"] == 1
    assert student.needs == ["teacher_seed-0"]  # one teacher serves every seed
    assert len({t.hash for t in study.tasks}) == len(study.tasks)
    smoke = load_study(write(tmp_path, TINY), scale="smoke", out=tmp_path / "s")
    assert len(smoke.tasks) == 3
    over = load_study(write(tmp_path, TINY), scale="smoke", out=tmp_path / "s", overrides=["defaults.epochs=3"])
    assert over.task("teacher_seed-0").config["epochs"] == 3
    assert over.task("teacher_seed-0").hash != smoke.task("teacher_seed-0").hash
    # a changed teacher changes its students' hashes too
    assert over.task("student_T-2_seed-0").hash != smoke.task("student_T-2_seed-0").hash


def test_bundles_each_and_matching(tmp_path):
    doc = {
        "name": "ll",
        "defaults": {"data": {"name": "digits", "n_folds": 2}},
        "groups": {
            "teacher": {"kind": "train", "grid": {
                "data.budget": [{"data.budget": 20, "epochs": 3}, {"data.budget": 40, "epochs": 2}],
                "data.fold": [0, 1]}},
            "ud": {"kind": "train", "needs": ["teacher"], "grid": {
                "data.budget": [{"data.budget": 20, "epochs": 3}, {"data.budget": 40, "epochs": 2}], "data.fold": [0, 1]}},
            "embed": {"kind": "embedding", "needs": ["teacher", "ud"], "each": ["data.budget", "data.fold"],
                      "params": {"models": {"T": "teacher", "UD": "ud"}}},
            "all": {"kind": "embedding", "needs": ["ud"]},
        },
    }
    study = load_study(write(tmp_path, doc), out=tmp_path / "s")
    t = study.task("teacher_budget-40_fold-1")
    assert t.config["epochs"] == 2 and t.config["data"]["budget"] == 40 and t.config["data"]["fold"] == 1
    e = study.task("embed_budget-20_fold-1")
    assert e.needs == ["teacher_budget-20_fold-1", "ud_budget-20_fold-1"]
    assert study.task("all").needs == [t.id for t in study.group_tasks("ud")]


@pytest.mark.parametrize("change, message", [
    ({"groups": {"student": {"kind": "distil"}}}, "did you mean distill"),
    ({"groups": {"teacher": {"needs": ["student"]}}}, "need each other"),
    ({"groups": {"student": {"needs": ["teachr"]}}}, "did you mean teacher"),
    ({"groups": {"student": {"config": {"teacher": {"run": "${nobody}"}}}}}, "not among its needs"),
    ({"groups": {"teacher": {"grid": {"data.split_seed": [0, 1]}}}}, "ambiguous"),
    ({"groups": {"student": {"grid": {"seed": []}}}}, "non-empty list"),
    ({"groups": {"student": {"gird": {}}}}, "did you mean grid"),
])
def test_expand_errors_are_readable(tmp_path, change, message):
    with pytest.raises(KdlensError, match=message):
        load_study(write(tmp_path, deep_merge(TINY, change)), out=tmp_path / "s")


def test_unknown_scale(tmp_path):
    with pytest.raises(KdlensError, match="no scale 'huge'"):
        load_study(write(tmp_path, TINY), scale="huge")


def test_run_skips_done_tasks_records_failures_and_resumes(tmp_path):
    doc = deep_merge(TINY, {"groups": {
        "bad": {"kind": "distill", "needs": ["teacher"],
                "config": {"teacher": {"run": "${teacher}"}, "optim": {"lr": 1.0e30}}},
        "after_bad": {"kind": "train", "needs": ["bad"]},
    }})
    path = write(tmp_path, doc)
    study = load_study(path, scale="smoke", out=tmp_path / "s")

    # a study killed after its first finished task ...
    class Stop(BaseException):
        pass

    def stop_after_first(event, st):
        if event == "done":
            raise Stop

    with pytest.raises(Stop):
        run_study(study, workers=1, progress=False, on_event=stop_after_first)
    states = {s.task.id: s.status for s in task_states(study)}
    assert states["teacher_seed-0"] == "done" and not (tmp_path / "s" / "study.lock").exists()

    # ... resumes with the rest; the failure is recorded, its dependants blocked, the others go on
    summary = run_study(study, workers=1, progress=False)
    assert (summary.skipped, summary.ran, summary.done, summary.failed, summary.blocked) == (1, 3, 3, 1, 1)
    rows = {r["task"]: r for r in status_rows(study)}
    assert rows["bad"]["status"] == "failed" and "TrainingDivergedError" in rows["bad"]["reason"]
    assert rows["after_bad"]["status"] == "blocked" and "bad" in rows["after_bad"]["reason"]
    assert rows["student_T-2_seed-0"]["status"] == "done" and 0 < rows["student_T-2_seed-0"]["final_acc"] <= 100
    runs = RunIndex(tmp_path / "s").list()
    assert len(runs) == 4  # teacher, 2 students, the failed one

    # a finished study does nothing on a re-run; the failed task is retried only when asked
    again = run_study(study, workers=1, progress=False)
    assert again.ran == 0 and again.skipped == 3 and len(RunIndex(tmp_path / "s").list()) == 4
    retry = run_study(study, workers=1, progress=False, retry_failed=True)
    assert retry.ran == 1 and retry.failed == 1
    assert RunIndex(tmp_path / "s" / "tasks").get("bad").attempts == 2

    # the CLI: run exits 1 with failures, status lists the reason
    result = CliRunner().invoke(app, ["study", "run", str(path), "--scale", "smoke", "--out", str(tmp_path / "s"), "--quiet"])
    assert result.exit_code == 1 and "3/5 done (3 already done, 0 run now), 1 failed, 1 blocked" in flat(result.output)
    result = CliRunner().invoke(app, ["study", "status", str(tmp_path / "s")])
    assert result.exit_code == 0 and "TrainingDivergedError" in flat(result.output) and "blocked" in flat(result.output)


def test_cli_errors_exit_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(textwrap.dedent("""
        name: x
        groups:
          a: {kind: train, grid: {seed: 0}}
    """))
    result = CliRunner().invoke(app, ["study", "run", str(bad)])
    assert result.exit_code == 2 and "grid.seed: Input should be a valid list" in flat(result.output)
    result = CliRunner().invoke(app, ["study", "run", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 2 and "does not exist" in flat(result.output)
    args = ["study", "run", str(write(tmp_path, TINY)), "--out", str(tmp_path / "s")]
    result = CliRunner().invoke(app, [*args, "--executor", "dask"])
    assert result.exit_code == 2 and "unknown executor" in flat(result.output)
    assert not (tmp_path / "s").exists()  # nothing written before the error
    result = CliRunner().invoke(app, [*args, "--address", "10.0.0.1:6379"])
    assert result.exit_code == 2 and "--address is for --executor ray" in flat(result.output)


def test_worker_processes_give_the_same_results(tmp_path):
    path = write(tmp_path, TINY)
    one = load_study(path, scale="smoke", out=tmp_path / "one")
    two = load_study(path, scale="smoke", out=tmp_path / "two")
    run_study(one, workers=1, progress=False)
    summary = run_study(two, workers=2, progress=False)  # spawned processes, one torch thread each
    assert summary.ok and summary.ran == 3
    acc = lambda s: {r["task"]: r["final_acc"] for r in status_rows(s)}  # noqa: E731
    assert acc(one) == acc(two) and None not in acc(one).values()


def test_study_steps_lists_every_kind():
    result = CliRunner().invoke(app, ["study", "steps"])
    assert result.exit_code == 0
    for kind in ("train", "distill", "hint-search", "embedding", "limited-label", "softlabel-entropy",
                 "missing-class", "transfer-set", "projection"):
        assert kind in result.output
