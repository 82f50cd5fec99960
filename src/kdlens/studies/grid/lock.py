"""One runner per study: ``STUDY_DIR/study.lock``.

The runner holds an exclusive :func:`fcntl.flock` on the lock file for as long as it runs
and writes its process id, host and start time into it (``"PID HOST ISO-TIME"``).  The
kernel releases the lock when the process ends however it ends (``kill -9`` included), so a
lock left by a dead runner is stale and simply taken over; there is no pid-reuse guess.
Where the file system offers no ``flock`` the pid decides (alive on this host, or any pid on
another host, holds the study).

A second runner is refused with the holder named, or (``wait=True``) queues until the lock
is free.  :func:`runner_alive` lets `study status` tell running tasks from interrupted ones.
"""

from __future__ import annotations

import datetime
import errno
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kdlens.errors import KdlensError

LOCK_NAME = "study.lock"

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]


@dataclass(frozen=True)
class LockHolder:
    """The runner named in a lock file."""

    pid: int
    host: str
    since: str

    def describe(self) -> str:
        where = "this host" if self.host == socket.gethostname() else f"host {self.host}"
        since = f", since {self.since}" if self.since else ""
        return f"process {self.pid} on {where}{since}"

    def pid_alive(self) -> bool:
        """Whether the process named is alive (a pid on another host is assumed alive)."""
        if self.host and self.host != socket.gethostname():
            return True
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def read_holder(directory: str | Path) -> LockHolder | None:
    """The holder written in ``directory/study.lock`` (None: no file, empty or unreadable)."""
    try:
        parts = (Path(directory) / LOCK_NAME).read_text().split()
        return LockHolder(int(parts[0]), parts[1] if len(parts) > 1 else "", parts[2] if len(parts) > 2 else "")
    except (OSError, ValueError, IndexError):
        return None


def _flock_held(path: Path) -> bool | None:
    """True: some process holds ``path``'s flock; False: nobody does; None: cannot tell."""
    if fcntl is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        for _ in range(3):  # a runner that is just starting holds it for an instant
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            except OSError:
                return None
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        return True
    finally:
        os.close(fd)


def runner_alive(directory: str | Path) -> bool:
    """Whether a `kdlens study run` holds this study now."""
    path = Path(directory) / LOCK_NAME
    if not path.exists():
        return False
    held = _flock_held(path)
    if held is not None:
        return held
    holder = read_holder(directory)
    return holder is not None and holder.pid_alive()


class StudyLock:
    """The lock of one study directory, held by this process between :meth:`acquire` and
    :meth:`release` (also a context manager)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def _try(self) -> LockHolder | None:
        """Take the lock if free; else the holder (never None when refused)."""
        for _ in range(20):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                got = self._flock(fd)
            except BaseException:
                os.close(fd)
                raise
            if got is None:  # no flock here: the pid in the file decides
                os.close(fd)
                return self._try_by_pid()
            if not got:
                os.close(fd)
                holder = read_holder(self.directory)
                if holder is not None:
                    return holder
                time.sleep(0.05)  # held, but its holder has not written its name yet
                continue
            try:  # the file we locked must still be the one at the path (a releaser unlinks it)
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            self._fd = fd
            self._write_name(fd)
            return None
        holder = read_holder(self.directory)
        return holder or LockHolder(0, "", "")

    def _flock(self, fd: int) -> bool | None:
        if fcntl is None:
            return None
        for attempt in range(6):  # a `study status` testing the lock holds it for an instant
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if attempt == 5:
                    return False
                time.sleep(0.05)
            except OSError as exc:
                if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    return None
                raise
        return False

    def _try_by_pid(self) -> LockHolder | None:
        holder = read_holder(self.directory)
        if holder is not None and holder.pid != os.getpid() and holder.pid_alive():
            return holder
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        self._fd = fd
        self._write_name(fd)
        return None

    @staticmethod
    def _write_name(fd: int) -> None:
        since = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()} {since}\n".encode(), 0)

    def acquire(self, wait: bool = False, poll_s: float = 0.5,
                on_wait: Callable[[LockHolder], None] | None = None) -> None:
        """Hold the study; refused (:class:`KdlensError`, exit 2) while another runner holds it,
        unless ``wait``: then poll until it is free (``on_wait(holder)`` once, at the start)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        told = False
        while True:
            holder = self._try()
            if holder is None:
                return
            if not wait:
                raise KdlensError(
                    f"study {str(self.directory)!r} is being run by {holder.describe()} (see {self.path}); "
                    f"a second runner would redo its tasks. Wait for it with --wait, stop it with "
                    f"`kill -TERM {holder.pid}` (it saves its work), or follow it with "
                    f"`kdlens study status {self.directory}`"
                )
            if not told and on_wait is not None:
                on_wait(holder)
            told = True
            time.sleep(poll_s)

    def release(self) -> None:
        """Remove the lock file and let go (unlinked first, so a waiter re-checks the path)."""
        if self._fd is None:
            return
        try:
            if os.stat(self.path).st_ino == os.fstat(self._fd).st_ino:
                self.path.unlink()
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> StudyLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
