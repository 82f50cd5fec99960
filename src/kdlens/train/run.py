"""One recorded run: config → data → model → Trainer → run directory + store row."""

from __future__ import annotations

import sqlite3
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdlens.config import TrainConfig
from kdlens.store import RunDir, RunIndex, config_hash
from kdlens.train.data_setup import InMemorySource, prepare_data
from kdlens.train.loop import SupervisedLoop
from kdlens.train.model_setup import model_for_data
from kdlens.train.teacher import init_from
from kdlens.train.trainer import Trainer, resolve_device


@dataclass
class RunOutcome:
    run_id: str
    path: Path
    metrics: dict[str, Any]
    skipped: bool = False

    def summary(self) -> str:
        m = self.metrics
        fmt = lambda v: "n/a" if v is None else f"{v:.2f}%"  # noqa: E731
        head = "already done (skipped)" if self.skipped else "done"
        return (
            f"run {self.run_id}: {head}; final test acc {fmt(m.get('final_acc'))}, "
            f"best {fmt(m.get('best_acc'))} (epoch {m.get('best_epoch')}); {self.path}"
        )


def run_id_for(cfg_name: str | None, default_name: str, digest: str) -> str:
    return f"{cfg_name or default_name}-{digest[:10]}"


def finished_result(index: RunIndex, run_id: str, run_dir: RunDir) -> dict[str, Any] | None:
    """The metrics of a finished run, else None.

    Finished: its row says done, or still says running while its ``result.json`` (written
    last, the completion marker) exists — a kill between the two; the row is then marked done.
    """
    rec = index.get(run_id)
    if rec is None or rec.status not in ("done", "running"):
        return None
    result = run_dir.read_result()
    if result is not None and rec.status == "running":
        index.finish(run_id, result)
    return result


def execute_run(
    kind: str,
    identity: dict[str, Any],
    resolved: dict[str, Any],
    out: str,
    name: str,
    resume: bool,
    body,
) -> RunOutcome:
    """Record a run in the store around ``body(run_dir) -> metrics``.

    A finished run (:func:`finished_result`) is skipped (its metrics returned).  A failure
    marks the row failed with the reason and re-raises.
    """
    digest = config_hash(identity)
    run_id = run_id_for(name, kind, digest)
    index = RunIndex(out)
    run_dir = RunDir(Path(out) / run_id)
    result = finished_result(index, run_id, run_dir)
    if result is not None:
        return RunOutcome(run_id, run_dir.path, result, skipped=True)
    index.start(run_id, kind, digest, run_dir.path)
    if not resume and run_dir.last_checkpoint.exists():
        run_dir.last_checkpoint.unlink()
        run_dir.metrics_path.unlink(missing_ok=True)
    run_dir.create(resolved)
    try:
        metrics = body(run_dir)
    except BaseException as exc:
        reason = f"{type(exc).__name__}: {exc}".strip()
        if not isinstance(exc, Exception):
            reason = f"interrupted ({type(exc).__name__})"
        try:  # on a full disk these may fail too: the original error is the one to show
            index.fail(run_id, reason[:2000])
            (run_dir.path / "error.txt").write_text(traceback.format_exc())
        except (OSError, sqlite3.Error):
            pass
        raise
    run_dir.write_result(metrics)
    index.finish(run_id, metrics)
    return RunOutcome(run_id, run_dir.path, metrics)


def run_training(cfg: TrainConfig, resume: bool = False, progress: bool = True) -> RunOutcome:
    """Train ``cfg.model`` on ``cfg.data`` (supervised), recorded in ``cfg.out``."""
    data = prepare_data(cfg.data)  # data, model and init are checked before any run is recorded
    device = resolve_device(cfg.device)
    model = model_for_data(cfg.model.name, data.train, cfg.seed, **cfg.model.kwargs)
    if cfg.model.init:
        init_from(model, cfg.model.init, data.train)

    def body(run_dir: RunDir) -> dict[str, Any]:
        for split_name, idx in data.splits.items():
            run_dir.save_split(split_name, idx)
        source = InMemorySource(
            data.train.images, data.train.labels, data.train_indices, cfg.batch_size, data.augment, device
        )
        trainer = Trainer(
            model, SupervisedLoop(source, cfg.label_smoothing), cfg.optim, cfg.epochs,
            eval_set=data.eval_set(device) if cfg.eval_split == "test" else data.val_set(), run_dir=run_dir, seed=cfg.seed, device=device,
            bf16=cfg.bf16, channels_last=cfg.channels_last, eval_every=cfg.eval_every,
            progress=progress, description=f"{cfg.model.name} on {cfg.data.name}",
        )
        return trainer.fit(resume=resume).metrics()

    default = f"{cfg.model.name}-{cfg.data.name}"
    return execute_run(
        "train", cfg.identity(), cfg.model_dump(), cfg.out, cfg.name or default, resume, body
    )
