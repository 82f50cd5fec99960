"""Logit-standardised KD: z-scored logits before the KD softmax (Sun et al. 2024)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from kdlens.distill.losses.base import LogitLoss, register_loss
from kdlens.distill.losses.kd import check_temperature, soft_target_kl
from kdlens.errors import KdlensError

FORMS = ("code", "paper")


def standardize_logits(z: Tensor, form: str = "code", eps: float = 1e-7) -> Tensor:
    """Z-score each row of logits (B, K): (z − mean) / (σ + ε).

    ``form="code"``: σ the unbiased standard deviation over the K classes (1/(K−1)),
    as ``torch.std`` in the authors' code; ``form="paper"``: the population σ (1/K)
    of the paper's definition.  The two differ by the factor √((K−1)/K), i.e. by a
    slightly different temperature.
    """
    centred = z - z.mean(dim=1, keepdim=True)
    std = z.std(dim=1, keepdim=True, correction=1 if form == "code" else 0)
    return centred / (std + eps)


@register_loss("lskd")
class LSKDLoss(LogitLoss):
    r"""Sun, Ren, Li, Wang & Cao 2024, *Logit Standardization in Knowledge
    Distillation* (CVPR), §3–4.

    KD on z-scored logits, 𝒵(z) = (z − z̄)/σ(z) per sample, then the shared base
    temperature τ:

    .. math::
        L_{LSKD} = \tau^2\,\frac1B\sum_b \mathrm{KL}\big(\sigma(\mathcal Z(z^t_b)/\tau)\,\|\,
        \sigma(\mathcal Z(z^s_b)/\tau)\big)

    Standardising removes each network's logit shift and scale, so the student
    matches the teacher's logit *relations* instead of their range (equivalently,
    each side gets its own temperature τ·σ(z)).  Uses no targets.

    ``form="code"`` (default): σ with 1/(K−1) and + 1e-7, as the authors' code
    (sunshangquan/logit-standardization-KD ``normalize``), with which their weights
    were tuned; ``form="paper"``: σ with 1/K.  Default ``T`` = 2: the authors'
    base temperature; their CIFAR-100 KD runs weight CE 0.1 and this term 9 (the
    method table's γ and α).
    """

    def __init__(self, T: float = 2.0, form: str = "code") -> None:
        super().__init__()
        if form not in FORMS:
            raise KdlensError(f"lskd: form must be one of {', '.join(FORMS)}, got {form!r}")
        self.T = check_temperature("lskd", T)
        self.form = form

    def forward(self, student_logits: Tensor, teacher_logits: Tensor | None = None, targets: Tensor | None = None) -> Tensor:
        z_t = standardize_logits(self._teacher(teacher_logits, student_logits), self.form)
        z_s = standardize_logits(student_logits, self.form)
        p_t = F.softmax(z_t / self.T, dim=1)
        return soft_target_kl(z_s / self.T, p_t).mean() * self.T**2
