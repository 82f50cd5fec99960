"""Attention-based feature distillation, AFD (Ji, Heo & Park 2021)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdlens.distill.losses.base import HintLoss, as_target, register_loss
from kdlens.errors import KdlensError


def linear_bn(n_in: int, n_out: int) -> nn.Sequential:
    """Linear → BatchNorm1d, the authors' ``nn_bn_relu`` without its ReLU."""
    return nn.Sequential(nn.Linear(n_in, n_out), nn.BatchNorm1d(n_out))


def spatial_energy(f: Tensor, size: tuple[int, int] | None = None) -> Tensor:
    """φ(F) = vec(mean_c F_c²) / ‖·‖₂ for maps (B, C, H, W) -> (B, h·w).

    ``size``: average-pool the energy map to (h, w) first (adaptively, which
    replicates when it grows), to compare with a teacher layer of that size.
    """
    e = f.pow(2).mean(dim=1, keepdim=True)
    if size is not None and tuple(e.shape[-2:]) != tuple(size):
        e = F.adaptive_avg_pool2d(e, size)
    return F.normalize(e.flatten(1), dim=1)


@register_loss("afd")
class AFDLoss(HintLoss):
    r"""Ji, Heo & Park 2021, *Show, Attend and Distill: Knowledge Distillation via
    Attention-based Feature Matching* (AAAI), §3.

    Every teacher layer t attends over **all** student layers s given (the n
    teacher and n student layers of the layer pairs form n × n candidate links; the
    pairing order does not matter).  With GAP the global average pool and d =
    ``qk_dim``:

    .. math::
        q_t = \mathrm{BN}(W^Q_t\,\mathrm{GAP}(T_t)),\quad
        k_{t,s} = \big[\mathrm{BN}(W^B\,\mathrm{ReLU}(\mathrm{BN}(W^K_s\,\mathrm{GAP}(S_s))))\big]_t,

        \alpha_{t,s} = \mathrm{softmax}_s\Big(\frac{q_t^\top k_{t,s} + p_t^\top p_s}{\sqrt d}\Big),

        L_{AFD} = \sum_t \frac1B\sum_b \sum_s \alpha_{b,t,s}\;
        \frac{1}{H_tW_t}\big\|\phi_t(S_s) - \phi(T_t)\big\|_2^2

    φ(F) = vec(mean_c F_c²)/‖·‖₂ (spatial attention energy), φ_t pools a student
    map adaptively to teacher layer t's H_t × W_t; W^B is one bilinear map giving a
    key per teacher layer; p_t, p_s learned positional embeddings (Xavier-normal).
    The query/key networks and embeddings are the loss's parameters, trained with
    the student (the objective is a module, so the Trainer optimises them).
    Reductions (mean over positions and batch, sum over teacher layers) follow the
    authors' code (clovaai/attention-feature-distillation), for which their
    β = 200 (with CE 1 and KD α = 0.9, T = 4) was chosen; ``qk_dim`` = 128 is theirs.

    **Which layers** (``pairs_layers = False``: any number of teacher and of
    student layers, n_t × n_s links).  The authors feed every residual block's
    post-ReLU output of both networks.  In kdlens:

    * *AFD all pairs* (PURSUhInT §4.1) — every block of both networks:
      ``hints: all`` (``student_hints`` then defaults to ``all`` as well), e.g.
      resnet56 → resnet20: 27 teacher × 9 student blocks, 243 links;
    * *AFD at hint points* (PURSUhInT Table 4) — ``hints: auto`` (the teacher's
      cluster centres; the student layers follow by relative depth) or explicit
      ``hints`` / ``student_hints`` of any lengths: attention over the links of
      those layers only.
    """

    accepts_vectors = False
    pairs_layers = False

    def __init__(
        self,
        student_shapes: Sequence[Sequence[int]],
        teacher_shapes: Sequence[Sequence[int]],
        qk_dim: int = 128,
    ) -> None:
        super().__init__(student_shapes, teacher_shapes)
        if qk_dim < 1:
            raise KdlensError(f"afd: qk_dim must be >= 1, got {qk_dim}")
        self.qk_dim = int(qk_dim)
        n_t, n_s = len(self.teacher_shapes), len(self.student_shapes)
        self.query = nn.ModuleList(linear_bn(t[0], self.qk_dim) for t in self.teacher_shapes)
        self.key = nn.ModuleList(linear_bn(s[0], self.qk_dim) for s in self.student_shapes)
        self.bilinear = linear_bn(self.qk_dim, self.qk_dim * n_t)
        self.pos_t = nn.Parameter(torch.empty(n_t, self.qk_dim))
        self.pos_s = nn.Parameter(torch.empty(n_s, self.qk_dim))
        nn.init.xavier_normal_(self.pos_t)
        nn.init.xavier_normal_(self.pos_s)

    def attention(self, student_feats: Sequence[Tensor], teacher_feats: Sequence[Tensor]) -> Tensor:
        """α of shape (B, n_t, n_s): each teacher layer's weights over the student layers."""
        b = student_feats[0].shape[0]
        n_t, n_s = len(teacher_feats), len(student_feats)
        query = torch.stack([q(f.mean(dim=(2, 3))) for q, f in zip(self.query, teacher_feats)], dim=1)
        key = torch.stack([F.relu(k(f.mean(dim=(2, 3)))) for k, f in zip(self.key, student_feats)], dim=1)
        key = self.bilinear(key.reshape(b * n_s, self.qk_dim)).reshape(b, n_s, n_t, self.qk_dim)
        logits = torch.einsum("bstd,btd->bts", key, query) + self.pos_t @ self.pos_s.t()
        return F.softmax(logits / math.sqrt(self.qk_dim), dim=2)

    def forward(self, student_feats: Sequence[Tensor], teacher_feats: Sequence[Tensor], **context) -> Tensor:
        self.check_features(student_feats, teacher_feats)
        like = student_feats[0]
        if self.training and like.shape[0] < 2:
            raise KdlensError(
                "afd: its query and key networks use batch norm (as the authors' code), which needs at least "
                "2 samples in a training batch; got 1 (a last batch of one sample? change batch_size)"
            )
        teacher_feats = [as_target(f, like) for f in teacher_feats]
        att = self.attention(student_feats, teacher_feats)
        terms = []
        for t, f_t in enumerate(teacher_feats):
            size = tuple(f_t.shape[-2:])
            v_t = spatial_energy(f_t)
            v_s = torch.stack([spatial_energy(f_s, size) for f_s in student_feats], dim=1)  # (B, n_s, h·w)
            diff = (v_s - v_t.unsqueeze(1)).pow(2).mean(dim=2)  # (B, n_s)
            terms.append((diff * att[:, t]).sum(dim=1).mean())
        return torch.stack(terms).sum()
