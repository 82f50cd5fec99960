"""Evaluation of a stack: every student's eval-mode logits on a data set
(:func:`stack_logits`), and overall and per-class top-1 accuracies (:func:`evaluate_stack`,
:func:`accuracies`)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from kdlens.data import Dataset, normalize
from kdlens.train.vectorized.stack import StackedStudents


@torch.no_grad()
def stack_logits(stack: StackedStudents, data: Dataset, device: torch.device | str = "cpu", batch_size: int = 1000) -> Tensor:
    """Eval-mode logits ``S×N×K`` (CPU) of every student for every example of ``data``."""
    was = stack.training
    stack.eval()
    out = []
    try:
        for start in range(0, len(data), batch_size):
            x = normalize(data.images[start : start + batch_size].to(device), data.mean, data.std)
            out.append(stack(x).float().cpu())
    finally:
        stack.train(was)
    return torch.cat(out, dim=1)


def evaluate_stack(
    stack: StackedStudents, data: Dataset, device: torch.device | str = "cpu", batch_size: int = 1000
) -> tuple[np.ndarray, np.ndarray]:
    """``(accuracy S, class_accuracy S×K)`` in % on ``data``."""
    logits = stack_logits(stack, data, device, batch_size)
    return accuracies(logits, data.labels, data.num_classes)


def accuracies(logits: Tensor, labels: Tensor, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Overall and per-class top-1 accuracy (%) of ``S×N×K`` (or ``N×K``) logits."""
    if logits.dim() == 2:
        logits = logits.unsqueeze(0)
    labels = labels.cpu()
    correct = (logits.argmax(2) == labels.unsqueeze(0)).double()  # S×N
    acc = correct.mean(1).numpy() * 100.0
    counts = torch.bincount(labels, minlength=num_classes).double()
    per_class = torch.zeros(correct.shape[0], num_classes, dtype=torch.float64)
    per_class.index_add_(1, labels, correct)
    cls = (per_class / counts.clamp_min(1)).numpy() * 100.0
    cls[:, counts.numpy() == 0] = np.nan
    return acc, cls
