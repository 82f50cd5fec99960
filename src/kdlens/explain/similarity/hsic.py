"""Hilbert–Schmidt Independence Criterion on kernel (Gram) matrices, and the kernels.

Biased estimator (Gretton et al. 2005, "Measuring statistical dependence with
Hilbert–Schmidt norms"):

    HSIC_0(K, L) = tr(K H L H) / (n − 1)²,      H = I − 11ᵀ/n.

Unbiased estimator (Song et al. 2012, "Feature selection via dependence maximization",
JMLR 13, eq. 5; used for CKA by Nguyen et al. 2021), with K̃, L̃ the kernel matrices with
their diagonals set to zero:

    HSIC_1(K, L) = 1/(n(n−3)) · [ tr(K̃L̃) + (1ᵀK̃1)(1ᵀL̃1)/((n−1)(n−2)) − 2/(n−2) · 1ᵀK̃L̃1 ].

HSIC_1 is a U-statistic: the average over ordered 4-tuples of distinct examples of
k_ij l_ij + k_ij l_qr − 2 k_ij l_iq.  It needs n > 3.  Everything here runs in float64.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kdlens.errors import KdlensError
from kdlens.explain.similarity._input import as_gram, as_representation

__all__ = ["hsic", "linear_gram", "rbf_gram", "median_pairwise_distance", "centre_gram"]


def centre_gram(k: np.ndarray) -> np.ndarray:
    """H K H (double centring) in O(n²): subtract row and column means, add the grand mean."""
    row = k.mean(axis=1, keepdims=True)
    col = k.mean(axis=0, keepdims=True)
    return k - row - col + k.mean()


def check_unbiased_n(n: int) -> None:
    """The unbiased HSIC divides by n(n−3) and (n−1)(n−2): it needs at least 4 examples."""
    if n <= 3:
        raise KdlensError(
            f"unbiased HSIC needs more than 3 examples (it divides by n(n−3)); got n={n}. "
            "Use more examples, or the biased estimator (unbiased=False)."
        )


def unbiased_hsic_terms(
    trace_kl_offdiag: float, sum_k: float, sum_l: float, one_kl_one: float, n: int
) -> float:
    """Song et al. (2012) eq. 5 from its four ingredients (all for zero-diagonal K̃, L̃)."""
    return (
        trace_kl_offdiag
        + sum_k * sum_l / ((n - 1) * (n - 2))
        - 2.0 / (n - 2) * one_kl_one
    ) / (n * (n - 3))


def hsic(k: Any, l: Any, unbiased: bool = False) -> float:  # noqa: E741 - L is the paper's name
    """HSIC between two n×n kernel matrices ``k`` (K) and ``l`` (L).

    ``unbiased=False``: tr(KHLH)/(n−1)² (Gretton et al. 2005).
    ``unbiased=True``: the U-statistic of Song et al. (2012), eq. 5 — see the module
    docstring; needs n > 3.

    Both are computed in float64 without forming H: tr(KHLH) = Σ_ij (HKH)_ij L_ji.
    Non-finite entries or mismatched shapes raise :class:`~kdlens.errors.KdlensError`.
    """
    K = as_gram(k, "K")
    L = as_gram(l, "L")
    if K.shape != L.shape:
        raise KdlensError(
            f"kernel matrices must describe the same examples: K is {K.shape}, L is {L.shape}."
        )
    n = K.shape[0]
    if not unbiased:
        if n < 2:
            raise KdlensError(f"HSIC needs at least 2 examples; got n={n}.")
        return float(np.sum(centre_gram(K) * L.T) / (n - 1) ** 2)
    check_unbiased_n(n)
    Kt = K.copy()
    Lt = L.copy()
    np.fill_diagonal(Kt, 0.0)
    np.fill_diagonal(Lt, 0.0)
    return float(
        unbiased_hsic_terms(
            trace_kl_offdiag=float(np.sum(Kt * Lt.T)),
            sum_k=float(Kt.sum()),
            sum_l=float(Lt.sum()),
            one_kl_one=float(Kt.sum(axis=0) @ Lt.sum(axis=1)),
            n=n,
        )
    )


def linear_gram(x: Any) -> np.ndarray:
    """Linear kernel K = X Xᵀ (float64)."""
    X = as_representation(x, "x")
    return X @ X.T


def _squared_distances(X: np.ndarray) -> np.ndarray:
    """‖x_i − x_j‖² via ‖x_i‖² + ‖x_j‖² − 2x_iᵀx_j on centred X (less cancellation)."""
    X = X - X.mean(axis=0, keepdims=True)
    sq = np.einsum("ij,ij->i", X, X)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (X @ X.T)
    np.maximum(d2, 0.0, out=d2)  # round-off can make tiny negatives
    np.fill_diagonal(d2, 0.0)
    return d2


def median_pairwise_distance(x: Any) -> float:
    """Median Euclidean distance over the n(n−1)/2 distinct pairs of rows of ``x``."""
    X = as_representation(x, "x")
    d2 = _squared_distances(X)
    iu = np.triu_indices(X.shape[0], k=1)
    return float(np.median(np.sqrt(d2[iu])))


def rbf_gram(x: Any, sigma_frac: float = 0.8) -> np.ndarray:
    """RBF kernel K_ij = exp(−‖x_i − x_j‖² / (2σ²)), σ = ``sigma_frac`` × median distance.

    The bandwidth rule is Kornblith et al. (2019), "Similarity of neural network
    representations revisited", §3 / Table 2 (σ a fraction — 0.2, 0.4, 0.8 — of the median
    distance between examples).  Here the median runs over distinct pairs i < j.
    """
    if not (np.isfinite(sigma_frac) and sigma_frac > 0):
        raise KdlensError(f"sigma_frac must be a positive number (e.g. 0.8); got {sigma_frac!r}.")
    X = as_representation(x, "x")
    d2 = _squared_distances(X)
    iu = np.triu_indices(X.shape[0], k=1)
    med = float(np.median(np.sqrt(d2[iu])))
    if med <= 0.0:
        raise KdlensError(
            "the median pairwise distance of the representation is 0 (more than half of the "
            "example pairs are identical), so the RBF bandwidth is undefined; drop duplicate "
            "examples or use linear_cka."
        )
    sigma2 = (sigma_frac * med) ** 2
    np.multiply(d2, -1.0 / (2.0 * sigma2), out=d2)
    np.exp(d2, out=d2)
    return d2
