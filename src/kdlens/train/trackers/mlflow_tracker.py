"""MLflow: one MLflow run per kdlens run, written through ``mlflow.MlflowClient`` with
explicit run ids (no global active run, so concurrent runs in one process never mix).

The config becomes dotted parameters (values as text, cut to MLflow's length limit), metrics
keep the TensorBoard names ``step/<name>`` and ``epoch/<name>``, artifacts go to the run's
artifact store.  The default tracking URI is ``sqlite:///<run store>/mlflow.db`` with the
experiment's artifacts under ``<run store>/mlartifacts`` (:func:`default_tracking_uri`), so
nothing is written to the current directory; a given URI is used as it is.

The MLflow run opens at the first metric or artifact.  A resumed kdlens run continues the
MLflow run tagged with the same ``kdlens.run_dir``; MLflow's metric history is append-only,
so step values a killed attempt logged after its last checkpoint stay next to the replayed
ones (an epoch value repeats only when a kill fell between its row and its checkpoint).
A fresh start opens a new MLflow run.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from kdlens.train.trackers.base import Tracker, flatten_params, param_text

_ILLEGAL_KEY = re.compile(r"[^A-Za-z0-9_\-. /]")
MAX_KEY_LENGTH = 250  # mlflow.utils.validation.MAX_ENTITY_KEY_LENGTH
MAX_BATCH_PARAMS = 100  # log_batch limits (MLflow REST API)
MAX_BATCH_METRICS = 1000


def default_tracking_uri(store_dir: str | Path) -> str:
    """``sqlite:///<store>/mlflow.db`` (absolute path): MLflow's record next to the run store."""
    return f"sqlite:///{Path(store_dir).resolve() / 'mlflow.db'}"


def mlflow_key(name: str) -> str:
    """A legal MLflow parameter/metric key: alphanumerics and ``_ - . space /`` (anything else
    becomes ``_``), at most 250 characters."""
    return _ILLEGAL_KEY.sub("_", name)[:MAX_KEY_LENGTH]


class MlflowTracker(Tracker):
    """Parameters, metrics and artifacts of one kdlens run in one MLflow run.

    ``run_key`` (the run directory) tags the MLflow run so a resume finds it; the experiment
    is created with artifact location ``artifact_root`` when it does not exist.  Step
    metrics are sent in batches, at most every ``flush_secs`` seconds and at every epoch, so
    per-step logging costs no database round trip."""

    name = "mlflow"

    def __init__(
        self,
        tracking_uri: str,
        experiment: str = "kdlens",
        run_name: str | None = None,
        *,
        run_key: str | None = None,
        artifact_root: str | Path | None = None,
        flush_secs: float = 5.0,
    ) -> None:
        from mlflow import MlflowClient

        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri)
        self.experiment = experiment
        self.run_name = run_name
        self.run_key = run_key
        self.artifact_root = artifact_root
        self.flush_secs = flush_secs
        self.run_id: str | None = None
        self._params: dict[str, str] = {}
        self._pending: list[Any] = []
        self._last_flush = time.monotonic()

    # -- the MLflow run -------------------------------------------------------------
    def _experiment_id(self) -> str:
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(self.experiment)
        if found is not None:
            return found.experiment_id
        location = None if self.artifact_root is None else Path(self.artifact_root).resolve().as_uri()
        try:
            return self.client.create_experiment(self.experiment, artifact_location=location)
        except MlflowException:  # created meanwhile by another worker
            found = self.client.get_experiment_by_name(self.experiment)
            if found is None:
                raise
            return found.experiment_id

    def _previous_run(self, experiment_id: str) -> Any | None:
        if self.run_key is None or "'" in self.run_key:
            return None
        runs = self.client.search_runs(
            [experiment_id], filter_string=f"tags.`kdlens.run_dir` = '{self.run_key}'",
            order_by=["attributes.start_time DESC"], max_results=1,
        )
        return runs[0] if runs else None

    def _open(self, resume: bool = False) -> str:
        if self.run_id is not None:
            return self.run_id
        experiment_id = self._experiment_id()
        previous = self._previous_run(experiment_id) if resume else None
        if previous is not None:
            self.run_id = previous.info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
            # a parameter keeps its first value (MLflow refuses changes)
            params = {k: v for k, v in self._params.items() if k not in previous.data.params}
        else:
            tags = {"kdlens.run_dir": self.run_key} if self.run_key is not None else {}
            self.run_id = self.client.create_run(experiment_id, run_name=self.run_name, tags=tags).info.run_id
            params = self._params
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in params.items()]
        for start in range(0, len(items), MAX_BATCH_PARAMS):
            self.client.log_batch(self.run_id, params=items[start : start + MAX_BATCH_PARAMS])
        return self.run_id

    def _flush(self) -> None:
        run_id = self._open()
        pending, self._pending = self._pending, []
        for start in range(0, len(pending), MAX_BATCH_METRICS):
            self.client.log_batch(run_id, metrics=pending[start : start + MAX_BATCH_METRICS])
        self._last_flush = time.monotonic()

    # -- Tracker ---------------------------------------------------------------------
    def start(self, params: dict[str, Any]) -> None:
        try:
            from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH as limit
        except ImportError:  # pragma: no cover - moved in some MLflow version
            limit = 500
        self._params = {mlflow_key(k): param_text(v)[:limit] for k, v in flatten_params(params).items()}

    def resumed(self, epoch: int, global_step: int) -> None:
        self._open(resume=True)

    def log_metrics(self, metrics: dict[str, float], step: int, scope: str) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        self._pending += [Metric(mlflow_key(f"{scope}/{k}"), float(v), stamp, int(step))
                          for k, v in metrics.items()]
        if scope == "epoch" or time.monotonic() - self._last_flush >= self.flush_secs:
            self._flush()

    def log_artifact(self, path: str | Path) -> None:
        self.client.log_artifact(self._open(), str(path))

    def close(self, status: str = "FINISHED") -> None:
        if self.run_id is None:  # failed before any metric: record it (on the earlier attempt's run)
            self._open(resume=True)
        self._flush()
        self.client.set_terminated(self.run_id, status=status)
