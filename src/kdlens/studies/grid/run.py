"""Running a study: :func:`run_study` executes every task not yet done, dependencies first,
on a local or Ray executor, records each outcome in the task index and returns a
:class:`StudySummary`; :func:`status_rows` and :func:`iter_done` read a study's tasks back."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdlens.errors import KdlensError
from kdlens.studies.grid.expand import substitute
from kdlens.studies.grid.progress import StudyProgress
from kdlens.studies.grid.state import TaskState, runner_alive, task_index, task_states
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
) -> StudySummary:
    """Run every task not yet done, dependencies first, ``workers`` at a time.

    A failing task (an exception, a diverging loss) is recorded failed with its reason and
    the tasks needing it are blocked; the others go on.  Failed tasks of an earlier run are
    retried only with ``retry_failed``; interrupted ones always resume.
    """
    from kdlens.studies.executors import make_executor

    if workers is not None and workers < 1:
        raise KdlensError(f"--workers must be ≥ 1; got {workers}")
    cores = os.cpu_count() or 1
    workers = workers or cores
    make_executor(executor, workers=workers, address=address, check_only=True)
    study.directory.mkdir(parents=True, exist_ok=True)
    lock = study.directory / "study.lock"
    if runner_alive(study.directory) and int(lock.read_text().split()[0]) != os.getpid():
        raise KdlensError(f"study {str(study.directory)!r} is being run by process {lock.read_text().split()[0]}; "
                          "wait for it or stop it first (`kdlens study status` shows its progress; if no such "
                          f"run is going on, delete {lock})")
    lock.write_text(f"{os.getpid()}\n")
    study.write_plan()
    index = task_index(study)
    states = {s.task.id: s for s in task_states(study)}
    skipped = 0
    for st in states.values():
        if st.status == "done" and not _output_exists(st):
            st.status, st.reason = "pending", "output missing"
        if st.status == "done":
            skipped += 1
        elif st.status in ("stale", "running"):
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
    t0 = time.time()
    display = StudyProgress(study, states, workers, enabled=progress, console=console)

    def emit(event: str, st: TaskState) -> None:
        display.event(event, st)
        if on_event is not None:
            on_event(event, st)

    def cache_key(t: Task) -> tuple[str, tuple[str, ...]]:
        return (t.group, tuple(t.needs))

    interrupted = False
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
                    index.update_metrics(t.id, {"task_hash": t.hash})
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
                    st = states[tid]
                    seconds = time.time() - started[tid]
                    try:
                        result = future.result()
                    except BaseException as exc:  # a worker that died (killed, out of memory)
                        result = {"status": "failed", "reason": f"worker died: {type(exc).__name__}: {exc}"}
                    st.seconds = seconds
                    ran += 1
                    if result.get("status") == "done":
                        st.status, st.path = "done", result["path"]
                        st.metrics = {**result.get("metrics", {}), "task_seconds": round(seconds, 3),
                                      "path": st.path}
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
                display.refresh()
    except KeyboardInterrupt:
        interrupted = True  # tasks in flight stay "running": the next `study run` resumes them
        raise
    finally:
        if pool is not None:
            pool.shutdown(wait=not interrupted)
        if lock.exists() and lock.read_text().split()[:1] == [str(os.getpid())]:
            lock.unlink()
    counts = {s: sum(1 for st in states.values() if st.status == s) for s in ("done", "failed", "blocked")}
    return StudySummary(study.directory, counts["done"], counts["failed"], counts["blocked"], skipped, ran,
                        time.time() - t0)


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
