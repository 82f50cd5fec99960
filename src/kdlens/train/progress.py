"""A rich progress bar for training: epoch, loss, accuracy, images/s, ETA."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class TrainingProgress:
    """Context manager wrapping :class:`rich.progress.Progress`; a no-op when disabled."""

    def __init__(self, description: str, total_steps: int, enabled: bool = True) -> None:
        self.enabled = enabled
        self.description = description
        self.total_steps = total_steps
        self._progress: Progress | None = None
        self._task = None

    def __enter__(self) -> TrainingProgress:
        if self.enabled:
            console = Console(file=sys.stderr)
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[status]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=console,
                transient=False,
            )
            self._progress.__enter__()
            self._task = self._progress.add_task(self.description, total=self.total_steps, status="")
        return self

    def advance(self, steps: int = 1, **fields: float | str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, advance=steps, status=_format(fields))

    def update(self, completed: int, **fields: float | str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=completed, status=_format(fields))

    def log(self, message: str) -> None:
        if self._progress is not None:
            self._progress.console.print(message, highlight=False)

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)


def _format(fields: dict[str, float | str]) -> str:
    parts = []
    for key, value in fields.items():
        parts.append(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}")
    return " · ".join(parts)
