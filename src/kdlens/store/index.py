"""The SQLite run index (``runs.sqlite``): one row per run, safe under concurrent writers.

WAL journal mode lets readers proceed while one process writes; every write is a short
``BEGIN IMMEDIATE`` transaction retried on ``database is locked`` so several worker
processes can record runs at once without losing or duplicating rows.
"""

from __future__ import annotations

import json
import random
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STATUSES = ("running", "done", "failed")

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


class RunIndex:
    """Rows of runs under ``root/runs.sqlite``."""

    def __init__(self, root: str | Path, timeout_s: float = 60.0) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.path = self.root / "runs.sqlite"
        self.timeout_s = timeout_s
        self._write(lambda db: db.executescript(_SCHEMA), schema=True)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=self.timeout_s, isolation_level=None)
        db.execute("PRAGMA busy_timeout = %d" % int(self.timeout_s * 1000))
        return db

    def _write(self, action, schema: bool = False):
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

    def start(self, run_id: str, kind: str, config_hash: str, path: str | Path) -> None:
        """Mark ``run_id`` running (a retried run keeps its row and counts the attempt)."""
        now = time.time()

        def action(db):
            db.execute(
                "INSERT INTO runs (id, kind, config_hash, status, path, created, updated) "
                "VALUES (?, ?, ?, 'running', ?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET status='running', reason=NULL, "
                "updated=excluded.updated, attempts=attempts+1",
                (run_id, kind, config_hash, str(path), now, now),
            )

        self._write(action)

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
        if status is None:
            return self._select("", ())
        return self._select("WHERE status=?", (status,))

    def _select(self, where: str, params: tuple) -> list[RunRecord]:
        db = self._connect()
        try:
            rows = db.execute(
                "SELECT id, kind, config_hash, status, reason, path, metrics, created, updated, "
                f"attempts FROM runs {where} ORDER BY created",
                params,
            ).fetchall()
        finally:
            db.close()
        return [
            RunRecord(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6]), r[7], r[8], r[9])
            for r in rows
        ]
