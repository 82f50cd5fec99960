"""Running a study: :func:`run_study` executes every task not yet done, dependencies first,
on a local or Ray executor, records each outcome in the task index and returns a
:class:`StudySummary`; :func:`status_rows` and :func:`iter_done` read a study's tasks back."""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdlens.errors import KdlensError
from kdlens.studies.grid.expand import substitute
from kdlens.studies.grid.interrupt import StudyInterrupted, signal_name, stop_signals
from kdlens.studies.grid.lock import LockHolder, StudyLock, read_holder
from kdlens.studies.grid.progress import StudyProgress
from kdlens.studies.grid.state import TaskState, task_index, task_states
from kdlens.studies.grid.study import Study, Task


@dataclass
class StudySummary:
    directory: Path
    done: int
    failed: int
    blocked: int
    skipped: int
    ran: int
    seconds: float

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.blocked == 0


def _payload(study: Study, task: Task, states: dict[str, TaskState], threads: int | None) -> dict[str, Any]:
    deps = [states[d] for d in task.needs]
    paths: dict[str, str] = {}
    for d in deps:
        paths.setdefault(d.task.group, str(d.path))
    config = substitute(task.config, paths)
    return {
        "id": task.id, "group": task.group, "kind": task.kind, "levels": task.levels, "config": config,
        "study_dir": str(study.directory.resolve()), "threads": threads,
        "deps": [{"id": d.task.id, "group": d.task.group, "kind": d.task.kind, "levels": d.task.levels,
                  "path": d.path, "metrics": d.metrics} for d in deps],
    }


def _output_exists(st: TaskState) -> bool:
    return st.path is not None and Path(st.path).exists()


def run_study(
    study: Study,
    workers: int | None = None,
    executor: str = "local",
    address: str | None = None,
    retry_failed: bool = False,
    progress: bool = True,
    console: Any = None,
    on_event: Callable[[str, TaskState], None] | None = None,
    wait: bool = False,
    on_wait: Callable[[LockHolder], None] | None = None,
) -> StudySummary:
    """Run every task not yet done, dependencies first, ``workers`` at a time.

    A failing task (an exception, a diverging loss) is recorded failed with its reason and
    the tasks needing it are blocked; the others go on.  Failed tasks of an earlier run are
    retried only with ``retry_failed``; interrupted ones always resume.

    One runner per study (:class:`~kdlens.studies.grid.lock.StudyLock`): another runner's study
    is refused (:class:`KdlensError`) or, with ``wait``, waited for (``on_wait(holder)`` once).
    Ctrl-C, SIGTERM and SIGHUP stop the workers within about a second, mark the tasks in flight
    interrupted and raise :class:`~kdlens.studies.grid.interrupt.StudyInterrupted` (a
    ``KeyboardInterrupt``) whose message says what was saved.
    """
    from kdlens.studies.executors import make_executor

    if workers is not None and workers < 1:
        raise KdlensError(f"--workers must be ≥ 1; got {workers}")
    cores = os.cpu_count() or 1
    workers = workers or cores
    make_executor(executor, workers=workers, address=address, check_only=True)
    lock = StudyLock(study.directory)
    with stop_signals() as caught:
        try:
            lock.acquire(wait=wait, on_wait=on_wait)
            return _run_locked(study, workers, cores, executor, address, retry_failed, progress, console, on_event,
                               caught)
        except KeyboardInterrupt as exc:
            if isinstance(exc, StudyInterrupted):
                raise
            holder = None if lock.held else read_holder(study.directory)
            when = f" while waiting for {holder.describe()}" if holder else " before any task started"
            raise StudyInterrupted(caught.signum or signal.SIGINT,
                                   f"interrupted by {signal_name(caught.signum)}{when}: nothing was run") from None
        finally:
            lock.release()


def _run_locked(study: Study, workers: int, cores: int, executor: str, address: str | None, retry_failed: bool,
                progress: bool, console: Any, on_event: Callable[[str, TaskState], None] | None,
                caught: Any) -> StudySummary:
    from kdlens.studies.executors import make_executor

    t0 = time.time()
    study.write_plan()
    index = task_index(study)
    states = {s.task.id: s for s in task_states(study)}
    skipped = 0
    for st in states.values():
        if st.status == "done" and not _output_exists(st):
            st.status, st.reason = "pending", "output missing"
        if st.status == "done":
            skipped += 1
        elif st.status in ("stale", "running", "interrupted"):
            st.status = "pending"
        elif st.status == "failed" and retry_failed:
            st.status = "pending"
        elif st.status == "blocked":
            st.status = "pending"  # re-evaluated below against this session's outcomes
    threads = max(1, cores // workers) if workers > 1 or executor != "local" else None
    pool: Any = None  # started at the first task to run: a finished study starts no worker
    inflight: dict[Any, str] = {}
    started: dict[str, float] = {}
    warming: set[tuple[str, tuple[str, ...]]] = set()
    warmed: set[tuple[str, tuple[str, ...]]] = set()
    ran = 0
    display = StudyProgress(study, states, workers, enabled=progress, console=console)

    def emit(event: str, st: TaskState) -> None:
        display.event(event, st)
        if on_event is not None:
            on_event(event, st)

    def cache_key(t: Task) -> tuple[str, tuple[str, ...]]:
        return (t.group, tuple(t.needs))

    def record(tid: str, result: dict[str, Any]) -> None:
        nonlocal ran
        st = states[tid]
        seconds = time.time() - started[tid]
        st.seconds = seconds
        ran += 1
        if result.get("status") == "done":
            st.status, st.path = "done", result["path"]
            st.metrics = {**result.get("metrics", {}), "task_seconds": round(seconds, 3), "path": st.path}
            index.finish(tid, st.metrics)
            warmed.add(cache_key(st.task))
            emit("done", st)
        else:
            st.status, st.reason = "failed", str(result.get("reason", "unknown error"))
            st.path = result.get("path")
            index.update_metrics(tid, {"task_seconds": round(seconds, 3), "path": st.path})
            index.fail(tid, st.reason[:2000])
            warmed.add(cache_key(st.task))
            emit("failed", st)

    try:
        with display:
            while True:
                # dependencies that failed block their dependants
                for tid in list(states):
                    st = states[tid]
                    if st.status == "pending":
                        bad = [d for d in st.task.needs if states[d].status in ("failed", "blocked")]
                        if bad:
                            st.status, st.reason = "blocked", f"needs {bad[0]} ({states[bad[0]].status})"
                            emit("blocked", st)
                ready = [s for s in states.values() if s.status == "pending"
                         and all(states[d].status == "done" for d in s.task.needs)]
                for st in ready:
                    if len(inflight) >= workers:
                        break
                    t = st.task
                    key = cache_key(t)
                    if t.kind == "distill" and key in warming and key not in warmed:
                        continue  # the first student of a teacher builds the shared teacher-output cache
                    payload = _payload(study, t, states, threads)
                    index.start(t.id, t.kind, t.hash, payload["study_dir"])
                    index.update_metrics(t.id, {"task_hash": t.hash, "interrupted": None})
                    st.status, st.reason, st.attempts = "running", None, st.attempts + 1
                    started[t.id] = time.time()
                    if pool is None:
                        pool = make_executor(executor, workers=workers, address=address, threads=threads)
                    future = pool.submit(payload)
                    inflight[future] = t.id
                    if t.kind == "distill":
                        warming.add(key)
                    emit("start", st)
                if not inflight:
                    break
                for future in pool.wait(list(inflight), timeout=0.5):
                    tid = inflight.pop(future)
                    try:
                        result = future.result()
                    except BaseException as exc:  # a worker that died (killed, out of memory)
                        result = {"status": "failed", "reason": f"worker died: {type(exc).__name__}: {exc}"}
                    record(tid, result)
                display.refresh()
    except KeyboardInterrupt:
        signum = caught.signum or signal.SIGINT
        if pool is not None:
            try:
                pool.stop(grace_s=STOP_GRACE_S)
            except Exception:  # noqa: BLE001 - still record what was saved
                pass
        stopped = []
        for future, tid in inflight.items():
            result = None
            if future.done() and not future.cancelled() and future.exception(timeout=0) is None:
                result = future.result(timeout=0)
            if result is not None:  # it finished just before the stop: keep what it did
                record(tid, result)
                continue
            st = states[tid]
            when = time.strftime("%Y-%m-%d %H:%M:%S")
            st.status, st.reason = "interrupted", f"stopped by {signal_name(signum)} at {when}"
            index.update_metrics(tid, {"interrupted": st.reason})
            stopped.append(st)
        raise StudyInterrupted(signum, _interrupted_line(study, states, stopped, signum, time.time() - t0)) from None
    finally:
        if pool is not None:
            pool.shutdown(wait=caught.signum is None)
    counts = {s: sum(1 for st in states.values() if st.status == s) for s in ("done", "failed", "blocked")}
    return StudySummary(study.directory, counts["done"], counts["failed"], counts["blocked"], skipped, ran,
                        time.time() - t0)


STOP_GRACE_S = 1.0  # how long tasks in flight get to record their interruption before they are killed


def _interrupted_line(study: Study, states: dict[str, TaskState], stopped: list[TaskState], signum: int,
                      seconds: float) -> str:
    """One line: what an interrupted study kept, what it stopped, what it had not started."""
    done = sum(1 for st in states.values() if st.status == "done")
    waiting = sum(1 for st in states.values() if st.status in ("pending", "blocked"))
    parts = [f"interrupted by {signal_name(signum)} after {seconds:.1f} s: {done}/{len(states)} tasks done and kept"]
    if stopped:
        saved = []
        for st in stopped[:4]:
            ckpt = _checkpoint_of(study, st.task)
            saved.append(f"{st.task.id} ({'checkpoint kept' if ckpt else 'no checkpoint yet'})")
        more = f" and {len(stopped) - 4} more" if len(stopped) > 4 else ""
        parts.append(f"{len(stopped)} stopped in flight and marked interrupted: {', '.join(saved)}{more}")
    if waiting:
        parts.append(f"{waiting} not started")
    return "; ".join(parts) + f" — run the study again to resume ({study.directory})"


def _checkpoint_of(study: Study, task: Task) -> Path | None:
    """The ``last.pt`` of a run task's newest run directory (``STUDY_DIR/TASK-DIGEST``), if any."""
    if not task.is_run:
        return None
    pattern = re.compile(re.escape(task.id) + r"-[0-9a-f]{10}")
    found = [p / "checkpoints" / "last.pt" for p in study.directory.glob(f"{task.id}-*")
             if pattern.fullmatch(p.name) and (p / "checkpoints" / "last.pt").exists()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def status_rows(study: Study) -> list[dict[str, Any]]:
    """One row per task for `kdlens study status` and the report."""
    rows = []
    for st in task_states(study):
        m = st.metrics
        rows.append({
            "task": st.task.id, "group": st.task.group, "kind": st.task.kind, "status": st.status,
            "levels": st.task.levels, "final_acc": m.get("final_acc"),
            "final_acc5": m.get("final_acc5"), "seconds": m.get("task_seconds"),
            "reason": st.reason or "", "path": st.path,
        })
    return rows


def iter_done(study: Study, group: str | Iterable[str]) -> list[TaskState]:
    groups = {group} if isinstance(group, str) else set(group)
    return [s for s in task_states(study) if s.task.group in groups and s.status == "done"]
