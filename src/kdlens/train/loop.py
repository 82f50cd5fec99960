"""What one training step computes, separated from the engine that runs it.

A *loop* yields batches for an epoch and turns a batch into a loss.  The
:class:`~kdlens.train.trainer.Trainer` owns everything else (optimiser, schedule,
precision, checkpoints, progress, metrics), so supervised, distillation and
semi-supervised training are loops plugged into one engine rather than copies of it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class Batch:
    """Inputs ready for the model: ``x`` float (normalised), ``y`` int64 (−1 = unlabeled)."""

    x: torch.Tensor
    y: torch.Tensor
    idx: torch.Tensor
    extras: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class StepOutput:
    loss: torch.Tensor
    parts: dict[str, torch.Tensor]
    logits: torch.Tensor | None = None
    targets: torch.Tensor | None = None


class BatchSource(Protocol):
    def __len__(self) -> int: ...

    def epoch(self, generator: torch.Generator) -> Iterator[Batch]: ...


class Loop(Protocol):
    """The protocol every training loop follows."""

    def num_batches(self) -> int: ...

    def batches(self, generator: torch.Generator) -> Iterator[Batch]: ...

    def step(self, model: nn.Module, batch: Batch) -> StepOutput: ...

    def trainable_modules(self) -> list[nn.Module]:
        """Extra modules trained with the model (e.g. a hint loss's regressors)."""
        ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class SourceLoop:
    """Defaults shared by loops that draw their batches from one :class:`BatchSource`
    and keep no state of their own beyond ``extra_modules``."""

    source: BatchSource
    extra_modules: tuple[nn.Module, ...] = ()

    def num_batches(self) -> int:
        return len(self.source)

    def batches(self, generator: torch.Generator) -> Iterator[Batch]:
        return self.source.epoch(generator)

    def trainable_modules(self) -> list[nn.Module]:
        return list(self.extra_modules)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class SupervisedLoop(SourceLoop):
    """Cross-entropy (optionally label-smoothed, Szegedy et al. 2016) on labeled batches."""

    def __init__(self, source: BatchSource, label_smoothing: float = 0.0) -> None:
        self.source = source
        self.label_smoothing = label_smoothing

    def step(self, model: nn.Module, batch: Batch) -> StepOutput:
        logits = model(batch.x)
        ce = F.cross_entropy(logits.float(), batch.y, label_smoothing=self.label_smoothing)
        return StepOutput(loss=ce, parts={"ce": ce}, logits=logits, targets=batch.y)
