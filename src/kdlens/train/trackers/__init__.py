"""Experiment trackers: sinks the :class:`~kdlens.train.trainer.Trainer` writes metrics to.

The run directory's ``metrics.jsonl`` is always written (by the Trainer, one row per epoch)
and stays the record every kdlens command reads (``jsonl``).  On request the same numbers
also go to TensorBoard (:class:`TensorBoardTracker`, event files in ``RUN_DIR/tensorboard/``)
and MLflow (:class:`MlflowTracker`, by default ``sqlite:///<run store>/mlflow.db``): scalars
``step/<name>`` every ``log_every`` steps at the global step, ``epoch/<name>`` per epoch.

Calling sequence for a run entry point::

    check_trackers(names)                      # before the run is recorded: exit 2 on typos
    ...                                        # in the run body, once run_dir exists:
    with build_trackers(names, run_dir.path, store_dir=out, tracking_uri=uri) as trackers:
        trackers.start(resolved_config)
        result = Trainer(..., trackers=trackers).fit(resume)
        trackers.log_artifact(run_dir.result_path)   # and figures
    # leaving the block closes them: FINISHED, or FAILED when an exception left it
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from kdlens.errors import KdlensError, unknown_name
from kdlens.train.trackers.base import Tracker, Trackers, flatten_params, numeric_entries, param_text
from kdlens.train.trackers.mlflow_tracker import MlflowTracker, default_tracking_uri, mlflow_key
from kdlens.train.trackers.tensorboard_tracker import TensorBoardTracker, trim_event_files

#: tracker names (``--log``); ``jsonl`` is the run directory's metrics.jsonl, always written
TRACKERS = ("jsonl", "tensorboard", "mlflow")

__all__ = [
    "TRACKERS", "MlflowTracker", "TensorBoardTracker", "Tracker", "Trackers", "build_trackers",
    "check_trackers", "default_tracking_uri", "flatten_params", "mlflow_key", "numeric_entries",
    "param_text", "trim_event_files",
]


def check_trackers(names: Sequence[str]) -> None:
    """Raise :class:`KdlensError` (before any work) for an unknown tracker name, with close
    matches, or for a tracker whose package is not importable, with the pip command to add it."""
    for name in names:
        if name not in TRACKERS:
            raise unknown_name("tracker", name, TRACKERS)
    for name in dict.fromkeys(names):
        if name == "jsonl":
            continue
        try:
            if name == "tensorboard":
                import torch.utils.tensorboard  # noqa: F401  (needs the tensorboard package)
            else:
                import mlflow  # noqa: F401
        except ImportError as exc:
            raise KdlensError(
                f"tracker {name!r} needs the {name} package, which is not importable ({exc}); "
                f"install it with: pip install 'kdlens[{name}]'"
            ) from None


def build_trackers(
    names: Sequence[str],
    run_dir: str | Path,
    *,
    store_dir: str | Path,
    tracking_uri: str | None = None,
    run_name: str | None = None,
    experiment: str = "kdlens",
) -> Trackers:
    """The trackers ``names`` (from :data:`TRACKERS`) of the run in ``run_dir``.

    ``store_dir`` is the run store (``--out``): MLflow's default tracking URI
    (:func:`default_tracking_uri`) and artifact root (``<store>/mlartifacts``) are there; a
    given ``tracking_uri`` is used as it is.  ``run_name`` defaults to the run directory's name.
    Nothing is written until the first metric.  Call :func:`check_trackers` first, before
    the run is recorded."""
    check_trackers(names)
    run_dir = Path(run_dir)
    made: list[Tracker] = []
    for name in dict.fromkeys(names):
        if name == "tensorboard":
            made.append(TensorBoardTracker(run_dir / "tensorboard"))
        elif name == "mlflow":
            made.append(MlflowTracker(
                tracking_uri or default_tracking_uri(store_dir), experiment, run_name or run_dir.name,
                run_key=str(run_dir.resolve()), artifact_root=Path(store_dir) / "mlartifacts",
            ))
    return Trackers(made)
