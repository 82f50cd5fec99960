"""A supervised run that keeps its model's weights after **every** epoch.

:func:`run_training_keeping_epochs` is :func:`kdlens.train.run.run_training` (same data, model,
Trainer, trackers and run store) plus ``checkpoints/epochs/epoch-NNN.pt`` after each epoch: the
weights (``{"model": state_dict, "epoch": e, "test_acc": …}``), loadable by
:func:`kdlens.models.weights.load_weights` / ``load_teacher(weights=…)``. One run of ``E``
epochs thus serves a sweep over ``1…E`` epochs (Vats 2021 ch. 6: soft labels of a teacher after
each epoch) instead of ``E`` separate runs — and every epoch's weights come from the one
learning-rate schedule laid out for ``E`` epochs, as in the thesis's Keras training.

The run's identity is the plain run's plus ``epoch_checkpoints: true``: it never reuses (or is
reused as) a run of the same config without the per-epoch files.  It is ``run_training`` with
the :class:`KeepEveryEpoch` hook.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from kdlens.config import TrainConfig
from kdlens.errors import KdlensError
from kdlens.store import RunDir, atomic_write_bytes, safe_torch_load
from kdlens.store.atomic import torch_bytes
from kdlens.train.run import RunHook, RunOutcome, run_training

__all__ = ["epoch_checkpoint", "epoch_checkpoints", "run_training_keeping_epochs"]

EPOCHS_DIR = ("checkpoints", "epochs")


def epoch_checkpoint(run: str | Path, epoch: int) -> Path:
    """Where run ``run`` keeps its weights after ``epoch`` (1-based)."""
    return Path(run).joinpath(*EPOCHS_DIR, f"epoch-{int(epoch):03d}.pt")


def epoch_checkpoints(run: str | Path) -> dict[int, Path]:
    """Epoch → weights file of every epoch the run kept (empty for a plain run)."""
    folder = Path(run).joinpath(*EPOCHS_DIR)
    out = {}
    for path in sorted(folder.glob("epoch-*.pt")) if folder.is_dir() else []:
        try:
            out[int(path.stem.split("-", 1)[1])] = path
        except ValueError:
            continue
    return dict(sorted(out.items()))


def _cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}


def _keep(run_dir: RunDir, model: torch.nn.Module, epoch: int, test_acc: Any) -> None:
    atomic_write_bytes(epoch_checkpoint(run_dir.path, epoch),
                       torch_bytes({"model": _cpu_state(model), "epoch": int(epoch), "test_acc": test_acc}))


def _keep_resumed_epoch(run_dir: RunDir) -> None:
    """A kill between ``last.pt`` and the epoch's file leaves that epoch without one: write it
    from ``last.pt`` before training resumes after it."""
    if not run_dir.last_checkpoint.exists():
        return
    state = safe_torch_load(run_dir.last_checkpoint)
    if not isinstance(state, dict) or "epoch" not in state or "model" not in state:
        return
    epoch = int(state["epoch"])
    if epoch >= 1 and not epoch_checkpoint(run_dir.path, epoch).exists():
        rows = [r for r in run_dir.read_metrics() if r.get("epoch") == epoch]
        atomic_write_bytes(epoch_checkpoint(run_dir.path, epoch), torch_bytes(
            {"model": {k: v.to("cpu") for k, v in state["model"].items()}, "epoch": epoch,
             "test_acc": rows[-1].get("test_acc") if rows else None}))


class KeepEveryEpoch(RunHook):
    """The :class:`~kdlens.train.run.RunHook` that writes ``epoch-NNN.pt`` after every epoch."""

    identity = {"epoch_checkpoints": True}

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def start(self, run_dir: RunDir, resume: bool) -> None:
        if resume:
            _keep_resumed_epoch(run_dir)

    def epoch_end(self, run_dir: RunDir, model: torch.nn.Module, row: dict[str, Any]) -> None:
        _keep(run_dir, model, row["epoch"], row.get("test_acc"))

    def finish(self, run_dir: RunDir, metrics: dict[str, Any]) -> None:
        missing = [e for e in range(1, self.epochs + 1) if not epoch_checkpoint(run_dir.path, e).exists()]
        if missing:
            raise KdlensError(f"run {run_dir.path.name}: no weights kept for epochs {missing}; "
                              "run it again with restart to train it from epoch 1")
        metrics["epoch_checkpoints"] = self.epochs


def run_training_keeping_epochs(cfg: TrainConfig, resume: bool = False, progress: bool = True) -> RunOutcome:
    """Train ``cfg`` like :func:`~kdlens.train.run.run_training` and keep every epoch's weights
    (module docstring). ``resume`` continues an interrupted run (its kept epochs stay)."""
    return run_training(cfg, resume=resume, progress=progress, hook=KeepEveryEpoch(cfg.epochs))
