"""The training engine: one epoch loop for every kind of training.

Reproducibility: epoch ``e`` draws its shuffling/augmentation from a generator seeded
with ``(seed, e)`` and reseeds the global RNG (dropout) the same way, so a run resumed
from the checkpoint of epoch ``e`` replays epochs ``e+1…`` exactly as an uninterrupted
run would (bit-identical on CPU).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from kdlens.config import OptimConfig
from kdlens.errors import KdlensError, TrainingDivergedError
from kdlens.store import RunDir, safe_torch_load
from kdlens.train.accuracy import top_k_for, topk_correct
from kdlens.train.evaluate import EvalSet, autocast_context, evaluate
from kdlens.train.loop import Loop
from kdlens.train.progress import TrainingProgress
from kdlens.train.schedules import build_optimizer, build_scheduler
from kdlens.train.trackers import Trackers, numeric_entries


def epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7_919 + 17) % (2**63 - 1)


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@dataclass
class TrainResult:
    """Test accuracies in % (``*_acc5``: top-k with k = min(5, classes)); ``best_acc5`` is
    the top-5 of the epoch with the best top-1."""

    final_acc: float | None
    best_acc: float | None
    best_epoch: int | None
    epochs: int
    images_per_s: float
    history: list[dict[str, Any]] = field(default_factory=list)
    final_acc5: float | None = None
    best_acc5: float | None = None

    def metrics(self) -> dict[str, Any]:
        return {
            "final_acc": self.final_acc,
            "final_acc5": self.final_acc5,
            "best_acc": self.best_acc,
            "best_acc5": self.best_acc5,
            "best_epoch": self.best_epoch,
            "epochs": self.epochs,
            "images_per_s": self.images_per_s,
        }


class Trainer:
    """Fit ``model`` with ``loop`` for ``epochs``; evaluate, log, checkpoint, resume.

    ``trackers`` (:mod:`kdlens.train.trackers`) receive, every ``log_every`` steps and at
    the last step of an epoch, the step's loss parts, ``loss``, batch ``top1``/``top5`` (% of
    its labeled examples), ``lr`` and ``images_per_s`` at global step
    ``epoch · batches per epoch + step`` (``"step"`` scope), and each epoch the numbers of
    the metrics.jsonl row at step ``epoch`` (``"epoch"`` scope).
    """

    def __init__(
        self,
        model: nn.Module,
        loop: Loop,
        optim: OptimConfig,
        epochs: int,
        *,
        eval_set: EvalSet | None = None,
        run_dir: RunDir | None = None,
        seed: int = 0,
        device: torch.device | str = "cpu",
        bf16: bool = False,
        channels_last: bool = False,
        eval_every: int = 1,
        progress: bool = True,
        description: str = "train",
        on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
        trackers: Trackers | None = None,
        log_every: int = 10,
    ) -> None:
        if log_every < 1:
            raise KdlensError(f"log_every={log_every}: log every 1 or more steps")
        self.device = resolve_device(device) if isinstance(device, str) else device
        self.model = model.to(self.device)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.loop = loop
        for module in loop.trainable_modules():
            module.to(self.device)
        params = list(self.model.parameters())
        for module in loop.trainable_modules():
            params += list(module.parameters())
        self.optimizer = build_optimizer(params, optim)
        self.scheduler = build_scheduler(self.optimizer, optim, epochs)
        self.epochs = epochs
        self.eval_set = eval_set
        self.run_dir = run_dir
        self.seed = seed
        self.bf16 = bf16
        self.channels_last = channels_last
        self.eval_every = eval_every
        self.progress = progress
        self.description = description
        self.on_epoch_end = on_epoch_end
        self.trackers = trackers if trackers else None  # an empty composite costs nothing per step
        self.log_every = log_every
        self.start_epoch = 0
        self.best_acc: float | None = None
        self.best_acc5: float | None = None
        self.best_epoch: int | None = None

    # -- checkpoints -------------------------------------------------------------
    def state_dict(self, epoch: int) -> dict[str, Any]:
        return {
            "epoch": epoch,
            "epochs": self.epochs,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "loop": self.loop.state_dict(),
            "extra_modules": [m.state_dict() for m in self.loop.trainable_modules()],
            "best_acc": self.best_acc,
            "best_acc5": self.best_acc5,
            "best_epoch": self.best_epoch,
            "rng_torch": torch.get_rng_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.loop.load_state_dict(state.get("loop", {}))
        for module, module_state in zip(self.loop.trainable_modules(), state.get("extra_modules", [])):
            module.load_state_dict(module_state)
        self.best_acc = state.get("best_acc")
        self.best_acc5 = state.get("best_acc5")
        self.best_epoch = state.get("best_epoch")
        torch.set_rng_state(state["rng_torch"])
        self.start_epoch = int(state["epoch"])

    def resume(self) -> bool:
        """Load ``last.pt`` of the run directory; False when there is none.  (Which checkpoint
        to resume from, and whether it loads, is decided before training by
        :func:`kdlens.train.run.execute_run`.)"""
        if self.run_dir is None:
            return False
        if not self.run_dir.last_checkpoint.exists():
            if self.run_dir.metrics_path.exists():  # rows of a first epoch killed before its checkpoint
                self.run_dir.truncate_metrics(0)
            return False
        self.load_state_dict(safe_torch_load(self.run_dir.last_checkpoint, self.device))
        self.run_dir.truncate_metrics(self.start_epoch)
        return True

    def _save(self, epoch: int, is_best: bool) -> None:
        """``last.pt`` ← the state after ``epoch``; the one it replaces stays as ``previous.pt``;
        ``best.pt`` is the whole state too (so a run can resume from it)."""
        if self.run_dir is None:
            return
        self.run_dir.save_checkpoint(self.state_dict(epoch), is_best)

    def _heartbeat(self, force: bool = False) -> None:
        if self.run_dir is not None:
            self.run_dir.heartbeat(force)

    # -- training ----------------------------------------------------------------
    def _train_epoch(self, epoch: int, bar: TrainingProgress) -> dict[str, float]:
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
        if hasattr(self.loop, "on_epoch_start"):
            self.loop.on_epoch_start(epoch)
        torch.manual_seed(epoch_seed(self.seed, epoch) + 1)
        self.model.train()
        for module in self.loop.trainable_modules():
            module.train()
        totals: dict[str, float] = {}
        n_seen, n_correct, n_correct5, n_labeled, steps = 0, 0, 0, 0, 0
        first_step = epoch * self.loop.num_batches()  # global step numbering survives a resume
        logged_step, logged_seen, logged_time = -1, 0, time.perf_counter()
        last: dict[str, float] = {}
        start = time.perf_counter()
        for step, batch in enumerate(self.loop.batches(generator)):
            if self.channels_last and batch.x.dim() == 4:
                batch.x = batch.x.contiguous(memory_format=torch.channels_last)
            with autocast_context(self.device, self.bf16):
                out = self.loop.step(self.model, batch)
            _check_finite(out.parts, out.loss, epoch, step, self.bf16)
            self.optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            self.optimizer.step()
            self._heartbeat()  # rate-limited: at most every HEARTBEAT_EVERY_S
            steps += 1
            n_seen += batch.x.shape[0]
            last = {key: as_float(value) for key, value in out.parts.items()}
            last["loss"] = float(out.loss.detach())
            for key, value in last.items():
                totals[key] = totals.get(key, 0.0) + value
            if out.logits is not None and out.targets is not None:
                b_labeled, b_correct, b_correct5 = _batch_hits(out.logits.detach(), out.targets)
                n_labeled += b_labeled
                n_correct += b_correct
                n_correct5 += b_correct5
                if b_labeled:
                    last["top1"] = 100.0 * b_correct / b_labeled
                    last["top5"] = 100.0 * b_correct5 / b_labeled
            if self.trackers is not None and steps % self.log_every == 0:
                logged_time = self._log_step(last, first_step + step, n_seen - logged_seen, logged_time)
                logged_step, logged_seen = first_step + step, n_seen
            elapsed = time.perf_counter() - start
            bar.advance(
                1,
                epoch=f"{epoch + 1}/{self.epochs}",
                loss=totals["loss"] / steps,
                **({"acc": 100.0 * n_correct / n_labeled} if n_labeled else {}),
                **{"img/s": f"{n_seen / max(elapsed, 1e-9):.0f}"},
            )
        elapsed = time.perf_counter() - start
        if self.trackers is not None and steps and logged_step != first_step + steps - 1:
            self._log_step(last, first_step + steps - 1, n_seen - logged_seen, logged_time)
        row = {f"train_{k}": v / max(steps, 1) for k, v in totals.items()}
        if n_labeled:
            row["train_acc"] = 100.0 * n_correct / n_labeled
            row["train_acc5"] = 100.0 * n_correct5 / n_labeled
        row["images_per_s"] = n_seen / max(elapsed, 1e-9)
        row["epoch_seconds"] = elapsed
        return row

    def _log_step(self, values: dict[str, float], global_step: int, images: int, since: float) -> float:
        """Send one step's numbers to the trackers (``images_per_s`` over the ``images`` seen
        since the previous log at time ``since``); returns the time now."""
        now = time.perf_counter()
        metrics = {**values, "lr": self.optimizer.param_groups[0]["lr"],
                   "images_per_s": images / max(now - since, 1e-9)}
        self.trackers.log_metrics(metrics, global_step, "step")
        return now

    def fit(self, resume: bool = False) -> TrainResult:
        if resume and self.resume() and self.trackers is not None:
            self.trackers.resumed(self.start_epoch, self.start_epoch * self.loop.num_batches())
        history = self.run_dir.read_metrics() if self.run_dir and resume else []
        self._heartbeat(force=True)
        total_steps = self.epochs * self.loop.num_batches()
        with TrainingProgress(self.description, total_steps, self.progress) as bar:
            bar.update(self.start_epoch * self.loop.num_batches())
            for epoch in range(self.start_epoch, self.epochs):
                row = {"epoch": epoch + 1, "lr": self.optimizer.param_groups[0]["lr"]}
                row.update(self._train_epoch(epoch, bar))
                self.scheduler.step()
                is_best = False
                if self.eval_set is not None and (
                    (epoch + 1) % self.eval_every == 0 or epoch + 1 == self.epochs
                ):
                    bar.phase("evaluating")
                    scores = evaluate(
                        self.model, self.eval_set, self.device, bf16=self.bf16,
                        channels_last=self.channels_last, on_batch=bar.tick,
                    )
                    bar.phase("training")
                    row["test_acc"], row["test_acc5"], row["test_loss"] = scores["acc"], scores["acc5"], scores["loss"]
                    if self.best_acc is None or scores["acc"] > self.best_acc:
                        self.best_acc, self.best_epoch, is_best = scores["acc"], epoch + 1, True
                        self.best_acc5 = scores["acc5"]
                    bar.log(
                        f"epoch {epoch + 1}/{self.epochs}: loss {row['train_loss']:.4f}, "
                        f"test acc {scores['acc']:.2f}%"
                    )
                history.append(row)
                if self.run_dir is not None:
                    self.run_dir.append_metrics(row)
                if self.trackers is not None:
                    self.trackers.log_metrics(
                        {k: v for k, v in numeric_entries(row).items() if k != "epoch"}, epoch + 1, "epoch")
                self._save(epoch + 1, is_best)
                self._heartbeat(force=True)
                if self.on_epoch_end is not None:
                    self.on_epoch_end(row)
        last_eval = [r for r in history if "test_acc" in r]
        speeds = [r["images_per_s"] for r in history if "images_per_s" in r]
        return TrainResult(
            final_acc=last_eval[-1]["test_acc"] if last_eval else None,
            final_acc5=last_eval[-1].get("test_acc5") if last_eval else None,
            best_acc=self.best_acc,
            best_acc5=self.best_acc5,
            best_epoch=self.best_epoch,
            epochs=self.epochs,
            images_per_s=sum(speeds) / len(speeds) if speeds else 0.0,
            history=history,
        )


def _batch_hits(logits: torch.Tensor, targets: torch.Tensor) -> tuple[int, int, int]:
    """(labeled, top-1 correct, top-k correct with k = min(5, classes)) of one batch, read
    back in one device sync; rows with target −1 (unlabeled) count nowhere."""
    labeled = targets >= 0
    hit1 = (logits.argmax(1) == targets) & labeled
    hit5 = topk_correct(logits, targets.clamp(min=0), top_k_for(logits.shape[1])) & labeled
    counts = torch.stack([labeled.sum(), hit1.sum(), hit5.sum()]).tolist()
    return counts[0], counts[1], counts[2]


def as_float(value: torch.Tensor | float) -> float:
    return float(value.detach()) if isinstance(value, torch.Tensor) else float(value)


def _check_finite(
    parts: dict[str, torch.Tensor | float], loss: torch.Tensor, epoch: int, step: int, bf16: bool = False
) -> None:
    if bool(torch.isfinite(loss.detach()).all()):
        return
    bad = [k for k, v in parts.items() if not math.isfinite(as_float(v))]
    which = ", ".join(bad) if bad else "total loss"
    advice = "try a lower learning rate or temperature" + (", or precision=fp32 (bf16 is on)" if bf16 else "")
    if "hint" in bad:
        # measured: FitNet's β = 100 (RepDistiller, tuned with a conv-BN-ReLU regressor) diverges
        # in 5 steps from a resnet56 whose hint features have mean squares of 3.4–7.3
        advice = ("the hint term diverged: try a lower beta (hint-loss weight), a lower learning rate, "
                  "or for fitnet loss.regressor=repdistiller (conv-BN-ReLU; regressor_bn=true alone lacks the ReLU)")
    raise TrainingDivergedError(
        f"non-finite loss ({which} = {float(loss.detach())}) at epoch {epoch + 1}, step {step + 1}; {advice}"
    )
