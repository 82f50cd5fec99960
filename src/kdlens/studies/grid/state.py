"""Where each task of a study stands: :class:`TaskState`, the study's task index
(``STUDY_DIR/tasks/runs.sqlite``) and :func:`task_states` (recorded status, with ``blocked``,
``stale`` and ``interrupted`` worked out; :func:`~kdlens.studies.grid.lock.runner_alive` tells
a task in flight from one whose runner was stopped)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kdlens.store import RunIndex
from kdlens.studies.grid.lock import runner_alive
from kdlens.studies.grid.study import Study, Task


@dataclass
class TaskState:
    task: Task
    status: str  # pending | running | interrupted | done | failed | blocked | stale
    reason: str | None = None
    path: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    seconds: float | None = None
    attempts: int = 0


def task_index(study: Study, readonly: bool = False) -> RunIndex:
    """The study's task index; ``readonly`` for listing (works on a store one cannot write)."""
    return RunIndex(study.directory / "tasks", readonly=readonly)


def task_states(study: Study) -> list[TaskState]:
    """Every task with its recorded status; dependencies of failed tasks are ``blocked``,
    tasks recorded under another hash (the YAML changed) are ``stale`` (they will re-run)."""
    rows = {r.id: r for r in task_index(study, readonly=True).list()} if (study.directory / "tasks" / "runs.sqlite").exists() else {}
    alive = runner_alive(study.directory)
    states: dict[str, TaskState] = {}
    for t in study.tasks:
        row = rows.get(t.id)
        if row is None:
            st = TaskState(t, "pending")
        elif row.metrics.get("task_hash", row.config_hash) != t.hash:  # the row keeps its first hash
            st = TaskState(t, "stale", "its config changed since it ran", row.metrics.get("path"), row.metrics,
                           attempts=row.attempts)
        else:
            status = row.status
            reason = row.reason
            marker = row.metrics.get("interrupted")  # written by a runner that was stopped
            if status == "interrupted" or (status == "running" and (marker or not alive)):
                status = "interrupted"
                reason = (marker or reason or "its runner stopped without a word (killed?)") \
                    + "; resumes on the next run"
            st = TaskState(t, status, reason, row.metrics.get("path"), row.metrics, row.metrics.get("task_seconds"),
                           row.attempts)
        if st.status in ("pending", "stale"):
            bad = [d for d in t.needs if states[d].status in ("failed", "blocked")]
            if bad:
                st.status, st.reason = "blocked", f"needs {bad[0]} ({states[bad[0]].status})"
        states[t.id] = st
    return [states[t.id] for t in study.tasks]
