"""The tracker interface, the composite a Trainer holds, and how a config becomes parameters."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any


def flatten_params(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts → dotted keys: ``{"optim": {"lr": 0.1}}`` → ``{"optim.lr": 0.1}``.

    Lists and other values are kept as they are (:func:`param_text` turns them into text)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten_params(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def param_text(value: Any) -> str:
    """A parameter value as text: strings verbatim, everything else as JSON (``null``, lists)."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return str(value)


def numeric_entries(row: Mapping[str, Any]) -> dict[str, float]:
    """The entries of an epoch row that are numbers (bools and text left out)."""
    return {k: float(v) for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


class Tracker:
    """A sink for one run's parameters, metrics and files; every method is a no-op here
    (this is the ``jsonl`` tracker: the Trainer writes metrics.jsonl itself).

    ``scope`` is ``"step"`` (``step`` = global step: epoch · batches per epoch + step) or
    ``"epoch"`` (``step`` = epoch number, 1-based, as in metrics.jsonl)."""

    name = "jsonl"

    def start(self, params: dict[str, Any]) -> None:
        """Record the run's resolved config (nested dicts are flattened to dotted keys)."""

    def resumed(self, epoch: int, global_step: int) -> None:
        """The Trainer resumed from the checkpoint of ``epoch``; its next step is ``global_step``.

        Called before any metric of the resumed attempt; values a killed attempt logged
        after that checkpoint are then stale.  Not called for a run that starts afresh."""

    def log_metrics(self, metrics: dict[str, float], step: int, scope: str) -> None:
        """Record ``metrics`` at ``step`` of ``scope`` (``"step"`` or ``"epoch"``)."""

    def log_artifact(self, path: str | Path) -> None:
        """Keep a copy of a file the run produced (figures, result.json)."""

    def close(self, status: str = "FINISHED") -> None:
        """Flush and release; ``status`` is ``"FINISHED"`` or ``"FAILED"``."""


class Trackers(Tracker):
    """The trackers of one run behind one object: each call goes to each tracker in turn.

    Use it as a context manager so that it is closed, FAILED when an exception leaves the
    block.  ``start`` raises (nothing has trained yet); a tracker raising later (a tracking
    server gone, a locked database) is warned about and dropped, and training goes on:
    metrics.jsonl keeps every epoch.  An empty composite is falsy, so the Trainer skips
    per-step work for it."""

    name = "trackers"

    def __init__(self, trackers: Sequence[Tracker] = ()) -> None:
        self.trackers = [t for t in trackers if type(t) is not Tracker]  # plain Trackers do nothing

    def __iter__(self) -> Iterator[Tracker]:
        return iter(self.trackers)

    def __len__(self) -> int:
        return len(self.trackers)

    def _each(self, method: str, *args: Any) -> None:
        for tracker in list(self.trackers):
            try:
                getattr(tracker, method)(*args)
            except Exception as exc:  # noqa: BLE001 - a tracker must not stop training
                self.trackers.remove(tracker)
                warnings.warn(
                    f"{tracker.name} tracker failed in {method} ({type(exc).__name__}: {exc}); it is "
                    "switched off for the rest of this run (metrics.jsonl has every epoch)",
                    RuntimeWarning, stacklevel=3,
                )

    def start(self, params: dict[str, Any]) -> None:
        for tracker in self.trackers:
            tracker.start(params)

    def resumed(self, epoch: int, global_step: int) -> None:
        self._each("resumed", epoch, global_step)

    def log_metrics(self, metrics: dict[str, float], step: int, scope: str) -> None:
        self._each("log_metrics", metrics, step, scope)

    def log_artifact(self, path: str | Path) -> None:
        self._each("log_artifact", path)

    def close(self, status: str = "FINISHED") -> None:
        self._each("close", status)
        self.trackers = []

    def __enter__(self) -> Trackers:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close("FAILED" if exc_type is not None else "FINISHED")
