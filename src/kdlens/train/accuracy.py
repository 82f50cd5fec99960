"""Top-k accuracy of logits against integer labels (top-1 and top-5 in every report).

An example counts as correct at ``k`` when fewer than ``k`` classes score strictly higher
than its label:

    correct_k(i) = [ #{c : z_ic > z_i,y_i  or  z_ic is NaN} < k ]

the usual "label among the k largest logits" (ImageNet's top-5 error, Russakovsky et al.
2015; RepDistiller's ``accuracy(output, target, topk=(1, 5))`` with ``torch.topk``).  The two
agree whenever logits do not tie; on ties (common in bf16) ``torch.topk`` keeps an arbitrary
subset of the tied classes while the rank count here gives the label the benefit of the tie,
so the result is deterministic and top-1 by ``argmax`` is never above top-k.
"""

from __future__ import annotations

import torch

#: the k reported next to top-1 (capped at the number of classes)
TOP_K = 5


def top_k_for(num_classes: int, k: int = TOP_K) -> int:
    """``min(k, num_classes)``: top-5 of a 3-class problem is its top-3 (always 100%)."""
    return max(1, min(k, int(num_classes)))


def topk_correct(logits: torch.Tensor, targets: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean (N,) mask: the label of row ``i`` is among the ``k`` highest logits.

    ``logits`` (N, C) any float dtype, ``targets`` (N,) int64 in ``0..C-1`` (no −1 here:
    select labeled rows first).  A NaN logit ranks above every number.
    """
    if logits.dim() != 2:
        raise ValueError(f"logits must be (N, C), got shape {tuple(logits.shape)}")
    label_logit = logits.gather(1, targets.view(-1, 1))
    above = (logits > label_logit) | logits.isnan()
    return above.sum(1) < k


def topk_accuracy(logits: torch.Tensor, targets: torch.Tensor, k: int) -> float:
    """Top-``k`` accuracy in % over examples with a label (target ≥ 0); NaN when none has one."""
    labeled = targets >= 0
    n = int(labeled.sum())
    if n == 0:
        return float("nan")
    return 100.0 * int(topk_correct(logits[labeled], targets[labeled], k).sum()) / n
