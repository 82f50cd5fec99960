"""One recorded run: config → data → model → Trainer → run directory + store row."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdlens.config import TrainConfig
from kdlens.data.reference import DataPair
from kdlens.models.fingerprint import architecture_fingerprint
from kdlens.store import RunDir, RunIndex, atomic_write_text, config_hash
from kdlens.train.data_setup import PreparedData, prepare_data
from kdlens.train.loop import SupervisedLoop
from kdlens.train.model_setup import check_output_classes, model_for_data
from kdlens.train.run_trackers import run_trackers
from kdlens.train.trackers import check_trackers
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
            f"run {self.run_id}: {head}; final test acc {fmt(m.get('final_acc'))} "
            f"(top-5 {fmt(m.get('final_acc5'))}), "
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
    (run_dir.path / "error.txt").unlink(missing_ok=True)  # a finished run carries no stale error of an earlier try
    index.finish(run_id, metrics)
    return RunOutcome(run_id, run_dir.path, metrics)


def weights_file_sha256(path: str | None) -> str | None:
    """SHA-256 of a weights file (part of a run's identity), or None."""
    if path is None:
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def run_identity(cfg: TrainConfig, model: nn.Module, data: PreparedData, **extra: Any) -> dict[str, Any]:
    """What defines a run's result: the config's identity fields, the model's architecture
    fingerprint (so an edited model never reuses a finished run), the data's fingerprint
    (folders, user Datasets) and the initial weights file's hash."""
    identity = {**cfg.identity(), "architecture": architecture_fingerprint(model), **extra}
    if data.fingerprint is not None:
        identity["data_fingerprint"] = data.fingerprint
    if cfg.model.weights is not None:
        identity["model_weights_sha256"] = weights_file_sha256(cfg.model.weights)
    return identity


def save_model_card(run_dir: RunDir, cfg: TrainConfig, model: nn.Module, data: PreparedData) -> None:
    """``model.json``: what rebuilds the run's model without its data (``kdlens.load_run``) —
    reference, constructor kwargs, class count, input shape — and its architecture fingerprint."""
    c, h, w = data.train.image_shape
    card = {"reference": cfg.model.name, "kwargs": cfg.model.kwargs, "num_classes": data.train.num_classes,
            "image_shape": [c, h, w], "classes": list(data.train.classes),
            "architecture": architecture_fingerprint(model)}
    atomic_write_text(run_dir.path / "model.json", json.dumps(card, indent=1, default=str))


def build_student(cfg: TrainConfig, data: PreparedData, device: torch.device, model: nn.Module | None = None) -> nn.Module:
    """``cfg.model`` built for ``data`` (or the user's ``model``), initialised from ``model.init``
    / ``model.weights``, checked by a dry forward to give one logit per class."""
    if model is None:
        model = model_for_data(cfg.model.name, data.train, cfg.seed, weights=cfg.model.weights, **cfg.model.kwargs)
    if cfg.model.init:
        init_from(model, cfg.model.init, data.train)
    check_output_classes(model, data.example(torch.device("cpu")), data.train.num_classes, f"model {cfg.model.name}")
    return model


def run_training(
    cfg: TrainConfig,
    resume: bool = False,
    progress: bool = True,
    *,
    model: nn.Module | None = None,
    pair: DataPair | None = None,
) -> RunOutcome:
    """Train ``cfg.model`` on ``cfg.data`` (supervised), recorded in ``cfg.out``.

    ``model`` (an ``nn.Module``) and ``pair`` (resolved data) replace what the config names:
    the Python API passes the user's own objects this way."""
    data = prepare_data(cfg.data, pair, log=progress)  # data, model and init are checked before any run is recorded
    device = resolve_device(cfg.device)
    model = build_student(cfg, data, device, model)
    check_trackers(cfg.log)

    def body(run_dir: RunDir) -> dict[str, Any]:
        for split_name, idx in data.splits.items():
            run_dir.save_split(split_name, idx)
        save_model_card(run_dir, cfg, model, data)
        source = data.batch_source(data.train_indices, cfg.batch_size, device)
        with run_trackers(cfg, run_dir) as tracked:
            trainer = Trainer(
                model, SupervisedLoop(source, cfg.label_smoothing), cfg.optim, cfg.epochs,
                eval_set=data.eval_set(device) if cfg.eval_split == "test" else data.val_set(), run_dir=run_dir,
                seed=cfg.seed, device=device, bf16=cfg.bf16, channels_last=cfg.channels_last,
                eval_every=cfg.eval_every, progress=progress, description=f"{cfg.model.name} on {cfg.data.name}",
                trackers=tracked.trackers,
            )
            metrics = trainer.fit(resume=resume).metrics()
            metrics["data_path"] = data.path
            return tracked.finish(metrics)

    default = f"{short_name(cfg.model.name)}-{short_name(cfg.data.name)}"
    return execute_run(
        "train", run_identity(cfg, model, data), cfg.model_dump(), cfg.out, cfg.name or default, resume, body
    )


def short_name(ref: str) -> str:
    """A reference as a run-id fragment: ``torchvision:resnet18`` → ``resnet18``,
    ``folder:/data/pets`` → ``pets``, ``my_pkg.models:TinyNet`` → ``TinyNet``."""
    tail = ref.rstrip("/").replace("\\", "/").split(":")[-1].split("/")[-1].split(".")[-1]
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in tail) or "data"
