"""Knowledge review: attention-based fusion (ABF) and hierarchical context loss (HCL) (Chen et al. 2021)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdlens.distill.losses.base import HintLoss, as_target, register_loss
from kdlens.errors import KdlensError

#: HCL's pyramid: average-pooled copies at 4×4, 2×2 and 1×1, weights halving from 1
PYRAMID = (4, 2, 1)


def as_map(f: Tensor) -> Tensor:
    """(B, D) vectors as (B, D, 1, 1) maps; maps unchanged."""
    return f[:, :, None, None] if f.dim() == 2 else f


def hierarchical_context_loss(f_s: Tensor, f_t: Tensor) -> Tensor:
    r"""HCL of one level: MSE of the maps and of their pyramid poolings.

    .. math::
        \mathrm{HCL} = \frac{\mathrm{MSE}(S, T) + \sum_{l\in\{4,2,1\},\,l<h} 2^{-j_l}\,
        \mathrm{MSE}(P_l S, P_l T)}{1 + \sum_{l<h} 2^{-j_l}}

    P_l: adaptive average pooling to l × l; j_l = 1, 2, 3 counts the levels used
    (a level is skipped when l ≥ h = min(H, W)).  Maps are (B, C, H, W), same shape.
    """
    h = min(f_s.shape[-2:])
    loss = F.mse_loss(f_s, f_t)
    weight, total = 1.0, 1.0
    for level in PYRAMID:
        if level >= h:
            continue
        weight /= 2.0
        loss = loss + weight * F.mse_loss(F.adaptive_avg_pool2d(f_s, level), F.adaptive_avg_pool2d(f_t, level))
        total += weight
    return loss / total


class ABF(nn.Module):
    """Attention-based fusion of one student level with the fused residual of the level below it.

    conv1 (1×1, BN) to ``mid`` channels; with a residual, a 1×1 conv + sigmoid gives
    two spatial weight maps and x ← x·a₀ + up(r)·a₁; resize to the teacher's H×W
    (nearest); conv2 (3×3, BN) to the teacher's channels.  Returns (output, fused
    x) — the fused x is the residual for the next, shallower level.
    """

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, fuse: bool) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, mid_channels, 1, bias=False), nn.BatchNorm2d(mid_channels))
        self.conv2 = nn.Sequential(
            nn.Conv2d(mid_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels)
        )
        self.att_conv = nn.Sequential(nn.Conv2d(2 * mid_channels, 2, 1), nn.Sigmoid()) if fuse else None
        nn.init.kaiming_uniform_(self.conv1[0].weight, a=1)
        nn.init.kaiming_uniform_(self.conv2[0].weight, a=1)

    def forward(self, x: Tensor, residual: Tensor | None, out_size: tuple[int, int]) -> tuple[Tensor, Tensor]:
        x = self.conv1(x)
        if self.att_conv is not None:
            if residual is None:
                raise KdlensError("reviewkd: a fusing ABF needs the residual of the deeper level")
            y = F.interpolate(residual, size=x.shape[-2:], mode="nearest")
            a = self.att_conv(torch.cat([x, y], dim=1))
            x = x * a[:, 0:1] + y * a[:, 1:2]
        if tuple(x.shape[-2:]) != tuple(out_size):
            x = F.interpolate(x, size=out_size, mode="nearest")
        return self.conv2(x), x


@register_loss("reviewkd")
class ReviewKDLoss(HintLoss):
    r"""Chen, Liu, Zhao & Jia 2021, *Distilling Knowledge via Knowledge Review*
    (CVPR), §3.

    The student's level i is distilled from the teacher's level i *and* everything
    below it in depth ("review"): starting at the deepest pair, each student feature
    S_i is fused with the fused result of level i+1 by an attention-based fusion
    module (:class:`ABF`), and a 3×3 conv maps the fusion to the teacher's shape:

    .. math::
        Z_n = \mathrm{ABF}_n(S_n),\quad Z_i = \mathrm{ABF}_i(S_i, Z_{i+1}),\qquad
        L_{ReviewKD} = \sum_i \mathrm{HCL}\big(\mathrm{conv}_i(Z_i),\; T_i\big)

    with the hierarchical context loss :func:`hierarchical_context_loss` (MSE plus
    pyramid-pooled MSEs at 4, 2, 1).  The ABFs (channels ``mid`` = min(
    ``max_mid_channels``, C of the deepest student layer)) are the loss's
    parameters, trained with the student.  Architecture, initialisation and HCL
    weights follow the authors' code (dvlab-research/ReviewKD, as in mdistiller).

    **Layers**, shallow to deep, as the authors use them: the student's stage
    outputs (post-ReLU) and its pooled feature, the teacher's stage outputs before
    ReLU and its pooled feature; vectors (the ``penultimate`` tap) count as 1×1
    maps.  For the kdlens CIFAR ResNets, e.g. resnet56 → resnet8::

        hints: [layer1.8.preact, layer2.8.preact, layer3.8.preact, penultimate]
        student_hints: [layer1.0, layer2.0, layer3.0, penultimate]

    Weight: the authors' default β = 1 with CE 1 (their scripts: 5 for
    resnet32x4 → resnet8x4 and the WRN pairs, 0.6 for resnet56 → resnet20); they
    warm the term up linearly over the first 20 of 240 epochs, which kdlens's loop
    applies scaled to the run's epochs (``warmup_fraction``): β·min(1, (e + 1)/W) in
    epoch e (0-based), W = max(1, round(20/240 · epochs)).
    """

    warmup_fraction = 20 / 240

    def __init__(
        self,
        student_shapes: Sequence[Sequence[int]],
        teacher_shapes: Sequence[Sequence[int]],
        max_mid_channels: int = 512,
    ) -> None:
        super().__init__(student_shapes, teacher_shapes)
        if max_mid_channels < 1:
            raise KdlensError(f"reviewkd: max_mid_channels must be >= 1, got {max_mid_channels}")
        self.max_mid_channels = int(max_mid_channels)
        mid = min(self.max_mid_channels, self.student_shapes[-1][0])
        n = self.num_pairs
        self.out_sizes = [tuple(t[1:]) if len(t) == 3 else (1, 1) for t in self.teacher_shapes]
        self.abfs = nn.ModuleList(
            ABF(s[0], mid, t[0], fuse=i < n - 1)
            for i, (s, t) in enumerate(zip(self.student_shapes, self.teacher_shapes))
        )

    def reviewed(self, student_feats: Sequence[Tensor]) -> list[Tensor]:
        """The student's fused outputs, one per level (shallow to deep), in the teacher's shapes."""
        outs: list[Tensor] = [student_feats[0]] * self.num_pairs
        residual = None
        for i in reversed(range(self.num_pairs)):
            outs[i], residual = self.abfs[i](as_map(student_feats[i]), residual, self.out_sizes[i])
        return outs

    def forward(self, student_feats: Sequence[Tensor], teacher_feats: Sequence[Tensor], **context) -> Tensor:
        self.check_features(student_feats, teacher_feats)
        single = [f for f in (*student_feats, *teacher_feats) if f.dim() == 2 or f.shape[-2:] == (1, 1)]
        if self.training and single and student_feats[0].shape[0] < 2:
            raise KdlensError(
                "reviewkd: the fusion modules batch-normalise 1×1 features, which needs at least 2 samples in a "
                "training batch; got 1 (a last batch of one sample? change batch_size)"
            )
        outs = self.reviewed(student_feats)
        terms = [hierarchical_context_loss(o, as_map(as_target(t, o))) for o, t in zip(outs, teacher_feats)]
        return torch.stack(terms).sum()
