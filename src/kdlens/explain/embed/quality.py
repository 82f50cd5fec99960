"""Embedding-quality metrics: pure functions of (high-dimensional data, embedding) → number.

Notation: n points, ``X`` the original (high-dimensional) rows, ``Y`` the embedding, Euclidean
distances in both; ``N_k^X(i)`` / ``N_k^Y(i)`` the k nearest other points of i; ``r^X(i, j)``
the rank of j among i's neighbours in X (nearest = 1), likewise ``r^Y``.

* :func:`trustworthiness` — Venna & Kaski (2001, 2006):
  ``T(k) = 1 − 2 / (n k (2n − 3k − 1)) · Σ_i Σ_{j ∈ N_k^Y(i) \\ N_k^X(i)} (r^X(i, j) − k)``:
  penalises embedding neighbours that were far in X (false neighbours). Same definition as
  ``sklearn.manifold.trustworthiness``.
* :func:`continuity` — Venna & Kaski: the same with X and Y swapped,
  ``C(k) = 1 − 2 / (n k (2n − 3k − 1)) · Σ_i Σ_{j ∈ N_k^X(i) \\ N_k^Y(i)} (r^Y(i, j) − k)``:
  penalises true neighbours torn apart (missing neighbours).
* :func:`knn_preservation` — ``(1/n) Σ_i |N_k^X(i) ∩ N_k^Y(i)| / k`` (kNN recall, e.g. Kobak &
  Berens 2019 "kNN preservation", Espadoto et al. 2019 "neighbourhood hit" family).
* :func:`knn_classifier_accuracy` — leave-one-out k-NN majority vote in the embedding (a
  point's own label never votes); ties go to the class of the nearest tied neighbour.
* :func:`distance_spearman` — Spearman rank correlation of the pairwise distances in X and in
  Y over a random sample of points (global-structure measure, e.g. Kobak & Berens 2019).

Ranks are computed by counting strictly closer points (ties → lowest rank); the n × n
distance matrix is never held whole: rows are processed in chunks, so n = 10,000 with 16,384
features fits in a few hundred MB. :func:`embedding_quality` computes every metric from one
pass over X (reuse it when comparing several embeddings of the same data).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from kdlens.errors import KdlensError
from kdlens.explain.embed.knn import as_float_matrix

__all__ = [
    "continuity",
    "distance_spearman",
    "embedding_quality",
    "knn_classifier_accuracy",
    "knn_preservation",
    "trustworthiness",
]


def _check_pair(x_high: Any, x_low: Any) -> tuple[np.ndarray, np.ndarray]:
    xh, xl = as_float_matrix(x_high, "x_high"), as_float_matrix(x_low, "x_low")
    if xh.shape[0] != xl.shape[0]:
        raise KdlensError(f"x_high has {xh.shape[0]} rows but x_low has {xl.shape[0]}")
    return xh, xl


def _check_k(k: int, n: int) -> int:
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise KdlensError(f"k must be a positive integer; got {k!r}")
    if k >= n / 2:
        raise KdlensError(f"k = {k} is too large for n = {n} points (trustworthiness needs k < n / 2)")
    return int(k)


def _chunks(n: int, width: int, budget: int = 64 * 2**20) -> tuple[range, int]:
    """Row chunks so that one chunk × ``width`` float32 values stay within ``budget`` bytes."""
    rows = max(1, min(n, budget // (4 * max(width, 1))))
    return range(0, n, rows), rows


def _sq_dists(q: torch.Tensor, x: torch.Tensor, x_sq: torch.Tensor, offset: int) -> torch.Tensor:
    """Squared Euclidean distances of rows q (indices offset…) to all of x; self set to −1."""
    d = torch.addmm(x_sq.unsqueeze(0), q, x.T, beta=1.0, alpha=-2.0)
    d.add_((q * q).sum(1, keepdim=True)).clamp_min_(0)
    r = torch.arange(q.shape[0])
    d[r, r + offset] = -1.0
    return d


def _sorted_knn(d: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(each row's distances sorted ascending, indices of its k nearest other points).

    The point itself has distance −1, so it sorts first and is skipped."""
    values, order = torch.sort(d, dim=1)
    return values, order[:, 1 : k + 1]


def _ranks_of(d: torch.Tensor, d_sorted: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Rank (nearest other point = 1) of the points ``cols`` (c × m) in each row of ``d``:
    the number of points strictly closer, the point itself (distance −1) included."""
    return torch.searchsorted(d_sorted, d.gather(1, cols).contiguous(), side="left")


def _knn(d: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k nearest other points (self has distance −1 and is skipped)."""
    return torch.topk(d, k + 1, dim=1, largest=False, sorted=True).indices[:, 1:]


def _scan(xh: np.ndarray, lows: Mapping[str, np.ndarray], k: int) -> dict[str, dict[str, float]]:
    """One pass over chunks of rows: T, C and kNN preservation of every embedding in ``lows``."""
    n = xh.shape[0]
    # a chunk holds a few c × n float/int64 blocks (distances, sorted values, sort order)
    spans, rows = _chunks(n, 4 * n)
    X = torch.from_numpy(xh)
    X_sq = (X * X).sum(1)
    Ys = {name: torch.from_numpy(y) for name, y in lows.items()}
    Y_sq = {name: (y * y).sum(1) for name, y in Ys.items()}
    acc = {name: {"t": 0.0, "c": 0.0, "p": 0} for name in lows}
    with torch.no_grad():
        for start in spans:
            stop = min(start + rows, n)
            dx = _sq_dists(X[start:stop], X, X_sq, start)
            sx, nx = _sorted_knn(dx, k)
            for name, Y in Ys.items():
                dy = _sq_dists(Y[start:stop], Y, Y_sq[name], start)
                sy, ny = _sorted_knn(dy, k)
                in_x = (ny.unsqueeze(2) == nx.unsqueeze(1)).any(2)  # low neighbours also high neighbours
                in_y = (nx.unsqueeze(2) == ny.unsqueeze(1)).any(2)
                rx = _ranks_of(dx, sx, ny)
                ry = _ranks_of(dy, sy, nx)
                acc[name]["t"] += float(((rx - k).clamp_min(0) * (~in_x)).sum())
                acc[name]["c"] += float(((ry - k).clamp_min(0) * (~in_y)).sum())
                acc[name]["p"] += int(in_x.sum())
    norm = 2.0 / (n * k * (2.0 * n - 3.0 * k - 1.0))
    return {
        name: {
            "trustworthiness": 1.0 - norm * a["t"],
            "continuity": 1.0 - norm * a["c"],
            "knn_preservation": a["p"] / (n * k),
        }
        for name, a in acc.items()
    }


def trustworthiness(x_high: Any, x_low: Any, k: int = 5) -> float:
    """Trustworthiness T(k) ∈ [0, 1] (Venna & Kaski 2001); formula in the module docstring."""
    xh, xl = _check_pair(x_high, x_low)
    return _scan(xh, {"y": xl}, _check_k(k, xh.shape[0]))["y"]["trustworthiness"]


def continuity(x_high: Any, x_low: Any, k: int = 5) -> float:
    """Continuity C(k) ∈ [0, 1] (Venna & Kaski 2001): trustworthiness with the spaces swapped."""
    xh, xl = _check_pair(x_high, x_low)
    return _scan(xh, {"y": xl}, _check_k(k, xh.shape[0]))["y"]["continuity"]


def knn_preservation(x_high: Any, x_low: Any, k: int = 10) -> float:
    """Mean fraction of each point's k nearest neighbours in X that stay among its k nearest in Y."""
    xh, xl = _check_pair(x_high, x_low)
    return _scan(xh, {"y": xl}, _check_k(k, xh.shape[0]))["y"]["knn_preservation"]


def knn_classifier_accuracy(x_low: Any, labels: Any, k: int = 5) -> float:
    """Leave-one-out k-NN classification accuracy in the embedding.

    ``acc = (1/n) Σ_i [mode{labels_j : j ∈ N_k^Y(i)} = labels_i]`` with ties broken in favour
    of the nearest tied neighbour's class (the classic 1-NN fallback).
    """
    y = as_float_matrix(x_low, "x_low")
    lab = np.asarray(labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels)
    n = y.shape[0]
    if lab.shape != (n,):
        raise KdlensError(f"labels must have shape ({n},); got {lab.shape}")
    if not 1 <= k < n:
        raise KdlensError(f"k must be in 1..{n - 1}; got {k}")
    _, codes = np.unique(lab, return_inverse=True)
    codes_t = torch.from_numpy(codes.astype(np.int64))
    n_cls = int(codes.max()) + 1
    Y = torch.from_numpy(y)
    Y_sq = (Y * Y).sum(1)
    spans, rows = _chunks(n, n)
    correct = 0
    with torch.no_grad():
        for start in spans:
            stop = min(start + rows, n)
            nb = _knn(_sq_dists(Y[start:stop], Y, Y_sq, start), k)  # c × k, nearest first
            votes_lab = codes_t[nb]
            counts = torch.zeros(stop - start, n_cls, dtype=torch.int64).scatter_add_(1, votes_lab, torch.ones_like(votes_lab))
            top = counts.max(1, keepdim=True).values
            # among tied classes, the one whose first vote comes earliest (nearest)
            tied = counts.gather(1, votes_lab) == top
            first = tied.float().argmax(1)
            pred = votes_lab[torch.arange(stop - start), first]
            correct += int((pred == codes_t[start:stop]).sum())
    return correct / n


def distance_spearman(x_high: Any, x_low: Any, sample: int = 1000, seed: int = 0) -> float:
    """Spearman ρ between the pairwise Euclidean distances of X and of Y on ``sample`` random points.

    ``ρ = corr(rank(d^X_ij), rank(d^Y_ij))`` over the ``m(m−1)/2`` pairs of the sample (average
    ranks for ties; scipy.stats.spearmanr). Measures how well global distances are kept.

    Memory grows with ``sample²`` (about 50 bytes × sample², measured with
    ``benchmarks/embed_metrics_memory.py``): 0.05 GiB at the default 1,000, 0.8 GiB at 4,000,
    5 GiB (and 53 s) for all pairs of 10,000 points.
    """
    from scipy.spatial.distance import pdist
    from scipy.stats import spearmanr

    xh, xl = _check_pair(x_high, x_low)
    n = xh.shape[0]
    if n < 3:
        raise KdlensError("distance_spearman needs at least 3 points")
    m = min(int(sample), n)
    idx = np.sort(np.random.default_rng(seed).choice(n, size=m, replace=False))
    rho = spearmanr(pdist(xh[idx].astype(np.float64)), pdist(xl[idx].astype(np.float64))).statistic
    return float(rho)


def embedding_quality(
    x_high: Any,
    embeddings: Any,
    labels: Any = None,
    k: int = 10,
    k_classifier: int = 5,
    spearman_sample: int = 1000,
    seed: int = 0,
) -> dict[str, float] | dict[str, dict[str, float]]:
    """All metrics at once: trustworthiness, continuity, knn_preservation (at ``k``),
    knn_accuracy (if ``labels``), distance_spearman.

    ``embeddings``: one n × m array (→ one dict) or a mapping name → array (→ dict of dicts);
    the high-dimensional distances are computed once for all of them.
    """
    single = not isinstance(embeddings, Mapping)
    lows = {"y": embeddings} if single else dict(embeddings)
    xh = as_float_matrix(x_high, "x_high")
    lows = {name: as_float_matrix(y, f"embedding {name!r}") for name, y in lows.items()}
    for name, y in lows.items():
        if y.shape[0] != xh.shape[0]:
            raise KdlensError(f"embedding {name!r} has {y.shape[0]} rows but x_high has {xh.shape[0]}")
    out = _scan(xh, lows, _check_k(k, xh.shape[0]))
    for name, y in lows.items():
        if labels is not None:
            out[name]["knn_accuracy"] = knn_classifier_accuracy(y, labels, k_classifier)
        out[name]["distance_spearman"] = distance_spearman(xh, y, spearman_sample, seed)
        out[name] = {key: (float(v) if not isinstance(v, float) or math.isfinite(v) else v) for key, v in out[name].items()}
    return out["y"] if single else out
