"""DIST: distillation from a stronger teacher by inter- and intra-class correlation (Huang et al. 2022)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from kdlens.distill.losses.base import LogitLoss, register_loss
from kdlens.distill.losses.kd import check_temperature


def pearson_rows(a: Tensor, b: Tensor, eps: float = 1e-8) -> Tensor:
    """Pearson correlation of each row of ``a`` with the same row of ``b``, shape (N,).

    ρ(u, v) = (u − ū)·(v − v̄) / (‖u − ū‖ ‖v − v̄‖ + ε), the cosine of the centred rows;
    ε as in the authors' code keeps constant rows at ρ = 0.
    """
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    return (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


@register_loss("dist")
class DISTLoss(LogitLoss):
    r"""Huang, You, Wang, Qian & Xu 2022, *Knowledge Distillation from A Stronger
    Teacher* (NeurIPS), §3.

    With Y = softmax(Z/τ) row-wise (B samples × K classes) for student and teacher,
    ρ the Pearson correlation:

    .. math::
        L_{inter} = 1 - \frac1B\sum_b \rho(Y^s_{b,:}, Y^t_{b,:}),\qquad
        L_{intra} = 1 - \frac1K\sum_k \rho(Y^s_{:,k}, Y^t_{:,k}),

        L_{DIST} = \tau^2\,(\beta\,L_{inter} + \gamma\,L_{intra})

    Inter-class: each sample's class ranking; intra-class: how the batch's samples
    rank for each class.  Only relations are matched, not the probabilities, so a
    student need not reproduce a much stronger teacher's confident outputs.

    ``T`` = τ = 1, ``beta_inter`` = ``gamma_intra`` = 1 (the authors' DIST module,
    hunto/image_classification_sota ``dist_kd.py``; ImageNet).  Their CIFAR-100
    runs use τ = 4 (``kd: dist_t4``).  In both, the DIST term is weighted 2 next to
    CE 1, hence the method table's α = 2 (effective β = γ = 2 in the formula above).
    Uses no targets; unlabeled samples count like labeled ones.  The intra-class
    term is a batch statistic: it needs a batch of more than one sample.
    """

    def __init__(self, T: float = 1.0, beta_inter: float = 1.0, gamma_intra: float = 1.0) -> None:
        super().__init__()
        self.T = check_temperature("dist", T)
        self.beta_inter = float(beta_inter)
        self.gamma_intra = float(gamma_intra)

    def relations(self, student_logits: Tensor, teacher_logits: Tensor) -> tuple[Tensor, Tensor]:
        """(L_inter, L_intra) without τ² and the weights."""
        y_s = F.softmax(student_logits / self.T, dim=1)
        y_t = F.softmax(teacher_logits / self.T, dim=1)
        inter = 1.0 - pearson_rows(y_s, y_t).mean()
        intra = 1.0 - pearson_rows(y_s.t(), y_t.t()).mean()
        return inter, intra

    def forward(self, student_logits: Tensor, teacher_logits: Tensor | None = None, targets: Tensor | None = None) -> Tensor:
        inter, intra = self.relations(student_logits, self._teacher(teacher_logits, student_logits))
        return self.T**2 * (self.beta_inter * inter + self.gamma_intra * intra)

