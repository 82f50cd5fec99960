"""Label smoothing (Szegedy et al. 2016) as the no-similarity limit of KD (Vats 2021)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from kdlens.distill.losses.base import LogitLoss, register_loss
from kdlens.errors import KdlensError


def smoothed_labels(targets: Tensor, num_classes: int, alpha_ls: float, dtype: torch.dtype = torch.float32) -> Tensor:
    """(1 − α)·onehot(y) + α/K for each target ``y`` (all must be ≥ 0)."""
    onehot = F.one_hot(targets, num_classes).to(dtype)
    return (1.0 - alpha_ls) * onehot + alpha_ls / num_classes


@register_loss("ls")
class LabelSmoothingLoss(LogitLoss):
    r"""Cross-entropy against label-smoothed targets.

    .. math::
        q = (1-\alpha_{LS})\,\mathrm{onehot}(y) + \alpha_{LS}/K,\qquad
        L_{LS} = -\frac{1}{B_\ell}\sum_{b\,\text{labeled}} \sum_k q_{bk}\log\sigma(z^s_b)_k

    Szegedy et al. 2016, *Rethinking the Inception Architecture*, §7.  In the
    soft-label hypothesis (Vats 2021) this is KD with a "teacher" whose soft label
    carries no class similarity: the non-target mass is spread uniformly.  It
    differs from KL(q ‖ p_s) only by the constant entropy H(q).

    ``teacher_logits`` is ignored; samples with target −1 (unlabeled) are
    excluded (the loss is 0 when none is labeled).  Default α_LS = 0.1 (Szegedy
    et al. 2016).
    """

    needs_teacher = False
    needs_targets = True

    def __init__(self, alpha_ls: float = 0.1) -> None:
        super().__init__()
        if not 0.0 <= alpha_ls <= 1.0:
            raise KdlensError(f"ls: alpha_ls must be in [0, 1], got {alpha_ls}")
        self.alpha_ls = float(alpha_ls)

    def soft_labels(self, targets: Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> Tensor:
        """The smoothed target distribution for each (labeled) target."""
        return smoothed_labels(targets, num_classes, self.alpha_ls, dtype)

    def forward(self, student_logits: Tensor, teacher_logits: Tensor | None = None, targets: Tensor | None = None) -> Tensor:
        targets = self._targets(targets)
        labeled = targets >= 0
        if not bool(labeled.any()):
            return student_logits.sum() * 0.0
        z = student_logits[labeled]
        q = self.soft_labels(targets[labeled], z.shape[1], z.dtype)
        return -(q * F.log_softmax(z, dim=1)).sum(dim=1).mean()
