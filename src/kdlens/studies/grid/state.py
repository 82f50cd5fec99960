"""Where each task of a study stands: :class:`TaskState`, the study's task index
(``STUDY_DIR/tasks/runs.sqlite``), :func:`runner_alive` (the ``study.lock`` of a live run) and
:func:`task_states` (recorded status, with ``blocked`` and ``stale`` worked out)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdlens.store import RunIndex
from kdlens.studies.grid.study import Study, Task


@dataclass
class TaskState:
    task: Task
    status: str  # pending | running | done | failed | blocked | stale
    reason: str | None = None
    path: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    seconds: float | None = None
    attempts: int = 0


def task_index(study: Study) -> RunIndex:
    return RunIndex(study.directory / "tasks")


def runner_alive(directory: Path) -> bool:
    """Whether a `kdlens study run` holds this study (its lock names a live process)."""
    lock = directory / "study.lock"
    try:
        pid = int(lock.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def task_states(study: Study) -> list[TaskState]:
    """Every task with its recorded status; dependencies of failed tasks are ``blocked``,
    tasks recorded under another hash (the YAML changed) are ``stale`` (they will re-run)."""
    rows = {r.id: r for r in task_index(study).list()} if (study.directory / "tasks" / "runs.sqlite").exists() else {}
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
            if status == "running" and not alive:
                status, reason = "pending", "interrupted (will resume)"
            st = TaskState(t, status, reason, row.metrics.get("path"), row.metrics, row.metrics.get("task_seconds"),
                           row.attempts)
        if st.status in ("pending", "stale"):
            bad = [d for d in t.needs if states[d].status in ("failed", "blocked")]
            if bad:
                st.status, st.reason = "blocked", f"needs {bad[0]} ({states[bad[0]].status})"
        states[t.id] = st
    return [states[t.id] for t in study.tasks]
