"""A comprehensive overhaul of feature distillation, OFD (Heo et al. 2019)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from kdlens.distill.losses.adapters import match_spatial
from kdlens.distill.losses.base import HintLoss, register_loss
from kdlens.errors import KdlensError


def gaussian_negative_mean(mean: Tensor, std: Tensor) -> Tensor:
    r"""E[x | x < 0] for x ~ N(μ, σ²), per channel: the margin of the margin ReLU.

    .. math:: m = \mu - \sigma\,\frac{\varphi(\mu/\sigma)}{\Phi(-\mu/\sigma)}

    and m = −3σ where Φ(−μ/σ) ≤ 0.001 (almost no negative responses), as the
    authors' ``get_margin_from_BN``.  Computed in float64.
    """
    mu, sigma = mean.double(), std.double().abs().clamp_min(1e-12)
    a = mu / sigma
    cdf = 0.5 * torch.erfc(a / math.sqrt(2.0))  # Φ(−a)
    pdf = torch.exp(-0.5 * a * a) / math.sqrt(2.0 * math.pi)
    margin = mu - sigma * pdf / cdf.clamp_min(1e-300)
    return torch.where(cdf > 1e-3, margin, -3.0 * sigma).to(mean.dtype)


def margins_from_batchnorm(bn: nn.BatchNorm2d) -> Tensor:
    """The paper's margins from the batch norm before the teacher's ReLU: μ = its bias
    β, σ = |its weight γ| (the BN output's per-channel distribution)."""
    return gaussian_negative_mean(bn.bias.detach(), bn.weight.detach())


def partial_l2(f_s: Tensor, f_t: Tensor) -> Tensor:
    r"""Σ over elements of d_p(t, s) = 0 if s ≤ t ≤ 0, else (t − s)² (``f_t`` already
    margin-ReLU'd), averaged over the batch: the teacher's negative responses only
    bound the student from above."""
    mask = (f_s > f_t) | (f_t > 0)
    return ((f_s - f_t).pow(2) * mask).flatten(1).sum(dim=1).mean()


def _connector(c_s: int, c_t: int, kernel: int) -> nn.Sequential:
    conv = nn.Conv2d(c_s, c_t, kernel, padding=(kernel - 1) // 2, bias=False)
    nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / (kernel * kernel * c_t)))
    bn = nn.BatchNorm2d(c_t)
    nn.init.ones_(bn.weight)
    nn.init.zeros_(bn.bias)
    return nn.Sequential(conv, bn)


@register_loss("ofd")
class OFDLoss(HintLoss):
    r"""Heo, Kim, Yun, Park, Kwak & Choi 2019, *A Comprehensive Overhaul of Feature
    Distillation* (ICCV), §3.

    Distils **pre-ReLU** features.  The teacher's target is its margin ReLU
    σ_m(T) = max(T, m) — negative responses are replaced by their expectation m
    (per channel, :func:`gaussian_negative_mean`); the student passes a connector
    r (1×1 conv + BN, ``connector_kernel``) and the partial L2 distance ignores
    positions where both are already negative enough:

    .. math::
        L_{OFD} = \sum_{i=1}^{n} 2^{-(n-i)}\;\frac1B\sum_b
        d_p\big(\sigma_{m_i}(T_{i,b}),\, r_i(S_{i,b})\big),\qquad
        d_p(t, s) = \sum_j \begin{cases}0 & s_j \le t_j \le 0\\ (t_j - s_j)^2 & \text{otherwise}\end{cases}

    The 2^{-(n-i)} layer weights (the deepest pair weighs 1), the sum over elements
    and the batch mean follow the authors' CIFAR code (clovaai/overhaul-distillation),
    which divides by 1000: the method table's β = 10⁻³.  A teacher map larger than
    the student's is average-pooled to it (as mdistiller).

    **Margins.**  The paper derives μ, σ from the batch norm before the teacher's
    ReLU (its bias and |weight|); the loss sees features only, so by default kdlens
    estimates each channel's μ and σ from the teacher's pre-ReLU features of the
    first training batch and keeps them fixed (buffers, saved with checkpoints).
    The estimate describes the tapped tensor itself — in a residual block that is
    the sum after the shortcut, which the BN statistics ignore.  To use the paper's
    margins: ``loss.set_margins([margins_from_batchnorm(bn) for bn in teacher_bns])``.

    **Layers**: pre-ReLU taps of both networks, usually the end of each stage, e.g.
    resnet56 → resnet8: ``hints: [layer1.8.preact, layer2.8.preact, layer3.8.preact]``
    (student layers follow with their ``.preact`` suffix).
    """

    accepts_vectors = False

    def __init__(
        self,
        student_shapes: Sequence[Sequence[int]],
        teacher_shapes: Sequence[Sequence[int]],
        connector_kernel: int = 1,
    ) -> None:
        super().__init__(student_shapes, teacher_shapes)
        if connector_kernel < 1 or connector_kernel % 2 == 0:
            raise KdlensError(f"ofd: connector_kernel must be a positive odd number, got {connector_kernel}")
        self.connector_kernel = int(connector_kernel)
        self.connectors = nn.ModuleList(
            _connector(s[0], t[0], self.connector_kernel) for s, t in zip(self.student_shapes, self.teacher_shapes)
        )
        for i, t in enumerate(self.teacher_shapes):
            self.register_buffer(f"margin{i}", torch.full((t[0],), float("nan")))

    def margin(self, i: int) -> Tensor:
        """Per-channel margins of pair ``i`` (NaN until set or estimated)."""
        return getattr(self, f"margin{i}")

    @torch.no_grad()
    def set_margins(self, margins: Sequence[Tensor]) -> None:
        """Fix the margins, one (C_t,) tensor per pair (e.g. :func:`margins_from_batchnorm`)."""
        if len(margins) != self.num_pairs:
            raise KdlensError(f"ofd: expected {self.num_pairs} margin tensors, got {len(margins)}")
        for i, m in enumerate(margins):
            buf = self.margin(i)
            if tuple(m.shape) != tuple(buf.shape):
                raise KdlensError(f"ofd: margin {i} has shape {tuple(m.shape)}, expected {tuple(buf.shape)}")
            buf.copy_(m.to(buf))

    @torch.no_grad()
    def _estimate_margins(self, i: int, f_t: Tensor) -> Tensor:
        """Margins fixed on first use: from this batch's per-channel mean and std."""
        buf = self.margin(i)
        x = f_t.transpose(0, 1).reshape(f_t.shape[1], -1).double()
        estimate = gaussian_negative_mean(x.mean(dim=1), x.std(dim=1, correction=0)).to(buf)
        buf.copy_(torch.where(torch.isnan(buf), estimate, buf))  # no host sync
        return buf.clone()

    def pair_loss(self, i: int, f_s: Tensor, f_t: Tensor, **context) -> Tensor:
        m = self._estimate_margins(i, f_t).to(f_s.dtype)
        s = self.connectors[i](f_s)
        t = match_spatial(f_t, tuple(s.shape[-2:]))
        t = torch.maximum(t, m.view(1, -1, 1, 1))
        return partial_l2(s, t) / 2 ** (self.num_pairs - 1 - i)
