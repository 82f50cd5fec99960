"""Similarity-preserving distillation (Tung & Mori 2019)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from kdlens.distill.losses.adapters import flat
from kdlens.distill.losses.base import HintLoss, register_loss


def similarity_matrix(f: Tensor) -> Tensor:
    """G̃ = row-L2-normalised Q·Qᵀ, Q the flattened features: (B, ...) -> (B, B)."""
    q = flat(f)
    return F.normalize(q @ q.t(), p=2, dim=1)


@register_loss("sp")
class SPLoss(HintLoss):
    r"""Tung & Mori 2019, *Similarity-Preserving Knowledge Distillation* (ICCV), §3.

    .. math::
        G = Q Q^\top,\quad \tilde G_{[i,:]} = G_{[i,:]}/\|G_{[i,:]}\|_2,\qquad
        L_{SP} = \frac{1}{B^2}\,\|\tilde G^t - \tilde G^s\|_F^2

    The B×B similarities compare samples *within* each network, so no adapter is
    needed: any student and teacher shapes pair up.  Invariant to rescaling
    either network's features.
    """

    def pair_loss(self, i: int, f_s: Tensor, f_t: Tensor, **context) -> Tensor:
        b = f_s.shape[0]
        return (similarity_matrix(f_t) - similarity_matrix(f_s)).pow(2).sum() / (b * b)
