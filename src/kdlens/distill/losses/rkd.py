"""Relational knowledge distillation (Park et al. 2019)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from kdlens.distill.losses.adapters import flat
from kdlens.distill.losses.base import HintLoss, register_loss


def pairwise_distances(x: Tensor) -> Tensor:
    """Euclidean distances (B, B) from the Gram matrix, with an exact 0 diagonal
    (and a zero gradient there)."""
    gram = x @ x.t()
    sq = gram.diagonal()
    d2 = (sq[:, None] + sq[None, :] - 2 * gram).clamp_min(0.0)
    eye = torch.eye(x.shape[0], dtype=torch.bool, device=x.device)
    return d2.masked_fill(eye, 0.0).clamp_min(1e-12).sqrt().masked_fill(eye, 0.0)


def triplet_cosines(x: Tensor) -> Tensor:
    """cos ∠(x_i, x_j, x_k) = ⟨e_ji, e_jk⟩ with e_ji = (x_i − x_j)/‖x_i − x_j‖, as a
    (B, B, B) tensor indexed [j, i, k] (apex j), via the Gram matrix."""
    gram = x @ x.t()
    g_jj = gram.diagonal()
    # ⟨x_i − x_j, x_k − x_j⟩ = G_ik − G_ij − G_jk + G_jj
    inner = gram[None, :, :] - gram[:, :, None] - gram[:, None, :] + g_jj[:, None, None]
    d = pairwise_distances(x).clamp_min(1e-12)
    return inner / (d[:, :, None] * d[:, None, :])


@register_loss("rkd")
class RKDLoss(HintLoss):
    r"""Park, Kim, Lu & Cho 2019, *Relational Knowledge Distillation* (CVPR), §3.

    Distance-wise: ψ_D(t_i, t_j) = ‖t_i − t_j‖₂ / μ, μ the mean distance over
    pairs in the batch; angle-wise: ψ_A(t_i, t_j, t_k) = cos ∠t_i t_j t_k.  Both are
    compared with the Huber loss l_δ (δ = 1, i.e. smooth-L1):

    .. math::
        L = w_D\,\mathrm{mean}_{i\ne j}\, l_\delta(\psi_D^t, \psi_D^s)
          + w_A\,\mathrm{mean}_{i,j,k\ \text{distinct}}\, l_\delta(\psi_A^t, \psi_A^s)

    with w_D = 25, w_A = 50 (paper §4, also RepDistiller).  Means run over the
    distinct pairs / triplets the paper sums over; common code averages over the
    full B² and B³ grids, whose degenerate entries are 0 on both sides, which
    scales the terms by (B−1)/B and about (B−1)(B−2)/B².

    Relations are between samples of one network, so no adapter is needed.
    Invariant to rotations, translations (and, by μ and the angles, scaling) of
    either embedding.
    """

    def __init__(
        self,
        student_shapes: Sequence[Sequence[int]],
        teacher_shapes: Sequence[Sequence[int]],
        distance_weight: float = 25.0,
        angle_weight: float = 50.0,
    ) -> None:
        super().__init__(student_shapes, teacher_shapes)
        self.distance_weight, self.angle_weight = float(distance_weight), float(angle_weight)

    @staticmethod
    def distance_term(x_s: Tensor, x_t: Tensor) -> Tensor:
        b = x_s.shape[0]
        off = ~torch.eye(b, dtype=torch.bool, device=x_s.device)
        d_s, d_t = pairwise_distances(x_s)[off], pairwise_distances(x_t)[off]
        return F.smooth_l1_loss(d_s / d_s.mean().clamp_min(1e-12), d_t / d_t.mean().clamp_min(1e-12))

    @staticmethod
    def angle_term(x_s: Tensor, x_t: Tensor) -> Tensor:
        b = x_s.shape[0]
        idx = torch.arange(b, device=x_s.device)
        j, i, k = idx[:, None, None], idx[None, :, None], idx[None, None, :]
        distinct = (i != j) & (k != j) & (i != k)
        return F.smooth_l1_loss(triplet_cosines(x_s)[distinct], triplet_cosines(x_t)[distinct])

    def pair_loss(self, i: int, f_s: Tensor, f_t: Tensor, **context) -> Tensor:
        x_s, x_t = flat(f_s), flat(f_t)
        loss = f_s.new_zeros(())
        if self.distance_weight and x_s.shape[0] >= 2:
            loss = loss + self.distance_weight * self.distance_term(x_s, x_t)
        if self.angle_weight and x_s.shape[0] >= 3:
            loss = loss + self.angle_weight * self.angle_term(x_s, x_t)
        return loss
