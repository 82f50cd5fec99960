"""Factor transfer (Kim, Park & Kwak 2018)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdlens.distill.losses.adapters import flat, match_spatial
from kdlens.distill.losses.base import HintLoss, register_loss
from kdlens.errors import KdlensError


def _conv_block(c_in: int, c_out: int, transpose: bool = False, last: bool = False) -> list[nn.Module]:
    conv = (nn.ConvTranspose2d if transpose else nn.Conv2d)(c_in, c_out, 3, padding=1)
    return [conv] if last else [conv, nn.BatchNorm2d(c_out), nn.LeakyReLU(0.1)]


class Paraphraser(nn.Module):
    """Convolutional auto-encoder on a teacher map: 3 convolutions (C → C → F → F) and
    3 transposed convolutions back (F → F → C → C), 3×3, stride 1, so H×W is kept.
    The encoder output is the teacher factor."""

    def __init__(self, channels: int, factor_channels: int) -> None:
        super().__init__()
        c, f = channels, factor_channels
        self.encoder = nn.Sequential(*_conv_block(c, c), *_conv_block(c, f), *_conv_block(f, f))
        self.decoder = nn.Sequential(
            *_conv_block(f, f, transpose=True), *_conv_block(f, c, transpose=True), *_conv_block(c, c, True, last=True)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(self.encoder(x))


def factor_distance(factor_s: Tensor, factor_t: Tensor, p: float, form: str) -> Tensor:
    """Distance between L2-normalised (flattened) factors.

    ``"paper"``: mean over the batch of ‖F_T/‖F_T‖₂ − F_S/‖F_S‖₂‖_p;
    ``"code"``: mean over batch and elements of |·|^p (p = 1: the L1 loss).
    """
    diff = F.normalize(flat(factor_s), dim=1) - F.normalize(flat(factor_t), dim=1)
    if form == "paper":
        return torch.linalg.vector_norm(diff, ord=p, dim=1).mean()
    return diff.abs().pow(p).mean()


@register_loss("ft")
class FTLoss(HintLoss):
    r"""Kim, Park & Kwak 2018, *Paraphrasing Complex Network: Network Compression via
    Factor Transfer* (NeurIPS), §3.

    A *paraphraser* (auto-encoder on the teacher's map, factor channels
    ``rate``·C_t, paper's k = 0.5) is first trained to reconstruct the teacher
    features, L_rec = ‖x − P(x)‖² (:meth:`pretrain_loss`, only the paraphraser
    trains: ``pretrain_trains_student = False``).  Then a *translator* on the
    student (3 convolutions to the factor channels) learns to produce the
    teacher factor:

    .. math::
        L_{FT} = \Big\|\frac{F_T}{\|F_T\|_2} - \frac{F_S}{\|F_S\|_2}\Big\|_p,\quad p = 1

    ``form="code"`` (default) takes the mean absolute difference over batch and
    elements (common code; RepDistiller's β = 200 assumes it); ``form="paper"``
    the per-sample p-norm averaged over the batch.  In the main phase the
    paraphraser is frozen: the teacher factor is computed without gradient and
    with the paraphraser's batch norm in eval mode.  Adapter: the translator's
    output is resized to the teacher's H×W if they differ (kdlens; the paper
    pairs equal resolutions).
    """

    accepts_vectors = False
    requires_pretraining = True
    pretrain_trains_student = False

    def __init__(
        self,
        student_shapes: Sequence[Sequence[int]],
        teacher_shapes: Sequence[Sequence[int]],
        rate: float = 0.5,
        p: float = 1.0,
        form: str = "code",
    ) -> None:
        super().__init__(student_shapes, teacher_shapes)
        if form not in ("paper", "code"):
            raise KdlensError(f"ft: form must be 'paper' or 'code', got {form!r}")
        if not rate > 0:
            raise KdlensError(f"ft: rate must be > 0, got {rate}")
        self.rate, self.p, self.form = float(rate), float(p), form
        self.paraphrasers = nn.ModuleList()
        self.translators = nn.ModuleList()
        for s, t in zip(self.student_shapes, self.teacher_shapes):
            f = max(1, round(t[0] * self.rate))
            self.paraphrasers.append(Paraphraser(t[0], f))
            self.translators.append(nn.Sequential(*_conv_block(s[0], s[0]), *_conv_block(s[0], f), *_conv_block(f, f)))

    def teacher_factor(self, i: int, f_t: Tensor) -> Tensor:
        """The frozen paraphraser's encoding of a teacher map."""
        encoder = self.paraphrasers[i].encoder
        was_training = encoder.training
        encoder.eval()
        try:
            with torch.no_grad():
                return encoder(f_t)
        finally:
            encoder.train(was_training)

    def student_factor(self, i: int, f_s: Tensor, size: Sequence[int]) -> Tensor:
        return match_spatial(self.translators[i](f_s), tuple(size))

    def pair_loss(self, i: int, f_s: Tensor, f_t: Tensor, **context) -> Tensor:
        factor_t = self.teacher_factor(i, f_t)
        return factor_distance(self.student_factor(i, f_s, f_t.shape[-2:]), factor_t, self.p, self.form)

    def pretrain_loss(self, student_feats: Sequence[Tensor], teacher_feats: Sequence[Tensor], **context) -> Tensor:
        """Paraphraser training: Σ_pairs mean (P(t) − t)² (student features unused)."""
        if len(teacher_feats) != self.num_pairs:
            raise KdlensError(f"ft: expected {self.num_pairs} teacher feature tensors, got {len(teacher_feats)}")
        terms = []
        for para, t in zip(self.paraphrasers, teacher_feats):
            t = t.detach().to(dtype=next(para.parameters()).dtype)
            terms.append(F.mse_loss(para(t), t))
        return torch.stack(terms).sum()

    def pretrain_parameters(self) -> Iterator[nn.Parameter]:
        return self.paraphrasers.parameters()
