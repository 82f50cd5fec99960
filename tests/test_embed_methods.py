"""embed(): the same call for Ivis, t-SNE (openTSNE), UMAP and PCA; the Fig. 1 toy."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from kdlens.errors import KdlensError
from kdlens.explain.embed import (
    PCAEmbedder,
    TSNEEmbedder,
    embed,
    embedding_quality,
    list_methods,
    make_embedder,
    quadrant_toy,
    run_toy_check,
)
from kdlens.explain.embed.toy import quadrant_layout


def test_methods_listed():
    assert list_methods() == ["ivis", "pca", "tsne", "umap"]


def test_pca_matches_sklearn():
    from sklearn.decomposition import PCA

    for shape in [(120, 8), (15, 40)]:  # the n > d and the n ≤ d branch
        x = np.random.default_rng(0).normal(size=shape).astype(np.float32) * np.linspace(1, 5, shape[1])
        ours = PCAEmbedder(n_components=3).fit(x)
        ref = PCA(n_components=3).fit(x)
        np.testing.assert_allclose(np.abs(ours.embedding_), np.abs(ref.transform(x)), rtol=1e-3, atol=1e-3)
        np.testing.assert_allclose(ours.explained_variance_ratio_, ref.explained_variance_ratio_, rtol=1e-4)
        np.testing.assert_allclose(ours.transform(x[:4]), ours.embedding_[:4], atol=1e-4)


def test_pca_randomised_path_close_to_sklearn():
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(0)
    x = (rng.normal(size=(2100, 3)) * [5, 3, 2] @ rng.normal(size=(3, 2050)) + 0.01 * rng.normal(size=(2100, 2050))).astype(np.float32)
    ours = PCAEmbedder(2).fit(x).embedding_  # min(n, d) > 2000: randomised SVD
    ref = PCA(2, svd_solver="randomized", random_state=0).fit_transform(x)
    np.testing.assert_allclose(np.abs(ours), np.abs(ref), rtol=1e-2, atol=1e-2 * np.abs(ref).max())


def test_tsne_fit_and_transform():
    x15, _, quadrant = quadrant_toy(300, seed=1)
    model = TSNEEmbedder(n_iter=100, early_exaggeration_iter=50, seed=0).fit(x15)
    assert model.embedding_.shape == (300, 2)
    new = model.transform(x15[:7])
    assert new.shape == (7, 2) and np.isfinite(new).all()
    q = embedding_quality(x15, model.embedding_, k=5)
    assert q["trustworthiness"] > 0.9
    again = TSNEEmbedder(n_iter=100, early_exaggeration_iter=50, seed=0).fit(x15).embedding_
    np.testing.assert_allclose(model.embedding_, again, atol=1e-4)


def test_tsne_gradient_method_follows_opentsne_and_fft_stays_selectable():
    """openTSNE's own default (``auto``: Barnes–Hut below 10,000 points) is kdlens's; FFT on request
    gives an embedding of the same quality on the toy."""
    x15, _, _ = quadrant_toy(300, seed=1)
    assert TSNEEmbedder().negative_gradient_method == "auto"
    bh = TSNEEmbedder(n_iter=100, early_exaggeration_iter=50, seed=0).fit(x15)
    fft = TSNEEmbedder(n_iter=100, early_exaggeration_iter=50, seed=0, negative_gradient_method="fft").fit(x15)
    assert bh.model_.gradient_descent_params["negative_gradient_method"] in ("bh", "auto")
    assert fft.model_.gradient_descent_params["negative_gradient_method"] == "fft"
    q_bh = embedding_quality(x15, bh.embedding_, k=5)["trustworthiness"]
    q_fft = embedding_quality(x15, fft.embedding_, k=5)["trustworthiness"]
    assert q_bh > 0.9 and abs(q_bh - q_fft) < 0.03


def test_same_call_every_method():
    x15, _, _ = quadrant_toy(200, seed=2)
    params = {"ivis": {"k": 10, "epochs": 3}, "tsne": {"n_iter": 50, "early_exaggeration_iter": 25}, "pca": {}}
    for method, kw in params.items():
        y = embed(x15, method, seed=0, **kw)
        assert y.shape == (200, 2) and y.dtype == np.float32, method


def test_umap():
    if importlib.util.find_spec("umap") is None:
        pytest.skip("umap-learn not installed (optional extra kdlens[umap])")
    x15, _, _ = quadrant_toy(300, seed=3)
    y = embed(x15, "umap", n_neighbors=10, seed=0)
    assert y.shape == (300, 2)
    assert embedding_quality(x15, y, k=5)["trustworthiness"] > 0.9


def test_umap_missing_is_a_clear_error(monkeypatch):
    import builtins

    real = builtins.__import__

    def fake(name, *a, **k):
        if name == "umap":
            raise ImportError("no umap")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake)
    with pytest.raises(KdlensError, match="umap-learn"):
        embed(np.zeros((20, 3), np.float32), "umap")


def test_unknown_method_and_parameter():
    with pytest.raises(KdlensError, match="Did you mean: tsne"):
        make_embedder("tnse")
    with pytest.raises(KdlensError, match="perplexity"):
        make_embedder("tsne", perplexitty=5)


def test_toy_features_and_layout():
    x15, xy, q = quadrant_toy(400, seed=0)
    assert x15.shape == (400, 15) and set(np.unique(q)) == {0, 1, 2, 3}
    np.testing.assert_allclose(x15[:, 0], xy[:, 0] + xy[:, 1], rtol=1e-5, atol=1e-6)
    assert ((xy[q == 0] >= 0).all()) and ((xy[q == 2] < 0).all())
    r, kept = quadrant_layout(xy, xy, q)
    assert r == pytest.approx(1.0) and kept
    swapped = xy.copy()
    swapped[q == 0] += [-2.0, 0.0]  # quadrant 0 moved to the left of quadrant 1: layout broken
    assert not quadrant_layout(swapped, xy, q)[1]


def test_toy_check_runs():
    results, xy, q = run_toy_check(("pca", "ivis"), n=300, params={"ivis": {"k": 20, "epochs": 10}})
    assert results["pca"].global_structure > 0.8  # PCA of this map is nearly linear in x, y
    assert results["pca"].layout_preserved
    assert -1 <= results["ivis"].global_structure <= 1
