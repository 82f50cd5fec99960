"""Progress of long work: a rich bar on a terminal, plain lines elsewhere.

On a terminal: description, bar, steps done/total, the *phase* (training, evaluating,
building the teacher cache), loss/accuracy/img/s, elapsed time and ETA.  Without a terminal
(CI logs, ``nohup``, a pipe) rich would print nothing until the end, so a plain line is
written instead whenever at least :data:`PLAIN_EVERY_S` seconds of work have passed, and on
every phase change: a long job is never silent for more than that.
"""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

#: seconds between plain progress lines when stderr is not a terminal
PLAIN_EVERY_S = 10.0


class TrainingProgress:
    """Context manager showing progress (see the module docstring); a no-op when disabled."""

    def __init__(self, description: str, total_steps: int, enabled: bool = True, phase: str = "training",
                 stream=None) -> None:
        self.enabled = enabled
        self.description = description
        self.total_steps = total_steps
        self.phase_name = phase
        self.stream = stream if stream is not None else sys.stderr
        self.plain = enabled and not _is_terminal(self.stream)
        self._progress: Progress | None = None
        self._task = None
        self._completed = 0
        self._status = ""
        self._start = time.monotonic()
        self._last_line = float("-inf")

    def __enter__(self) -> TrainingProgress:
        self._start = time.monotonic()
        if self.enabled and not self.plain:
            console = Console(file=self.stream)
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[phase]}"),
                TextColumn("{task.fields[status]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=console,
                transient=False,
            )
            self._progress.__enter__()
            self._task = self._progress.add_task(self.description, total=self.total_steps, status="",
                                                 phase=self.phase_name)
        elif self.plain:
            self._line(force=True)
        return self

    # -- updates ---------------------------------------------------------------------
    def advance(self, steps: int = 1, **fields: float | str) -> None:
        self._completed += steps
        self._refresh(fields)

    def update(self, completed: int, **fields: float | str) -> None:
        self._completed = completed
        self._refresh(fields)

    def phase(self, name: str) -> None:
        """Name what is happening now (shown in the bar; a plain line at once)."""
        if name == self.phase_name:
            return
        self.phase_name = name
        if self._progress is not None:
            self._progress.update(self._task, phase=name)
        self._line(force=True)

    def tick(self) -> None:
        """Work went on without a step (e.g. an evaluation batch): keep the display alive."""
        if self._progress is not None:
            self._progress.refresh()
        self._line()

    def log(self, message: str) -> None:
        if self._progress is not None:
            self._progress.console.print(message, highlight=False)
        elif self.plain:
            print(message, file=self.stream, flush=True)

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)
        elif self.plain and exc[0] is None:
            self._line(force=True, done=True)

    # -- internals -------------------------------------------------------------------
    def _refresh(self, fields: dict[str, float | str]) -> None:
        if fields:
            self._status = _format(fields)
        if self._progress is not None:
            self._progress.update(self._task, completed=self._completed, status=self._status)
        self._line()

    def _line(self, force: bool = False, done: bool = False) -> None:
        if not self.plain:
            return
        now = time.monotonic()
        if not force and now - self._last_line < PLAIN_EVERY_S:
            return
        self._last_line = now
        print(plain_line(self.description, self._completed, self.total_steps, "done" if done else self.phase_name,
                         self._status, now - self._start), file=self.stream, flush=True)


def plain_line(description: str, done: int, total: int, phase: str, status: str, elapsed: float) -> str:
    """``desc: 12/40 steps (30%) · training · loss 0.41 · 0:00:12 elapsed, ETA 0:00:28``."""
    share = done / total if total else 0.0
    eta = elapsed / share - elapsed if 0 < share < 1 else 0.0
    parts = [f"{description}: {done}/{total} steps ({100 * share:.0f}%)", phase]
    if status:
        parts.append(status)
    parts.append(f"{_clock(elapsed)} elapsed, ETA {_clock(eta)}")
    return " · ".join(parts)


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _format(fields: dict[str, float | str]) -> str:
    parts = []
    for key, value in fields.items():
        parts.append(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}")
    return " · ".join(parts)
