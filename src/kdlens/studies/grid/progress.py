"""The display of a running study: :class:`StudyProgress`, a live table (per group done /
running / failed / blocked / pending, the tasks in flight, recent failures, an ETA) or, off a
terminal, one line per finished task and a status line at least every
:data:`~kdlens.train.progress.PLAIN_EVERY_S` seconds while tasks run (never silent longer)."""

from __future__ import annotations

import time
from typing import Any

from kdlens.studies.grid.state import TaskState
from kdlens.studies.grid.study import Study


class StudyProgress:
    """Live table of a running study: per group done / running / failed / blocked / pending,
    the tasks in flight, the latest failures with their reasons, and an ETA.

    On a terminal it is a :class:`rich.live.Live` display; otherwise one line per finished
    or failed task, a status line (tasks done, those running and for how long, ETA) at least
    every ``every_s`` seconds, and the table at the end.
    """

    def __init__(self, study: Study, states: dict[str, TaskState], workers: int, enabled: bool = True,
                 console: Any = None, every_s: float | None = None) -> None:
        import sys

        from rich.console import Console

        from kdlens.train.progress import PLAIN_EVERY_S

        self.study = study
        self.states = states
        self.workers = workers
        self.enabled = enabled
        self.console = console or Console(file=sys.stderr)
        self.t0 = time.time()
        self.durations: dict[str, list[float]] = {}
        self.started: dict[str, float] = {}
        self._live = None
        self.every_s = PLAIN_EVERY_S if every_s is None else float(every_s)
        self._last_line = time.time()

    def __enter__(self) -> StudyProgress:
        if self.enabled and self.console.is_terminal:
            from rich.live import Live

            self._live = Live(self.render(), console=self.console, refresh_per_second=2, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._live is not None:
            self._live.update(self.render())
            self._live.__exit__(*exc)
        elif self.enabled and exc[0] is None:  # interrupted: the runner says what it saved, in one line
            self.console.print(self.render())

    def event(self, event: str, st: TaskState) -> None:
        if event == "start":
            self.started[st.task.id] = time.time()
            return
        if event == "done" and st.seconds is not None:
            self.durations.setdefault(st.task.kind, []).append(st.seconds)
        if self.enabled and self._live is None:
            acc, acc5 = st.metrics.get("final_acc"), st.metrics.get("final_acc5")
            extra = f" · acc {acc:.2f}%" if isinstance(acc, (int, float)) else ""
            extra += f" (top-5 {acc5:.2f}%)" if extra and isinstance(acc5, (int, float)) else ""
            secs = f" · {st.seconds:.1f} s" if st.seconds is not None else ""
            reason = f": {st.reason}" if event != "done" and st.reason else ""
            self.console.print(f"{event:>7} {st.task.id}{secs}{extra}{reason}", highlight=False, markup=False)
            self._last_line = time.time()
        self.refresh()

    def refresh(self) -> None:
        if self._live is not None:
            self._live.update(self.render())
        elif self.enabled and time.time() - self._last_line >= self.every_s:
            self.console.print(self.status_line(), highlight=False, markup=False)
            self._last_line = time.time()

    def status_line(self) -> str:
        """One plain line: tasks done of all, the running ones with their time so far, the ETA."""
        now = time.time()
        done = sum(st.status == "done" for st in self.states.values())
        running = [f"{st.task.id} ({_hms(now - self.started.get(st.task.id, now))})"
                   for st in self.states.values() if st.status == "running"]
        eta = self.eta_seconds()
        return (f"study {self.study.name}: {done}/{len(self.states)} tasks done · "
                f"running {', '.join(running) if running else 'none'} · elapsed {_hms(now - self.t0)} · "
                f"ETA {'—' if eta is None else _hms(eta)}")

    def eta_seconds(self) -> float | None:
        """Seconds left: each pending or running task's expected duration (the mean of finished
        tasks of its kind, else of all) less what a running one has used, over the workers.
        None (unknown) before any task finished, or once a running task has outlasted its
        estimate — then no honest figure is left (never a stale ``0:00``)."""
        every = [d for ds in self.durations.values() for d in ds]
        if not every:
            return None
        overall = sum(every) / len(every)
        now = time.time()
        total = 0.0
        for st in self.states.values():
            if st.status not in ("pending", "running"):
                continue
            ds = self.durations.get(st.task.kind)
            est = sum(ds) / len(ds) if ds else overall
            if st.status == "running":
                used = now - self.started.get(st.task.id, now)
                if used > est:
                    return None
                est -= used
            total += est
        return total / max(1, self.workers)

    def render(self) -> Any:
        from rich.console import Group
        from rich.markup import escape
        from rich.table import Table

        statuses = ("done", "running", "failed", "blocked", "pending")
        table = Table(title=escape(f"study {self.study.name} ({self.study.scale}) · {self.study.directory}"),
                      title_justify="left")
        table.add_column("group")
        table.add_column("kind")
        for s in statuses:
            table.add_column(s, justify="right")
        totals = dict.fromkeys(statuses, 0)
        for group in self.study.spec.groups:
            counts = dict.fromkeys(statuses, 0)
            for st in self.states.values():
                if st.task.group == group:
                    key = st.status if st.status in counts else "pending"
                    counts[key] += 1
                    totals[key] += 1
            table.add_row(group, self.study.spec.groups[group].kind, *(str(counts[s]) for s in statuses))
        table.add_row("[bold]all", "", *(f"[bold]{totals[s]}" for s in statuses))
        eta = self.eta_seconds()
        elapsed = time.time() - self.t0
        lines = [f"elapsed {_hms(elapsed)} · ETA {'—' if eta is None else _hms(eta)} · workers {self.workers}"]
        now = time.time()
        for st in self.states.values():
            if st.status == "running":
                lines.append(f"  running {escape(st.task.id)} ({_hms(now - self.started.get(st.task.id, now))})")
        failed = [st for st in self.states.values() if st.status == "failed"]
        for st in failed[-5:]:
            lines.append(f"  [red]failed[/] {escape(st.task.id)}: {escape(str(st.reason))}")
        return Group(table, *lines)


def _hms(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
