"""Probabilistic knowledge transfer (Passalis & Tefas 2018)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from kdlens.distill.losses.adapters import flat
from kdlens.distill.losses.base import HintLoss, register_loss


def conditional_probabilities(f: Tensor) -> Tensor:
    """P[j, i] = p_{i|j} = K(x_i, x_j) / Σ_{k≠j} K(x_k, x_j), 0 on the diagonal,
    with the cosine kernel K(a, b) = (1 + cos(a, b)) / 2."""
    x = F.normalize(flat(f), dim=1)
    k = 0.5 * (x @ x.t() + 1.0)
    k = k.masked_fill(torch.eye(k.shape[0], dtype=torch.bool, device=k.device), 0.0)
    return k / k.sum(dim=1, keepdim=True).clamp_min(1e-12)


@register_loss("pkt")
class PKTLoss(HintLoss):
    r"""Passalis & Tefas 2018, *Learning Deep Representations with Probabilistic
    Knowledge Transfer* (ECCV), §3.

    .. math::
        p_{i|j} = \frac{K(x_i, x_j)}{\sum_{k\ne j} K(x_k, x_j)},\quad
        K(a, b) = \tfrac12\Big(\frac{a^\top b}{\|a\|\|b\|} + 1\Big),\qquad
        L = \frac{1}{B(B-1)}\sum_j\sum_{i\ne j} p^t_{i|j}\log\frac{p^t_{i|j}}{p^s_{i|j}}

    The paper sums the KL terms; kdlens averages over the B(B−1) pairs so that
    RepDistiller's β = 30000 keeps its scale (its code averages over all B²
    entries and keeps i = j in the normalisation, with ε = 1e-7 in the logs).
    Distributions live within each network: no adapter needed.
    """

    def pair_loss(self, i: int, f_s: Tensor, f_t: Tensor, **context) -> Tensor:
        b = f_s.shape[0]
        p_t, p_s = conditional_probabilities(f_t), conditional_probabilities(f_s)
        kl = torch.xlogy(p_t, p_t) - p_t * torch.log(p_s.clamp_min(1e-12))
        return kl.sum() / max(b * (b - 1), 1)
