"""Never lose a run (issue 15): a re-run after kill -9 resumes only with --resume and discards
only with --restart; --resume never starts a different run silently; checkpoints rotate
(last.pt, previous.pt) so a corrupt or unwritable one leaves a good one; a killed run reads
`interrupted`.  Each fault is injected: SIGKILL of a `kdlens train` process, a truncated
checkpoint, RLIMIT_FSIZE during a checkpoint write, a dead pid / stale heartbeat."""

from __future__ import annotations

import errno
import os
import resource
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from kdlens.cli.main import app
from kdlens.config import TrainConfig, validate
from kdlens.errors import KdlensError
from kdlens.store import Heartbeat, RunDir, RunIndex, config_hash, safe_torch_load
from kdlens.store.index import STALE_AFTER_S
from kdlens.train import Trainer
from kdlens.train.run import execute_run, run_id_for, run_training

FAST = ["--dataset", "digits", "--budget", "200", "--quiet"]  # 200 labeled images: ~0.1–0.5 s an epoch


def _cli(*args: str):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "250"})


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _interrupted_run(tmp_path: Path, monkeypatch, after_epoch: int, model: str = "baseline_student",
                     epochs: int = 3, name: str = "cut") -> RunDir:
    """A run stopped (KeyboardInterrupt, as Ctrl-C) right after its checkpoint of ``after_epoch``."""
    save = Trainer._save

    def save_then_stop(self, epoch, is_best):
        save(self, epoch, is_best)
        if epoch == after_epoch:
            raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_save", save_then_stop)
    cfg = validate(TrainConfig, {"model": {"name": model}, "data": {"name": "digits", "budget": 200},
                                 "epochs": epochs, "out": str(tmp_path / "runs"), "name": name})
    with pytest.raises(KeyboardInterrupt):
        run_training(cfg, progress=False)
    monkeypatch.setattr(Trainer, "_save", save)
    (path,) = (tmp_path / "runs").glob(f"{name}-*")
    return RunDir(path)


def _weights_equal(a: Path, b: Path) -> bool:
    wa, wb = safe_torch_load(a)["model"], safe_torch_load(b)["model"]
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


# ------------------------------------------------------------------ kill -9, then the same command again
def test_killed_run_reads_interrupted_is_kept_without_resume_and_resumes_with_it(tmp_path):
    runs = tmp_path / "runs"
    args = ["train", "--model", "baseline_student", *FAST, "--epochs", "12", "--out", str(runs)]
    proc = subprocess.Popen([sys.executable, "-m", "kdlens.cli", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 120
    while time.time() < deadline and not list(runs.glob("*/checkpoints/last.pt")) and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stderr = proc.stderr.read().decode()
    found = list(runs.glob("*/checkpoints/last.pt"))
    assert len(found) == 1, stderr
    last = found[0]
    run = RunDir(last.parent.parent)
    assert run.read_result() is None, "the run finished before it was killed"

    # the store: interrupted (the process is gone), in the index and in `kdlens runs`
    (row,) = RunIndex(runs).list()
    assert row.status == "interrupted" and f"process {proc.pid} on {socket.gethostname()} is gone" in row.reason
    assert row.pid == proc.pid and row.heartbeat is not None
    assert [r.id for r in RunIndex(runs).list("interrupted")] == [row.id] and RunIndex(runs).list("running") == []
    listed = _cli("runs", "--out", str(runs))
    assert listed.exit_code == 0 and "interrupted" in listed.output and row.id in listed.output

    # the same command without --resume: exit 2, nothing touched
    epoch = safe_torch_load(run.last_checkpoint)["epoch"]
    before = {p: p.read_bytes() for p in run.path.rglob("*") if p.is_file()}
    again = _cli(*args)
    assert again.exit_code == 2, again.output
    assert (f"{row.id} has a checkpoint at epoch {epoch}/12: add --resume, or --restart to discard it"
            in _one_line(again.output))
    assert {p: p.read_bytes() for p in run.path.rglob("*") if p.is_file()} == before
    assert RunIndex(runs).get(row.id).attempts == 1

    # with --resume: says so, continues, one metrics row per epoch
    resumed = _cli(*args, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert f"resuming {row.id} from epoch {epoch}/12" in resumed.output
    assert [m["epoch"] for m in run.read_metrics()] == list(range(1, 13))
    assert RunIndex(runs).get(row.id).status == "done"
    assert safe_torch_load(run.previous_checkpoint)["epoch"] == 11
    assert safe_torch_load(run.last_checkpoint)["epoch"] == 12

    # --resume with more epochs: never a new run in its place
    more = _cli(*args, "--epochs", "15", "--resume")  # the last --epochs counts
    assert more.exit_code == 2, more.output
    assert (f"no run with epochs=15 to resume: the finished run {row.id} has epochs=12" in _one_line(more.output)
            and "run without --resume to train a new run with epochs=15" in _one_line(more.output))
    assert [p.name for p in runs.iterdir() if p.is_dir()] == [run.path.name]


# ------------------------------------------------------------------ --restart
def test_restart_discards_and_conflicts_with_resume(tmp_path, monkeypatch):
    run = _interrupted_run(tmp_path, monkeypatch, after_epoch=2)
    runs = str(tmp_path / "runs")
    args = ["train", "--model", "baseline_student", *FAST, "--epochs", "3", "--out", runs, "--name", "cut"]
    (row,) = RunIndex(runs).list()
    assert row.status == "failed" and row.reason == "interrupted (KeyboardInterrupt)"

    refused = _cli(*args)
    assert refused.exit_code == 2 and "has a checkpoint at epoch 2/3" in _one_line(refused.output)
    both = _cli(*args, "--resume", "--restart")
    assert both.exit_code == 2 and "give one of them" in _one_line(both.output)
    bad = _cli(*args, "--from", "first")
    assert bad.exit_code == 2 and "resume from one of last, previous, best" in _one_line(bad.output)
    assert safe_torch_load(run.last_checkpoint)["epoch"] == 2

    restarted = _cli(*args, "--restart")
    assert restarted.exit_code == 0, restarted.output
    assert f"restarting {row.id}: discarded its checkpoints (epoch 2/3)" in _one_line(restarted.output)
    assert [m["epoch"] for m in run.read_metrics()] == [1, 2, 3]
    assert RunIndex(runs).get(row.id).attempts == 2 and RunIndex(runs).get(row.id).status == "done"
    # a finished run is skipped, and --restart trains it again
    assert "already done (skipped)" in _cli(*args).output
    again = _cli(*args, "--restart")
    assert again.exit_code == 0 and "discarded its result and checkpoints (epoch 3/3)" in _one_line(again.output)


# ------------------------------------------------------------------ a corrupt checkpoint
def test_truncated_last_checkpoint_exit_2_offers_previous_and_best_then_resumes_bit_exact(tmp_path, monkeypatch):
    runs = str(tmp_path / "runs")
    common = ["train", "--model", "baseline_student", *FAST, "--epochs", "3", "--out", runs]
    assert _cli(*common, "--name", "ref").exit_code == 0
    run = _interrupted_run(tmp_path, monkeypatch, after_epoch=2)
    assert safe_torch_load(run.previous_checkpoint)["epoch"] == 1
    best_epoch = safe_torch_load(run.best_checkpoint)["epoch"]
    data = run.last_checkpoint.read_bytes()
    run.last_checkpoint.unlink()  # a new file: best.pt may share last.pt's inode (hard link)
    run.last_checkpoint.write_bytes(data[: len(data) // 2])
    truncated = run.last_checkpoint.read_bytes()

    r = _cli(*common, "--name", "cut", "--resume")
    message = _one_line(r.output)
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    assert f"its checkpoint '{run.last_checkpoint}' does not load" in message
    assert "--from previous (epoch 1)" in message and f"--from best (epoch {best_epoch})" in message
    assert "--restart" in message
    assert run.last_checkpoint.read_bytes() == truncated  # nothing changed

    r = _cli(*common, "--name", "cut", "--from", "previous")  # --from implies --resume
    assert r.exit_code == 0, r.output
    assert f"resuming {run.path.name} from epoch 1/3 (checkpoints/previous.pt)" in r.output
    assert [m["epoch"] for m in run.read_metrics()] == [1, 2, 3]
    assert (run.checkpoint_dir / "last.pt.unreadable").read_bytes() == truncated
    (ref,) = Path(runs).glob("ref-*")
    assert _weights_equal(ref / "checkpoints" / "last.pt", run.last_checkpoint)  # as if never interrupted


def test_missing_or_weights_only_checkpoints_are_named(tmp_path, monkeypatch):
    run = _interrupted_run(tmp_path, monkeypatch, after_epoch=1)
    runs = str(tmp_path / "runs")
    args = ["train", "--model", "baseline_student", *FAST, "--epochs", "3", "--out", runs, "--name", "cut"]
    r = _cli(*args, "--from", "previous")  # epoch 1: nothing before it
    assert r.exit_code == 2 and "no such file (checkpoints: checkpoints/best.pt, checkpoints/last.pt)" in _one_line(
        r.output)
    # a best.pt of an older kdlens: the weights only
    best = safe_torch_load(run.best_checkpoint)
    run.best_checkpoint.unlink()
    torch.save({"epoch": best["epoch"], "model": best["model"]}, run.best_checkpoint)
    r = _cli(*args, "--from", "best")
    assert r.exit_code == 2 and "holds the model weights only" in _one_line(r.output)


# ------------------------------------------------------------------ a full disk (file-size limit) while checkpointing
def _limit_file_size(limit: int):
    def preexec():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return preexec


def test_file_size_limit_while_checkpointing_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    run = _interrupted_run(tmp_path, monkeypatch, after_epoch=1, model="thesis_student")
    size = run.last_checkpoint.stat().st_size
    limit = 150 * 1024
    assert size > limit > max(p.stat().st_size for p in run.path.parent.rglob("*") if p.name != "last.pt"
                              and p.name != "best.pt" and p.is_file())
    before = run.last_checkpoint.read_bytes()
    cmd = [sys.executable, "-m", "kdlens.cli", "train", "--model", "thesis_student", *FAST, "--epochs", "3",
           "--out", str(tmp_path / "runs"), "--name", "cut", "--resume"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "1000"}
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, preexec_fn=_limit_file_size(limit))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.strip()]
    assert errors[0] == f"resuming {run.path.name} from epoch 1/3"
    assert len(errors) == 2 and errors[1].startswith("error: the file-size limit of this process (150 KiB"), errors
    assert "writing last.pt" in errors[1] and "the previous last.pt is unchanged" in errors[1]

    assert run.last_checkpoint.read_bytes() == before  # the previous checkpoint survives
    assert safe_torch_load(run.previous_checkpoint)["epoch"] == 1
    assert not [p for p in run.path.rglob("*") if p.name.endswith(".tmp")]
    assert run.read_result() is None
    (row,) = RunIndex(tmp_path / "runs").list()
    assert row.status == "failed" and row.reason.startswith("DiskFullError: the file-size limit")

    # without the limit the same command finishes the run
    assert _cli(*cmd[3:]).exit_code == 0
    assert [m["epoch"] for m in run.read_metrics()] == [1, 2, 3] and run.read_result() is not None


# ------------------------------------------------------------------ the store: process, host, heartbeat
def test_running_rows_read_interrupted_once_their_process_is_gone(tmp_path):
    index = RunIndex(tmp_path)
    index.start("mine", "train", "h1", tmp_path / "mine", owner=True)
    rec = index.get("mine")
    assert (rec.status, rec.pid, rec.host) == ("running", os.getpid(), socket.gethostname())

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    index.start("dead", "train", "h2", tmp_path / "dead", owner=True)
    index.start("far", "train", "h3", tmp_path / "far", owner=True)
    index.start("far-stale", "train", "h4", tmp_path / "far-stale", owner=True)
    index.start("task", "train", "h5", tmp_path / "task")  # no owner recorded (study task rows)
    with sqlite3.connect(tmp_path / "runs.sqlite") as db:
        db.execute("UPDATE runs SET pid=? WHERE id='dead'", (dead.pid,))
        db.execute("UPDATE runs SET host='elsewhere', heartbeat=? WHERE id='far'", (time.time() - 60,))
        db.execute("UPDATE runs SET host='elsewhere', heartbeat=? WHERE id='far-stale'",
                   (time.time() - STALE_AFTER_S - 60,))
    status = {r.id: r.status for r in index.list()}
    assert status == {"mine": "running", "dead": "interrupted", "far": "running", "far-stale": "interrupted",
                      "task": "running"}
    assert f"process {dead.pid} on {socket.gethostname()} is gone" in index.get("dead").reason
    assert "no heartbeat from process" in index.get("far-stale").reason
    assert [r.id for r in index.list("interrupted")] == ["dead", "far-stale"]
    assert [r.id for r in index.list("running")] == ["mine", "far", "task"]
    # killed after its result.json: finished, and the row is recorded done
    from kdlens.train.run import finished_result

    RunDir(tmp_path / "dead").write_result({"final_acc": 2.0})
    assert finished_result(index, "dead", RunDir(tmp_path / "dead")) == {"final_acc": 2.0}
    assert index.get("dead").status == "done"

    # the heartbeat: forced, or at most every `every_s`
    beat = Heartbeat(index, "far-stale", every_s=3600)
    beat()
    assert index.get("far-stale").status == "interrupted"
    beat(force=True)
    assert index.get("far-stale").status == "running"


def test_another_live_process_training_the_run_is_refused(tmp_path):
    run_id = run_id_for("busy", "train", config_hash({"x": 1}))
    index = RunIndex(tmp_path)
    index.start(run_id, "train", "h", tmp_path / run_id, owner=True)
    with sqlite3.connect(tmp_path / "runs.sqlite") as db:
        db.execute("UPDATE runs SET pid=1, pid_start=NULL")  # alive on this host (init), not this process
    if index.get(run_id).status != "running":
        pytest.skip("pid 1 is not visible here")
    with pytest.raises(KdlensError, match=f"{run_id} is being trained by process 1 on"):
        execute_run("train", {"x": 1}, {"epochs": 1}, str(tmp_path), "busy", False, lambda rd: {})


_OLD_SCHEMA = """
CREATE TABLE runs (id TEXT PRIMARY KEY, kind TEXT NOT NULL, config_hash TEXT NOT NULL, status TEXT NOT NULL,
    reason TEXT, path TEXT NOT NULL, metrics TEXT NOT NULL DEFAULT '{}', created REAL NOT NULL,
    updated REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 1);
CREATE INDEX runs_hash ON runs(config_hash);
INSERT INTO runs (id, kind, config_hash, status, path, metrics, created, updated)
    VALUES ('old', 'train', 'h0', 'running', '/x', '{"final_acc": 1.5}', 1.0, 1.0);
"""


def test_a_store_of_the_previous_schema_is_migrated_in_place(tmp_path):
    with sqlite3.connect(tmp_path / "runs.sqlite") as db:
        db.executescript(_OLD_SCHEMA)
    index = RunIndex(tmp_path)
    old = index.get("old")
    assert (old.status, old.metrics, old.pid) == ("running", {"final_acc": 1.5}, None)  # no process known
    cols = {r[1] for r in sqlite3.connect(tmp_path / "runs.sqlite").execute("PRAGMA table_info(runs)")}
    assert {"pid", "host", "pid_start", "heartbeat", "family_hash"} <= cols
    index.start("new", "train", "h1", tmp_path / "new", owner=True, family_hash="f")
    assert [r.id for r in index.family("f", "train")] == ["new"]
    RunIndex(tmp_path)  # opening again: nothing to migrate
    assert [r.id for r in index.list()] == ["old", "new"]


# ------------------------------------------------------------------ rotation and the lifecycle rules, without training
def test_checkpoints_rotate_and_survive_a_failed_write(tmp_path, monkeypatch):
    run = RunDir(tmp_path / "run")
    for epoch, best in ((1, True), (2, False), (3, True)):
        run.save_checkpoint({"epoch": epoch, "w": torch.full((3,), float(epoch))}, is_best=best)
    assert [safe_torch_load(run.checkpoint(w))["epoch"] for w in ("last", "previous", "best")] == [3, 2, 3]

    def full(path, data):
        raise KdlensError("disk full (injected)")

    monkeypatch.setattr("kdlens.store.rundir.atomic_write_bytes", full)
    with pytest.raises(KdlensError):
        run.save_checkpoint({"epoch": 4, "w": torch.zeros(3)})
    monkeypatch.undo()
    assert safe_torch_load(run.last_checkpoint)["epoch"] == 3 and safe_torch_load(run.previous_checkpoint)["epoch"] == 3

    def no_links(src, dst):
        raise OSError(errno.EPERM, "hard links not allowed")

    monkeypatch.setattr("kdlens.store.atomic.os.link", no_links)  # e.g. some network file systems: copies
    run.save_checkpoint({"epoch": 5, "w": torch.zeros(3)}, is_best=True)
    assert [safe_torch_load(run.checkpoint(w))["epoch"] for w in ("last", "previous", "best")] == [5, 3, 5]
    assert sorted(p.name for p in run.checkpoint_dir.iterdir()) == ["best.pt", "last.pt", "previous.pt"]


def _fake_body(epochs_done: int, total: int, phase: str = ""):
    def body(run_dir: RunDir):
        target = RunDir(run_dir.path / phase) if phase else run_dir
        for e in range(1, epochs_done + 1):
            target.save_checkpoint({"epoch": e, "epochs": total, "model": {}, "optimizer": {}})
        if epochs_done < total:
            raise KeyboardInterrupt
        return {"final_acc": 1.0}

    return body


def test_execute_run_rules_for_nested_phases_and_other_epoch_counts(tmp_path):
    out = str(tmp_path)
    ident = {"model": "m", "epochs": 4}
    with pytest.raises(KeyboardInterrupt):  # killed during a distillation's hint pre-training
        execute_run("distill", ident, {"epochs": 4}, out, "d", False, _fake_body(2, 5, "pretrain"))
    with pytest.raises(KdlensError, match=r"has a checkpoint at pretrain epoch 2/5: add --resume, or --restart"):
        execute_run("distill", ident, {"epochs": 4}, out, "d", False, _fake_body(4, 4))
    done = execute_run("distill", ident, {"epochs": 4}, out, "d", True, _fake_body(4, 4), resume_strict=True)
    assert not done.skipped and done.metrics == {"final_acc": 1.0}

    # an interrupted run of epochs=4; --resume with epochs=6 points at it
    ident4 = {"model": "n", "epochs": 4}
    with pytest.raises(KeyboardInterrupt):
        execute_run("train", ident4, {"epochs": 4}, out, "n", False, _fake_body(2, 4))
    ident6 = {"model": "n", "epochs": 6}
    with pytest.raises(KdlensError, match=r"no run with epochs=6 to resume: the failed run n-\w+ has epochs=4.*"
                                          r"or continue n-\w+ with --epochs 4 --resume"):
        execute_run("train", ident6, {"epochs": 6}, out, "n", True, _fake_body(6, 6), resume_strict=True)
    # studies resume whatever exists (not strict): the epochs=6 run is a new run
    assert execute_run("train", ident6, {"epochs": 6}, out, "n", True, _fake_body(6, 6)).metrics == {"final_acc": 1.0}
    # a config never run: --resume trains it from epoch 1, saying so
    fresh = execute_run("train", {"model": "o", "epochs": 2}, {"epochs": 2}, out, "o", True, _fake_body(2, 2),
                        resume_strict=True)
    assert not fresh.skipped


def test_ddp_launcher_refuses_a_rerun_before_starting_processes(tmp_path, monkeypatch):
    run = _interrupted_run(tmp_path, monkeypatch, after_epoch=1)
    args = ["train", "--model", "baseline_student", *FAST, "--epochs", "3", "--out", str(tmp_path / "runs"),
            "--name", "cut", "--ddp", "2"]
    monkeypatch.setattr("kdlens.train.ddp.launch_local", lambda *a, **k: pytest.fail("processes were started"))
    r = _cli(*args)
    assert r.exit_code == 2 and f"{run.path.name} has a checkpoint at epoch 1/3" in _one_line(r.output)
    r = _cli(*args, "--restart")
    assert r.exit_code == 2 and "not available with --ddp" in _one_line(r.output)
