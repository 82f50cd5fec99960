"""Stopping a study cleanly: SIGTERM and SIGHUP are handled like Ctrl-C.

:func:`stop_signals` turns the first SIGINT, SIGTERM or SIGHUP that reaches the runner into a
``KeyboardInterrupt`` in its main thread (and remembers which signal it was); later ones are
ignored while the runner stops its workers and records what it saved, which takes a bounded
time.  :class:`StudyInterrupted` is what :func:`~kdlens.studies.grid.run.run_study` raises then:
still a ``KeyboardInterrupt`` for Python callers, carrying the one-line account for the CLI
and the exit status of the signal (130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

STOP_SIGNALS = tuple(s for s in (getattr(signal, n, None) for n in ("SIGINT", "SIGTERM", "SIGHUP")) if s is not None)


def signal_name(signum: int | None) -> str:
    if signum == signal.SIGINT:
        return "Ctrl-C (SIGINT)"
    try:
        return signal.Signals(signum).name if signum is not None else "an interrupt"
    except ValueError:
        return f"signal {signum}"


class StudyInterrupted(KeyboardInterrupt):
    """A study stopped by a signal: ``message`` says what was saved; ``exit_code`` is 128 + signal."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum = signum
        self.message = message

    @property
    def exit_code(self) -> int:
        return 128 + int(self.signum)

    def __str__(self) -> str:
        return self.message


class _Caught:
    signum: int | None = None


@contextmanager
def stop_signals() -> Iterator[_Caught]:
    """Within the block, SIGINT / SIGTERM / SIGHUP raise ``KeyboardInterrupt`` (first one only);
    ``caught.signum`` tells which.  Outside the main thread it changes nothing."""
    caught = _Caught()
    if threading.current_thread() is not threading.main_thread():
        yield caught
        return

    def handler(signum: int, frame: object) -> None:
        if caught.signum is None:
            caught.signum = signum
            raise KeyboardInterrupt
        # a second signal while stopping: the stop is already bounded in time

    previous = {}
    for s in STOP_SIGNALS:
        if signal.getsignal(s) is signal.SIG_IGN:
            continue  # `nohup` (SIGHUP) or a background job (SIGINT) asked for it to be ignored
        try:
            previous[s] = signal.signal(s, handler)
        except (ValueError, OSError):  # pragma: no cover - not settable here
            pass
    try:
        yield caught
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
