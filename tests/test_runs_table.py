"""``kdlens runs`` (issue 14): path, model, dataset, method, top-1/top-5, date and status per run;
full paths whatever the width; nested study stores with --recursive; a missing store is exit 2
and is not created; stores are opened read-only (no file created, no migration)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from kdlens.cli.main import app
from kdlens.errors import KdlensError
from kdlens.store.index import RunIndex
from kdlens.store.listing import COLUMNS, describe_run, list_runs

LONG = "student_method-at+kd_hints-conventional_budget-5000_fold-2_seed-1-" + "0123456789"


def _run(store: Path, run_id: str, kind: str, config: dict, metrics: dict | None = None, fail: str | None = None):
    index = RunIndex(store)
    path = store / run_id
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump({"kind": kind, **config}))
    index.start(run_id, kind, f"h-{run_id}", path)
    if fail:
        index.fail(run_id, fail)
    else:
        index.finish(run_id, metrics or {})
    return path


@pytest.fixture
def store(tmp_path):
    store = tmp_path / "runs"
    _run(store, "teacher-digits-1a2b3c4d5e", "train",
         {"model": {"name": "resnet20"}, "data": {"name": "digits"}},
         {"final_acc": 97.5, "final_acc5": 99.94, "best_acc": 98.0})
    _run(store, LONG, "distill",
         {"model": {"name": "thesis_student"}, "data": {"name": "fashion-mnist"}, "method": "at+kd",
          "loop": "offline"}, {"final_acc": 88.123, "final_acc5": 99.5})
    _run(store, "semi-digits-aaaaaaaaaa", "train",
         {"model": {"name": "resnet8"}, "data": {"name": "digits"}, "semi": "fixmatch"}, fail="NaN loss at epoch 3")
    return store


def _said(res) -> str:
    """A command's output with its line wrapping undone (errors wrap at the console width)."""
    return " ".join(res.output.split())


def _tsv(output: str) -> list[dict[str, str]]:
    header, *lines = output.strip().splitlines()
    names = header.split("\t")
    return [dict(zip(names, line.split("\t"), strict=True)) for line in lines]


def test_runs_lists_path_model_dataset_method_accuracy_and_date(store):
    res = CliRunner().invoke(app, ["runs", "--out", str(store), "--format", "tsv"])
    assert res.exit_code == 0, res.output
    rows = _tsv(res.output)
    assert list(rows[0]) == list(COLUMNS) == ["path", "model", "dataset", "method", "top-1", "top-5", "date", "status"]
    by_model = {r["model"]: r for r in rows}
    assert by_model["resnet20"] == {
        "path": str(store / "teacher-digits-1a2b3c4d5e"), "model": "resnet20", "dataset": "digits",
        "method": "supervised", "top-1": "97.50", "top-5": "99.94", "date": by_model["resnet20"]["date"],
        "status": "done"}
    assert time.strptime(by_model["resnet20"]["date"], "%Y-%m-%d %H:%M")
    assert (by_model["thesis_student"]["path"], by_model["thesis_student"]["method"],
            by_model["thesis_student"]["dataset"]) == (str(store / LONG), "at+kd", "fashion-mnist")
    assert (by_model["resnet8"]["method"], by_model["resnet8"]["status"], by_model["resnet8"]["top-1"]) == \
        ("fixmatch", "failed", "")


def test_the_table_never_cuts_a_path_when_not_on_a_terminal(store):
    """CliRunner's output is not a terminal (like a pipe): each row on one line, paths whole."""
    res = CliRunner().invoke(app, ["runs", "--out", str(store)])
    assert res.exit_code == 0, res.output
    full = str(store / LONG)
    assert len(full) > 80
    (line,) = [ln for ln in res.output.splitlines() if full in ln]
    assert "thesis_student" in line and "at+kd" in line and "88.12" in line and "99.50" in line
    for name in COLUMNS:
        assert name in res.output
    assert "failed " + str(store / "semi-digits-aaaaaaaaaa") + ": NaN loss at epoch 3" in res.output


def test_a_missing_store_is_exit_2_and_is_not_created(tmp_path):
    missing = tmp_path / "nowhere" / "runs"
    res = CliRunner().invoke(app, ["runs", "--out", str(missing)])
    assert res.exit_code == 2
    assert "no run store" in _said(res) and "no such directory" in _said(res)
    assert not (tmp_path / "nowhere").exists()
    with pytest.raises(KdlensError, match="no run store"):
        RunIndex(missing, readonly=True)
    assert not (tmp_path / "nowhere").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    res = CliRunner().invoke(app, ["runs", "--out", str(empty)])
    assert res.exit_code == 2 and "has no runs.sqlite" in _said(res)
    assert list(empty.iterdir()) == []


def test_unknown_format_or_status_is_exit_2(store):
    assert CliRunner().invoke(app, ["runs", "--out", str(store), "--format", "csv"]).exit_code == 2
    assert CliRunner().invoke(app, ["runs", "--out", str(store), "--status", "finished"]).exit_code == 2


def _study(root: Path) -> Path:
    """A study directory as `kdlens study run` leaves it: its own store of runs plus the task
    index STUDY/tasks/runs.sqlite (whose rows are tasks, not runs)."""
    study = root / "studies" / "hints" / "smoke"
    _run(study, "full_teacher-432b322601", "train", {"model": {"name": "thesis_teacher_small"},
                                                     "data": {"name": "digits"}}, {"final_acc": 91.67})
    (study / "study.json").write_text("{}")
    tasks = RunIndex(study / "tasks")
    tasks.start("full_teacher", "train", "t", study)
    tasks.finish("full_teacher", {"path": str(study / "full_teacher-432b322601")})
    return study


def test_recursive_lists_the_runs_of_nested_study_stores(store):
    study = _study(store)
    res = CliRunner().invoke(app, ["runs", "--out", str(store), "--format", "tsv"])
    assert res.exit_code == 0 and str(study) not in res.output
    plain = CliRunner().invoke(app, ["runs", "--out", str(store)])
    assert "1 more store under" in plain.output and "--recursive" in plain.output
    rows = _tsv(CliRunner().invoke(app, ["runs", "--out", str(store), "--recursive", "--format", "tsv"]).output)
    assert len(rows) == 4  # the 3 runs of the store + the study's run; its task row is not a run
    (nested,) = [r for r in rows if r["model"] == "thesis_teacher_small"]
    assert nested["path"] == str(study / "full_teacher-432b322601") and nested["top-1"] == "91.67"
    # a directory holding only nested stores: exit 2 pointing at --recursive; with it, their runs
    parent = store / "studies"
    res = CliRunner().invoke(app, ["runs", "--out", str(parent)])
    assert res.exit_code == 2 and "add --recursive" in _said(res)
    rows = _tsv(CliRunner().invoke(app, ["runs", "--out", str(parent), "-r", "--format", "tsv"]).output)
    assert [r["model"] for r in rows] == ["thesis_teacher_small"]


_OLD_SCHEMA = """
CREATE TABLE runs (id TEXT PRIMARY KEY, kind TEXT NOT NULL, config_hash TEXT NOT NULL, status TEXT NOT NULL,
    reason TEXT, path TEXT NOT NULL, metrics TEXT NOT NULL DEFAULT '{}', created REAL NOT NULL,
    updated REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 1);
INSERT INTO runs (id, kind, config_hash, status, path, metrics, created, updated)
    VALUES ('old', 'train', 'h0', 'done', 'old', '{"final_acc": 1.5}', 1.0, 1.0);
"""


def test_listing_opens_a_store_read_only_and_does_not_migrate_it(tmp_path):
    with sqlite3.connect(tmp_path / "runs.sqlite") as db:
        db.executescript(_OLD_SCHEMA)
    before = (tmp_path / "runs.sqlite").read_bytes()
    index = RunIndex(tmp_path, readonly=True)
    (old,) = index.list()
    assert (old.id, old.status, old.pid, old.metrics) == ("old", "done", None, {"final_acc": 1.5})
    with pytest.raises(KdlensError, match="read-only"):
        index.start("new", "train", "h1", tmp_path / "new")
    res = CliRunner().invoke(app, ["runs", "--out", str(tmp_path), "--format", "tsv"])
    assert res.exit_code == 0, res.output
    assert _tsv(res.output)[0]["top-1"] == "1.50"
    assert (tmp_path / "runs.sqlite").read_bytes() == before
    cols = {r[1] for r in sqlite3.connect(tmp_path / "runs.sqlite").execute("PRAGMA table_info(runs)")}
    assert "pid" not in cols


def test_a_killed_run_still_reads_interrupted(store):
    index = RunIndex(store)
    index.start("killed-bbbbbbbbbb", "train", "hk", store / "killed-bbbbbbbbbb", owner=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    with sqlite3.connect(store / "runs.sqlite") as db:
        db.execute("UPDATE runs SET pid=?, pid_start=NULL WHERE id='killed-bbbbbbbbbb'", (int(dead),))
    (row,) = [r for r in list_runs(store) if r.record.id == "killed-bbbbbbbbbb"]
    assert row.status == "interrupted" and f"process {dead}" in row.reason
    rows = _tsv(CliRunner().invoke(app, ["runs", "--out", str(store), "--status", "interrupted",
                                         "--format", "tsv"]).output)
    assert [r["path"] for r in rows] == [str(store / "killed-bbbbbbbbbb")]


def _count_as_another_user(store: Path) -> int:
    """``len(list_runs(store))`` in a process without write access: this user's own when it is not
    root (root ignores permissions), else a forked child that became ``nobody`` (a new interpreter
    could not run as nobody: the Python installation may be private to root)."""
    if os.geteuid() != 0:
        code = "import sys; from kdlens.store.listing import list_runs; print(len(list_runs(sys.argv[1])))"
        out = subprocess.run([sys.executable, "-c", code, str(store)], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        return int(out.stdout)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.setgid(65534)
            os.setuid(65534)
            os.write(write, str(len(list_runs(store))).encode())
        except BaseException as exc:
            os.write(write, f"{type(exc).__name__}: {exc}".encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read) as f:
        said = f.read()
    assert said.isdigit(), said
    return int(said)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX only")
def test_a_store_in_a_directory_this_user_cannot_write_is_listed(store):
    """The WAL index of a read-only directory (no -shm file can be made there) still reads."""
    import shutil
    import tempfile

    shared = Path(tempfile.mkdtemp(prefix="kdlens-ro-store-"))  # not under pytest's private tmp
    try:
        ro = shared / "runs"
        shutil.copytree(store, ro)
        for extra in ("runs.sqlite-wal", "runs.sqlite-shm"):
            assert not (ro / extra).exists()
        for p in [*ro.rglob("*"), ro]:
            p.chmod(0o555 if p.is_dir() else 0o444)
        shared.chmod(0o755)
        assert _count_as_another_user(ro) == 3
        assert sorted(p.name for p in ro.iterdir() if p.is_file()) == ["runs.sqlite"]
    finally:
        for p in [shared, *shared.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)
        shutil.rmtree(shared)


def test_describe_run_for_each_kind():
    assert describe_run("distill", {"model": {"name": "s"}, "data": {"name": "d"}, "method": "kd",
                                    "loop": "limited_label"}) == ("s", "d", "kd · limited_label")
    assert describe_run("train", {"model": {"name": "s"}, "data": {"name": "d"}}) == ("s", "d", "supervised")
    assert describe_run("hints", {}) == ("", "", "hints")
