"""Hint-point selection by layer clustering (PURSUhInT; Keser et al. 2022).

PURSUhInT ("PURSUhInT: In search of informative hint points based on layer
clustering for knowledge distillation") computes a similarity (CKA or R²_CCA) between
every pair of the teacher's L candidate layers, clusters the layers with k-means using
that similarity as the metric, initialising the k centres evenly over the layer order
(first / middle / last for k = 3), and takes as hint point of each cluster the layer at
its centre.  The conventional choice it is compared against is the last block of every
stage (:func:`conventional_hint_indices`).

Clustering (:func:`cluster_layers`)
-----------------------------------
Layers are points; the distance between layers i and j is D_ij = 1 − S_ij (S made
symmetric as (S + Sᵀ)/2, diagonal distance 0).  Deterministic algorithms:

``algorithm="pursuhint"`` (default) — the PURSUhInT authors' procedure: the centres are
  *layers*.  Start from the first, floor-middle and last layers (k = 3; in general
  floor(linspace(0, L − 1, k))); each layer joins the centre layer c with the smallest
  D_ic (ties → the lower cluster); each centre moves to the member nearest the *floored*
  mean member index (ties → shallower); repeat until the centres stop moving.  The hint
  point of a cluster is then its centre layer (rule ``"centroid"``).

``algorithm="profiles"`` (kdlens's earlier default; alias ``"kmeans"``) — Lloyd's k-means where layer i is represented by its
  *distance profile*, the row D_i· ∈ R^L, with squared Euclidean distance.  Centres are
  means of profiles, i.e. genuine k-means as in the paper (a mean of layers is not
  defined for an arbitrary similarity, but a mean of similarity profiles is).  Two layers
  are close when they relate to *all* layers alike, which averages out noise in any single
  similarity entry, and every layer of a block of mutually similar layers gets an almost
  identical profile, so blocks become clusters.  Initial centres: the profiles of the
  layers at round(linspace(0, L − 1, k)).  Assignment ties go to the lower cluster; a
  cluster that becomes empty is re-seeded with the layer farthest from its centre (taken
  from a cluster with more than one member).  Stops when labels repeat (≤ ``max_iter``).

``algorithm="kmedoids"`` — Voronoi-iteration k-medoids directly on D (Park & Jun 2009):
  assign each layer to the nearest medoid, move each medoid to the member with the least
  summed distance to its cluster, repeat until the medoids stop moving.  Uses the
  similarity itself as the metric (no profile embedding); centres are always layers.

``algorithm="uniform"`` — the similarity-blind baseline PURSUhInT compares its clustering
  with: k consecutive groups of (nearly) equal size — ⌊L/k⌋ + 1 layers for the first
  L mod k groups, ⌊L/k⌋ for the rest (numpy.array_split's sizes); with the default rule
  ``"centroid"`` the hint of a group is its floored mean index (the same centre the
  authors' clustering moves to).  27 layers,
  k = 3 → groups 1–9, 10–18, 19–27 and hints 5, 14, 23 (1-based); 54 layers → 9, 27, 45.
  The similarity matrix only fixes L.  (The paper's text was not available here: how it
  splits L not divisible by k and whether its centre is floored are kdlens's choices.)

Clusters are finally numbered by their first (lowest-index) layer, so for contiguous
clusters cluster 0 is the shallowest.

Hint rules (:func:`select_hint_points`)
---------------------------------------
``"centroid"`` (default with ``algorithm="pursuhint"``, as the authors ran it): the member
  nearest the floored mean member index — the converged centre layer.
``"centre"`` (the paper's wording): the member closest to the mean layer *index* of its
  cluster — the middle of a contiguous group of layers (ties → the shallower layer).
``"medoid"``: the member with the least summed distance 1 − S to the other members — the
  most *representative* layer by similarity, which need not be in the middle (ties →
  closest to the mean index, then shallower).
``"last"``: the deepest member, mirroring the conventional "end of stage" hint.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kdlens.errors import KdlensError, unknown_name

__all__ = [
    "HintSelection",
    "cluster_layers",
    "select_hint_points",
    "conventional_hint_indices",
    "CLUSTER_ALGORITHMS",
    "HINT_RULES",
    "uniform_groups",
]


# ---------------------------------------------------------------------------- input
def _as_similarity(similarity: Any) -> np.ndarray:
    if hasattr(similarity, "detach"):
        similarity = similarity.detach().cpu().numpy()
    S = np.asarray(similarity, dtype=np.float64)
    if S.ndim != 2 or S.shape[0] != S.shape[1] or S.shape[0] < 1:
        raise KdlensError(
            f"similarity must be a square L×L matrix over the teacher's layers; got shape "
            f"{tuple(S.shape)}. Compute it with kdlens.explain.similarity.similarity_matrix(reps)."
        )
    if not np.isfinite(S).all():
        raise KdlensError("similarity matrix contains NaN/Inf; recompute it from finite representations.")
    return S


def _distances(S: np.ndarray) -> np.ndarray:
    """D = 1 − (S + Sᵀ)/2 with a zero diagonal."""
    D = 1.0 - 0.5 * (S + S.T)
    np.fill_diagonal(D, 0.0)
    return D


def _check_k(k: Any, n_layers: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise KdlensError(f"k (number of hint points) must be an integer; got {k!r}.")
    k = int(k)
    if not 1 <= k <= n_layers:
        raise KdlensError(
            f"k={k} hint points cannot be chosen from {n_layers} layers; use 1 ≤ k ≤ {n_layers} "
            "(PURSUhInT uses k = 3 for a three-stage ResNet)."
        )
    return k


def even_layer_indices(n_layers: int, k: int) -> list[int]:
    """k layer indices evenly spaced over 0..L−1 (first / middle / last for k = 3)."""
    return [int(np.floor(v + 0.5)) for v in np.linspace(0, n_layers - 1, k)]


def floored_layer_indices(n_layers: int, k: int) -> list[int]:
    """floor(linspace(0, L−1, k)): first / floor-middle / last for k = 3 (the authors' start)."""
    return [int(np.floor(v + 1e-9)) for v in np.linspace(0, n_layers - 1, k)]


def _initial_indices(init: str | Sequence[int], n_layers: int, k: int, floored: bool = False) -> list[int]:
    if isinstance(init, str):
        if init != "even":
            raise unknown_name("cluster initialisation", init, ["even"])
        return floored_layer_indices(n_layers, k) if floored else even_layer_indices(n_layers, k)
    idx = [int(i) for i in init]
    if len(idx) != k or len(set(idx)) != k or not all(0 <= i < n_layers for i in idx):
        raise KdlensError(
            f"init must be 'even' or {k} distinct 0-based layer indices in [0, {n_layers - 1}]; got {list(init)!r}."
        )
    return idx


def _renumber_by_first_layer(labels: np.ndarray) -> np.ndarray:
    order: dict[int, int] = {}
    for lab in labels.tolist():
        order.setdefault(lab, len(order))
    return np.array([order[lab] for lab in labels.tolist()], dtype=int)


# ------------------------------------------------------------------- algorithms
def _kmeans_profiles(D: np.ndarray, init_idx: list[int], max_iter: int) -> np.ndarray:
    P = D  # layer i ↦ its distance profile D[i]
    k = len(init_idx)
    centres = P[init_idx].copy()
    labels = np.full(len(P), -1)
    for _ in range(max_iter):
        d2 = np.sum((P[:, None, :] - centres[None, :, :]) ** 2, axis=2)  # L×k
        new = np.argmin(d2, axis=1)  # ties → lowest cluster index
        for c in range(k):
            if np.any(new == c):
                continue
            sizes = np.bincount(new, minlength=k)
            movable = np.flatnonzero(sizes[new] > 1)
            if movable.size == 0:
                break
            far = movable[np.argmax(d2[movable, new[movable]])]
            new[far] = c
        if np.array_equal(new, labels):
            break
        labels = new
        for c in range(k):
            members = labels == c
            if members.any():
                centres[c] = P[members].mean(axis=0)
    if len(np.unique(labels)) < k:
        raise KdlensError(
            f"k-means could not form {k} non-empty clusters (too many layers with identical "
            "similarity profiles); use a smaller k."
        )
    return labels


def _kmedoids(D: np.ndarray, init_idx: list[int], max_iter: int) -> np.ndarray:
    medoids = list(init_idx)
    labels = np.zeros(len(D), dtype=int)
    for _ in range(max_iter):
        labels = np.argmin(D[:, medoids], axis=1)
        labels[medoids] = np.arange(len(medoids))  # a medoid always belongs to its own cluster
        new = []
        for c in range(len(medoids)):
            members = np.flatnonzero(labels == c)
            cost = D[np.ix_(members, members)].sum(axis=1)
            new.append(int(members[np.argmin(cost)]))  # ties → shallower layer
        if new == medoids:
            break
        medoids = new
    return labels


def _nearest_floored_mean(members: np.ndarray) -> int:
    target = np.floor(members.mean() + 1e-9)
    return int(members[np.argmin(np.abs(members - target))])  # members ascending → ties shallower


def _pursuhint_centroids(D: np.ndarray, init_idx: list[int], max_iter: int) -> np.ndarray:
    """The authors' layer-centroid clustering (see the module docstring)."""
    centroids = list(init_idx)
    labels = np.zeros(len(D), dtype=int)
    for _ in range(max_iter):
        labels = np.argmin(D[:, centroids], axis=1)  # ties → lower cluster
        labels[centroids] = np.arange(len(centroids))  # a centre layer belongs to its own cluster
        moved = [_nearest_floored_mean(np.flatnonzero(labels == c)) for c in range(len(centroids))]
        if moved == centroids:
            break
        centroids = moved
    return labels


def uniform_groups(n_layers: int, k: int) -> np.ndarray:
    """Labels of k consecutive, nearly equal groups of L layers (PURSUhInT's baseline
    grouping): group c has ⌊L/k⌋ + 1 layers if c < L mod k, else ⌊L/k⌋ — the sizes of
    numpy.array_split, so the shallower groups take the extra layers."""
    sizes = [n_layers // k + (1 if c < n_layers % k else 0) for c in range(k)]
    return np.repeat(np.arange(k), sizes)


def _uniform(D: np.ndarray, init_idx: list[int], max_iter: int) -> np.ndarray:
    """The similarity-blind baseline: consecutive equal groups (D only fixes L)."""
    return uniform_groups(len(D), len(init_idx))


#: name → clustering function(D, initial layer indices, max_iter) → labels.
CLUSTER_ALGORITHMS: dict[str, Callable[[np.ndarray, list[int], int], np.ndarray]] = {
    "pursuhint": _pursuhint_centroids,
    "profiles": _kmeans_profiles,
    "kmeans": _kmeans_profiles,  # the earlier name of "profiles"
    "kmedoids": _kmedoids,
    "uniform": _uniform,
}
#: algorithms whose default hint rule is "centroid" (the floored mean member index).
_CENTROID_DEFAULT = ("pursuhint", "uniform")


def cluster_layers(
    similarity: Any,
    k: int,
    init: str | Sequence[int] = "even",
    algorithm: str = "pursuhint",
    max_iter: int = 100,
) -> np.ndarray:
    """Cluster the teacher's L layers into k groups using the distance 1 − similarity.

    ``similarity``: L×L layer similarity (e.g. from ``similarity_matrix``); made symmetric
    as (S + Sᵀ)/2.  ``init``: "even" (centres at layers round(linspace(0, L−1, k)) — first /
    middle / last for k = 3, as in PURSUhInT) or k explicit 0-based layer indices.
    ``algorithm``: "pursuhint" (the authors' layer centroids, default), "profiles" (Lloyd's
    k-means on distance profiles), "kmedoids" (Voronoi iteration on D) or "uniform" (k
    consecutive equal groups, the paper's baseline; takes no ``init``) — see the module
    docstring for the exact algorithms and why.

    Deterministic.  Returns an int array of L labels in 0..k−1, clusters numbered by their
    first layer.  ``k < 1`` or ``k > L`` raises :class:`~kdlens.errors.KdlensError`.
    """
    S = _as_similarity(similarity)
    L = S.shape[0]
    k = _check_k(k, L)
    if algorithm not in CLUSTER_ALGORITHMS:
        raise unknown_name("layer clustering algorithm", algorithm, CLUSTER_ALGORITHMS)
    if algorithm == "uniform" and not (isinstance(init, str) and init == "even"):
        raise KdlensError(
            f"algorithm='uniform' splits the layers into k equal consecutive groups and has no initial "
            f"centres; drop init={init!r} (or use algorithm='pursuhint' with explicit initial layers)."
        )
    init_idx = _initial_indices(init, L, k, floored=algorithm == "pursuhint")
    labels = CLUSTER_ALGORITHMS[algorithm](_distances(S), init_idx, max_iter)
    return _renumber_by_first_layer(labels)


# ------------------------------------------------------------------------ rules
def _centre_rule(members: np.ndarray, D: np.ndarray) -> int:
    mean = members.mean()
    return int(members[np.argmin(np.abs(members - mean))])  # members ascending → ties shallower


def _medoid_rule(members: np.ndarray, D: np.ndarray) -> int:
    cost = D[np.ix_(members, members)].sum(axis=1)
    best = np.flatnonzero(np.isclose(cost, cost.min(), rtol=1e-12, atol=1e-12))
    return _centre_rule(members[best], D) if best.size > 1 else int(members[best[0]])


def _last_rule(members: np.ndarray, D: np.ndarray) -> int:
    return int(members.max())


#: name → rule(members (ascending 0-based indices), D) → chosen layer index.
HINT_RULES: dict[str, Callable[[np.ndarray, np.ndarray], int]] = {
    "centroid": lambda members, D: _nearest_floored_mean(members),
    "centre": _centre_rule,
    "center": _centre_rule,
    "medoid": _medoid_rule,
    "last": _last_rule,
}


@dataclass(frozen=True)
class HintSelection:
    """Chosen hint points of a teacher.

    ``labels[i]``: cluster of layer i (clusters numbered by first layer); ``indices[c]``:
    0-based layer index of cluster c's hint point; ``indices_1based``: the same counted
    from 1, as in PURSUhInT's Table 3; ``names``: the hint layers' names if layer names were
    given (``layer_names`` keeps all of them); ``rule``, ``algorithm``, ``metric``: how they
    were chosen.
    """

    labels: tuple[int, ...]
    indices: tuple[int, ...]
    rule: str
    names: tuple[str, ...] | None = None
    layer_names: tuple[str, ...] | None = None
    metric: str | None = None
    algorithm: str = "pursuhint"
    k: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", tuple(int(v) for v in self.labels))
        object.__setattr__(self, "indices", tuple(int(v) for v in self.indices))
        object.__setattr__(self, "k", len(self.indices))
        if self.names is not None:
            object.__setattr__(self, "names", tuple(self.names))
        if self.layer_names is not None:
            object.__setattr__(self, "layer_names", tuple(self.layer_names))

    @property
    def indices_1based(self) -> tuple[int, ...]:
        return tuple(i + 1 for i in self.indices)

    @property
    def clusters(self) -> list[list[int]]:
        """0-based member layer indices of each cluster."""
        return [[i for i, lab in enumerate(self.labels) if lab == c] for c in range(self.k)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "labels": list(self.labels),
            "indices": list(self.indices),
            "indices_1based": list(self.indices_1based),
            "names": None if self.names is None else list(self.names),
            "layer_names": None if self.layer_names is None else list(self.layer_names),
            "rule": self.rule,
            "metric": self.metric,
            "algorithm": self.algorithm,
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str) -> HintSelection:
        try:
            d = json.loads(text)
            sel = cls(
                labels=d["labels"],
                indices=d["indices"],
                rule=d["rule"],
                names=d.get("names"),
                layer_names=d.get("layer_names"),
                metric=d.get("metric"),
                algorithm=d.get("algorithm", "kmeans"),
            )
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise KdlensError(
                f"not a valid hint-selection JSON ({err}); expected keys labels, indices, rule "
                "as written by HintSelection.to_json()."
            ) from None
        if "indices_1based" in d and list(d["indices_1based"]) != list(sel.indices_1based):
            raise KdlensError(
                f"hint-selection JSON is inconsistent: indices {list(sel.indices)} vs "
                f"indices_1based {d['indices_1based']} (should be indices + 1)."
            )
        return sel


def select_hint_points(
    similarity: Any,
    k: int,
    rule: str | None = None,
    names: Sequence[str] | None = None,
    metric: str | None = None,
    algorithm: str = "pursuhint",
    init: str | Sequence[int] = "even",
) -> HintSelection:
    """PURSUhInT hint points: cluster the layers (:func:`cluster_layers`) and take one
    layer per cluster by ``rule``.

    ``rule``: None (``"centroid"`` for ``algorithm="pursuhint"`` or ``"uniform"``, else
    ``"centre"``),
    "centroid" (member nearest the floored mean member index — the authors' centre layer),
    "centre" (member nearest the cluster's mean layer index — the paper's wording,
    the middle of a group of similar layers), "medoid" (member with the least summed
    distance 1 − S to its cluster — the most representative by similarity, not necessarily
    the middle) or "last" (deepest member, like conventional end-of-stage hints).
    ``names``: the L layer names (optional); ``metric``: recorded as given (e.g. "cka").
    """
    S = _as_similarity(similarity)
    L = S.shape[0]
    if rule is None:
        rule = "centroid" if algorithm in _CENTROID_DEFAULT else "centre"
    if rule not in HINT_RULES:
        raise unknown_name("hint rule", rule, ["centroid", "centre", "medoid", "last"])
    if names is not None:
        names = [str(n) for n in names]
        if len(names) != L:
            raise KdlensError(f"names has {len(names)} entries but the similarity matrix has {L} layers.")
    labels = cluster_layers(S, k, init=init, algorithm=algorithm)
    D = _distances(S)
    choose = HINT_RULES[rule]
    indices = [choose(np.flatnonzero(labels == c), D) for c in range(int(labels.max()) + 1)]
    return HintSelection(
        labels=tuple(labels.tolist()),
        indices=tuple(indices),
        rule="centre" if rule == "center" else rule,
        names=None if names is None else tuple(names[i] for i in indices),
        layer_names=None if names is None else tuple(names),
        metric=metric,
        algorithm=algorithm,
    )


def conventional_hint_indices(stage_block_counts: Sequence[int], one_based: bool = False) -> list[int]:
    """The conventional hint points: the last sub-block of every stage.

    ``stage_block_counts``: blocks (candidate layers) per stage, e.g. CIFAR resnet110
    [18, 18, 18] → 0-based [17, 35, 53] (1-based 18, 36, 54 with ``one_based=True``).
    """
    counts = list(stage_block_counts)
    if not counts or any(isinstance(c, bool) or not isinstance(c, (int, np.integer)) or c < 1 for c in counts):
        raise KdlensError(
            f"stage_block_counts must be a non-empty list of positive integers (e.g. [18, 18, 18] "
            f"for resnet110); got {stage_block_counts!r}."
        )
    ends = np.cumsum(counts) - 1
    return [int(e) + (1 if one_based else 0) for e in ends]
