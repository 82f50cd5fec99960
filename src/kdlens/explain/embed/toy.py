"""The Fig. 1 check of Lee & Wallraven (2021): does a method keep the global layout?

2-D uniform noise on [−1, 1]² is coloured by quadrant (0: x>0, y>0; 1: x<0, y>0; 2: x<0, y<0;
3: x>0, y<0 — counter-clockwise, so 0↔2 and 1↔3 are the diagonal pairs) and mapped to 15
dimensions by fixed non-linear functions

``x+y, x−y, x², y², sin(x+y), eˣ, x³, y³, xy, cos(x−y), eʸ, sin x, sin y, x²y, xy²``

(the paper lists the first eight and "…"; the last seven are our completion). Re-embedding
the 15-D points in 2-D should bring the four quadrants back in their arrangement: t-SNE
keeps local neighbourhoods but may place the clusters anywhere, Ivis is reported to keep the
global layout.

Scores per embedding:

* ``global_structure`` — Spearman ρ between pairwise distances in the original 2-D plane and in
  the embedding over a random sample of points (:func:`~kdlens.explain.embed.quality.distance_spearman`);
  1 = distances in the same order.
* ``centroid_correlation`` — Pearson r between the six distances of the four quadrant
  centroids in the plane and in the embedding.
* ``layout_preserved`` — whether the two diagonal quadrant pairs are the two most distant
  centroid pairs in the embedding (as in the plane).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np

from kdlens.errors import KdlensError
from kdlens.explain.embed.quality import distance_spearman

__all__ = ["ToyResult", "global_structure_score", "quadrant_centroid_distances", "quadrant_layout", "quadrant_toy",
           "run_toy_check", "score_toy_embedding", "toy_distance_pairs", "toy_distance_panel", "toy_features"]

FEATURE_NAMES = ("x+y", "x-y", "x^2", "y^2", "sin(x+y)", "exp(x)", "x^3", "y^3", "xy", "cos(x-y)",
                 "exp(y)", "sin(x)", "sin(y)", "x^2 y", "x y^2")


def toy_features(xy: np.ndarray) -> np.ndarray:
    """The 15-D image of 2-D points (columns in the order of ``FEATURE_NAMES``), float32."""
    x, y = xy[:, 0].astype(np.float64), xy[:, 1].astype(np.float64)
    cols = [x + y, x - y, x**2, y**2, np.sin(x + y), np.exp(x), x**3, y**3, x * y, np.cos(x - y),
            np.exp(y), np.sin(x), np.sin(y), x**2 * y, x * y**2]
    return np.stack(cols, 1).astype(np.float32)


def quadrant_toy(n: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(x15, xy, quadrant)``: n uniform points on [−1, 1]², their 15-D image, quadrant 0–3."""
    if n < 8:
        raise KdlensError(f"the toy needs at least 8 points; got {n}")
    xy = np.random.default_rng(seed).uniform(-1.0, 1.0, size=(n, 2))
    x, y = xy[:, 0], xy[:, 1]
    quadrant = np.where(y >= 0, np.where(x >= 0, 0, 1), np.where(x < 0, 2, 3))
    return toy_features(xy), xy.astype(np.float32), quadrant.astype(np.int64)


def _centroid_distances(points: np.ndarray, quadrant: np.ndarray) -> np.ndarray:
    cent = np.stack([points[quadrant == q].mean(0) for q in range(4)])
    return np.array([np.linalg.norm(cent[a] - cent[b]) for a, b in combinations(range(4), 2)])


def quadrant_layout(embedding: Any, xy: Any, quadrant: Any) -> tuple[float, bool]:
    """(centroid-distance correlation, diagonal pairs are the two farthest) of an embedding."""
    emb, xy, q = np.asarray(embedding, np.float64), np.asarray(xy, np.float64), np.asarray(quadrant)
    if set(np.unique(q)) != {0, 1, 2, 3}:
        raise KdlensError("quadrant labels must contain all of 0, 1, 2, 3")
    d_emb = _centroid_distances(emb, q)
    d_xy = _centroid_distances(xy, q)
    r = float(np.corrcoef(d_xy, d_emb)[0, 1]) if d_emb.std() > 0 else float("nan")
    pairs = list(combinations(range(4), 2))
    diagonal = {pairs.index((0, 2)), pairs.index((1, 3))}
    return r, set(np.argsort(d_emb)[-2:].tolist()) == diagonal


def global_structure_score(xy: Any, embedding: Any, sample: int = 1000, seed: int = 0) -> float:
    """Spearman ρ of pairwise distances, original plane vs embedding (sampled)."""
    return distance_spearman(xy, embedding, sample=sample, seed=seed)


def toy_distance_pairs(xy: Any, embedding: Any, sample: int = 1000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The pairwise distances ρ of :func:`global_structure_score` is computed on: ``(d_plane,
    d_embedding)`` over the pairs of the same ``sample`` points (same seed), for plotting."""
    from scipy.spatial.distance import pdist

    xy, emb = np.asarray(xy, np.float64), np.asarray(embedding, np.float64)
    m = min(int(sample), xy.shape[0])
    idx = np.sort(np.random.default_rng(seed).choice(xy.shape[0], size=m, replace=False))
    return pdist(xy[idx]), pdist(emb[idx])


def quadrant_centroid_distances(points: Any, quadrant: Any) -> np.ndarray:
    """The six distances between the four quadrant centroids, pairs (0,1), (0,2), (0,3), (1,2),
    (1,3), (2,3); (0,2) and (1,3) are the diagonal pairs."""
    return _centroid_distances(np.asarray(points, np.float64), np.asarray(quadrant))


@dataclass
class ToyResult:
    """One method's re-embedding of the toy and its scores."""

    method: str
    embedding: np.ndarray
    global_structure: float
    centroid_correlation: float
    layout_preserved: bool


def score_toy_embedding(method: str, embedding: Any, xy: Any, quadrant: Any, seed: int = 0) -> ToyResult:
    """One embedding of the toy scored: global structure, centroid correlation, layout kept."""
    emb = np.asarray(embedding)
    r, kept = quadrant_layout(emb, xy, quadrant)
    return ToyResult(method, emb, global_structure_score(xy, emb, seed=seed), r, kept)


def toy_distance_panel(result: ToyResult, xy: Any, quadrant: Any, sample: int = 1000, seed: int = 0) -> dict[str, Any]:
    """What :func:`kdlens.figures.embed.plot_toy_distances` draws for one method: the sampled
    pair distances (``d_plane``, ``d_embedding``), the centroid distances (``c_plane``,
    ``c_embedding``), ``rho``, ``r`` and the number of sampled ``points``."""
    d_xy, d_emb = toy_distance_pairs(xy, result.embedding, sample=sample, seed=seed)
    return {"d_plane": d_xy, "d_embedding": d_emb, "c_plane": quadrant_centroid_distances(xy, quadrant),
            "c_embedding": quadrant_centroid_distances(result.embedding, quadrant), "rho": result.global_structure,
            "r": result.centroid_correlation, "points": min(int(sample), len(np.asarray(xy)))}


def run_toy_check(
    methods: Sequence[str] = ("tsne", "ivis"),
    n: int = 2000,
    seed: int = 0,
    params: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[dict[str, ToyResult], np.ndarray, np.ndarray]:
    """Embed the 15-D toy with each method; returns (results, xy, quadrant).

    ``params``: method → keyword arguments for :func:`~kdlens.explain.embed.methods.embed`.
    """
    from kdlens.explain.embed.methods import embed

    x15, xy, quadrant = quadrant_toy(n, seed)
    params = dict(params or {})
    results = {}
    for method in methods:
        kw = {"seed": seed, **params.get(method, {})}
        results[method] = score_toy_embedding(method, embed(x15, method, **kw), xy, quadrant, seed)
    return results, xy, quadrant
