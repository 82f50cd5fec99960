"""Neuron selectivity transfer (Huang & Wang 2017)."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor

from kdlens.distill.losses.adapters import pool_to_smaller
from kdlens.distill.losses.base import HintLoss, register_loss
from kdlens.errors import KdlensError


def polynomial_mmd2(f_s: Tensor, f_t: Tensor, degree: int, coef0: float) -> Tensor:
    """Per-sample MMD² between the channel sets of two maps (B, C, H, W) -> (B,).

    Each channel's spatial response, L2-normalised, is one sample; kernel
    k(x, y) = (xᵀy + c)^d.
    """
    s = F.normalize(f_s.flatten(2), dim=2)
    t = F.normalize(f_t.flatten(2), dim=2)

    def k_mean(a: Tensor, b: Tensor) -> Tensor:
        return (a @ b.transpose(1, 2) + coef0).pow(degree).mean(dim=(1, 2))

    return k_mean(t, t) + k_mean(s, s) - 2.0 * k_mean(t, s)


@register_loss("nst")
class NSTLoss(HintLoss):
    r"""Huang & Wang 2017, *Like What You Like: Knowledge Distill via Neuron
    Selectivity Transfer* (arXiv:1707.01219), §3.

    Each channel's L2-normalised spatial map f^k ∈ R^{HW} is a sample of the
    layer's "neuron selectivity" distribution; the student matches the teacher's
    by MMD with the polynomial kernel k(x, y) = (xᵀy + c)^d, d = 2, c = 0:

    .. math::
        \mathcal L_{MMD^2} = \frac{1}{C_T^2}\sum_{i,i'} k(f_T^i, f_T^{i'})
        + \frac{1}{C_S^2}\sum_{j,j'} k(f_S^j, f_S^{j'})
        - \frac{2}{C_T C_S}\sum_{i,j} k(f_T^i, f_S^j),\qquad L = \tfrac12\,\mathrm{mean}_b\,\mathcal L_{MMD^2}

    The ½ is the paper's λ/2 (RepDistiller omits it: its β = 50 is β = 100 here).
    ``degree=1`` gives the linear kernel.  Channel counts may differ; maps of
    different spatial size are matched by average-pooling the larger to the
    smaller (the paper pairs layers of equal resolution).
    """

    accepts_vectors = False

    def __init__(
        self,
        student_shapes: Sequence[Sequence[int]],
        teacher_shapes: Sequence[Sequence[int]],
        degree: int = 2,
        coef0: float = 0.0,
    ) -> None:
        super().__init__(student_shapes, teacher_shapes)
        if degree < 1 or int(degree) != degree:
            raise KdlensError(f"nst: degree must be a positive integer, got {degree}")
        self.degree, self.coef0 = int(degree), float(coef0)

    def pair_loss(self, i: int, f_s: Tensor, f_t: Tensor, **context) -> Tensor:
        f_s, f_t = pool_to_smaller(f_s, f_t)
        return 0.5 * polynomial_mmd2(f_s, f_t, self.degree, self.coef0).mean()
