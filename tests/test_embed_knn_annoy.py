"""AnnoyKNN without a Python loop per point: the same neighbours as the per-point loop it replaced
(issue 17), threaded or not, for build and query, including rows Annoy answers short."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from kdlens.errors import KdlensError
from kdlens.explain.embed.knn import AnnoyKNN, _without_self

pytestmark = pytest.mark.skipif(importlib.util.find_spec("annoy") is None, reason="annoy not installed")


def loop_build(x, k, metric="angular", seed=0, n_trees=50, search_k=-1, build_jobs=1):
    """The per-point form (kdlens before issue 17, session 5): one query per point, the point
    itself filtered out in Python, a wider query when fewer than k others come back."""
    from annoy import AnnoyIndex

    index = AnnoyIndex(x.shape[1], metric)
    index.set_seed(seed)
    for i, row in enumerate(x):
        index.add_item(i, row)
    index.build(n_trees, n_jobs=build_jobs)  # the forest depends on the build's thread count
    idx = np.empty((len(x), k), dtype=np.int64)
    dist = np.empty((len(x), k), dtype=np.float32)
    for i in range(len(x)):
        nb, ds = index.get_nns_by_item(i, k + 1, search_k=search_k, include_distances=True)
        pairs = [(j, d) for j, d in zip(nb, ds) if j != i][:k]
        if len(pairs) < k:
            nb, ds = index.get_nns_by_item(i, k + 1, search_k=max(search_k, 10 * k * n_trees), include_distances=True)
            pairs = [(j, d) for j, d in zip(nb, ds) if j != i][:k]
        idx[i] = [p[0] for p in pairs]
        dist[i] = [p[1] for p in pairs]
    return idx, dist, index


def data(n=600, d=20, seed=0):
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    x[5] = x[7]  # an exact duplicate: the other copy may come before the point itself
    return x


@pytest.mark.parametrize("n_jobs", [1, 2])
@pytest.mark.parametrize("metric", ["angular", "euclidean"])
def test_build_equals_the_per_point_loop(n_jobs, metric):
    x = data()
    want_i, want_d, _ = loop_build(x, 15, metric=metric, seed=3, build_jobs=n_jobs)
    got = AnnoyKNN(metric=metric, seed=3, n_jobs=n_jobs).build(x, 15)
    np.testing.assert_array_equal(got.indices, want_i)
    np.testing.assert_array_equal(got.distances, want_d)
    assert got.indices.dtype == np.int64 and got.distances.dtype == np.float32
    assert not (got.indices == np.arange(len(x))[:, None]).any()


def test_short_answers_take_the_wider_query_like_the_loop():
    """2 trees and search_k = 5: Annoy returns fewer than k + 1 points for every row here."""
    x = data(n=300, d=3, seed=1)
    want_i, want_d, _ = loop_build(x, 10, metric="euclidean", n_trees=2, search_k=5, build_jobs=2)
    got = AnnoyKNN(metric="euclidean", n_trees=2, search_k=5, n_jobs=2).build(x, 10)
    np.testing.assert_array_equal(got.indices, want_i)
    np.testing.assert_array_equal(got.distances, want_d)


def test_query_equals_per_vector_calls():
    x, q = data(), data(n=90, seed=9)
    index = AnnoyKNN(seed=1, n_jobs=2)
    index.build(x, 5)
    got = index.query(q, 12)
    for j, row in enumerate(q):
        nb, ds = index._index.get_nns_by_vector(row, 12, search_k=-1, include_distances=True)
        np.testing.assert_array_equal(got.indices[j], nb)
        np.testing.assert_array_equal(got.distances[j], np.float32(ds))
    with pytest.raises(KdlensError, match="features"):
        index.query(q[:, :3], 2)
    with pytest.raises(KdlensError, match="k = 601"):
        index.query(q, 601)


def test_without_self_keeps_the_first_k_others():
    nb = np.array([[4, 0, 2, 3], [0, 1, 2, 3], [3, 2, 0, 1]])
    ds = np.arange(12, dtype=np.float32).reshape(3, 4)
    idx, dist = _without_self(nb, ds, 3, np.array([0, 9, 1]))
    np.testing.assert_array_equal(idx, [[4, 2, 3], [0, 1, 2], [3, 2, 0]])
    np.testing.assert_array_equal(dist, [[0, 2, 3], [4, 5, 6], [8, 9, 10]])
    with pytest.raises(KdlensError, match="fewer than k"):
        _without_self(np.array([[0, 0, 1]]), np.zeros((1, 3)), 2)
