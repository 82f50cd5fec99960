"""k-nearest-neighbour back-ends behind one small interface.

Ivis (Szubert et al. 2019) draws its triplets from each point's k nearest neighbours, and
t-SNE / UMAP build their affinities from them, so the neighbour search is pluggable, as in
openTSNE's ``KNNIndex``: a back-end is built on the data once (``build``: neighbours of
every point among the others, the point itself excluded) and can then be asked about new
points (``query``).

Back-ends (``KNN_BACKENDS``):

* ``"exact"`` — :class:`ExactKNN`: brute force in torch, distances by chunked matrix
  products and ``topk``. Exact; the cost is O(n²·d) but vectorised: 10,000 × 16,384 in
  about 18 s on two cores here, 10,000 × 784 in a few seconds.
* ``"annoy"`` — :class:`AnnoyKNN`: random-projection forests (Annoy), angular metric and
  50 trees by default, the settings of the reference Ivis implementation. Fast at a few
  dozen dimensions; at ~16,000 dimensions it was measured here to degrade to a
  single-threaded full scan (380 s), so reduce the dimension first (PCA to ~50). Annoy answers
  one point per call; the calls run on ``n_jobs`` threads (the search releases the GIL) and
  their answers become arrays without a Python loop per point.
* ``"nndescent"`` — :class:`NNDescentKNN`: pynndescent's NN-descent graph (Dong et al. 2011).
* ``"precomputed"`` — :class:`PrecomputedKNN`: a given neighbour matrix, for reproducing an
  embedding exactly (same seed + same neighbours → same Ivis embedding).

``"auto"`` (:func:`choose_backend`) picks ``exact`` for up to 20,000 points or above 256
dimensions (where tree indices stop paying off) and ``annoy`` otherwise.

Metrics: ``"euclidean"`` and ``"angular"``. Angular distance is Annoy's
``sqrt(2 − 2 cos(u, v))``, i.e. the Euclidean distance of the L2-normalised vectors, so all
back-ends agree on what "nearest" means.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from kdlens.errors import KdlensError, unknown_name
from kdlens.registry import Registry

__all__ = [
    "KNN_BACKENDS",
    "AnnoyKNN",
    "ExactKNN",
    "KNNIndex",
    "NNDescentKNN",
    "Neighbors",
    "PrecomputedKNN",
    "choose_backend",
    "make_knn_index",
    "nearest_neighbors",
]

METRICS = ("euclidean", "angular")
AUTO_EXACT_MAX_N = 20_000
AUTO_EXACT_MIN_DIM = 256


@dataclass(frozen=True)
class Neighbors:
    """``indices`` (int64, n × k) and ``distances`` (float32, n × k), nearest first."""

    indices: np.ndarray
    distances: np.ndarray

    @property
    def k(self) -> int:
        return int(self.indices.shape[1])


def as_float_matrix(x: Any, what: str = "data") -> np.ndarray:
    """``x`` (numpy array, torch tensor, nested list) as a C-contiguous float32 n × d array."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise KdlensError(f"{what} must be a 2-D array (n samples × d features); got shape {arr.shape}")
    if arr.dtype.kind not in "fiub":
        raise KdlensError(f"{what} must be numeric; got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise KdlensError(f"{what} contains NaN or infinite values")
    return arr


def _check_metric(metric: str, allowed: tuple[str, ...]) -> str:
    if metric not in allowed:
        raise unknown_name("kNN metric", metric, allowed)
    return metric


def _n_threads(n_jobs: int | None) -> int:
    if n_jobs is None or n_jobs <= 0:
        return os.cpu_count() or 1
    return n_jobs


class KNNIndex:
    """Base class of the neighbour back-ends.

    Hyper-parameters are stored verbatim in ``__init__``; ``build(x, k)`` fits the index on
    ``x`` and returns every point's ``k`` nearest *other* points; ``query(q, k)`` returns the
    ``k`` nearest indexed points of new points ``q``.
    """

    name: ClassVar[str] = "base"
    metrics: ClassVar[tuple[str, ...]] = METRICS

    def __init__(self, metric: str = "euclidean", seed: int = 0, n_jobs: int | None = None) -> None:
        self.metric = _check_metric(metric, self.metrics)
        self.seed = seed
        self.n_jobs = n_jobs

    def build(self, x: Any, k: int) -> Neighbors:  # pragma: no cover - interface
        raise NotImplementedError

    def query(self, q: Any, k: int) -> Neighbors:  # pragma: no cover - interface
        raise NotImplementedError

    @staticmethod
    def _check_k(k: int, n: int) -> int:
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise KdlensError(f"k (number of neighbours) must be a positive integer; got {k!r}")
        if k > n - 1:
            raise KdlensError(f"k = {k} neighbours asked for, but there are only {n} points (k must be ≤ n − 1)")
        return int(k)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(metric={self.metric!r})"


KNN_BACKENDS: Registry[type[KNNIndex]] = Registry("kNN back-end")


@KNN_BACKENDS.register("exact")
class ExactKNN(KNNIndex):
    """Exact neighbours by brute force in torch: ‖a − b‖² = ‖a‖² + ‖b‖² − 2 a·b, chunked.

    ``chunk_bytes`` bounds the size of one block of the distance matrix (rows × n × 4 bytes);
    ``device`` may be ``"cuda"``. Deterministic for a fixed thread count.
    """

    name = "exact"

    def __init__(
        self,
        metric: str = "euclidean",
        seed: int = 0,
        n_jobs: int | None = None,
        chunk_bytes: int = 256 * 2**20,
        device: str = "cpu",
    ) -> None:
        super().__init__(metric, seed, n_jobs)
        self.chunk_bytes = chunk_bytes
        self.device = device

    def _prepare(self, x: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(x).to(self.device)
        if self.metric == "angular":
            t = t / t.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return t

    def build(self, x: Any, k: int) -> Neighbors:
        x = as_float_matrix(x)
        k = self._check_k(k, x.shape[0])
        self._data = self._prepare(x)
        self._sq = (self._data * self._data).sum(1)
        return self._search(self._data, self._sq, k, exclude_self=True)

    def query(self, q: Any, k: int) -> Neighbors:
        if not hasattr(self, "_data"):
            raise KdlensError("the exact kNN index is not built yet: call build(x, k) first")
        q = as_float_matrix(q, "query")
        if q.shape[1] != self._data.shape[1]:
            raise KdlensError(f"query has {q.shape[1]} features, the index {self._data.shape[1]}")
        k = self._check_k(k, self._data.shape[0] + 1)
        qt = self._prepare(q)
        return self._search(qt, (qt * qt).sum(1), k, exclude_self=False)

    def _search(self, q: torch.Tensor, q_sq: torch.Tensor, k: int, exclude_self: bool) -> Neighbors:
        data, d_sq = self._data, self._sq
        n = data.shape[0]
        rows = max(1, min(q.shape[0], self.chunk_bytes // (4 * n)))
        out_i = torch.empty(q.shape[0], k, dtype=torch.int64)
        out_d = torch.empty(q.shape[0], k, dtype=torch.float32)
        with torch.no_grad():
            for start in range(0, q.shape[0], rows):
                stop = min(start + rows, q.shape[0])
                d2 = torch.addmm(d_sq.unsqueeze(0), q[start:stop], data.T, beta=1.0, alpha=-2.0)
                d2.add_(q_sq[start:stop].unsqueeze(1))
                if exclude_self:
                    r = torch.arange(stop - start, device=d2.device)
                    d2[r, r + start] = math.inf
                dist, idx = torch.topk(d2, k, dim=1, largest=False, sorted=True)
                out_i[start:stop] = idx.cpu()
                out_d[start:stop] = dist.clamp_min_(0).sqrt_().cpu()
        return Neighbors(out_i.numpy(), out_d.numpy())


@KNN_BACKENDS.register("annoy")
class AnnoyKNN(KNNIndex):
    """Approximate neighbours from an Annoy forest (Bernhardsson, github.com/spotify/annoy).

    Defaults as the reference Ivis implementation: angular metric, 50 trees, ``search_k``
    = −1 (Annoy's default, n_trees · k nodes inspected). Needs the ``annoy`` package.

    Annoy answers one point per call, so the queries are spread over ``n_jobs`` threads (Annoy
    releases the GIL while it searches) and the n × (k+1) answers are stacked and stripped of
    each point itself with array operations, not a Python loop per point.  The neighbours are
    those of the per-point loop, in the same order: a query does not depend on the others.
    """

    name = "annoy"

    def __init__(
        self,
        metric: str = "angular",
        seed: int = 0,
        n_jobs: int | None = None,
        n_trees: int = 50,
        search_k: int = -1,
    ) -> None:
        super().__init__(metric, seed, n_jobs)
        self.n_trees = n_trees
        self.search_k = search_k

    def build(self, x: Any, k: int) -> Neighbors:
        try:
            from annoy import AnnoyIndex
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise KdlensError("the annoy kNN back-end needs the `annoy` package: pip install 'kdlens[embed]'") from exc
        x = as_float_matrix(x)
        n = x.shape[0]
        k = self._check_k(k, n)
        threads = _n_threads(self.n_jobs)
        index = AnnoyIndex(x.shape[1], self.metric)
        index.set_seed(int(self.seed))
        for i, row in enumerate(x):  # Annoy has no bulk insert; ~4 µs a point
            index.add_item(i, row)
        index.build(self.n_trees, n_jobs=threads)
        self._index, self._d = index, x.shape[1]
        answers = _annoy_answers(index.get_nns_by_item, range(n), k + 1, self.search_k, threads)
        nb, ds, full = _stack_answers(answers, k + 1)
        idx = np.empty((n, k), dtype=np.int64)
        dist = np.empty((n, k), dtype=np.float32)
        rows = np.flatnonzero(full)
        idx[rows], dist[rows] = _without_self(nb[rows], ds[rows], k, rows)
        for i in np.flatnonzero(~full):  # a forest may return fewer candidates: ask again, wider
            idx[i], dist[i] = self._short_row(int(i), answers[i], k)
        return Neighbors(idx, dist)

    def _short_row(self, i: int, answer: tuple[list[int], list[float]], k: int) -> tuple[list[int], list[float]]:
        pairs = [(j, d) for j, d in zip(*answer, strict=True) if j != i][:k]
        if len(pairs) < k:
            wider = max(self.search_k, 10 * (k + 1) * self.n_trees)
            pairs = [(j, d) for j, d in zip(*self._index.get_nns_by_item(i, k + 1, wider, True), strict=True)
                     if j != i][:k]
        if len(pairs) < k:
            raise KdlensError(f"the Annoy forest found only {len(pairs)} of k = {k} neighbours of point {i}; "
                              "use more trees (n_trees) or a larger search_k, or the exact back-end")
        return [p[0] for p in pairs], [p[1] for p in pairs]

    def query(self, q: Any, k: int) -> Neighbors:
        if not hasattr(self, "_index"):
            raise KdlensError("the Annoy index is not built yet: call build(x, k) first")
        q = as_float_matrix(q, "query")
        if q.shape[1] != self._d:
            raise KdlensError(f"query has {q.shape[1]} features, the index {self._d}")
        k = self._check_k(k, self._index.get_n_items() + 1)
        vectors = q.tolist()  # Annoy reads a list faster than a numpy row; same float32 values
        get = self._index.get_nns_by_vector
        answers = _annoy_answers(lambda j, m, s, d: get(vectors[j], m, s, d), range(len(vectors)), k,
                                 self.search_k, _n_threads(self.n_jobs))
        nb, ds, full = _stack_answers(answers, k)
        for j in np.flatnonzero(~full):
            wider = max(self.search_k, 10 * k * self.n_trees)
            got = get(vectors[j], k, wider, True)
            if len(got[0]) < k:
                raise KdlensError(f"the Annoy forest found only {len(got[0])} of k = {k} neighbours of query {j}; "
                                  "use more trees (n_trees) or a larger search_k, or the exact back-end")
            nb[j], ds[j] = got
        return Neighbors(nb, ds)


def _annoy_answers(get: Any, items: range, m: int, search_k: int, threads: int) -> list[Any]:
    """``get(item, m, search_k, True)`` for every item, in order; contiguous blocks of items on
    ``threads`` threads (Annoy's search runs without the GIL, so they overlap)."""
    if threads <= 1 or len(items) < 64:
        return [get(i, m, search_k, True) for i in items]
    from concurrent.futures import ThreadPoolExecutor

    size = -(-len(items) // (4 * threads))  # 4 blocks a thread: a descheduled thread holds up less
    blocks = [items[s:s + size] for s in range(0, len(items), size)]
    with ThreadPoolExecutor(threads) as pool:
        parts = pool.map(lambda block: [get(i, m, search_k, True) for i in block], blocks)
        return [a for part in parts for a in part]


def _stack_answers(answers: list[Any], m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Annoy's ``(indices, distances)`` lists as n × m arrays, and which rows are full (an
    answer with fewer than m neighbours leaves its row partly unset)."""
    full = np.fromiter((len(a[0]) == m for a in answers), dtype=bool, count=len(answers))
    nb = np.full((len(answers), m), -1, dtype=np.int64)
    ds = np.full((len(answers), m), np.inf, dtype=np.float32)
    if full.all():
        nb[:] = [a[0] for a in answers]
        ds[:] = [a[1] for a in answers]
    else:
        rows = np.flatnonzero(full)
        if rows.size:
            nb[rows] = [answers[i][0] for i in rows]
            ds[rows] = [answers[i][1] for i in rows]
    return nb, ds, full


@KNN_BACKENDS.register("nndescent")
class NNDescentKNN(KNNIndex):
    """Approximate neighbours by NN-descent (Dong, Charikar & Li 2011) through pynndescent."""

    name = "nndescent"

    def build(self, x: Any, k: int) -> Neighbors:
        try:
            from pynndescent import NNDescent
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise KdlensError("the nndescent kNN back-end needs `pynndescent`: pip install 'kdlens[embed]'") from exc
        x = as_float_matrix(x)
        k = self._check_k(k, x.shape[0])
        metric = "cosine" if self.metric == "angular" else "euclidean"
        self._index = NNDescent(x, n_neighbors=k + 1, metric=metric, random_state=self.seed,
                                n_jobs=_n_threads(self.n_jobs))
        nb, ds = self._index.neighbor_graph
        return _drop_self(nb, ds, k, self.metric)

    def query(self, q: Any, k: int) -> Neighbors:
        if not hasattr(self, "_index"):
            raise KdlensError("the NN-descent index is not built yet: call build(x, k) first")
        nb, ds = self._index.query(as_float_matrix(q, "query"), k=k)
        return Neighbors(nb.astype(np.int64), _to_angular(ds, self.metric).astype(np.float32))


def _to_angular(ds: np.ndarray, metric: str) -> np.ndarray:
    """pynndescent's cosine distance 1 − cos → Annoy's angular sqrt(2 − 2 cos)."""
    return np.sqrt(np.clip(2.0 * ds, 0, None)) if metric == "angular" else ds


def _without_self(nb: np.ndarray, ds: np.ndarray, k: int, own: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The first ``k`` entries of each row that are not the row's own point (``own[r]``,
    default ``r``): a row holding itself loses it, a row without it loses its last columns."""
    n = nb.shape[0]
    own = np.arange(n) if own is None else np.asarray(own)
    keep = nb != own[:, None]
    keep &= np.cumsum(keep, axis=1) <= k
    if not (keep.sum(1) == k).all():
        raise KdlensError(f"a neighbour list has fewer than k = {k} entries besides the point itself")
    return nb[keep].reshape(n, k), ds[keep].reshape(n, k)


def _drop_self(nb: np.ndarray, ds: np.ndarray, k: int, metric: str) -> Neighbors:
    """Remove each row's own index (or, if absent, its last column) from a (k+1)-graph."""
    nb, ds = _without_self(nb, ds, k)
    return Neighbors(nb.astype(np.int64), _to_angular(ds, metric).astype(np.float32))


@KNN_BACKENDS.register("precomputed")
class PrecomputedKNN(KNNIndex):
    """A given neighbour matrix (n × ≥k integer indices, nearest first; self excluded).

    ``build`` checks it against the data and returns its first ``k`` columns; there is no
    ``query``. Distances, if not given, are filled with the column rank (only the order
    matters to Ivis).
    """

    name = "precomputed"

    def __init__(self, indices: Any, distances: Any = None, metric: str = "euclidean") -> None:
        super().__init__(metric)
        self.indices = indices
        self.distances = distances

    def build(self, x: Any, k: int) -> Neighbors:
        idx = np.asarray(self.indices)
        n = len(x)
        if idx.ndim != 2 or idx.dtype.kind not in "iu":
            raise KdlensError(f"precomputed neighbours must be an n × k integer matrix; got shape {idx.shape}, dtype {idx.dtype}")
        if idx.shape[0] != n:
            raise KdlensError(f"precomputed neighbours have {idx.shape[0]} rows but the data has {n} points")
        if idx.shape[1] < k:
            raise KdlensError(f"precomputed neighbours have {idx.shape[1]} columns; k = {k} are needed")
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise KdlensError(f"precomputed neighbour indices must lie in 0..{n - 1}")
        if (idx[:, :k] == np.arange(n)[:, None]).any():
            raise KdlensError("precomputed neighbours must not contain the point itself")
        if self.distances is None:
            ds = np.broadcast_to(np.arange(1, k + 1, dtype=np.float32), (n, k)).copy()
        else:
            ds = np.asarray(self.distances, dtype=np.float32)[:, :k]
        return Neighbors(np.ascontiguousarray(idx[:, :k], dtype=np.int64), ds)

    def query(self, q: Any, k: int) -> Neighbors:
        raise KdlensError("precomputed neighbours cannot be queried with new points; use the exact back-end")


def choose_backend(n: int, d: int) -> str:
    """The ``"auto"`` rule: ``"exact"`` for n ≤ 20,000 or d > 256, else ``"annoy"``."""
    return "exact" if n <= AUTO_EXACT_MAX_N or d > AUTO_EXACT_MIN_DIM else "annoy"


def make_knn_index(backend: str | KNNIndex = "auto", n: int = 0, d: int = 0, **options: Any) -> KNNIndex:
    """A back-end instance from a name (``auto`` resolved with :func:`choose_backend`) or as given."""
    if isinstance(backend, KNNIndex):
        if options:
            raise KdlensError(f"kNN options {sorted(options)} given together with a ready back-end instance")
        return backend
    if not isinstance(backend, str):
        raise KdlensError(f"knn must be a back-end name ({', '.join(KNN_BACKENDS.names())}, auto) or a KNNIndex; got {type(backend).__name__}")
    name = choose_backend(n, d) if backend == "auto" else backend
    cls = KNN_BACKENDS.get(name)
    try:
        return cls(**options)
    except TypeError as exc:
        raise KdlensError(f"bad options for the {name} kNN back-end: {exc}") from None


def nearest_neighbors(x: Any, k: int, backend: str | KNNIndex = "auto", **options: Any) -> Neighbors:
    """The ``k`` nearest other points of every row of ``x`` (one call, any back-end)."""
    x = as_float_matrix(x)
    return make_knn_index(backend, x.shape[0], x.shape[1], **options).build(x, k)
