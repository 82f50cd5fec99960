"""One recorded run: config → data → model → Trainer → run directory + store row."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sqlite3
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdlens.config import TrainConfig
from kdlens.data.reference import DataPair
from kdlens.models.fingerprint import architecture_fingerprint
from kdlens.errors import KdlensError
from kdlens.store import (
    Heartbeat,
    RunDir,
    RunIndex,
    RunRecord,
    atomic_keep_copy,
    atomic_write_text,
    config_hash,
    safe_torch_load,
)
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

    Finished: its row says done, or still says running (or reads ``interrupted``: its process
    is gone) while its ``result.json`` (written last, the completion marker) exists — a kill
    between the two; the row is then marked done.
    """
    rec = index.get(run_id)
    if rec is None or rec.status not in ("done", "running", "interrupted"):
        return None
    result = run_dir.read_result()
    if result is not None and rec.status in ("running", "interrupted"):
        index.finish(run_id, result)
    return result


#: the checkpoints a run can resume from (``--from``)
RESUME_FROM = ("last", "previous", "best")


def execute_run(
    kind: str,
    identity: dict[str, Any],
    resolved: dict[str, Any],
    out: str,
    name: str,
    resume: bool,
    body,
    *,
    restart: bool = False,
    resume_from: str = "last",
    resume_strict: bool = False,
) -> RunOutcome:
    """Record a run in the store around ``body(run_dir) -> metrics``.

    A finished run (:func:`finished_result`) is skipped (its metrics returned).  A failure
    marks the row failed with the reason and re-raises.  Nothing a run trained is lost by
    running its command again:

    - a run with a checkpoint is continued only with ``resume`` (printing ``resuming RUN from
      epoch E/N``) and discarded only with ``restart`` (finished runs too); without either it
      is a :class:`KdlensError` saying so, before anything is written;
    - ``resume_from`` (``previous`` or ``best``; implies ``resume``) resumes from that
      checkpoint instead of ``last.pt``; an unreadable checkpoint is a :class:`KdlensError`
      naming the file and the checkpoints that do load;
    - ``resume_strict`` (the CLI and the Python API; not studies, which resume whatever
      exists): ``resume`` with nothing to resume when the same config with another epoch count
      was run is a :class:`KdlensError` — a run is never extended to more epochs (its
      learning-rate schedule is laid out for its epoch count) and a new one is never started
      silently in its place;
    - a run whose recorded process is alive (another process trains it) is refused.

    The run's row records this process (pid, host) and a heartbeat refreshed while training,
    so a killed run reads ``interrupted`` in the store.
    """
    if resume_from not in RESUME_FROM:
        raise KdlensError(f"--from {resume_from!r}: resume from one of {', '.join(RESUME_FROM)}")
    resume = resume or resume_from != "last"
    if restart and resume:
        raise KdlensError("--restart discards the run's checkpoints and --resume/--from continues from one: "
                          "give one of them")
    digest = config_hash(identity)
    run_id = run_id_for(name, kind, digest)
    family = config_hash({k: v for k, v in identity.items() if k != "epochs"})
    epochs = resolved.get("epochs")
    index = RunIndex(out)
    run_dir = RunDir(Path(out) / run_id)
    _refuse_if_trained_elsewhere(index.get(run_id), run_id)
    if restart:
        _discard(run_dir, run_id, epochs)
    else:
        result = finished_result(index, run_id, run_dir)
        if result is not None:
            return RunOutcome(run_id, run_dir.path, result, skipped=True)
        if not resume:
            _refuse_if_checkpointed(run_dir, run_id, epochs)
            run_dir.metrics_path.unlink(missing_ok=True)  # rows of an epoch killed before any checkpoint
        elif not _resume_point(run_dir, run_id, epochs, resume_from) and resume_strict:
            _refuse_other_epochs(index, family, kind, run_id, epochs)
            _say(f"nothing to resume for {run_id} (no checkpoint): training it from epoch 1")
    index.start(run_id, kind, digest, run_dir.path, owner=True, family_hash=family)
    run_dir.on_heartbeat = Heartbeat(index, run_id)
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


def refuse_rerun_without_resume(cfg: TrainConfig, data: PreparedData) -> None:
    """The check :func:`execute_run` makes when a command runs again without ``--resume``, for a
    launcher to make before it starts processes (``kdlens train --ddp N``): a
    :class:`KdlensError` when the run is unfinished and has a checkpoint."""
    model = build_student(cfg, data, torch.device("cpu"))
    name = cfg.name or f"{short_name(cfg.model.name)}-{short_name(cfg.data.name)}"
    run_id = run_id_for(name, "train", config_hash(run_identity(cfg, model, data)))
    run_dir = RunDir(Path(cfg.out) / run_id)
    if run_dir.read_result() is None:
        _refuse_if_checkpointed(run_dir, run_id, cfg.epochs)


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _refuse_if_trained_elsewhere(rec: RunRecord | None, run_id: str) -> None:
    """Another live process records this run (its row reads ``running``, not ``interrupted``):
    two writers would corrupt its directory."""
    if rec is None or rec.status != "running" or rec.pid is None:
        return
    if rec.host == socket.gethostname() and rec.pid == os.getpid():
        return
    seen = "" if rec.heartbeat is None else f", last heartbeat {time.time() - rec.heartbeat:.0f} s ago"
    raise KdlensError(f"{run_id} is being trained by process {rec.pid} on {rec.host}{seen}: wait for it to "
                      "finish, or stop that process and run this command again with --resume")


def _checkpoint_epoch(path: Path, default_epochs: Any) -> tuple[int, Any]:
    """(epoch, epochs) of a readable checkpoint; a KdlensError when it does not load."""
    state = safe_torch_load(path)
    if not isinstance(state, dict) or "epoch" not in state:
        raise KdlensError(f"checkpoint {str(path)!r} holds no training state (no 'epoch')")
    return int(state["epoch"]), state.get("epochs", default_epochs)


def _where(run_dir: RunDir, path: Path) -> str:
    """``epoch`` for the run's own checkpoints, ``pretrain epoch`` for a nested phase's."""
    phase = path.parent.parent.relative_to(run_dir.path)
    return "epoch" if str(phase) == "." else f"{phase} epoch"


def _refuse_if_checkpointed(run_dir: RunDir, run_id: str, epochs: Any) -> None:
    files = run_dir.checkpoint_files()
    if not files:
        return
    main = [p for p in files if p.parent == run_dir.checkpoint_dir]
    path = run_dir.last_checkpoint if run_dir.last_checkpoint in files else (main or files)[0]
    try:
        epoch, total = _checkpoint_epoch(path, epochs if path.parent == run_dir.checkpoint_dir else "?")
        at = f"at {_where(run_dir, path)} {epoch}/{total}"
    except KdlensError:
        at = f"({path.relative_to(run_dir.path)}, unreadable)"
    raise KdlensError(f"{run_id} has a checkpoint {at}: add --resume, or --restart to discard it "
                      f"({run_dir.path})")


def _discard(run_dir: RunDir, run_id: str, epochs: Any) -> None:
    """``restart``: what training wrote goes; config, versions and splits are rewritten anyway."""
    files = run_dir.checkpoint_files()
    done = run_dir.result_path.exists()
    if not files and not done:
        return
    what = "its result and checkpoints" if done else "its checkpoints"
    if run_dir.last_checkpoint in files:
        try:
            epoch, total = _checkpoint_epoch(run_dir.last_checkpoint, epochs)
            what += f" (epoch {epoch}/{total})"
        except KdlensError:
            pass
    run_dir.discard_progress()
    _say(f"restarting {run_id}: discarded {what}")


def _resume_point(run_dir: RunDir, run_id: str, epochs: Any, which: str) -> bool:
    """Check the checkpoint to resume from (and make it ``last.pt`` when it is another one);
    print where the run resumes.  False when there is no checkpoint at all."""
    path = run_dir.checkpoint(which)
    if not path.exists():
        files = run_dir.checkpoint_files()
        if which == "last" and not files:
            return False
        if which == "last" and all(p.parent != run_dir.checkpoint_dir for p in files):
            nested = files[0]  # a phase before the main training (a distillation's hint pre-training)
            epoch, total = _load_for_resume(run_dir, run_id, nested, "?")
            _say(f"resuming {run_id} from {_where(run_dir, nested)} {epoch}/{total}")
            return True
        have = ", ".join(str(p.relative_to(run_dir.path)) for p in files) or "none"
        raise KdlensError(f"cannot resume {run_id} from checkpoints/{which}.pt: there is no such file "
                          f"(checkpoints: {have}). {_alternatives(run_dir, which)}")
    epoch, total = _load_for_resume(run_dir, run_id, path, epochs)
    if which != "last":
        last = run_dir.last_checkpoint
        if last.exists():
            try:
                _checkpoint_epoch(last, epochs)
            except KdlensError:  # keep the unreadable file for a look, out of the way
                os.replace(last, last.with_name("last.pt.unreadable"))
        atomic_keep_copy(path, last)
    _say(f"resuming {run_id} from epoch {epoch}/{total}" + (f" (checkpoints/{which}.pt)" if which != "last" else ""))
    return True


def _load_for_resume(run_dir: RunDir, run_id: str, path: Path, epochs: Any) -> tuple[int, Any]:
    try:
        state = safe_torch_load(path)
    except KdlensError as exc:
        reason = str(exc).split(" safely: ", 1)[-1].split(". kdlens only loads")[0]
        raise KdlensError(f"cannot resume {run_id}: its checkpoint {str(path)!r} does not load ({reason}). "
                          f"{_alternatives(run_dir, path.stem)}") from None
    if not isinstance(state, dict) or not {"epoch", "model", "optimizer"} <= set(state):
        raise KdlensError(f"cannot resume {run_id} from {str(path)!r}: it holds the model weights only (a "
                          f"best.pt of an older kdlens), not a training state. {_alternatives(run_dir, path.stem)}")
    return int(state["epoch"]), state.get("epochs", epochs)


def _alternatives(run_dir: RunDir, bad: str) -> str:
    """What would work instead of checkpoint ``bad``: the other checkpoints that load, or --restart."""
    options = []
    for which in RESUME_FROM:
        path = run_dir.checkpoint(which)
        if which == bad or which == "last" or not path.exists():
            continue
        try:
            state = safe_torch_load(path)
        except KdlensError:
            continue
        if isinstance(state, dict) and {"epoch", "model", "optimizer"} <= set(state):
            options.append(f"--from {which} (epoch {state['epoch']})")
    resume = f"Resume with --resume {' or '.join(options)}, or discard" if options else "Discard"
    return f"{resume} the run's checkpoints and train it from epoch 1 with --restart."


def _refuse_other_epochs(index: RunIndex, family: str, kind: str, run_id: str, epochs: Any) -> None:
    """``--resume`` with nothing to resume, while the same config ran with another epoch count."""
    others = [r for r in index.family(family, kind) if r.id != run_id]
    if not others:
        return
    rec = next((r for r in reversed(others) if r.status == "done"), others[-1])
    try:
        theirs = RunDir(rec.path).read_config().get("epochs", "?")
    except (OSError, ValueError, AttributeError):
        theirs = "?"
    state = "finished" if rec.status == "done" else rec.status
    msg = (f"no run with epochs={epochs} to resume: the {state} run {rec.id} has epochs={theirs}. kdlens does not "
           "extend a run to more epochs (its learning-rate schedule is laid out for its epoch count); run without "
           f"--resume to train a new run with epochs={epochs}")
    if rec.status != "done" and RunDir(rec.path).checkpoint_files():
        msg += f", or continue {rec.id} with --epochs {theirs} --resume"
    raise KdlensError(msg)


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


class RunHook:
    """Extra work around a supervised run (:func:`run_training`): no-ops here.

    ``identity``: keys added to the run's identity (a run with the hook's extra output never
    reuses, nor is reused as, a plain run); ``start`` before training (``resume``: continuing a
    run); ``epoch_end`` after each epoch's row; ``finish`` may add to the metrics."""

    identity: dict[str, Any] = {}

    def start(self, run_dir: RunDir, resume: bool) -> None:
        pass

    def epoch_end(self, run_dir: RunDir, model: nn.Module, row: dict[str, Any]) -> None:
        pass

    def finish(self, run_dir: RunDir, metrics: dict[str, Any]) -> None:
        pass


def log_precision(cfg: TrainConfig, progress: bool) -> None:
    """Say which precision runs and why (``precision: auto`` depends on the hardware)."""
    if progress:
        from kdlens.config.precision import resolve_precision

        print(f"precision: {resolve_precision(cfg.precision, cfg.device)[1]}")


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
    restart: bool = False,
    resume_from: str = "last",
    resume_strict: bool = False,
    model: nn.Module | None = None,
    pair: DataPair | None = None,
    hook: RunHook | None = None,
) -> RunOutcome:
    """Train ``cfg.model`` on ``cfg.data`` (supervised), recorded in ``cfg.out``.

    ``resume``, ``restart``, ``resume_from``, ``resume_strict``: see :func:`execute_run`.
    ``model`` (an ``nn.Module``) and ``pair`` (resolved data) replace what the config names:
    the Python API passes the user's own objects this way.  ``hook``: extra work at the run's
    start, after each epoch and at its end (:class:`RunHook`; e.g. keeping every epoch's weights)."""
    hook = hook or RunHook()
    resume = resume or resume_from != "last"
    data = prepare_data(cfg.data, pair, log=progress)  # data, model and init are checked before any run is recorded
    log_precision(cfg, progress)
    device = resolve_device(cfg.device)
    model = build_student(cfg, data, device, model)
    check_trackers(cfg.log)

    def body(run_dir: RunDir) -> dict[str, Any]:
        for split_name, idx in data.splits.items():
            run_dir.save_split(split_name, idx)
        save_model_card(run_dir, cfg, model, data)
        hook.start(run_dir, resume)
        source = data.batch_source(data.train_indices, cfg.batch_size, device)
        with run_trackers(cfg, run_dir) as tracked:
            trainer = Trainer(
                model, SupervisedLoop(source, cfg.label_smoothing), cfg.optim, cfg.epochs,
                eval_set=data.eval_set(device) if cfg.eval_split == "test" else data.val_set(), run_dir=run_dir,
                seed=cfg.seed, device=device, bf16=cfg.bf16, channels_last=cfg.channels_last,
                eval_every=cfg.eval_every, progress=progress, description=f"{cfg.model.name} on {cfg.data.name}",
                trackers=tracked.trackers, on_epoch_end=lambda row: hook.epoch_end(run_dir, trainer.model, row),
            )
            metrics = trainer.fit(resume=resume).metrics()
            metrics["data_path"] = data.path
            hook.finish(run_dir, metrics)
            return tracked.finish(metrics)

    default = f"{short_name(cfg.model.name)}-{short_name(cfg.data.name)}"
    return execute_run(
        "train", run_identity(cfg, model, data, **hook.identity), cfg.model_dump(), cfg.out, cfg.name or default,
        resume, body,
        restart=restart, resume_from=resume_from, resume_strict=resume_strict,
    )


def short_name(ref: str) -> str:
    """A reference as a run-id fragment: ``torchvision:resnet18`` → ``resnet18``,
    ``folder:/data/pets`` → ``pets``, ``my_pkg.models:TinyNet`` → ``TinyNet``."""
    tail = ref.rstrip("/").replace("\\", "/").split(":")[-1].split("/")[-1].split(".")[-1]
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in tail) or "data"
