"""Spherical knowledge distillation (Guo et al. 2020)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from kdlens.distill.losses.base import LogitLoss, register_loss
from kdlens.distill.losses.kd import check_temperature, soft_target_kl
from kdlens.errors import KdlensError


@register_loss("skd")
class SphericalKDLoss(LogitLoss):
    r"""Guo, Chen, Hu, Zhu, He & Cai 2020, *Reducing the Teacher-Student Gap via
    Spherical Knowledge Distillation* (arXiv:2010.07485).

    The logit norm carries confidence, which a small student cannot match; SKD
    projects both logit vectors onto a sphere and distills there.

    ``form="paper"`` (default): each logit vector is L2-normalised and both are
    rescaled by the batch-mean teacher logit norm r̄ = (1/B) Σ_b ‖z^t_b‖₂, then KD:

    .. math::
        \tilde z = \bar r\, z/\|z\|_2,\qquad L = T^2\,\frac1B\sum_b
        \mathrm{KL}\big(\sigma(\tilde z^t_b/T)\,\|\,\sigma(\tilde z^s_b/T)\big)

    ``form="code"``: the common code form (the authors' release as ported, e.g.,
    to PaddleClas) instead standardises each logit vector (zero mean, unit variance over classes,
    i.e. a parameter-free layer norm) and multiply by a fixed ``multiplier`` (2).
    Centring does not change a softmax, so the two differ only in the radius.

    Defaults T = 4 (as KD; the paper reports SKD to be robust to T), multiplier = 2.
    Targets are not used.
    """

    def __init__(self, T: float = 4.0, form: str = "paper", multiplier: float = 2.0) -> None:
        super().__init__()
        self.T = check_temperature("skd", T)
        if form not in ("paper", "code"):
            raise KdlensError(f"skd: form must be 'paper' or 'code', got {form!r}")
        self.form = form
        self.multiplier = float(multiplier)

    def spherical(self, student_logits: Tensor, teacher_logits: Tensor) -> tuple[Tensor, Tensor]:
        """The projected (student, teacher) logits."""
        if self.form == "paper":
            radius = teacher_logits.norm(dim=1).mean()
            return F.normalize(student_logits, dim=1) * radius, F.normalize(teacher_logits, dim=1) * radius
        k = student_logits.shape[1]
        return (
            F.layer_norm(student_logits, (k,), eps=1e-7) * self.multiplier,
            F.layer_norm(teacher_logits, (k,), eps=1e-7) * self.multiplier,
        )

    def forward(self, student_logits: Tensor, teacher_logits: Tensor | None = None, targets: Tensor | None = None) -> Tensor:
        z_s, z_t = self.spherical(student_logits, self._teacher(teacher_logits, student_logits))
        p_t = F.softmax(z_t / self.T, dim=1)
        return soft_target_kl(z_s / self.T, p_t).mean() * self.T**2
