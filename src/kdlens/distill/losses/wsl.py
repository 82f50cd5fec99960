"""Weighted soft labels (Zhou et al. 2021)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from kdlens.distill.losses.base import LogitLoss, register_loss, targets_or_teacher_argmax
from kdlens.distill.losses.kd import check_temperature


@register_loss("wsl")
class WSLLoss(LogitLoss):
    r"""Zhou, Song, Chen, Zhou, Wang, Yuan & Zhang 2021, *Rethinking Soft Labels for
    Knowledge Distillation: A Bias-Variance Tradeoff Perspective* (ICLR), §4:

    .. math::
        w_b = 1 - \exp\!\big(-L^{s}_{ce,b} / L^{t}_{ce,b}\big),\qquad
        L_{WSL} = T^2\,\frac1B\sum_b w_b\Big(-\sum_k \sigma(z^t_b/T)_k \log\sigma(z^s_b/T)_k\Big)

    with L_ce the per-sample cross-entropies of student and teacher against the
    label at T = 1.  The weight down-weights "regularisation samples", where the
    student already fits the label better than the teacher (w → 0 as L^s/L^t → 0).
    The weight is a constant for the gradient (computed without gradient, as in
    the authors' code); the ratio is ≥ 0 by construction and L^t is floored at
    1e-7.  The soft term is the paper's cross-entropy; it differs from KL by the
    teacher entropy, a per-sample constant, so gradients are those of weighted KD.

    Unlabeled samples (target −1) use the teacher's arg-max as their label.
    Defaults T = 2 with objective weight α = 2.5 (the paper's ImageNet setting).
    """

    needs_targets = True

    def __init__(self, T: float = 2.0) -> None:
        super().__init__()
        self.T = check_temperature("wsl", T)

    def sample_weights(self, student_logits: Tensor, teacher_logits: Tensor, targets: Tensor | None) -> Tensor:
        """w_b = 1 − exp(−CE_s/CE_t), shape (B,), without gradient."""
        with torch.no_grad():
            y = targets_or_teacher_argmax(targets, teacher_logits)
            ce_s = F.cross_entropy(student_logits, y, reduction="none")
            ce_t = F.cross_entropy(teacher_logits, y, reduction="none")
            return 1.0 - torch.exp(-ce_s / ce_t.clamp_min(1e-7))

    def forward(self, student_logits: Tensor, teacher_logits: Tensor | None = None, targets: Tensor | None = None) -> Tensor:
        z_t = self._teacher(teacher_logits, student_logits)
        w = self.sample_weights(student_logits.detach(), z_t, targets)
        p_t = F.softmax(z_t / self.T, dim=1)
        soft_ce = -(p_t * F.log_softmax(student_logits / self.T, dim=1)).sum(dim=1)
        return (w * soft_ce).mean() * self.T**2
