"""Contrastive representation distillation (Tian, Krishnan & Isola 2020)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdlens.distill.losses.adapters import flat, numel
from kdlens.distill.losses.base import HintLoss, as_target, register_loss
from kdlens.errors import KdlensError


def nce_loss(scores: Tensor, n_data: int) -> Tensor:
    r"""−mean_b [log h(x_b0) + Σ_{k≥1} log(1 − h(x_bk))], h(x) = x / (x + K/N).

    ``scores`` (B, K+1): column 0 the positive pair, then K negatives drawn
    uniformly from the N data points (noise distribution 1/N).
    """
    noise = (scores.shape[1] - 1) / n_data  # K · P_n
    log_pos = torch.log(scores[:, 0] / (scores[:, 0] + noise))
    log_neg = torch.log(noise / (scores[:, 1:] + noise))
    return -(log_pos + log_neg.sum(dim=1)).mean()


@register_loss("crd")
class CRDLoss(HintLoss):
    r"""Tian, Krishnan & Isola 2020, *Contrastive Representation Distillation* (ICLR),
    §3.

    Embeddings g_S, g_T: linear maps of the flattened features to ``embed_dim``
    (128) dimensions followed by L2 normalisation (the paper's adapter).  A critic
    h(T, S) = e^{g_T(t)ᵀ g_S(s)/τ} / (e^{g_T(t)ᵀ g_S(s)/τ} + K/N) is trained by
    NCE: the positive pair is (teacher, student) of the same sample, the K =
    ``nce_k`` negatives pair the anchor with other samples' embeddings held in a
    memory bank of all N = ``n_data`` training samples.  Both directions are used
    (student anchor vs teacher memory, teacher anchor vs student memory) and
    added.  As in the authors' code the exponentiated scores are divided by a
    constant Z (estimated on the first batch as mean·N, then fixed, kept as a
    buffer), the NCE partition-function estimate of Wu et al. 2018.

    Memory banks (buffers, one pair per layer pair): initialised uniformly in
    ±1/√(d/3), which gives rows of expected unit norm; after each training step
    rows of the batch are updated as m ← normalise(momentum·m + (1 − momentum)·v)
    with momentum 0.5 (paper).  τ = ``nce_t`` = 0.07, K = 16384 (paper); use a
    small ``nce_k`` for tests.

    Context: ``indices`` (B,) — each sample's index in the training set
    (required); optional ``contrast_idx`` (B, K+1) with the positive index in
    column 0 (or (B, K) negatives only), e.g. the paper's negatives from other
    classes; otherwise K negatives are drawn uniformly from the other N − 1
    samples with the loss's own generator (``seed``).
    """

    def __init__(
        self,
        student_shapes: Sequence[Sequence[int]],
        teacher_shapes: Sequence[Sequence[int]],
        n_data: int,
        embed_dim: int = 128,
        nce_k: int = 16384,
        nce_t: float = 0.07,
        momentum: float = 0.5,
        seed: int = 0,
    ) -> None:
        super().__init__(student_shapes, teacher_shapes)
        if n_data < 2:
            raise KdlensError(f"crd: n_data (training-set size) must be >= 2, got {n_data}")
        if nce_k < 1:
            raise KdlensError(f"crd: nce_k must be >= 1, got {nce_k}")
        if not nce_t > 0:
            raise KdlensError(f"crd: nce_t must be > 0, got {nce_t}")
        if not 0.0 <= momentum <= 1.0:
            raise KdlensError(f"crd: momentum must be in [0, 1], got {momentum}")
        self.n_data, self.embed_dim, self.nce_k = int(n_data), int(embed_dim), int(nce_k)
        self.nce_t, self.momentum, self.seed = float(nce_t), float(momentum), int(seed)
        self.embed_s = nn.ModuleList(nn.Linear(numel(s), embed_dim) for s in self.student_shapes)
        self.embed_t = nn.ModuleList(nn.Linear(numel(t), embed_dim) for t in self.teacher_shapes)
        init = torch.Generator().manual_seed(self.seed)
        stdv = 1.0 / math.sqrt(embed_dim / 3)
        for i in range(self.num_pairs):
            for side in ("s", "t"):
                bank = torch.rand(self.n_data, embed_dim, generator=init) * (2 * stdv) - stdv
                self.register_buffer(f"memory_{side}{i}", bank)
                self.register_buffer(f"z_{side}{i}", torch.tensor(-1.0))
        self._generators: dict[str, torch.Generator] = {}

    def memory(self, side: str, i: int) -> Tensor:
        return getattr(self, f"memory_{side}{i}")

    def generator(self, device: torch.device) -> torch.Generator:
        key = str(device)
        if key not in self._generators:
            self._generators[key] = torch.Generator(device=device).manual_seed(self.seed)
        return self._generators[key]

    def sample_contrast(self, indices: Tensor) -> Tensor:
        """(B, K+1): each positive index followed by K uniform draws from the other samples."""
        neg = torch.randint(0, self.n_data - 1, (indices.shape[0], self.nce_k),
                            generator=self.generator(indices.device), device=indices.device)
        neg = neg + (neg >= indices[:, None]).long()  # skip the positive itself
        return torch.cat([indices[:, None], neg], dim=1)

    def _contrast(self, indices: Tensor, contrast_idx: Tensor | None) -> Tensor:
        if contrast_idx is None:
            return self.sample_contrast(indices)
        contrast_idx = contrast_idx.to(indices.device).long()
        if contrast_idx.shape == (indices.shape[0], self.nce_k):
            return torch.cat([indices[:, None], contrast_idx], dim=1)
        if contrast_idx.shape != (indices.shape[0], self.nce_k + 1):
            raise KdlensError(
                f"crd: contrast_idx has shape {tuple(contrast_idx.shape)}; expected "
                f"({indices.shape[0]}, {self.nce_k + 1}) (positive first) or ({indices.shape[0]}, {self.nce_k})"
            )
        return contrast_idx

    def _scores(self, anchor: Tensor, bank: Tensor, contrast: Tensor, z: Tensor) -> Tensor:
        weights = bank[contrast]  # (B, K+1, d)
        scores = torch.exp(torch.bmm(weights, anchor.unsqueeze(2)).squeeze(2) / self.nce_t)
        with torch.no_grad():  # first call (z < 0): fix the normaliser, without a host sync
            z.copy_(torch.where(z < 0, scores.mean() * self.n_data, z))
        return scores / z.clone()  # a copy: later in-place updates must not touch saved tensors

    def forward(
        self,
        student_feats: Sequence[Tensor],
        teacher_feats: Sequence[Tensor],
        indices: Tensor | None = None,
        contrast_idx: Tensor | None = None,
        **context,
    ) -> Tensor:
        self.check_features(student_feats, teacher_feats)
        if indices is None:
            raise KdlensError(
                "crd needs `indices`, each sample's position in the training set, to address its memory "
                "bank; use a data loader that yields sample indices"
            )
        indices = indices.long()
        if indices.min() < 0 or indices.max() >= self.n_data:
            raise KdlensError(f"crd: sample indices must lie in [0, {self.n_data}); got {int(indices.min())}..{int(indices.max())}")
        contrast = self._contrast(indices, contrast_idx)
        terms = []
        for i, (f_s, f_t) in enumerate(zip(student_feats, teacher_feats)):
            v_s = F.normalize(self.embed_s[i](flat(f_s)), dim=1)
            v_t = F.normalize(self.embed_t[i](flat(as_target(f_t, f_s))), dim=1)
            mem_s, mem_t = self.memory("s", i), self.memory("t", i)
            out_s = self._scores(v_s, mem_t, contrast, getattr(self, f"z_s{i}"))  # student anchor
            out_t = self._scores(v_t, mem_s, contrast, getattr(self, f"z_t{i}"))  # teacher anchor
            terms.append(nce_loss(out_s, self.n_data) + nce_loss(out_t, self.n_data))
            if self.training:
                self._update(mem_s, indices, v_s)
                self._update(mem_t, indices, v_t)
        return torch.stack(terms).sum()

    @torch.no_grad()
    def _update(self, bank: Tensor, indices: Tensor, v: Tensor) -> None:
        rows = bank[indices] * self.momentum + v.detach().to(bank.dtype) * (1.0 - self.momentum)
        bank.index_copy_(0, indices, F.normalize(rows, dim=1))

    def get_extra_state(self) -> dict:
        """Negative-sampling generator states, so a resumed run draws the same negatives."""
        return {key: gen.get_state() for key, gen in self._generators.items()}

    def set_extra_state(self, state: dict) -> None:
        for key, st in state.items():
            self.generator(torch.device(key)).set_state(st)
