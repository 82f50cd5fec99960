"""Decoupled knowledge distillation (Zhao et al. 2022)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from kdlens.distill.losses.base import LogitLoss, register_loss, targets_or_teacher_argmax
from kdlens.distill.losses.kd import check_temperature


def _binary_log_probs(z: Tensor, target_mask: Tensor) -> Tensor:
    """log [p_target, 1 − p_target] of softmax(z), shape (B, 2), computed stably."""
    lse_all = torch.logsumexp(z, dim=1)
    lse_other = torch.logsumexp(z.masked_fill(target_mask, float("-inf")), dim=1)
    log_pt = (z * target_mask).sum(dim=1) - lse_all
    return torch.stack([log_pt, lse_other - lse_all], dim=1)


def _non_target_log_probs(z: Tensor, target_mask: Tensor) -> Tensor:
    """log softmax over the non-target classes; 0 at the target (a placeholder)."""
    return F.log_softmax(z.masked_fill(target_mask, float("-inf")), dim=1).masked_fill(target_mask, 0.0)


@register_loss("dkd")
class DKDLoss(LogitLoss):
    r"""Zhao, Cui, Song, Qiu & Liang 2022, *Decoupled Knowledge Distillation* (CVPR), §3.

    With p = σ(z/T), target class y, b = [p_y, 1 − p_y] and p̂ the softmax over the
    non-target classes only:

    .. math::
        \mathrm{TCKD} = \mathrm{KL}(b^t\,\|\,b^s),\qquad
        \mathrm{NCKD} = \mathrm{KL}(\hat p^t\,\|\,\hat p^s),\qquad
        L_{DKD} = T^2\,\frac1B\sum_b\big(\alpha\,\mathrm{TCKD}_b + \beta\,\mathrm{NCKD}_b\big)

    Classical KD is the special case KD/T² = TCKD + (1 − p^t_y)·NCKD (the paper's reformulation).  The
    T² factor follows the authors' code.  Their CIFAR-100 setting: α = 1
    (``alpha_tckd``), β = 8 (``beta_nckd``), T = 4, CE weight 1, with the DKD term
    linearly warmed up over the first 20 epochs (warm-up is the training loop's
    job).  Unlabeled samples (target −1) use the teacher's arg-max as target class.
    """

    needs_targets = True
    #: the logit term rises linearly over the first 20 of 240 epochs (Zhao et al. 2022), scaled
    warmup_fraction = 20 / 240

    def __init__(self, T: float = 4.0, alpha_tckd: float = 1.0, beta_nckd: float = 8.0) -> None:
        super().__init__()
        self.T = check_temperature("dkd", T)
        self.alpha_tckd = float(alpha_tckd)
        self.beta_nckd = float(beta_nckd)

    def decoupled(self, student_logits: Tensor, teacher_logits: Tensor, targets: Tensor | None) -> tuple[Tensor, Tensor]:
        """Per-sample (TCKD, NCKD), each of shape (B,), without the T² factor."""
        y = targets_or_teacher_argmax(targets, teacher_logits)
        mask = F.one_hot(y, student_logits.shape[1]).bool()
        z_s, z_t = student_logits / self.T, teacher_logits / self.T
        lb_s, lb_t = _binary_log_probs(z_s, mask), _binary_log_probs(z_t, mask)
        tckd = (lb_t.exp() * (lb_t - lb_s)).sum(dim=1)
        ln_s, ln_t = _non_target_log_probs(z_s, mask), _non_target_log_probs(z_t, mask)
        p_hat_t = ln_t.exp().masked_fill(mask, 0.0)
        nckd = (p_hat_t * (ln_t - ln_s)).sum(dim=1)
        return tckd, nckd

    def forward(self, student_logits: Tensor, teacher_logits: Tensor | None = None, targets: Tensor | None = None) -> Tensor:
        tckd, nckd = self.decoupled(student_logits, self._teacher(teacher_logits, student_logits), targets)
        return (self.alpha_tckd * tckd + self.beta_nckd * nckd).mean() * self.T**2
