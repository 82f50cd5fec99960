"""kNN back-ends agree with a brute-force reference; precomputed neighbours are checked."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from kdlens.errors import KdlensError
from kdlens.explain.embed import ExactKNN, PrecomputedKNN, nearest_neighbors
from kdlens.explain.embed.knn import choose_backend, make_knn_index


def data(n=200, d=16, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def brute(x, k, angular=False):
    if angular:
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
    d = np.linalg.norm(x[:, None, :].astype(np.float64) - x[None, :, :], axis=2)
    np.fill_diagonal(d, np.inf)
    idx = np.argsort(d, axis=1)[:, :k]
    return idx, np.take_along_axis(d, idx, 1)


@pytest.mark.parametrize("metric", ["euclidean", "angular"])
def test_exact_matches_brute_force(metric):
    x = data()
    nb = nearest_neighbors(x, 10, "exact", metric=metric, chunk_bytes=4 * 200 * 7)  # 7-row chunks
    idx, dist = brute(x, 10, metric == "angular")
    np.testing.assert_array_equal(nb.indices, idx)
    np.testing.assert_allclose(nb.distances, dist, rtol=1e-4, atol=1e-4)
    assert not (nb.indices == np.arange(200)[:, None]).any()


def test_exact_query_new_points():
    x = data()
    index = ExactKNN()
    index.build(x, 5)
    q = index.query(x[:3] + 1e-3, 1)
    np.testing.assert_array_equal(q.indices[:, 0], [0, 1, 2])


@pytest.mark.parametrize("backend", ["annoy", pytest.param("nndescent", marks=pytest.mark.slow)])
def test_approximate_backends_high_recall(backend):
    """(pynndescent's numba compilation takes ~40 s on two cores: marked slow.)"""
    mod = {"annoy": "annoy", "nndescent": "pynndescent"}[backend]
    if importlib.util.find_spec(mod) is None:
        pytest.skip(f"{mod} not installed")
    x = data()
    nb = nearest_neighbors(x, 10, backend, metric="angular")
    idx, dist = brute(x, 10, angular=True)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(nb.indices, idx)])
    assert recall > 0.9
    assert not (nb.indices == np.arange(200)[:, None]).any()
    np.testing.assert_allclose(np.sort(nb.distances, 1)[:, 0], dist[:, 0], rtol=1e-3, atol=1e-3)


def test_precomputed_validation():
    x = data(n=10)
    idx, _ = brute(x, 4)
    assert PrecomputedKNN(idx).build(x, 3).indices.shape == (10, 3)
    with pytest.raises(KdlensError, match="columns"):
        PrecomputedKNN(idx).build(x, 5)
    with pytest.raises(KdlensError, match="itself"):
        PrecomputedKNN(np.tile(np.arange(10)[:, None], (1, 3))).build(x, 3)
    with pytest.raises(KdlensError, match="rows"):
        PrecomputedKNN(idx[:5]).build(x, 3)
    with pytest.raises(KdlensError, match="cannot be queried"):
        PrecomputedKNN(idx).query(x, 3)


def test_auto_rule_and_errors():
    assert choose_backend(10_000, 784) == "exact"
    assert choose_backend(100_000, 50) == "annoy"
    assert choose_backend(100_000, 16_384) == "exact"
    with pytest.raises(KdlensError, match="kNN back-end"):
        make_knn_index("faiss")
    with pytest.raises(KdlensError, match="kNN metric"):
        ExactKNN(metric="manhattan")
    with pytest.raises(KdlensError, match="only 5 points"):
        nearest_neighbors(data(n=5), 5, "exact")
    with pytest.raises(KdlensError, match="NaN"):
        nearest_neighbors(np.full((5, 2), np.nan), 2, "exact")


def test_drop_self_and_angular_conversion():
    from kdlens.explain.embed.knn import _drop_self

    nb = np.array([[0, 2, 1], [0, 1, 2], [2, 0, 1]])  # row 1 lacks itself first; row 2 has it first
    ds = np.array([[0.0, 0.1, 0.2], [0.05, 0.0, 0.3], [0.0, 0.2, 0.4]])
    out = _drop_self(nb, ds, 2, "euclidean")
    np.testing.assert_array_equal(out.indices, [[2, 1], [0, 2], [0, 1]])
    np.testing.assert_allclose(out.distances, [[0.1, 0.2], [0.05, 0.3], [0.2, 0.4]])
    row3 = _drop_self(np.array([[1, 2, 3]]), np.array([[0.5, 0.5, 0.5]]), 2, "angular")
    np.testing.assert_array_equal(row3.indices, [[1, 2]])  # self absent: last column dropped
    np.testing.assert_allclose(row3.distances, [[1.0, 1.0]])  # sqrt(2 · (1 − cos))
