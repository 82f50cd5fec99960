"""Canonical correlation analysis similarities: R²_CCA, SVCCA and PWCCA.

For column-centred X (N×p) and Y (N×q) of full column rank, with Q_X, Q_Y orthonormal
bases of their column spaces (thin QR), the canonical correlations ρ_1 ≥ … ≥ ρ_min(p,q)
are the singular values of Q_YᵀQ_X (Björck & Golub 1973: cosines of the principal angles
between the two column spaces).  Then

* R²_CCA = Σ ρ_i² / min(p, q) = ‖Q_YᵀQ_X‖²_F / min(p, q) — Yanai's generalised
  coefficient of determination, as used by Kornblith et al. (2019, eq. 8) and by
  PURSUhInT (Keser et al. 2022);
* SVCCA = mean ρ_i after reducing each representation to the top singular directions
  that keep 99 % of its variance (Raghu et al. 2017, NeurIPS);
* PWCCA = Σ α_i ρ_i / Σ α_i with α_i = Σ_j |⟨h_i, x_j⟩|, h_i the canonical variates of X
  and x_j its (centred) neurons (Morcos et al. 2018, NeurIPS, eq. 2).

All of it in float64.  R²_CCA and SVCCA are invariant to any invertible linear map of
either representation (they only see the column spaces); CKA is not.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import scipy.linalg

from kdlens.errors import KdlensError
from kdlens.explain.similarity._base import PairwiseMetric, register_metric
from kdlens.explain.similarity._input import as_representation, centred

__all__ = ["cca_r2", "svcca", "pwcca", "CcaR2", "Svcca", "Pwcca", "OrthoBasis"]

_EPS64 = float(np.finfo(np.float64).eps)


@dataclass
class OrthoBasis:
    """A representation reduced to a basis of its centred column space.

    ``basis``: N×r matrix whose columns span the representation (orthonormal for plain CCA
    and SVCCA; ridge-shrunk orthonormal columns for regularised CCA).  ``n_pairs``: the
    number of canonical directions the representation contributes (r, its rank).
    ``proj``: basisᵀ X_c (r×C), kept for PWCCA's projection weights.
    """

    name: str
    n: int
    basis: np.ndarray
    n_pairs: int
    proj: np.ndarray | None = None


def _rank_tol(n: int, c: int, largest: float) -> float:
    """numpy.linalg.matrix_rank's default tolerance: σ_max · max(N, C) · ε."""
    return largest * max(n, c) * _EPS64


def full_rank_basis(x: Any, name: str, keep_proj: bool = False) -> OrthoBasis:
    """Orthonormal basis Q of centred X via pivoted thin QR, or a KdlensError if X is not
    of full column rank (which includes every N ≤ C: centring leaves rank ≤ N − 1)."""
    X = centred(as_representation(x, name), name)
    n, c = X.shape
    if n <= c:
        raise KdlensError(
            f"CCA needs more examples than features, but representation {name!r} has N={n} "
            f"examples and C={c} features (after centring its rank is at most N−1={n - 1}, so "
            "every canonical correlation would be 1). Use more than C examples, reduce the "
            "features first (svcca keeps the top singular directions; or PCA), or pass eps=… "
            "for ridge-regularised CCA."
        )
    Q, R, _ = scipy.linalg.qr(X, mode="economic", pivoting=True)
    r_diag = np.abs(np.diagonal(R))
    rank = int(np.sum(r_diag > _rank_tol(n, c, float(r_diag[0]))))
    if rank < c:
        raise KdlensError(
            f"representation {name!r} is rank-deficient: numerical rank {rank} < C={c} features "
            "(some features are linear combinations of others, e.g. duplicated or always-zero "
            "channels), so plain CCA is ill-posed. Drop the redundant features, use svcca "
            "(keeps only directions with variance), or pass eps=… for ridge-regularised CCA."
        )
    return OrthoBasis(name, n, Q, c, (Q.T @ X) if keep_proj else None)


def ridge_basis(x: Any, name: str, eps: float) -> OrthoBasis:
    """Ridge-whitened basis for regularised CCA.

    With X_c = U S Vᵀ (thin SVD) and covariance Σ_XX = X_cᵀX_c/(N−1) with eigenvalues
    λ_i = s_i²/(N−1), regularised CCA whitens by (Σ_XX + ε λ̄ I)^(−1/2), λ̄ = tr(Σ_XX)/C the
    mean feature variance (so ``eps`` is relative and the metric stays scale-invariant).
    Then X_c (Σ_XX + ε λ̄ I)^(−1/2) = U diag(s_i / sqrt(s_i² + ε s̄²)) Vᵀ with s̄² = Σ s_i²/C,
    and the regularised canonical correlations are the singular values of W_YᵀW_X for
    W = U diag(s_i / sqrt(s_i² + ε s̄²)) (the rotation Vᵀ drops out).  Directions with
    s_i below the rank tolerance are dropped, so ``eps=0`` is CCA on the non-degenerate
    subspace (pseudo-inverse whitening).
    """
    if not (np.isfinite(eps) and eps >= 0):
        raise KdlensError(f"eps must be a finite number ≥ 0 (e.g. 1e-4); got {eps!r}.")
    X = centred(as_representation(x, name), name)
    n, c = X.shape
    U, s, _ = np.linalg.svd(X, full_matrices=False)
    keep = s > _rank_tol(n, c, float(s[0]))
    if eps == 0 and int(keep.sum()) >= n - 1:
        raise KdlensError(
            f"R²_CCA with eps=0: representation {name!r} has {c} features for N={n} examples and spans "
            f"every centred direction (rank {int(keep.sum())} = N − 1), so R² would be 1 whatever the "
            "other representation is; use more examples (N > C), eps > 0 (ridge CCA, e.g. 1e-4), or svcca"
        )
    U, s = U[:, keep], s[keep]
    mean_s2 = float(np.sum(s * s)) / c
    shrink = s / np.sqrt(s * s + eps * mean_s2)
    return OrthoBasis(name, n, U * shrink, int(keep.sum()))


def svd_reduced_basis(x: Any, name: str, keep: float) -> OrthoBasis:
    """Top-k left singular vectors of centred X, k the fewest that keep ``keep`` of the
    variance Σ s_i² (Raghu et al. 2017, §2: "SVD … keep 99 % of variance")."""
    if not (np.isfinite(keep) and 0.0 < keep <= 1.0):
        raise KdlensError(f"keep must be a variance fraction in (0, 1] (e.g. 0.99); got {keep!r}.")
    X = centred(as_representation(x, name), name)
    n, c = X.shape
    U, s, _ = np.linalg.svd(X, full_matrices=False)
    rank = int(np.sum(s > _rank_tol(n, c, float(s[0]))))
    frac = np.cumsum(s * s) / np.sum(s * s)
    k = int(np.searchsorted(frac, keep * (1.0 - 1e-12))) + 1
    k = max(1, min(k, rank))
    return OrthoBasis(name, n, U[:, :k], k)


class _BasisMetric(PairwiseMetric):
    """Metrics that see a pair only through the cross product of bases B_bᵀB_a."""

    def cross_operand(self, state: OrthoBasis) -> np.ndarray:
        return state.basis

    def with_operand(self, state: OrthoBasis, operand: np.ndarray) -> OrthoBasis:
        return replace(state, basis=operand)

    def pair(self, a: OrthoBasis, b: OrthoBasis) -> float:
        return self.pair_from_cross(a, b, b.basis.T @ a.basis)  # r_b × r_a


class CcaR2(_BasisMetric):
    """R²_CCA as a :class:`PairwiseMetric` (see :func:`cca_r2`)."""

    def __init__(self, eps: float | None = None) -> None:
        self.eps = eps
        self.unit_diagonal = eps is None

    def prepare(self, x: Any, name: str = "x") -> OrthoBasis:
        if self.eps is None:
            return full_rank_basis(x, name)
        return ridge_basis(x, name, float(self.eps))

    def pair_from_cross(self, a: OrthoBasis, b: OrthoBasis, cross: np.ndarray) -> float:
        return float(np.sum(cross * cross) / min(a.n_pairs, b.n_pairs))


class Svcca(_BasisMetric):
    """SVCCA as a :class:`PairwiseMetric` (see :func:`svcca`)."""

    def __init__(self, keep: float = 0.99) -> None:
        self.keep = keep

    def prepare(self, x: Any, name: str = "x") -> OrthoBasis:
        return svd_reduced_basis(x, name, self.keep)

    def pair_from_cross(self, a: OrthoBasis, b: OrthoBasis, cross: np.ndarray) -> float:
        rho = np.clip(np.linalg.svd(cross, compute_uv=False), 0.0, 1.0)
        return float(np.mean(rho))


class Pwcca(_BasisMetric):
    """PWCCA as a :class:`PairwiseMetric` (see :func:`pwcca`); weights come from the first
    argument, so it is not symmetric."""

    symmetric = False

    def prepare(self, x: Any, name: str = "x") -> OrthoBasis:
        return full_rank_basis(x, name, keep_proj=True)

    def pair_from_cross(self, a: OrthoBasis, b: OrthoBasis, cross: np.ndarray) -> float:
        # cross = Q_YᵀQ_X, so Q_XᵀQ_Y = crossᵀ = U diag(ρ) Vᵀ with U: p×k, k = min(p, q)
        u, rho, _ = np.linalg.svd(cross.T, full_matrices=False)
        rho = np.clip(rho, 0.0, 1.0)
        # canonical variates of X: h_i = Q_X u_i; ⟨h_i, x_j⟩ = (u_iᵀ Q_Xᵀ X_c)_j
        assert a.proj is not None
        alpha = np.sum(np.abs(u.T @ a.proj), axis=1)
        return float(np.sum(alpha * rho) / np.sum(alpha))


register_metric("cca", "cca_r2")(CcaR2)
register_metric("svcca")(Svcca)
register_metric("pwcca")(Pwcca)


def cca_r2(x: Any, y: Any, eps: float | None = None) -> float:
    """Mean squared canonical correlation R²_CCA = ‖Q_YᵀQ_X‖²_F / min(p, q).

    Yanai's generalised coefficient of determination (Kornblith et al. 2019, eq. 8;
    PURSUhInT, Keser et al. 2022).  X, Y are column-centred and orthonormalised by pivoted
    thin QR in float64.  R²_CCA ∈ [0, 1], 1 iff one column space contains the other, and is
    invariant to invertible linear maps of either representation.

    Plain CCA (``eps=None``) requires N > C and full column rank for both representations
    and otherwise raises :class:`~kdlens.errors.KdlensError` — with N ≤ C every canonical
    correlation is trivially 1.

    ``eps`` (explicit only): ridge-regularised CCA.  Each covariance Σ gets ε·λ̄·I added,
    λ̄ = tr(Σ)/C its mean eigenvalue, applied by SVD whitening: X_c = U S Vᵀ →
    W_X = U diag(s_i/sqrt(s_i² + ε·Σ_j s_j²/C)); then R² = ‖W_YᵀW_X‖²_F / min(r_X, r_Y) with
    r the numerical ranks (number of canonical pairs).  ``eps=0`` is pseudo-inverse CCA on
    the non-degenerate subspace; with eps > 0, R²(X, X) < 1.
    """
    return CcaR2(eps=eps).between(x, y)


def svcca(x: Any, y: Any, keep: float = 0.99) -> float:
    """SVCCA (Raghu et al. 2017, "SVCCA: singular vector canonical correlation analysis").

    1. Centre each representation and take its SVD; keep the fewest top singular
       directions whose squared singular values sum to ≥ ``keep`` (99 %) of the total.
    2. CCA between the two reduced representations: since the reduced data span the kept
       left singular vectors U_k, the correlations are the singular values of U_k,Yᵀ U_k,X.
    3. Return the mean canonical correlation (not squared), over min(k_X, k_Y) pairs.

    Works for N ≤ C as well (k ≤ rank ≤ N − 1), but correlations are biased upwards when
    k_X + k_Y approaches N.
    """
    return Svcca(keep=keep).between(x, y)


def pwcca(x: Any, y: Any) -> float:
    """Projection-weighted CCA (Morcos et al. 2018, "Insights on representational
    similarity in neural networks with canonical correlation", eq. 2).

    With canonical correlations ρ_i and unit-norm canonical variates h_i = Q_X u_i of X
    (i = 1..min(p, q), from the SVD Q_XᵀQ_Y = U diag(ρ) Vᵀ), each correlation is weighted by
    how much of X's neurons it accounts for, α_i = Σ_j |⟨h_i, x_j⟩| (x_j the centred
    j-th column of X):  PWCCA = Σ_i α_i ρ_i / Σ_i α_i.

    **Asymmetric**: the weights come from ``x``; pwcca(x, y) ≠ pwcca(y, x) in general.
    (Morcos et al.'s reference code weights by the layer with fewer neurons; pass that
    one as ``x`` to reproduce it.)  Same N > C, full-rank requirements as :func:`cca_r2`.
    """
    return Pwcca().between(x, y)
