"""Correlation congruence (Peng et al. 2019)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from kdlens.distill.losses.adapters import flat, numel
from kdlens.distill.losses.base import HintLoss, register_loss
from kdlens.errors import KdlensError

FORMS = ("paper", "repdistiller")


def rbf_correlation(f: Tensor, rbf_gamma: float, order: int) -> Tensor:
    """Taylor-approximated Gaussian-RBF correlation of L2-normalised features (B, B).

    For unit vectors ‖x − y‖² = 2 − 2xᵀy, so
    exp(−γ‖x − y‖²) = e^{−2γ} Σ_p (2γ)^p/p! (xᵀy)^p, truncated at ``order`` P.
    """
    x = F.normalize(flat(f), dim=1)
    s = x @ x.t()
    k = sum(((2 * rbf_gamma) ** p / math.factorial(p)) * s.pow(p) for p in range(order + 1))
    return math.exp(-2 * rbf_gamma) * k


def consecutive_difference_products(e_s: Tensor, e_t: Tensor) -> Tensor:
    """RepDistiller's CC term on embeddings (B, D): with δ_b = |e_s,b − e_t,b|,
    (1/(B−1)) Σ_{b<B} δ_b · δ_{b+1} (a dot product over D); 0 for B < 2."""
    delta = (e_s - e_t).abs()
    if delta.shape[0] < 2:
        return delta.sum() * 0.0
    return (delta[:-1] * delta[1:]).sum(dim=1).mean()


@register_loss("cc")
class CCLoss(HintLoss):
    r"""Peng, Jin, Liu, Li, Wu, Liu, Zhou & Zhang 2019, *Correlation Congruence for
    Knowledge Distillation* (ICCV), §3.

    ``form="paper"``:

    .. math::
        \psi(F)_{ij} = k(f_i, f_j) \approx \sum_{p=0}^{P} e^{-2\gamma}\frac{(2\gamma)^p}{p!}
        (f_i^\top f_j)^p,\qquad L_{CC} = \frac{1}{B^2}\|\psi(F^t) - \psi(F^s)\|_F^2

    Gaussian-RBF kernel on L2-normalised (flattened) features, Taylor-expanded to
    order P (``order``, default 2) with ``rbf_gamma`` = 0.4 (kdlens defaults for
    the paper's Gaussian-RBF setting).  The B×B correlation matrix needs no adapter.

    ``form="repdistiller"`` (default; RepDistiller's ``distiller_zoo/CC.py``, code the
    authors shared with Tian): a different loss.  Student and teacher features are
    flattened and mapped by trainable linear embeddings (with bias) to ``embed_dim``
    (RepDistiller's ``feat_dim`` = 128) dimensions, e_s = W_s f_s + b_s,
    e_t = W_t f_t + b_t; with δ_b = |e_s,b − e_t,b| (elementwise),

    .. math::
        L = \frac{1}{B-1}\sum_{b=1}^{B-1} \delta_b^\top \delta_{b+1}

    — products of consecutive samples' differences, so it depends on the batch order
    (0 for B < 2, where RepDistiller gives NaN).  ``rbf_gamma`` / ``order`` are unused
    there, ``embed_dim`` is unused by the paper form.

    Default weight: RepDistiller's β = 0.02 was tuned for ``form="repdistiller"``
    (on the penultimate features); for the paper's kernel form it is untuned.
    """

    def __init__(
        self,
        student_shapes: Sequence[Sequence[int]],
        teacher_shapes: Sequence[Sequence[int]],
        form: str = "repdistiller",
        rbf_gamma: float = 0.4,
        order: int = 2,
        embed_dim: int = 128,
    ) -> None:
        super().__init__(student_shapes, teacher_shapes)
        if form not in FORMS:
            raise KdlensError(f"cc: form must be 'paper' or 'repdistiller', got {form!r}")
        if order < 0 or int(order) != order:
            raise KdlensError(f"cc: order must be a non-negative integer, got {order}")
        if embed_dim < 1 or int(embed_dim) != embed_dim:
            raise KdlensError(f"cc: embed_dim must be a positive integer, got {embed_dim}")
        self.form = form
        self.rbf_gamma, self.order, self.embed_dim = float(rbf_gamma), int(order), int(embed_dim)
        if form == "repdistiller":
            self.embed_s = nn.ModuleList(nn.Linear(numel(s), self.embed_dim) for s in self.student_shapes)
            self.embed_t = nn.ModuleList(nn.Linear(numel(t), self.embed_dim) for t in self.teacher_shapes)

    def pair_loss(self, i: int, f_s: Tensor, f_t: Tensor, **context) -> Tensor:
        if self.form == "repdistiller":
            return consecutive_difference_products(self.embed_s[i](flat(f_s)), self.embed_t[i](flat(f_t)))
        b = f_s.shape[0]
        diff = rbf_correlation(f_t, self.rbf_gamma, self.order) - rbf_correlation(f_s, self.rbf_gamma, self.order)
        return diff.pow(2).sum() / (b * b)
