"""What ``kdlens runs`` lists: the rows of a run store — and, with ``recursive``, of the stores
nested under it (a study directory is a store of its own) — with what each run trained
(model, dataset, method, read from its ``config.yaml``), its accuracy and its date.

Stores are opened read-only (:class:`~kdlens.store.index.RunIndex` ``readonly=True``):
listing never creates or migrates a store.  No torch here: ``kdlens runs`` starts fast.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdlens.errors import KdlensError
from kdlens.store.index import INDEX_FILE, RunIndex, RunRecord

#: the columns of :func:`list_runs` rows, in order (``kdlens runs`` shows them; ``--format tsv`` too)
COLUMNS = ("path", "model", "dataset", "method", "top-1", "top-5", "date", "status")


@dataclass(frozen=True)
class RunRow:
    """One run as ``kdlens runs`` lists it."""

    path: str
    model: str
    dataset: str
    method: str
    top1: float | None
    top5: float | None
    created: float
    status: str
    reason: str | None
    record: RunRecord

    @property
    def date(self) -> str:
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(self.created))

    def cells(self) -> tuple[str, ...]:
        """The row as text, in :data:`COLUMNS` order."""
        acc = lambda v: "" if v is None else f"{v:.2f}"  # noqa: E731
        return (self.path, self.model, self.dataset, self.method, acc(self.top1), acc(self.top5), self.date,
                self.status)


def _is_task_index(index_dir: Path) -> bool:
    """A study's task index (``STUDY/tasks/runs.sqlite``): its rows are the study's tasks, whose
    runs are rows of the study's own store (``STUDY/runs.sqlite``) — not listed twice."""
    return index_dir.name == "tasks" and (index_dir.parent / "study.json").is_file()


def find_stores(root: str | Path, recursive: bool = False) -> list[Path]:
    """The store directories to list: ``root`` (which must exist) and, with ``recursive``, every
    directory under it holding a ``runs.sqlite`` (study task indexes left out).  A missing
    ``root``, or one with no store (at it, or under it with ``recursive``), is a
    :class:`KdlensError` that says what is there."""
    root = Path(root)
    if not root.is_dir():
        what = "a file, not a directory" if root.exists() else "no such directory"
        raise KdlensError(f"no run store at {str(root)!r}: {what} (give the store with --out)")
    stores = [root] if (root / INDEX_FILE).is_file() else []
    nested = nested_stores(root)
    if recursive:
        stores += nested
    if not stores:
        hint = (f"; it holds {len(nested)} nested store{'s' if len(nested) != 1 else ''} "
                f"(e.g. {str(nested[0])!r}): add --recursive") if nested else ""
        raise KdlensError(f"no run store at {str(root)!r}: the directory has no {INDEX_FILE}"
                          f"{'' if recursive else hint}")
    return stores


def nested_stores(root: str | Path) -> list[Path]:
    """Stores below ``root`` (not ``root`` itself; study task indexes left out)."""
    root = Path(root)
    return sorted(p.parent for p in root.glob(f"*/**/{INDEX_FILE}") if not _is_task_index(p.parent))


def run_path(store: Path, rec: RunRecord) -> Path:
    """Where ``rec``'s run directory is, spelled from ``store`` as the caller gave it (a run
    directory is ``STORE/RUN_ID``; a row recorded with another path keeps it)."""
    recorded = Path(rec.path)
    beside = store / recorded.name
    if recorded.is_absolute() and recorded.parent == store.resolve():
        return beside
    if not _exists(recorded) and _exists(beside):  # a store moved or copied elsewhere
        return beside
    return recorded


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # a directory this user may not enter
        return False


def _read_config(run_dir: Path) -> dict[str, Any]:
    import yaml

    try:
        text = (run_dir / "config.yaml").read_text(encoding="utf-8")
    except OSError:
        return {}
    try:
        data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def _name(value: Any) -> str:
    """``{"name": "resnet20", …}`` → ``resnet20``; a plain string stays as it is."""
    if isinstance(value, dict):
        value = value.get("name")
    return "" if value is None else str(value)


def describe_run(kind: str, config: dict[str, Any]) -> tuple[str, str, str]:
    """(model, dataset, method) of a run from its resolved config.

    The method of a ``distill`` run is its loss (``kd``, ``at+kd``; `` · limited_label`` for
    that loop); of a ``train`` run ``supervised`` or its semi-supervised method; of another
    kind (an analysis) the kind itself."""
    model = _name(config.get("model")) or _name(config.get("teacher", {}).get("model")
                                                 if isinstance(config.get("teacher"), dict) else None)
    dataset = _name(config.get("data"))
    if kind == "distill":
        method = str(config.get("method") or "")
        loop = config.get("loop")
        if loop and loop != "offline":
            method += f" · {loop}"
    elif kind == "train":
        method = str(config.get("semi") or "supervised")
    else:
        method = kind
    return model, dataset, method


def _rows(store: Path, status: str | None) -> Iterator[RunRow]:
    for rec in RunIndex(store, readonly=True).list(status):
        path = run_path(store, rec)
        model, dataset, method = describe_run(rec.kind, _read_config(path))
        yield RunRow(str(path), model, dataset, method, rec.metrics.get("final_acc"), rec.metrics.get("final_acc5"),
                     rec.created, rec.status, rec.reason, rec)


def list_runs(root: str | Path, status: str | None = None, recursive: bool = False) -> list[RunRow]:
    """The runs of the store ``root`` (and, with ``recursive``, of every store nested under it),
    oldest first; ``status`` as read back (``interrupted``: a ``running`` row whose process is
    gone)."""
    rows = [row for store in find_stores(root, recursive) for row in _rows(store, status)]
    return sorted(rows, key=lambda r: r.created)
