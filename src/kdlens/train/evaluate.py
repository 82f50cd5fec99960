"""Test-set evaluation: accuracy and cross-entropy of a model on in-memory or streamed data.

An evaluation set is anything with ``labels`` (int64, N) and ``batches(batch_size, device)``
yielding model-ready inputs in index order: :class:`EvalSet` slices in-memory tensors,
:class:`kdlens.train.stream_source.StreamedEvalSet` reads a torch ``Dataset`` through a
``DataLoader``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from kdlens.train.accuracy import top_k_for, topk_correct


@dataclass
class EvalSet:
    """Raw images (uint8 or float), labels and the transform that prepares a batch."""

    images: torch.Tensor
    labels: torch.Tensor
    prepare: Callable[[torch.Tensor], torch.Tensor]

    def batches(self, batch_size: int, device: torch.device) -> Iterator[torch.Tensor]:
        """Prepared inputs of ``batch_size`` consecutive examples, in index order."""
        for start in range(0, len(self.labels), batch_size):
            yield self.prepare(self.images[start : start + batch_size].to(device))


def autocast_context(device: torch.device, bf16: bool):
    if not bf16:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    data: EvalSet,
    device: torch.device,
    batch_size: int = 1000,
    bf16: bool = False,
    channels_last: bool = False,
    on_batch: Callable[[], None] | None = None,
) -> torch.Tensor:
    """Logits (float32, on CPU) for every example of ``data`` in eval mode; ``on_batch`` is
    called after each batch (progress displays)."""
    was_training = model.training
    model.eval()
    outputs = []
    try:
        for x in data.batches(batch_size, device):
            if channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast_context(device, bf16):
                outputs.append(model(x).float().cpu())
            if on_batch is not None:
                on_batch()
    finally:
        model.train(was_training)
    return torch.cat(outputs) if outputs else torch.empty(0)


def evaluate(
    model: nn.Module,
    data: EvalSet,
    device: torch.device,
    batch_size: int = 1000,
    bf16: bool = False,
    channels_last: bool = False,
    on_batch: Callable[[], None] | None = None,
) -> dict[str, float]:
    """``{"acc": top-1 accuracy in %, "acc5": top-k accuracy in % with k = min(5, classes),
    "loss": mean cross-entropy}`` (top-k as in :func:`kdlens.train.accuracy.topk_correct`)."""
    logits = predict_logits(model, data, device, batch_size, bf16, channels_last, on_batch)
    labels = data.labels.cpu()
    acc = (logits.argmax(1) == labels).float().mean().item() * 100.0
    acc5 = topk_correct(logits, labels, top_k_for(logits.shape[1])).float().mean().item() * 100.0
    loss = F.cross_entropy(logits, labels).item()
    return {"acc": acc, "acc5": acc5, "loss": loss}
