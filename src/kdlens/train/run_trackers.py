"""The trackers of one recorded run, opened around its training and fed its results.

``with run_trackers(cfg, run_dir) as session:`` builds the trackers the config asks for
(``log: [tensorboard, mlflow]``), logs the resolved config as parameters, hands
``session.trackers`` to the :class:`~kdlens.train.trainer.Trainer`, and
``session.finish(metrics)`` writes ``result.json`` and logs it, with the run's figures,
as artifacts.  The trackers are closed (FAILED when training raised) on leaving the block.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from kdlens.config import TrainConfig
from kdlens.store import RunDir
from kdlens.train.trackers import Trackers, build_trackers


@dataclass
class TrackedRun:
    trackers: Trackers
    run_dir: RunDir

    def finish(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """Write ``result.json`` now (so trackers can keep it) and log it and every figure."""
        if len(self.trackers):
            self.run_dir.write_result(metrics)
            self.trackers.log_artifact(self.run_dir.path / "result.json")
            for figure in sorted(self.run_dir.path.glob("*.png")):
                self.trackers.log_artifact(figure)
        return metrics


@contextmanager
def run_trackers(cfg: TrainConfig, run_dir: RunDir) -> Iterator[TrackedRun]:
    trackers = build_trackers(cfg.log, run_dir.path, store_dir=cfg.out, tracking_uri=cfg.tracking_uri)
    with trackers:
        trackers.start(cfg.model_dump())
        yield TrackedRun(trackers, run_dir)
