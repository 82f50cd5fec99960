"""Interrupting a study (issue 15): SIGTERM / SIGHUP / Ctrl-C stop the workers within 2 s and
mark the tasks in flight interrupted, one runner per study (a lock naming the holder), every
task's config checked when the study is loaded, a teacher-output cache never visible
half-built, and no stale ``error.txt`` in a finished run."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from kdlens.cli.main import app
from kdlens.studies.grid import StudyLock, load_study, runner_alive, task_states
from kdlens.studies.grid.interrupt import StudyInterrupted, stop_signals

LONG = {  # tasks that outlast the test: 40 epochs each
    "name": "interruptible",
    "defaults": {"data": {"name": "digits"}, "model": {"name": "baseline_student"}, "epochs": 40},
    "groups": {"net": {"kind": "train", "grid": {"seed": [0, 1, 2]}}},
}


def flat(text: str) -> str:
    return " ".join(text.split())


def write(path: Path, doc: dict) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _alive(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def _worker_pids(parent: int) -> list[int]:
    """Live child processes of ``parent`` that are multiprocessing workers (spawn_main)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        pid = int(stat.parent.name)
        fields = _stat(pid)
        if fields is None or int(fields[1]) != parent or fields[0] in ("Z", "X"):
            continue
        try:
            cmdline = (stat.parent / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "spawn_main" in cmdline:
            found.append(pid)
    return found


def _start(spec: Path, out: Path, workers: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "kdlens.cli", "study", "run", str(spec), "--workers", str(workers),
           "--out", str(out), "--quiet"]
    return subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_training(proc: subprocess.Popen, out: Path, tasks: int, timeout: float = 120.0) -> None:
    """Until ``tasks`` runs have started (their run directory holds its config)."""
    deadline = time.monotonic() + timeout
    while len(list(out.glob("net_seed-*/config.yaml"))) < tasks:
        if proc.poll() is not None:
            raise AssertionError(f"the study ended before it could be stopped: {proc.communicate()}")
        assert time.monotonic() < deadline, f"no task started in {timeout:.0f} s"
        time.sleep(0.05)
    time.sleep(0.3)  # well inside the training loop


def _stop(proc: subprocess.Popen, send) -> tuple[float, str]:
    t0 = time.monotonic()
    send()
    try:
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return time.monotonic() - t0, err


# ----------------------------------------------------------------- signals on a real runner
@pytest.mark.slow
def test_sigterm_stops_the_workers_marks_tasks_interrupted_and_a_second_runner_is_refused(tmp_path):
    """`kill -TERM RUNNER` (the runner only, not its group): the 2 worker processes are stopped,
    not orphaned; the runs in flight record their interruption; the tasks read `interrupted`;
    one line says what was kept; exit 143 within 2 s.  While it ran, a second runner was
    refused with the holder's pid and host."""
    spec = write(tmp_path / "study.yaml", LONG)
    out = tmp_path / "s"
    proc = _start(spec, out, workers=2)
    try:
        _wait_for_training(proc, out, tasks=2)
        workers = _worker_pids(proc.pid)
        assert len(workers) == 2, workers
        assert runner_alive(out)
        second = CliRunner().invoke(app, ["study", "run", str(spec), "--workers", "2", "--out", str(out), "--quiet"])
        text = flat(second.output)
        assert second.exit_code == 2, text
        assert f"being run by process {proc.pid} on this host" in text and "--wait" in text, text
        assert str(proc.pid) in (out / "study.lock").read_text().split()[0]
        assert socket.gethostname() in (out / "study.lock").read_text()
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    seconds, err = _stop(proc, lambda: os.kill(proc.pid, signal.SIGTERM))
    print(f"SIGTERM → exit in {seconds:.2f} s: {err.strip()}")
    lines = [line for line in err.splitlines() if line.strip()]
    assert proc.returncode == 128 + signal.SIGTERM
    assert seconds < 2.0
    assert len(lines) == 1 and lines[0].startswith("interrupted by SIGTERM"), err
    assert "0/3 tasks done and kept" in lines[0] and "2 stopped in flight and marked interrupted" in lines[0]
    assert "1 not started" in lines[0]
    # no orphans: the workers were stopped (joined) before the runner left
    assert not [w for w in workers if _alive(w)], "worker processes outlived their runner"
    # the tasks in flight read `interrupted` (the third never started); the lock is gone
    states = {s.task.id: s for s in task_states(load_study(spec, out=out))}
    assert sorted(s.status for s in states.values()) == ["interrupted", "interrupted", "pending"]
    assert all("SIGTERM" in s.reason for s in states.values() if s.status == "interrupted")
    assert not (out / "study.lock").exists() and not runner_alive(out)
    # each stopped run recorded its own interruption (it was not just killed)
    from kdlens.store import RunIndex

    runs = RunIndex(out).list()
    assert len(runs) == 2 and all(r.status != "running" and "nterrupt" in (r.reason or "") for r in runs), runs
    # `study status` shows them
    status = CliRunner().invoke(app, ["study", "status", str(out)])
    assert status.exit_code == 0 and flat(status.output).count("interrupted") >= 2


@pytest.mark.slow
def test_ctrl_c_exits_within_two_seconds(tmp_path):
    """Ctrl-C at a terminal (SIGINT to the whole process group) on a one-worker study: exit 130
    in under 2 s (9 s before), one line, the task in flight marked interrupted."""
    spec = write(tmp_path / "study.yaml", LONG)
    out = tmp_path / "s"
    proc = _start(spec, out, workers=1)
    try:
        _wait_for_training(proc, out, tasks=1)
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    seconds, err = _stop(proc, lambda: os.killpg(proc.pid, signal.SIGINT))
    print(f"Ctrl-C → exit in {seconds:.2f} s: {err.strip()}")
    lines = [line for line in err.splitlines() if line.strip()]
    assert proc.returncode == 130 and seconds < 2.0
    assert len(lines) == 1 and lines[0].startswith("interrupted by Ctrl-C (SIGINT)"), err
    assert "1 stopped in flight and marked interrupted: net_seed-0" in lines[0]
    states = sorted(s.status for s in task_states(load_study(spec, out=out)))
    assert states == ["interrupted", "pending", "pending"]


def test_sighup_and_sigterm_act_like_ctrl_c_and_nohup_is_respected():
    for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
        with pytest.raises(KeyboardInterrupt), stop_signals() as caught:
            os.kill(os.getpid(), sig)
            time.sleep(2)
        assert caught.signum == sig
    assert StudyInterrupted(signal.SIGHUP, "x").exit_code == 129
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup
    try:
        with stop_signals() as caught:
            os.kill(os.getpid(), signal.SIGHUP)
            time.sleep(0.2)
        assert caught.signum is None
    finally:
        signal.signal(signal.SIGHUP, previous)


# ------------------------------------------------------------------------------ the lock
_HOLDER = textwrap.dedent("""
    import fcntl, os, socket, sys, time
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, f"{os.getpid()} {socket.gethostname()} now\\n".encode())
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
""")


def _hold(lock: Path, seconds: float) -> subprocess.Popen:
    lock.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(lock), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_held_study_is_refused_a_stale_lock_is_taken_over_and_wait_queues(tmp_path):
    directory = tmp_path / "s"
    directory.mkdir()
    # a lock file left by a dead runner (kill -9): taken over
    (directory / "study.lock").write_text(f"999999999 {socket.gethostname()} earlier\n")
    assert not runner_alive(directory)
    lock = StudyLock(directory)
    lock.acquire()
    assert (directory / "study.lock").read_text().split()[:2] == [str(os.getpid()), socket.gethostname()]
    lock.release()
    assert not (directory / "study.lock").exists()

    # held by a live process: refused, naming it; --wait queues until it is gone
    holder = _hold(directory / "study.lock", 1.5)
    try:
        assert runner_alive(directory)
        from kdlens.errors import KdlensError

        with pytest.raises(KdlensError, match=f"being run by process {holder.pid} on this host"):
            StudyLock(directory).acquire()
        seen = []
        t0 = time.monotonic()
        waiter = StudyLock(directory)
        waiter.acquire(wait=True, poll_s=0.1, on_wait=seen.append)
        assert time.monotonic() - t0 > 0.5 and [h.pid for h in seen] == [holder.pid]
        assert (directory / "study.lock").read_text().split()[0] == str(os.getpid())
        waiter.release()
    finally:
        holder.kill()
        holder.wait()


def test_cli_wait_queues_behind_the_holder_then_runs(tmp_path):
    doc = {**LONG, "defaults": {**LONG["defaults"], "epochs": 1}, "groups": {"net": {"kind": "train"}}}
    spec = write(tmp_path / "study.yaml", doc)
    out = tmp_path / "s"
    holder = _hold(out / "study.lock", 1.0)
    try:
        result = CliRunner().invoke(app, ["study", "run", str(spec), "--workers", "1", "--out", str(out), "--quiet",
                                          "--wait"])
    finally:
        holder.kill()
        holder.wait()
    text = flat(result.output)
    assert result.exit_code == 0, text
    assert f"waiting for process {holder.pid} on this host" in text and "1/1 done" in text


# ------------------------------------------------------------------- validated when loaded
def test_override_typos_exit_2_before_anything_is_written(tmp_path):
    spec = write(tmp_path / "study.yaml", LONG)
    out = tmp_path / "s"
    result = CliRunner().invoke(app, ["study", "run", str(spec), "--out", str(out), "--set",
                                      "groups.net.config.epoch=1"])
    text = flat(result.output)
    assert result.exit_code == 2, text
    assert "group 'net'" in text and "epoch: unknown key (did you mean epochs?)" in text
    assert not out.exists()

    result = CliRunner().invoke(app, ["study", "run", str(spec), "--out", str(out), "--set",
                                      "groups.nett.config.epochs=1"])
    text = flat(result.output)
    assert result.exit_code == 2 and "unknown group 'nett' (did you mean 'net'?)" in text, text
    assert "Field required" not in text and "groups.nett.config.epochs=1" in text
    assert not out.exists()

    # a bad value that only one grid level sets is found too, naming its task
    doc = {**LONG, "groups": {"net": {"kind": "train", "grid": {"epochs": [1, 0]}}}}
    result = CliRunner().invoke(app, ["study", "run", str(write(tmp_path / "grid.yaml", doc)), "--out", str(out)])
    text = flat(result.output)
    assert result.exit_code == 2 and "net_epochs-0" in text and "epochs" in text, text
    assert not out.exists()


# ------------------------------------------------------------------- teacher-output cache
class _Teacher(torch.nn.Module):
    def __init__(self, fail_at: int | None = None) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 3)
        self.calls, self.fail_at = 0, fail_at

    def forward(self, x):
        self.calls += 1
        if self.fail_at is not None and self.calls == self.fail_at:
            raise RuntimeError("teacher crashed")
        return self.linear(x.flatten(1))


def test_teacher_output_cache_is_never_visible_half_built(tmp_path, monkeypatch):
    import kdlens.distill.cache as cache_mod
    from kdlens.distill.cache import TeacherOutputCache

    images = torch.randn(10, 1, 2, 2)
    make = lambda: TeacherOutputCache(tmp_path, "t" * 64, "d", "train", "id", flips=True)  # noqa: E731
    cache = make()
    # a left-over of a builder that was killed on this host (its pid is gone): swept away
    dead = tmp_path / f".{cache.dir.name}.building-{socket.gethostname()}-999999999-abcd1234"
    dead.mkdir()

    # the teacher fails half-way: nothing appears under the cache's name
    with pytest.raises(RuntimeError, match="teacher crashed"):
        cache.build(_Teacher(fail_at=3), images, lambda x: x, torch.device("cpu"), batch_size=4)
    assert not cache.dir.exists()

    # writing fails after the first of the two arrays (disk full, a kill): still nothing visible
    real = cache_mod.atomic_write_bytes
    calls = []

    def flaky(path, data):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real(path, data)

    monkeypatch.setattr(cache_mod, "atomic_write_bytes", flaky)
    with pytest.raises(OSError):
        cache.build(_Teacher(), images, lambda x: x, torch.device("cpu"), batch_size=4)
    assert not cache.dir.exists() and Path(calls[0]).parent != cache.dir
    assert not list(tmp_path.glob(".*building*")), "temporary directories are cleaned up"
    monkeypatch.setattr(cache_mod, "atomic_write_bytes", real)

    # a whole build appears at once; a reader keeps its arrays while another builder publishes
    teacher = _Teacher()
    assert cache.ensure(teacher, images, lambda x: x, torch.device("cpu"), batch_size=4) is False
    assert cache.is_valid() and sorted(p.name for p in cache.dir.iterdir()) == ["logits.npy", "logits_flip.npy",
                                                                                 "meta.json"]
    logits, _ = cache.lookup(torch.arange(10), None, torch.device("cpu"))
    make().build(teacher, images, lambda x: x, torch.device("cpu"), batch_size=4)  # lost race: keeps the first
    again, _ = cache.lookup(torch.arange(10), None, torch.device("cpu"))
    assert torch.equal(logits, again) and make().is_valid()
    assert not list(tmp_path.glob(".*building*"))


# --------------------------------------------------------------------- stale error.txt
def test_a_finished_run_carries_no_stale_error_file(tmp_path, monkeypatch):
    from kdlens.config import TrainConfig, validate
    from kdlens.train import trainer as trainer_mod
    from kdlens.train.run import run_training

    cfg = validate(TrainConfig, {"model": {"name": "baseline_student"}, "data": {"name": "digits"}, "epochs": 1,
                                 "out": str(tmp_path)})
    real_fit = trainer_mod.Trainer.fit

    def interrupted(self, resume=False):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer_mod.Trainer, "fit", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_training(cfg, resume=True, progress=False)
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert (run_dir / "error.txt").exists()
    monkeypatch.setattr(trainer_mod.Trainer, "fit", real_fit)
    outcome = run_training(cfg, resume=True, progress=False)
    assert outcome.path == run_dir and (run_dir / "result.json").exists()
    assert not (run_dir / "error.txt").exists()
