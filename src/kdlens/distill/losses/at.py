"""Attention transfer (Zagoruyko & Komodakis 2017)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from kdlens.distill.losses.adapters import pool_to_smaller
from kdlens.distill.losses.base import HintLoss, register_loss
from kdlens.errors import KdlensError


def attention_map(f: Tensor, p: float = 2.0) -> Tensor:
    """Q = vec(Σ_c |A_c|^p) / ‖vec(Σ_c |A_c|^p)‖₂ for maps (B, C, H, W) -> (B, H·W).

    The paper's F^p_sum; the channel mean used in common code differs by the
    factor C, which the normalisation removes.
    """
    q = f.abs().pow(p).mean(dim=1).flatten(1)
    return q / q.norm(dim=1, keepdim=True).clamp_min(1e-12)


@register_loss("at")
class ATLoss(HintLoss):
    r"""Zagoruyko & Komodakis 2017, *Paying More Attention to Attention* (ICLR), eq. 2.

    Activation-based spatial attention Q = vec(Σ_c |A_c|^p), p = 2, compared after
    L2 normalisation:

    ``form="paper"``: the paper's term with its ½ (the β/2 of eq. 2),

    .. math:: \tfrac12\,\frac1B\sum_b \Big\| \frac{Q^s_b}{\|Q^s_b\|_2} - \frac{Q^t_b}{\|Q^t_b\|_2}\Big\|_p

    ``form="code"`` (default): the authors' code form, the *mean* over batch and
    positions of the squared difference of the normalised maps, again with the ½
    (their loss adds β/2·Σ at_loss).  The mean is how the paper's "β = 10³ divided
    by the number of elements in the attention map and batch size" is realised.
    RepDistiller uses the same mean but drops the ½, so its β = 1000 is β = 2000
    here.

    Adapter: attention maps are channel-free, so channel counts may differ; for
    different spatial sizes the larger feature map is average-pooled to the
    smaller one before the maps are taken (as in common code; the paper transfers
    between layers of equal resolution).  Positive rescaling of a feature map
    leaves the loss unchanged.
    """

    accepts_vectors = False

    def __init__(
        self,
        student_shapes: Sequence[Sequence[int]],
        teacher_shapes: Sequence[Sequence[int]],
        p: float = 2.0,
        form: str = "code",
    ) -> None:
        super().__init__(student_shapes, teacher_shapes)
        if form not in ("paper", "code"):
            raise KdlensError(f"at: form must be 'paper' or 'code', got {form!r}")
        if not p > 0:
            raise KdlensError(f"at: p must be > 0, got {p}")
        self.p, self.form = float(p), form

    def pair_loss(self, i: int, f_s: Tensor, f_t: Tensor, **context) -> Tensor:
        f_s, f_t = pool_to_smaller(f_s, f_t)
        diff = attention_map(f_s, self.p) - attention_map(f_t, self.p)
        if self.form == "code":
            return 0.5 * diff.pow(2).mean()
        return 0.5 * torch.linalg.vector_norm(diff, ord=self.p, dim=1).mean()
