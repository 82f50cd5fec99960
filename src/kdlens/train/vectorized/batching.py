"""Data plumbing: the teacher-logit stack, each student's allowed training examples, building
the students from their seeds, and :class:`_Batcher`, which yields one shared batch stream
(``batches="shared"``) or each student's own subset batches padded to ``S×B``
(``batches="own"``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from kdlens.data import Dataset, TensorBatches, normalize
from kdlens.data.dataset import as_index_tensor
from kdlens.errors import KdlensError
from kdlens.train.trainer import epoch_seed
from kdlens.train.vectorized.spec import StudentSpec


def _teacher_stack(teacher_logits: Tensor | Sequence[Tensor] | None, n: int, k: int) -> Tensor | None:
    if teacher_logits is None:
        return None
    t = torch.stack(list(teacher_logits)) if isinstance(teacher_logits, (list, tuple)) else teacher_logits
    t = torch.as_tensor(t).float()
    if t.dim() == 2:
        t = t.unsqueeze(0)
    if t.dim() != 3 or t.shape[1] != n or t.shape[2] != k:
        raise KdlensError(
            f"teacher logits must be N×K (or M×N×K for M teachers) for the {n} training examples and "
            f"{k} classes; got shape {tuple(t.shape)}"
        )
    return t


def _allowed(specs: Sequence[StudentSpec], labels: Tensor, n: int) -> Tensor:
    """Bool ``S×N``: which training examples each student may use."""
    allowed = torch.ones(len(specs), n, dtype=torch.bool)
    for i, spec in enumerate(specs):
        if spec.subset is not None:
            row = torch.zeros(n, dtype=torch.bool)
            row[as_index_tensor(spec.subset, n, "student spec subset")] = True
            allowed[i] = row
        if spec.removed_classes:
            allowed[i] &= ~torch.isin(labels.cpu(), torch.tensor(list(spec.removed_classes)))
    if not bool(allowed.any(1).all()):
        empty = [i for i in range(len(specs)) if not bool(allowed[i].any())]
        raise KdlensError(f"student(s) {empty} have no training example left (subset minus removed classes)")
    return allowed


def _build_students(student: str | Callable[[int], nn.Module], specs: Sequence[StudentSpec], train: Dataset) -> list[nn.Module]:
    if isinstance(student, str):
        from kdlens.train.model_setup import model_for_data

        return [model_for_data(student, train, spec.seed) for spec in specs]
    models = []
    for spec in specs:
        torch.manual_seed(spec.seed)
        models.append(student(spec.seed))
    return models


class _Batcher:
    """Batches for the stack: one shared stream, or one per student padded to ``S×B``."""

    def __init__(self, mode: str, train: Dataset, allowed: Tensor, batch_size: int, seed: int, device: torch.device):
        self.mode = mode
        self.images = train.images.to(device)
        self.labels = train.labels.to(device)
        self.mean, self.std = train.mean, train.std
        self.allowed = allowed.to(device)
        self.batch_size = batch_size
        self.seed = seed
        self.device = device
        n = len(train)
        self.indices = [torch.nonzero(allowed[i]).flatten() for i in range(allowed.shape[0])]
        self.steps_per_epoch = (
            -(-n // batch_size) if mode == "shared" else [-(-int(ix.numel()) // batch_size) for ix in self.indices]
        )

    def prepare(self, x: Tensor) -> Tensor:
        return normalize(x, self.mean, self.std)

    def total_steps(self, epochs: int | Sequence[int]) -> int:
        if self.mode == "shared":
            return int(epochs) * int(self.steps_per_epoch)  # type: ignore[arg-type,call-overload]
        per = _per_student(epochs, len(self.indices))
        return max(e * n for e, n in zip(per, self.steps_per_epoch))  # type: ignore[arg-type]

    def shared_epochs(self, epochs: int):
        """Yield ``(epoch, x, y, idx, w)`` with ``w`` = S×B allowed mask."""
        for epoch in range(epochs):
            gen = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
            torch.manual_seed(epoch_seed(self.seed, epoch) + 1)
            for x, y, idx in TensorBatches(self.images, self.labels, self.batch_size, shuffle=True, generator=gen):
                w = self.allowed[:, idx].float()
                yield epoch, self.prepare(x), y, idx, w

    def own_epochs(self, epochs: int | Sequence[int]):
        """Yield ``(student_epochs, x S×B×…, y S×B, idx S×B, w S×B)``; each student runs its own
        subset loader (per-epoch generator as the Trainer) for its own number of epochs;
        finished students get weight 0."""
        s, b = len(self.indices), self.batch_size
        per = _per_student(epochs, s)
        iters: list[Any] = [None] * s
        epoch_of = [0] * s
        done = [False] * s

        def start(i: int) -> None:
            gen = torch.Generator().manual_seed(epoch_seed(self.seed, epoch_of[i]))
            iters[i] = iter(TensorBatches(self.images, self.labels, b, shuffle=True, generator=gen,
                                          indices=self.indices[i].cpu()))

        for i in range(s):
            start(i)
        while True:
            idx = torch.zeros(s, b, dtype=torch.long, device=self.device)
            w = torch.zeros(s, b, device=self.device)
            for i in range(s):
                if done[i]:
                    continue
                batch = next(iters[i], None)
                if batch is None:
                    epoch_of[i] += 1
                    if epoch_of[i] >= per[i]:
                        done[i] = True
                        continue
                    start(i)
                    batch = next(iters[i])
                got = batch[2]
                idx[i, : got.numel()] = got
                w[i, : got.numel()] = 1.0
            if all(done):
                return
            flat = idx.flatten()
            x = self.prepare(self.images.index_select(0, flat)).view(s, b, *self.images.shape[1:])
            yield list(epoch_of), x, self.labels[flat].view(s, b), idx, w


def _per_student(epochs: int | Sequence[int], s: int) -> list[int]:
    if isinstance(epochs, (int, np.integer)):
        return [int(epochs)] * s
    per = [int(e) for e in epochs]
    if len(per) != s:
        raise KdlensError(f"{len(per)} epoch counts for {s} students")
    return per
