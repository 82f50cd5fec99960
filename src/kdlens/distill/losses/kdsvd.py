"""Self-supervised knowledge distillation using singular value decomposition, KD-SVD (Lee et al. 2018)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from kdlens.distill.losses.adapters import pool_to_smaller
from kdlens.distill.losses.base import HintLoss, as_target, register_loss
from kdlens.errors import KdlensError

FORMS = ("paper", "mdistiller")
#: the RBF's scale: exp(−d²/8) (the authors' code)
RBF_SCALE = 8.0
#: candidate student vectors beyond the teacher's k (the authors' code: k + 3)
EXTRA_STUDENT_VECTORS = 3


class _TopRightSingularVectors(torch.autograd.Function):
    """The n leading right singular vectors of each matrix of a batch (B, R, D) -> (B, D, n).

    Forward in float64 from the smaller Gram matrix, XᵀX (D × D) or XXᵀ (R × R, then
    v = Xᵀu/σ), whose eigendecomposition is much faster than a batched SVD on CPU.
    The backward pass is the exact derivative of the
    eigenvectors of G = XᵀX, dv_j = Σ_{i≠j} v_i v_iᵀ dG v_j / (λ_j − λ_i), for the n
    vectors used only, summed over the thin basis plus its orthogonal complement
    (λ = 0, through the projector I − VVᵀ).  Unlike the full-SVD backward it stays
    finite when unused singular values repeat (zeros of rank-deficient post-ReLU
    maps).  Terms with a vanishing gap (degenerate used vectors, which have no
    derivative) are dropped, as the authors' code drops non-finite values.
    """

    @staticmethod
    def forward(ctx, x: Tensor, n: int) -> Tensor:  # type: ignore[override]
        xd = x.detach().double()
        xt = xd.transpose(-1, -2)
        if xd.shape[-2] >= xd.shape[-1]:
            lam, v = torch.linalg.eigh(xt @ xd)
            lam, v = lam.flip(-1).clamp_min(0.0), v.flip(-1)
        else:
            lam, u = torch.linalg.eigh(xd @ xt)
            lam, u = lam.flip(-1).clamp_min(0.0), u.flip(-1)
            live = lam > 1e-12 * lam[..., :1].clamp_min(1e-300)
            v = (xt @ u) * torch.where(live, lam.clamp_min(1e-300).rsqrt(), torch.zeros_like(lam)).unsqueeze(-2)
        ctx.save_for_backward(xd, lam, v)
        ctx.n, ctx.dtype = n, x.dtype
        return v[..., :n].to(x.dtype)

    @staticmethod
    def backward(ctx, grad_v: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        xd, lam, v = ctx.saved_tensors
        n = ctx.n
        g = grad_v.double()
        v_n, lam_n = v[..., :n], lam[..., :n]
        tol = 1e-12 * lam[..., :1].clamp_min(1e-300)
        m = v.transpose(-1, -2) @ g  # (B, r, n): v_iᵀ g_j
        gap = lam_n.unsqueeze(-2) - lam.unsqueeze(-1)  # (B, r, n): λ_j − λ_i
        ok = gap.abs() > tol.unsqueeze(-1)
        coef = torch.where(ok, m / torch.where(ok, gap, torch.ones_like(gap)), torch.zeros_like(m))
        inv_lam = torch.where(lam_n > tol, 1.0 / lam_n.clamp_min(1e-300), torch.zeros_like(lam_n))
        complement = (g - v @ m) * inv_lam.unsqueeze(-2)  # (I − VVᵀ) g_j / λ_j
        grad_g = (v @ coef + complement) @ v_n.transpose(-1, -2)
        return (xd @ (grad_g + grad_g.transpose(-1, -2))).to(ctx.dtype), None


def top_right_singular(x: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """(σ, V): the n leading singular values (B, n), without gradient, and right
    singular vectors (B, D, n), differentiable, of a batch of matrices (B, R, D);
    n is clipped to min(R, D) as a thin SVD would."""
    n = min(n, x.shape[-2], x.shape[-1])
    v = _TopRightSingularVectors.apply(x, n)
    with torch.no_grad():
        sigma = torch.linalg.norm(x.detach() @ v.detach(), dim=-2)
    return sigma, v


def fix_signs(v: Tensor) -> Tensor:
    """Flip each column of (B, D, n) so that its largest-magnitude entry is positive
    (a singular vector's sign is arbitrary; this makes the loss deterministic)."""
    idx = v.abs().argmax(dim=-2, keepdim=True)
    sign = torch.sign(torch.gather(v, -2, idx))
    return v * torch.where(sign == 0, torch.ones_like(sign), sign)


def align_to(v_s: Tensor, v_t: Tensor) -> Tensor:
    """For each teacher vector, the student vector with the largest |cosine|, signed
    to agree with it: (B, D, n_s), (B, D, k) -> (B, D, k)."""
    cosine = v_s.transpose(-1, -2) @ v_t  # (B, n_s, k)
    best = cosine.abs() == cosine.abs().amax(dim=-2, keepdim=True)
    return v_s @ torch.where(best, torch.sign(cosine), torch.zeros_like(cosine))


@register_loss("kdsvd")
class KDSVDLoss(HintLoss):
    r"""Lee, Kim & Song 2018, *Self-supervised Knowledge Distillation Using Singular
    Value Decomposition* (ECCV), §3.

    Each feature map, as a matrix F ∈ ℝ^{HW×C} per sample, is compressed by SVD
    into its leading right singular vectors ("distilled feature vectors"): the
    teacher's k, weighted by its L2-normalised singular values σ̂, and the student's
    k + 3, of which the one with the largest |cosine| to each teacher vector is
    kept, sign-aligned (V̂^s), and weighted by the same σ̂.  Knowledge is the
    relation of consecutive layers, a radial-basis "graph" between the entries of
    their vectors:

    .. math::
        G^{i}_{a,b,j} = \exp\big(-(\hat\sigma_j v^{i}_{a,j} - \hat\sigma^{-}_j v^{i-1}_{b,j})^2/8\big),\qquad
        L_{KDSVD} = \sum_{i\ge 2}\frac1B\sum_b \big\|G^{i,s}_b - G^{i,t}_b\big\|_F^2

    (σ̂⁻ the teacher weights of layer i−1).  ``k`` = 1, k + 3 student candidates
    and exp(−d²/8) follow the authors' TensorFlow code (sseung0703/SSKD_SVD,
    KD_methods_with_TF); the batch mean (sum over graph entries) and β = 1 follow
    mdistiller.  Needs at least two layer pairs; their order is the network's.

    ``form="paper"`` (default): F = HW × C (the authors' NHWC reshape), so vectors
    live in channel space and teacher and student channels must match at each
    pair; where they differ, kdlens maps the student through a 1×1 convolution
    (no bias, a learned connector — not in the paper).  ``form="mdistiller"``:
    mdistiller's reshape of NCHW maps to (C·H) × W, so vectors live along the
    width; the larger map of a pair is average-pooled to the smaller.

    A singular vector's sign is arbitrary; kdlens makes each teacher vector's
    largest entry positive (the graph depends on relative signs across layers), and
    differentiates the SVD stably (:class:`_TopRightSingularVectors`).
    """

    accepts_vectors = False
    min_pairs = 2

    def __init__(
        self,
        student_shapes: Sequence[Sequence[int]],
        teacher_shapes: Sequence[Sequence[int]],
        k: int = 1,
        form: str = "paper",
    ) -> None:
        super().__init__(student_shapes, teacher_shapes)
        if form not in FORMS:
            raise KdlensError(f"kdsvd: form must be one of {', '.join(FORMS)}, got {form!r}")
        if k < 1:
            raise KdlensError(f"kdsvd: k must be >= 1, got {k}")
        self.k, self.form = int(k), form
        self.connectors = nn.ModuleList(
            nn.Conv2d(s[0], t[0], 1, bias=False) if form == "paper" and s[0] != t[0] else nn.Identity()
            for s, t in zip(self.student_shapes, self.teacher_shapes)
        )

    def _matrix(self, f: Tensor) -> Tensor:
        b, c, h, w = f.shape
        if self.form == "paper":
            return f.permute(0, 2, 3, 1).reshape(b, h * w, c)
        return f.reshape(b, c * h, w)

    def vectors(self, f_s: Tensor, f_t: Tensor) -> tuple[Tensor, Tensor]:
        """Weighted, aligned distilled feature vectors (V̂^s, V̂^t), each (B, D, k)."""
        if self.form == "mdistiller":
            f_s, f_t = pool_to_smaller(f_s, f_t)
        sigma_t, v_t = top_right_singular(self._matrix(f_t), self.k)
        _, v_s = top_right_singular(self._matrix(f_s), self.k + EXTRA_STUDENT_VECTORS)
        v_t = fix_signs(v_t)
        v_s = align_to(v_s, v_t)
        weight = torch.nn.functional.normalize(sigma_t, dim=1).unsqueeze(1)
        return v_s * weight, v_t * weight

    def forward(self, student_feats: Sequence[Tensor], teacher_feats: Sequence[Tensor], **context) -> Tensor:
        self.check_features(student_feats, teacher_feats)
        terms = []
        prev = None
        for i, (f_s, f_t) in enumerate(zip(student_feats, teacher_feats)):
            v_s, v_t = self.vectors(self.connectors[i](f_s), as_target(f_t, f_s))
            if prev is not None:
                p_s, p_t = prev
                k = min(v_s.shape[-1], p_s.shape[-1])
                g_s = torch.exp(-(v_s[:, :, None, :k] - p_s[:, None, :, :k]).pow(2) / RBF_SCALE)
                g_t = torch.exp(-(v_t[:, :, None, :k] - p_t[:, None, :, :k]).pow(2) / RBF_SCALE)
                terms.append((g_s - g_t).pow(2).flatten(1).sum(dim=1).mean())
            prev = (v_s, v_t)
        return torch.stack(terms).sum()
