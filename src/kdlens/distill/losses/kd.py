"""Knowledge distillation with softened outputs (Hinton, Vinyals & Dean 2015)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from kdlens.distill.losses.base import LogitLoss, register_loss
from kdlens.errors import KdlensError


def soft_target_kl(student_scaled_logits: Tensor, target_probs: Tensor) -> Tensor:
    """Per-sample KL(p ‖ softmax(z)) = Σ_k p_k (log p_k − log softmax(z)_k), shape (B,).

    ``0·log 0`` is taken as 0, so one-hot or clamped targets are fine.
    """
    log_q = F.log_softmax(student_scaled_logits, dim=1)
    return (torch.xlogy(target_probs, target_probs) - target_probs * log_q).sum(dim=1)


def check_temperature(name: str, T: float) -> float:
    if not T > 0:
        raise KdlensError(f"{name}: temperature T must be > 0, got {T}")
    return float(T)


@register_loss("kd")
class KDLoss(LogitLoss):
    r"""Hinton et al. 2015, *Distilling the Knowledge in a Neural Network*, §2.

    .. math::
        L_{KD} = T^2 \cdot \frac{1}{B}\sum_b \mathrm{KL}\big(\sigma(z^t_b/T)\,\|\,\sigma(z^s_b/T)\big)

    The T² factor keeps gradient magnitudes comparable across temperatures (§2).
    Uses no targets; unlabeled samples are distilled like labeled ones.
    Default T = 4 (RepDistiller's CIFAR-100 setting, Tian et al. 2020).
    """

    def __init__(self, T: float = 4.0) -> None:
        super().__init__()
        self.T = check_temperature("kd", T)

    def forward(self, student_logits: Tensor, teacher_logits: Tensor | None = None, targets: Tensor | None = None) -> Tensor:
        p_t = F.softmax(self._teacher(teacher_logits, student_logits) / self.T, dim=1)
        return soft_target_kl(student_logits / self.T, p_t).mean() * self.T**2
