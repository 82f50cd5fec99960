"""Variational information distillation (Ahn et al. 2019)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdlens.distill.losses.adapters import match_spatial
from kdlens.distill.losses.base import HintLoss, register_loss
from kdlens.errors import KdlensError


FORMS = ("paper", "repdistiller")


def _mean_regressor(
    student_shape: tuple[int, ...], teacher_shape: tuple[int, ...], hidden: int, bias: bool = True
) -> nn.Module:
    cs, ct = student_shape[0], teacher_shape[0]
    if len(teacher_shape) == 3:
        return nn.Sequential(
            nn.Conv2d(cs, hidden, 1, bias=bias), nn.ReLU(),
            nn.Conv2d(hidden, hidden, 1, bias=bias), nn.ReLU(),
            nn.Conv2d(hidden, ct, 1, bias=bias),
        )
    return nn.Sequential(
        nn.Linear(cs, hidden, bias=bias), nn.ReLU(),
        nn.Linear(hidden, hidden, bias=bias), nn.ReLU(),
        nn.Linear(hidden, ct, bias=bias),
    )


@register_loss("vid")
class VIDLoss(HintLoss):
    r"""Ahn, Hu, Damianou, Lawrence & Dai 2019, *Variational Information Distillation
    for Knowledge Transfer* (CVPR), §3.

    Maximises a variational lower bound on the mutual information I(t; s) by
    minimising −log q(t | s), q a Gaussian with mean μ(s) and a learned
    per-channel variance σ_c² = softplus(α_c) + ε (heteroscedastic in channels,
    homoscedastic over positions):

    .. math::
        -\log q(t\mid s) = \sum_{c,h,w}\Big[\log\sigma_c +
        \frac{(t_{c,h,w} - \mu_{c,h,w}(s))^2}{2\sigma_c^2}\Big] + \text{const}

    Adapter: μ(·) is a 1×1-convolution regressor on the student (three layers,
    ReLU between, ``hidden`` channels, default C_t); linear layers for vector
    features.  Maps of different spatial size: the larger is average-pooled to the
    smaller first.  kdlens averages over batch, channels and positions (common
    code form; the paper sums over c, h, w), which RepDistiller's β = 1 assumes.
    The initial variance ``init_var`` = 5 and ε = 1e-5 follow common code
    (the paper does not state them).

    ``form="repdistiller"`` (default; RepDistiller's ``distiller_zoo/VID.py``, from the
    authors' code): the regressor's 1×1 convolutions (linear layers for vectors) have
    no bias.  ``form="paper"``: with bias (the paper does not say; kdlens's earlier
    regressor).  The loss is otherwise the same.  Default weight: RepDistiller's β = 1
    was tuned for ``form="repdistiller"``.
    """

    def __init__(
        self,
        student_shapes: Sequence[Sequence[int]],
        teacher_shapes: Sequence[Sequence[int]],
        form: str = "repdistiller",
        hidden: int | None = None,
        init_var: float = 5.0,
        eps: float = 1e-5,
    ) -> None:
        super().__init__(student_shapes, teacher_shapes)
        if form not in FORMS:
            raise KdlensError(f"vid: form must be 'paper' or 'repdistiller', got {form!r}")
        self.form = form
        for s, t in zip(self.student_shapes, self.teacher_shapes):
            if len(s) != len(t):
                raise KdlensError(f"vid: cannot pair a student feature {s} with a teacher feature {t}")
        if not init_var > eps:
            raise KdlensError(f"vid: init_var must exceed eps ({eps}), got {init_var}")
        self.hidden, self.init_var, self.eps = hidden, float(init_var), float(eps)
        self.regressors = nn.ModuleList(
            _mean_regressor(s, t, hidden or t[0], bias=form == "paper")
            for s, t in zip(self.student_shapes, self.teacher_shapes)
        )
        # softplus(alpha) + eps = init_var at the start
        alpha0 = math.log(math.expm1(self.init_var - self.eps))
        self.log_scales = nn.ParameterList(
            nn.Parameter(torch.full((t[0],), alpha0)) for t in self.teacher_shapes
        )

    def variance(self, i: int) -> Tensor:
        """σ_c² of pair ``i`` (per teacher channel)."""
        return F.softplus(self.log_scales[i]) + self.eps

    def pair_loss(self, i: int, f_s: Tensor, f_t: Tensor, **context) -> Tensor:
        if f_s.dim() == 4:
            size = (min(f_s.shape[2], f_t.shape[2]), min(f_s.shape[3], f_t.shape[3]))
            f_s, f_t = match_spatial(f_s, size), match_spatial(f_t, size)
        mu = self.regressors[i](f_s)
        var = self.variance(i).view(1, -1, *([1] * (f_t.dim() - 2)))
        return (0.5 * torch.log(var) + (f_t - mu).pow(2) / (2.0 * var)).mean()
