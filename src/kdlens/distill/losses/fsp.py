"""Flow-of-solution-procedure matrices (Yim et al. 2017)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from kdlens.distill.losses.adapters import pool_to_smaller
from kdlens.distill.losses.base import HintLoss, as_target, register_loss
from kdlens.errors import KdlensError


def fsp_matrix(f1: Tensor, f2: Tensor) -> Tensor:
    """G_{ij} = Σ_{h,w} F1_{i,h,w} F2_{j,h,w} / (H·W): (B, m, H, W), (B, n, H, W) -> (B, m, n).

    Maps of different spatial size are first average-pooled to the smaller one.
    """
    f1, f2 = pool_to_smaller(f1, f2)
    hw = f1.shape[2] * f1.shape[3]
    return f1.flatten(2) @ f2.flatten(2).transpose(1, 2) / hw


@register_loss("fsp")
class FSPLoss(HintLoss):
    r"""Yim, Joo, Bae & Kim 2017, *A Gift from Knowledge Distillation: Fast
    Optimization, Network Minimization and Transfer Learning* (CVPR), §3.

    The "flow" between two layers is their Gram (FSP) matrix
    G(x)_{ij} = Σ_{h,w} F¹_{h,w,i} F²_{h,w,j} / (h·w).  The student matches the
    teacher's FSP matrices between *consecutive* tapped layers:

    .. math:: L = \frac1B\sum_b \sum_{k} \lambda_k\, \mathrm{mean}_{ij}\big(G^t_k - G^s_k\big)^2_{ij}

    so L layer pairs give L − 1 terms, λ_k = 1.  kdlens averages over matrix
    entries (common code; the paper sums them, ‖·‖²_F), which RepDistiller's
    β = 50 assumes.  Student and teacher layers must have equal channel counts
    (m, n) — the paper pairs such layers; spatial sizes are matched by pooling.

    Phases: the paper's stage 1 trains the student on this loss alone
    (``requires_pretraining``, :meth:`pretrain_loss`), stage 2 on the main task
    (``active_in_main_phase = False``; RepDistiller does the same).
    """

    accepts_vectors = False
    min_pairs = 2
    requires_pretraining = True
    pretrain_trains_student = True
    active_in_main_phase = False

    def __init__(self, student_shapes: Sequence[Sequence[int]], teacher_shapes: Sequence[Sequence[int]]) -> None:
        super().__init__(student_shapes, teacher_shapes)
        for k, (s, t) in enumerate(zip(self.student_shapes, self.teacher_shapes)):
            if s[0] != t[0]:
                raise KdlensError(
                    f"fsp: layer pair {k} has {s[0]} student and {t[0]} teacher channels; "
                    "FSP matrices need equal channel counts"
                )

    def forward(self, student_feats: Sequence[Tensor], teacher_feats: Sequence[Tensor], **context) -> Tensor:
        self.check_features(student_feats, teacher_feats)
        terms = [
            (fsp_matrix(as_target(teacher_feats[k], student_feats[k]), as_target(teacher_feats[k + 1], student_feats[k]))
             - fsp_matrix(student_feats[k], student_feats[k + 1])).pow(2).mean()
            for k in range(self.num_pairs - 1)
        ]
        return sum(terms[1:], terms[0])

    def pretrain_loss(self, student_feats: Sequence[Tensor], teacher_feats: Sequence[Tensor], **context) -> Tensor:
        """Stage 1: the FSP loss alone."""
        return self.forward(student_feats, teacher_feats, **context)
