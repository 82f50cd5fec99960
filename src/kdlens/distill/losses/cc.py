"""Correlation congruence (Peng et al. 2019)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor

from kdlens.distill.losses.adapters import flat
from kdlens.distill.losses.base import HintLoss, register_loss
from kdlens.errors import KdlensError


def rbf_correlation(f: Tensor, rbf_gamma: float, order: int) -> Tensor:
    """Taylor-approximated Gaussian-RBF correlation of L2-normalised features (B, B).

    For unit vectors ‖x − y‖² = 2 − 2xᵀy, so
    exp(−γ‖x − y‖²) = e^{−2γ} Σ_p (2γ)^p/p! (xᵀy)^p, truncated at ``order`` P.
    """
    x = F.normalize(flat(f), dim=1)
    s = x @ x.t()
    k = sum(((2 * rbf_gamma) ** p / math.factorial(p)) * s.pow(p) for p in range(order + 1))
    return math.exp(-2 * rbf_gamma) * k


@register_loss("cc")
class CCLoss(HintLoss):
    r"""Peng, Jin, Liu, Li, Wu, Liu, Zhou & Zhang 2019, *Correlation Congruence for
    Knowledge Distillation* (ICCV), §3.

    .. math::
        \psi(F)_{ij} = k(f_i, f_j) \approx \sum_{p=0}^{P} e^{-2\gamma}\frac{(2\gamma)^p}{p!}
        (f_i^\top f_j)^p,\qquad L_{CC} = \frac{1}{B^2}\|\psi(F^t) - \psi(F^s)\|_F^2

    Gaussian-RBF kernel on L2-normalised (flattened) features, Taylor-expanded to
    order P (``order``, default 2) with ``rbf_gamma`` = 0.4 (kdlens defaults for
    the paper's Gaussian-RBF setting).  The B×B correlation matrix needs no
    adapter.  Note: RepDistiller's "CC" is a different, simplified term (products
    of consecutive feature differences); its β = 0.02 was tuned for that form.
    """

    def __init__(
        self,
        student_shapes: Sequence[Sequence[int]],
        teacher_shapes: Sequence[Sequence[int]],
        rbf_gamma: float = 0.4,
        order: int = 2,
    ) -> None:
        super().__init__(student_shapes, teacher_shapes)
        if order < 0 or int(order) != order:
            raise KdlensError(f"cc: order must be a non-negative integer, got {order}")
        self.rbf_gamma, self.order = float(rbf_gamma), int(order)

    def pair_loss(self, i: int, f_s: Tensor, f_t: Tensor, **context) -> Tensor:
        b = f_s.shape[0]
        diff = rbf_correlation(f_t, self.rbf_gamma, self.order) - rbf_correlation(f_s, self.rbf_gamma, self.order)
        return diff.pow(2).sum() / (b * b)
