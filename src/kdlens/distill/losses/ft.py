"""Factor transfer (Kim, Park & Kwak 2018)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdlens.distill.losses.adapters import flat, match_spatial, pool_to_smaller
from kdlens.distill.losses.base import HintLoss, register_loss
from kdlens.errors import KdlensError

FORMS = ("paper", "code", "repdistiller")


def _conv_block(
    c_in: int, c_out: int, transpose: bool = False, batch_norm: bool = True, activation: bool = True
) -> list[nn.Module]:
    conv = (nn.ConvTranspose2d if transpose else nn.Conv2d)(c_in, c_out, 3, padding=1)
    norm = [nn.BatchNorm2d(c_out)] if batch_norm else []
    act = [nn.LeakyReLU(0.1)] if activation else []
    return [conv, *norm, *act]


class Paraphraser(nn.Module):
    """Convolutional auto-encoder on a teacher map: 3 convolutions (C → C → F → F) and
    3 transposed convolutions back (F → F → C → C), 3×3, stride 1, so H×W is kept.
    The encoder output is the teacher factor.

    ``batch_norm=True, last_activation=False`` (kdlens's paper form): BN and
    LeakyReLU(0.1) after every layer but the last, which is linear.
    ``batch_norm=False, last_activation=True``: RepDistiller's (``models/util.py``,
    ``use_bn=False``): no BN, LeakyReLU(0.1) after every layer, the last included.
    """

    def __init__(
        self, channels: int, factor_channels: int, batch_norm: bool = True, last_activation: bool = False
    ) -> None:
        super().__init__()
        c, f, bn = channels, factor_channels, batch_norm
        self.encoder = nn.Sequential(
            *_conv_block(c, c, batch_norm=bn), *_conv_block(c, f, batch_norm=bn), *_conv_block(f, f, batch_norm=bn)
        )
        self.decoder = nn.Sequential(
            *_conv_block(f, f, True, batch_norm=bn),
            *_conv_block(f, c, True, batch_norm=bn),
            *_conv_block(c, c, True, batch_norm=bn and last_activation, activation=last_activation),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(self.encoder(x))


def factor_attention(factor: Tensor) -> Tensor:
    """RepDistiller's factor map: the L2-normalised channel mean of the squared factor,
    a(F) = q/‖q‖₂ with q = mean_c F_c², flattened over H×W (AT's attention map, p = 2)."""
    return F.normalize(factor.pow(2).mean(dim=1).flatten(1), dim=1)


def factor_distance(factor_s: Tensor, factor_t: Tensor, p: float, form: str) -> Tensor:
    """Distance between the student and teacher factors (same H×W for "paper"/"code").

    ``"paper"``: mean over the batch of ‖F_T/‖F_T‖₂ − F_S/‖F_S‖₂‖_p (flattened factors);
    ``"code"``: mean over batch and elements of |·|^p of the same difference (p = 1: the
    authors' ``nn.L1Loss``); ``"repdistiller"``: the larger map average-pooled to the
    smaller, then mean over batch and positions of |a(F_T) − a(F_S)|^p,
    a = :func:`factor_attention`.
    """
    if form == "repdistiller":
        factor_s, factor_t = pool_to_smaller(factor_s, factor_t)
        return (factor_attention(factor_s) - factor_attention(factor_t)).abs().pow(p).mean()
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
    features, L_rec = ‖x − P(x)‖² (:meth:`pretrain_loss`, mean squared error; only the
    paraphraser trains: ``pretrain_trains_student = False``).  Then a *translator* on
    the student (3 convolutions to the factor channels, each with BN and LeakyReLU(0.1))
    learns to produce the teacher factor:

    .. math::
        L_{FT} = \Big\|\frac{F_T}{\|F_T\|_2} - \frac{F_S}{\|F_S\|_2}\Big\|_p,\quad p = 1

    Forms:

    * ``"paper"``: the per-sample p-norm of the flattened, L2-normalised factors,
      averaged over the batch; paraphraser with BN and a linear last layer.
    * ``"code"``: the authors' code (Jangho-Kim/Factor-Transfer-pytorch,
      ``nn.L1Loss`` on ``F.normalize(F.view(B, -1))``, β = 500 on CIFAR-10): the mean
      over batch *and elements* of |·|^p, the same paraphraser as ``"paper"``.
    * ``"repdistiller"`` (default): RepDistiller's ``FactorTransfer`` — not the factor
      itself but its attention map, a(F) = normalise(mean_c F²), compared by mean
      |a(F_T) − a(F_S)|^p after average-pooling the larger factor map to the smaller;
      its paraphraser has no BN and ends with a LeakyReLU; factor channels
      ⌊rate·C_t⌋.  The "code" form measured 0.31–0.65× of it on the same tensors and
      modules, with unrelated gradients.

    Default weight: RepDistiller's β = 200 was tuned for ``form="repdistiller"``.

    In the main phase the paraphraser is frozen: the teacher factor is computed
    without gradient and in eval mode (RepDistiller too).  Adapter for "paper" /
    "code": the translator's output is resized to the teacher's H×W if they differ
    (kdlens; the paper pairs equal resolutions).  RepDistiller trains the paraphraser
    at learning rate 0.01 for its CIFAR resnets and wrns (kdlens: the main one).
    """

    accepts_vectors = False
    requires_pretraining = True
    pretrain_trains_student = False

    def __init__(
        self,
        student_shapes: Sequence[Sequence[int]],
        teacher_shapes: Sequence[Sequence[int]],
        form: str = "repdistiller",
        rate: float = 0.5,
        p: float = 1.0,
    ) -> None:
        super().__init__(student_shapes, teacher_shapes)
        if form not in FORMS:
            raise KdlensError(f"ft: form must be one of {', '.join(map(repr, FORMS))}, got {form!r}")
        if not rate > 0:
            raise KdlensError(f"ft: rate must be > 0, got {rate}")
        self.rate, self.p, self.form = float(rate), float(p), form
        repd = form == "repdistiller"
        self.paraphrasers = nn.ModuleList()
        self.translators = nn.ModuleList()
        for s, t in zip(self.student_shapes, self.teacher_shapes):
            f = max(1, int(t[0] * self.rate) if repd else round(t[0] * self.rate))
            self.paraphrasers.append(Paraphraser(t[0], f, batch_norm=not repd, last_activation=repd))
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

    def student_factor(self, i: int, f_s: Tensor, size: Sequence[int] | None = None) -> Tensor:
        """The translator's output (resized to ``size`` if given)."""
        out = self.translators[i](f_s)
        return out if size is None else match_spatial(out, tuple(size))

    def pair_loss(self, i: int, f_s: Tensor, f_t: Tensor, **context) -> Tensor:
        factor_t = self.teacher_factor(i, f_t)
        size = None if self.form == "repdistiller" else f_t.shape[-2:]
        return factor_distance(self.student_factor(i, f_s, size), factor_t, self.p, self.form)

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
