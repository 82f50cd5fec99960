"""The SQLite run index (``runs.sqlite``): one row per run, safe under concurrent writers.

WAL journal mode lets readers proceed while one process writes; every write is a short
``BEGIN IMMEDIATE`` transaction retried on ``database is locked`` so several worker
processes can record runs at once without losing or duplicating rows.

A run started with ``owner=True`` records the process that trains it (``pid``, ``host``,
the process's start time) and a ``heartbeat`` it refreshes while training
(:class:`Heartbeat`).  A row still marked ``running`` whose process is gone — on this host
the pid is dead (or now another process), on another host no heartbeat for
:data:`STALE_AFTER_S` — is read back as ``interrupted`` (derived when read, never written,
so a read-only store shows it too).  Stores written before these columns existed are
migrated in place (``ALTER TABLE … ADD COLUMN``) when opened.
"""

from __future__ import annotations

import json
import os
import random
import socket
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STATUSES = ("running", "done", "failed", "interrupted")

#: a training process refreshes its row's heartbeat at least this often (every epoch too)
HEARTBEAT_EVERY_S = 30.0
#: a ``running`` row of another host whose heartbeat is older than this reads ``interrupted``
STALE_AFTER_S = 600.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id          TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    config_hash TEXT NOT NULL,
    status      TEXT NOT NULL,
    reason      TEXT,
    path        TEXT NOT NULL,
    metrics     TEXT NOT NULL DEFAULT '{}',
    created     REAL NOT NULL,
    updated     REAL NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS runs_hash ON runs(config_hash);
"""

#: columns added after the first schema: (name, SQL type); added to older stores when opened
_ADDED_COLUMNS = (
    ("pid", "INTEGER"),           # the training process (runs started with owner=True)
    ("host", "TEXT"),             # socket.gethostname() of that process
    ("pid_start", "INTEGER"),     # its start time (clock ticks after boot, Linux), against pid reuse
    ("heartbeat", "REAL"),        # time.time() of its last sign of life
    ("family_hash", "TEXT"),      # config hash without the epoch count (finds the run of other epochs)
)


@dataclass(frozen=True)
class RunRecord:
    id: str
    kind: str
    config_hash: str
    status: str
    reason: str | None
    path: str
    metrics: dict[str, Any]
    created: float
    updated: float
    attempts: int
    pid: int | None = None
    host: str | None = None
    heartbeat: float | None = None
    family_hash: str | None = None


def _process_start_ticks(pid: int) -> int | None:
    """The start time of process ``pid`` (clock ticks after boot, ``/proc/PID/stat`` field 22),
    or None where that cannot be read (not Linux, no such process)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def _process_alive(pid: int, start_ticks: int | None) -> bool:
    """Whether ``pid`` of this host is alive (not a zombie) and is still the process that
    started at ``start_ticks`` (when both are known)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        pass
    except OSError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state in ("Z", "X"):
            return False
    except (OSError, IndexError):
        pass
    now = _process_start_ticks(pid)
    return start_ticks is None or now is None or now == start_ticks


def owner_gone(rec_pid: int | None, rec_host: str | None, pid_start: int | None, heartbeat: float | None,
               now: float | None = None) -> str | None:
    """Why the process recorded for a ``running`` row is gone, or None when it may be alive
    (or no process was recorded)."""
    if rec_pid is None:
        return None
    now = time.time() if now is None else now
    seen = "" if heartbeat is None else f"; last heartbeat {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(heartbeat))}"
    if rec_host == socket.gethostname():
        if rec_pid == os.getpid() or _process_alive(rec_pid, pid_start):
            return None
        return f"process {rec_pid} on {rec_host} is gone{seen}"
    if heartbeat is not None and now - heartbeat > STALE_AFTER_S:
        return (f"no heartbeat from process {rec_pid} on {rec_host} for "
                f"{(now - heartbeat) / 60:.0f} min{seen}")
    return None


class Heartbeat:
    """``beat(force=False)``: refresh the row's heartbeat, at most every ``every_s`` seconds
    unless forced.  A busy or failing store never stops training (the beat is skipped)."""

    def __init__(self, index: RunIndex, run_id: str, every_s: float = HEARTBEAT_EVERY_S) -> None:
        self.index, self.run_id, self.every_s = index, run_id, every_s
        self._last = time.monotonic()

    def __call__(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.every_s:
            return
        self._last = now
        try:
            self.index.heartbeat(self.run_id)
        except sqlite3.Error:
            pass


#: the file name of a store's index: ``STORE/runs.sqlite`` (a study's tasks: ``STUDY/tasks/runs.sqlite``)
INDEX_FILE = "runs.sqlite"


class RunIndex:
    """Rows of runs under ``root/runs.sqlite``.

    ``readonly=True`` opens an existing index for reading only (SQLite ``mode=ro``): nothing is
    created or migrated (columns an older store lacks read as None), a missing index is a
    :class:`~kdlens.errors.KdlensError`, and every write raises one.  A store in a directory this
    process cannot write is read as it stands (``immutable=1``)."""

    def __init__(self, root: str | Path, timeout_s: float = 60.0, readonly: bool = False) -> None:
        self.root = Path(root)
        self.path = self.root / INDEX_FILE
        self.timeout_s = timeout_s
        self.readonly = readonly
        self._immutable = False
        if readonly:
            if not self.path.is_file():
                from kdlens.errors import KdlensError

                why = f"the directory has no {INDEX_FILE}" if self.root.is_dir() else "no such directory"
                raise KdlensError(f"no run store at {str(self.root)!r}: {why}")
            return
        self.root.mkdir(parents=True, exist_ok=True)
        self._write(self._create_or_migrate, schema=True)

    @staticmethod
    def _create_or_migrate(db: sqlite3.Connection) -> None:
        db.executescript(_SCHEMA)
        have = {row[1] for row in db.execute("PRAGMA table_info(runs)")}
        missing = [(name, kind) for name, kind in _ADDED_COLUMNS if name not in have]
        if not missing:
            return
        db.execute("BEGIN IMMEDIATE")  # one migrating process at a time; the others see the columns
        try:
            have = {row[1] for row in db.execute("PRAGMA table_info(runs)")}
            for name, kind in missing:
                if name not in have:
                    db.execute(f"ALTER TABLE runs ADD COLUMN {name} {kind}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _connect(self) -> sqlite3.Connection:
        if self.readonly:
            return self._connect_readonly()
        db = sqlite3.connect(self.path, timeout=self.timeout_s, isolation_level=None)
        db.execute("PRAGMA busy_timeout = %d" % int(self.timeout_s * 1000))
        return db

    def _connect_readonly(self) -> sqlite3.Connection:
        """``mode=ro``; where SQLite cannot even read the WAL that way (a directory this process
        may not write, no ``-shm`` file), the file as it stands (``immutable=1``: no locks)."""
        uri = self.path.resolve().as_uri()
        if not self._immutable:
            db = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=self.timeout_s, isolation_level=None)
            try:
                db.execute("PRAGMA busy_timeout = %d" % int(self.timeout_s * 1000))
                db.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
                return db
            except sqlite3.OperationalError as exc:
                db.close()
                if "readonly" not in str(exc) and "unable to open" not in str(exc):
                    raise
                self._immutable = True
        return sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True, isolation_level=None)

    def _write(self, action, schema: bool = False):
        if self.readonly:
            from kdlens.errors import KdlensError

            raise KdlensError(f"the run store {str(self.root)!r} was opened read-only")
        deadline = time.monotonic() + self.timeout_s
        while True:
            db = self._connect()
            try:
                if schema:
                    db.execute("PRAGMA journal_mode=WAL")
                    return action(db)
                db.execute("BEGIN IMMEDIATE")
                result = action(db)
                db.execute("COMMIT")
                return result
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if time.monotonic() > deadline:
                    raise
                time.sleep(random.uniform(0.01, 0.1))
            finally:
                db.close()

    def start(self, run_id: str, kind: str, config_hash: str, path: str | Path, *, owner: bool = False,
              family_hash: str | None = None) -> None:
        """Mark ``run_id`` running (a retried run keeps its row and counts the attempt).

        ``owner=True``: this process trains it — its pid, host and start time are recorded
        with a first heartbeat, so the row reads ``interrupted`` once the process is gone.
        ``family_hash``: the config hash without the epoch count (see :meth:`family`)."""
        now = time.time()
        pid, host, ticks, beat = (os.getpid(), socket.gethostname(), _process_start_ticks(os.getpid()), now) \
            if owner else (None, None, None, None)

        def action(db):
            db.execute(
                "INSERT INTO runs (id, kind, config_hash, status, path, created, updated, pid, host, pid_start, "
                "heartbeat, family_hash) VALUES (?, ?, ?, 'running', ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET status='running', reason=NULL, "
                "updated=excluded.updated, attempts=attempts+1, pid=excluded.pid, host=excluded.host, "
                "pid_start=excluded.pid_start, heartbeat=excluded.heartbeat, "
                "family_hash=COALESCE(excluded.family_hash, family_hash)",
                (run_id, kind, config_hash, str(path), now, now, pid, host, ticks, beat, family_hash),
            )

        self._write(action)

    def heartbeat(self, run_id: str) -> None:
        """Record that the process training ``run_id`` is alive now."""
        self._write(lambda db: db.execute("UPDATE runs SET heartbeat=? WHERE id=?", (time.time(), run_id)))

    def family(self, family_hash: str, kind: str) -> list[RunRecord]:
        """Runs of the same config except the epoch count (rows written before kdlens recorded
        the family have none and are not found)."""
        return self._select("WHERE family_hash=? AND kind=?", (family_hash, kind))

    def update_metrics(self, run_id: str, metrics: dict[str, Any]) -> None:
        def action(db):
            row = db.execute("SELECT metrics FROM runs WHERE id=?", (run_id,)).fetchone()
            merged = {**json.loads(row[0]), **metrics} if row else dict(metrics)
            db.execute(
                "UPDATE runs SET metrics=?, updated=? WHERE id=?",
                (json.dumps(merged, sort_keys=True), time.time(), run_id),
            )

        self._write(action)

    def finish(self, run_id: str, metrics: dict[str, Any] | None = None) -> None:
        if metrics:
            self.update_metrics(run_id, metrics)
        self._set_status(run_id, "done", None)

    def fail(self, run_id: str, reason: str) -> None:
        self._set_status(run_id, "failed", reason)

    def _set_status(self, run_id: str, status: str, reason: str | None) -> None:
        self._write(
            lambda db: db.execute(
                "UPDATE runs SET status=?, reason=?, updated=? WHERE id=?",
                (status, reason, time.time(), run_id),
            )
        )

    def get(self, run_id: str) -> RunRecord | None:
        rows = self._select("WHERE id=?", (run_id,))
        return rows[0] if rows else None

    def find_done(self, config_hash: str) -> RunRecord | None:
        rows = self._select("WHERE config_hash=? AND status='done'", (config_hash,))
        return rows[0] if rows else None

    def list(self, status: str | None = None) -> list[RunRecord]:
        """Rows in creation order; ``status`` as read back (``interrupted``: a ``running`` row
        whose process is gone)."""
        if status is None:
            return self._select("", ())
        stored = "running" if status == "interrupted" else status
        return [r for r in self._select("WHERE status=?", (stored,)) if r.status == status]

    def _select(self, where: str, params: tuple) -> list[RunRecord]:
        db = self._connect()
        db.row_factory = sqlite3.Row
        try:
            rows = db.execute(f"SELECT * FROM runs {where} ORDER BY created", params).fetchall()
        finally:
            db.close()
        return [_record(r) for r in rows]


def _record(r: sqlite3.Row) -> RunRecord:
    """A row as read back; columns an older store lacks read as None."""
    get = lambda key: r[key] if key in r.keys() else None  # noqa: E731
    status, reason = r["status"], r["reason"]
    if status == "running":
        gone = owner_gone(get("pid"), get("host"), get("pid_start"), get("heartbeat"))
        if gone is not None:
            status, reason = "interrupted", gone
    return RunRecord(r["id"], r["kind"], r["config_hash"], status, reason, r["path"], json.loads(r["metrics"]),
                     r["created"], r["updated"], r["attempts"], get("pid"), get("host"), get("heartbeat"),
                     get("family_hash"))
