"""Similarity metrics against independent float64 reference implementations.

The references below are written directly from the papers' Gram-matrix / covariance
formulas (explicit centring matrix H, explicit projections, loop U-statistic) and share
no code with kdlens.explain.similarity.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.linalg
import torch
from scipy.spatial.distance import pdist, squareform

from kdlens.errors import KdlensError
from kdlens.explain.similarity import (
    MinibatchCKA,
    cca_r2,
    hsic,
    linear_cka,
    metric_names,
    pwcca,
    rbf_cka,
    similarity_matrix,
    svcca,
)


# ------------------------------------------------------------------ references
def H(n):
    return np.eye(n) - np.ones((n, n)) / n


def ref_hsic_biased(K, L):
    n = len(K)
    return np.trace(K @ H(n) @ L @ H(n)) / (n - 1) ** 2


def ref_hsic_unbiased_loop(K, L):
    """Song et al. 2012: mean over ordered 4-tuples of distinct indices of
    k_ij l_ij + k_ij l_qr − 2 k_ij l_iq."""
    n = len(K)
    total, count = 0.0, 0
    for i, j, q, r in itertools.permutations(range(n), 4):
        total += K[i, j] * L[i, j] + K[i, j] * L[q, r] - 2 * K[i, j] * L[i, q]
        count += 1
    return total / count


def ref_hsic_unbiased_matrix(K, L):
    n = len(K)
    Kt, Lt = K - np.diag(np.diag(K)), L - np.diag(np.diag(L))
    one = np.ones(n)
    return (
        np.trace(Kt @ Lt)
        + (one @ Kt @ one) * (one @ Lt @ one) / ((n - 1) * (n - 2))
        - 2 / (n - 2) * (one @ Kt @ Lt @ one)
    ) / (n * (n - 3))


def ref_cka_gram(K, L, hsic_fn=ref_hsic_biased):
    return hsic_fn(K, L) / np.sqrt(hsic_fn(K, K) * hsic_fn(L, L))


def ref_linear_cka(X, Y, unbiased=False):
    return ref_cka_gram(X @ X.T, Y @ Y.T, ref_hsic_unbiased_matrix if unbiased else ref_hsic_biased)


def ref_rbf_gram(X, frac):
    d = pdist(X)  # distinct pairs
    sigma = frac * np.median(d)
    return np.exp(-squareform(d) ** 2 / (2 * sigma**2))


def inv_sqrt(S):
    w, V = np.linalg.eigh(S)
    return V @ np.diag(w**-0.5) @ V.T


def ref_canonical(X, Y):
    """Canonical correlations + X canonical directions from covariance matrices."""
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    n = len(X)
    Sxx, Syy, Sxy = Xc.T @ Xc / (n - 1), Yc.T @ Yc / (n - 1), Xc.T @ Yc / (n - 1)
    M = inv_sqrt(Sxx) @ Sxy @ inv_sqrt(Syy)
    U, rho, _ = np.linalg.svd(M, full_matrices=False)
    A = inv_sqrt(Sxx) @ U  # canonical weights of X
    return rho, Xc, A


def ref_cca_r2_projection(X, Y):
    """tr(P_X P_Y)/min(p, q) with N×N orthogonal projections onto the centred spans."""
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    Px = Xc @ np.linalg.pinv(Xc)
    Py = Yc @ np.linalg.pinv(Yc)
    return np.trace(Px @ Py) / min(X.shape[1], Y.shape[1])


def ref_svcca(X, Y, keep=0.99):
    def reduce(Z):
        Zc = Z - Z.mean(0)
        _, s, Vt = np.linalg.svd(Zc, full_matrices=False)
        var = np.cumsum(s**2) / np.sum(s**2)
        k = int(np.argmax(var >= keep - 1e-12)) + 1
        return Zc @ Vt[:k].T

    rho, _, _ = ref_canonical(reduce(X), reduce(Y))
    return np.mean(rho)


def ref_pwcca(X, Y):
    rho, Xc, A = ref_canonical(X, Y)
    Hx = Xc @ A
    Hx /= np.linalg.norm(Hx, axis=0)
    alpha = np.abs(Hx.T @ Xc).sum(axis=1)
    return np.sum(alpha * rho) / np.sum(alpha)


# --------------------------------------------------------------------- data
@pytest.fixture(scope="module")
def xy():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 12))
    Y = np.tanh(X @ rng.normal(size=(12, 9))) + 0.3 * rng.normal(size=(120, 9))
    return X, Y


def rand_orthogonal(rng, c):
    q, r = np.linalg.qr(rng.normal(size=(c, c)))
    return q * np.sign(np.diag(r))


# ---------------------------------------------------------------- agreement
@pytest.mark.parametrize("unbiased", [False, True])
def test_linear_cka_matches_gram_reference(xy, unbiased):
    X, Y = xy
    assert linear_cka(X, Y, unbiased=unbiased) == pytest.approx(ref_linear_cka(X, Y, unbiased), rel=1e-10)


@pytest.mark.parametrize("unbiased", [False, True])
@pytest.mark.parametrize("cx,cy", [(50, 70), (50, 8), (8, 50)])
def test_linear_cka_wide_layers_gram_and_mixed_forms(unbiased, cx, cy):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(40, cx))
    Y = X[:, :1] @ rng.normal(size=(1, cy)) + rng.normal(size=(40, cy))
    assert linear_cka(X, Y, unbiased=unbiased) == pytest.approx(ref_linear_cka(X, Y, unbiased), rel=1e-10)


@pytest.mark.parametrize("frac", [0.4, 0.8])
def test_rbf_cka_matches_reference(xy, frac):
    X, Y = xy
    expected = ref_cka_gram(ref_rbf_gram(X, frac), ref_rbf_gram(Y, frac))
    assert rbf_cka(X, Y, sigma_frac=frac) == pytest.approx(expected, rel=1e-10)
    expected_u = ref_cka_gram(ref_rbf_gram(X, frac), ref_rbf_gram(Y, frac), ref_hsic_unbiased_matrix)
    assert rbf_cka(X, Y, sigma_frac=frac, unbiased=True) == pytest.approx(expected_u, rel=1e-10)


def test_hsic_biased_matches_reference(xy):
    X, Y = xy
    K, L = X @ X.T, np.exp(-squareform(pdist(Y)) ** 2 / 10)
    assert hsic(K, L) == pytest.approx(ref_hsic_biased(K, L), rel=1e-12)


@pytest.mark.parametrize("n", [4, 5, 7])
def test_unbiased_hsic_matches_loop_u_statistic(n):
    rng = np.random.default_rng(n)
    X, Y = rng.normal(size=(n, 3)), rng.normal(size=(n, 2))
    K, L = X @ X.T, np.exp(-squareform(pdist(Y)) ** 2)
    assert hsic(K, L, unbiased=True) == pytest.approx(ref_hsic_unbiased_loop(K, L), rel=1e-10, abs=1e-12)


def test_unbiased_hsic_invariant_to_feature_shift(xy):
    X, Y = xy
    Xs = X + 3.0
    assert hsic(Xs @ Xs.T, Y @ Y.T, unbiased=True) == pytest.approx(hsic(X @ X.T, Y @ Y.T, unbiased=True), rel=1e-9)


def test_cca_r2_matches_projection_and_covariance_references(xy):
    X, Y = xy
    rho, _, _ = ref_canonical(X, Y)
    expected = np.sum(rho**2) / min(X.shape[1], Y.shape[1])
    assert cca_r2(X, Y) == pytest.approx(expected, rel=1e-10)
    assert cca_r2(X, Y) == pytest.approx(ref_cca_r2_projection(X, Y), rel=1e-10)


def test_svcca_matches_reference(xy):
    X, Y = xy
    rng = np.random.default_rng(3)
    # low-rank-ish representations so that 99 % variance drops some directions
    Xl = X[:, :3] @ rng.normal(size=(3, 12)) + 0.01 * rng.normal(size=X.shape)
    for keep in (0.9, 0.99, 1.0):
        assert svcca(Xl, Y, keep=keep) == pytest.approx(ref_svcca(Xl, Y, keep), rel=1e-9)


def test_pwcca_matches_reference_and_is_asymmetric(xy):
    X, Y = xy
    assert pwcca(X, Y) == pytest.approx(ref_pwcca(X, Y), rel=1e-9)
    assert pwcca(Y, X) == pytest.approx(ref_pwcca(Y, X), rel=1e-9)
    assert pwcca(X, Y) != pytest.approx(pwcca(Y, X), rel=1e-6)


def test_torch_tensors_accepted(xy):
    X, Y = xy
    got = linear_cka(torch.from_numpy(X).float(), torch.from_numpy(Y).float())
    assert got == pytest.approx(ref_linear_cka(X, Y), rel=1e-5)
    assert cca_r2(torch.from_numpy(X), torch.from_numpy(Y)) == pytest.approx(cca_r2(X, Y), rel=1e-12)


# --------------------------------------------------------------- properties
@pytest.mark.parametrize(
    "fn", [linear_cka, lambda x, y: linear_cka(x, y, unbiased=True), rbf_cka, cca_r2, svcca, pwcca]
)
def test_self_similarity_is_one(xy, fn):
    X, _ = xy
    assert fn(X, X) == pytest.approx(1.0, abs=1e-10)


@pytest.mark.parametrize("unbiased", [False, True])
def test_cka_invariant_to_orthogonal_and_isotropic_scaling_not_to_linear_maps(xy, unbiased):
    X, Y = xy
    rng = np.random.default_rng(4)
    base = linear_cka(X, Y, unbiased=unbiased)
    Q = rand_orthogonal(rng, X.shape[1])
    assert linear_cka(X @ Q, Y, unbiased=unbiased) == pytest.approx(base, rel=1e-10)
    assert linear_cka(7.5 * X, 0.01 * Y, unbiased=unbiased) == pytest.approx(base, rel=1e-10)
    A = rng.normal(size=(X.shape[1], X.shape[1])) @ np.diag(np.geomspace(1, 30, X.shape[1]))
    assert abs(np.linalg.det(A)) > 1e-6
    assert abs(linear_cka(X @ A, Y, unbiased=unbiased) - base) > 1e-3


def test_rbf_cka_invariant_to_orthogonal_and_scaling(xy):
    X, Y = xy
    Q = rand_orthogonal(np.random.default_rng(5), X.shape[1])
    assert rbf_cka(3.0 * X @ Q, Y) == pytest.approx(rbf_cka(X, Y), rel=1e-9)


def test_cca_r2_invariant_to_invertible_linear_maps(xy):
    X, Y = xy
    rng = np.random.default_rng(6)
    A = rng.normal(size=(X.shape[1], X.shape[1]))
    B = rng.normal(size=(Y.shape[1], Y.shape[1]))
    assert cca_r2(X @ A, Y @ B) == pytest.approx(cca_r2(X, Y), rel=1e-8)
    assert svcca(X @ A, Y, keep=1.0) == pytest.approx(svcca(X, Y, keep=1.0), rel=1e-8)


def test_cca_r2_regularised(xy):
    X, Y = xy
    assert cca_r2(X, Y, eps=0.0) == pytest.approx(cca_r2(X, Y), rel=1e-10)
    reg = cca_r2(X, Y, eps=1e-2)
    assert 0.0 < reg < cca_r2(X, Y)
    assert cca_r2(X, X, eps=1e-2) < 1.0
    # reference: (Σ_XX + ε λ̄ I)^(-1/2) Σ_XY (Σ_YY + ε λ̄ I)^(-1/2), squared singular values
    n = len(X)
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    Sxx, Syy, Sxy = Xc.T @ Xc / (n - 1), Yc.T @ Yc / (n - 1), Xc.T @ Yc / (n - 1)
    Rx = Sxx + 1e-2 * np.trace(Sxx) / Sxx.shape[0] * np.eye(len(Sxx))
    Ry = Syy + 1e-2 * np.trace(Syy) / Syy.shape[0] * np.eye(len(Syy))
    M = scipy.linalg.inv(scipy.linalg.sqrtm(Rx)).real @ Sxy @ scipy.linalg.inv(scipy.linalg.sqrtm(Ry)).real
    assert reg == pytest.approx(np.sum(M**2) / min(X.shape[1], Y.shape[1]), rel=1e-8)
    # N <= C works with explicit eps
    rng = np.random.default_rng(7)
    W = rng.normal(size=(20, 30))
    assert 0.0 < cca_r2(W, W[:, :10] + rng.normal(size=(20, 10)), eps=0.1) <= 1.0


# --------------------------------------------------------------- minibatch
def test_minibatch_cka_single_batch_equals_unbiased_linear_cka(xy):
    X, Y = xy
    m = MinibatchCKA().update(X, Y)
    assert m.value() == pytest.approx(linear_cka(X, Y, unbiased=True), rel=1e-12)
    assert m.n_batches_ == 1 and m.n_examples_ == len(X)


def test_minibatch_cka_averages_unbiased_hsic_over_batches(xy):
    X, Y = xy
    m = MinibatchCKA()
    xy_, xx_, yy_ = [], [], []
    for s in range(0, len(X), 40):
        xb, yb = X[s : s + 40], Y[s : s + 40]
        m.update(torch.from_numpy(xb), yb)
        K, L = xb @ xb.T, yb @ yb.T
        xy_.append(ref_hsic_unbiased_matrix(K, L))
        xx_.append(ref_hsic_unbiased_matrix(K, K))
        yy_.append(ref_hsic_unbiased_matrix(L, L))
    assert m.n_batches_ == 3
    assert m.value() == pytest.approx(np.mean(xy_) / np.sqrt(np.mean(xx_) * np.mean(yy_)), rel=1e-10)
    assert m.reset().n_batches_ == 0


def test_minibatch_cka_errors(xy):
    X, Y = xy
    with pytest.raises(KdlensError, match="before any update"):
        MinibatchCKA().value()
    with pytest.raises(KdlensError, match="more than 3"):
        MinibatchCKA().update(X[:3], Y[:3])
    with pytest.raises(KdlensError, match="different numbers of examples"):
        MinibatchCKA().update(X[:10], Y[:11])


# --------------------------------------------------------------- matrix
@pytest.fixture(scope="module")
def layers():
    rng = np.random.default_rng(8)
    base = rng.normal(size=(90, 6))
    reps = {}
    h = base
    for i, c in enumerate([6, 10, 4, 14, 8]):
        h = np.maximum(h @ rng.normal(size=(h.shape[1], c)), 0) + 0.2 * rng.normal(size=(90, c))
        reps[f"block{i}"] = h
    return reps


PAIRWISE = {
    "cka": linear_cka,
    "cka_unbiased": lambda x, y: linear_cka(x, y, unbiased=True),
    "rbf_cka": rbf_cka,
    "cca": cca_r2,
    "svcca": svcca,
    "pwcca": pwcca,
}


@pytest.mark.parametrize("metric", sorted(PAIRWISE))
def test_similarity_matrix_equals_pairwise_calls(layers, metric):
    S = similarity_matrix(layers, metric=metric)
    reps = list(layers.values())
    expected = np.array([[PAIRWISE[metric](a, b) for b in reps] for a in reps])
    np.testing.assert_allclose(S, expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(np.diag(S), 1.0)
    if metric != "pwcca":
        np.testing.assert_array_equal(S, S.T)


@pytest.mark.parametrize("metric", ["cka", "cka_unbiased"])
def test_similarity_matrix_mixes_feature_and_gram_form_layers(metric):
    # N=30: layers with C >= N are kept as N×N Gram matrices, the others as features
    rng = np.random.default_rng(10)
    base = rng.normal(size=(30, 5))
    reps = [base @ rng.normal(size=(5, c)) + 0.5 * rng.normal(size=(30, c)) for c in (8, 40, 12, 30, 3)]
    S = similarity_matrix(reps, metric=metric)
    unbiased = metric == "cka_unbiased"
    expected = np.array([[ref_linear_cka(a, b, unbiased) for b in reps] for a in reps])
    np.testing.assert_allclose(S, expected, rtol=1e-9, atol=1e-12)


def test_similarity_matrix_options_list_input_and_progress(layers):
    reps = list(layers.values())
    calls = []
    S = similarity_matrix(reps, metric="cca", eps=1e-3, progress=lambda d, t: calls.append((d, t)))
    L = len(reps)
    assert calls[-1] == (L * (L + 1) // 2, L * (L + 1) // 2)  # regularised: diagonal computed
    for i in range(L):
        for j in range(L):
            assert S[i, j] == pytest.approx(cca_r2(reps[i], reps[j], eps=1e-3), rel=1e-10)
    calls.clear()
    S1 = similarity_matrix(reps, metric="cka", progress=lambda d, t: calls.append((d, t)), blas_threads=1)
    assert calls[-1] == (L * (L - 1) // 2, L * (L - 1) // 2)
    np.testing.assert_allclose(S1, similarity_matrix(reps, metric="linear_cka"), rtol=1e-12)
    np.testing.assert_allclose(
        similarity_matrix(reps, metric="cka", unbiased=True), similarity_matrix(reps, metric="cka_unbiased")
    )
    assert {"cka", "cca", "rbf_cka", "svcca", "pwcca", "cka_unbiased"} <= set(metric_names())


def test_similarity_matrix_errors(layers):
    reps = list(layers.values())
    with pytest.raises(KdlensError, match="Did you mean"):
        similarity_matrix(reps, metric="ckaa")
    with pytest.raises(KdlensError, match="bad options"):
        similarity_matrix(reps, metric="cka", sigma=1.0)
    with pytest.raises(KdlensError, match="different numbers of examples"):
        similarity_matrix([reps[0], reps[1][:50]])
    with pytest.raises(KdlensError, match="at least one"):
        similarity_matrix([])
    bad = dict(layers)
    bad["block2"] = bad["block2"].copy()
    bad["block2"][3, 1] = np.nan
    with pytest.raises(KdlensError, match="'block2'.*non-finite"):
        similarity_matrix(bad)


# ------------------------------------------------------------------- errors
@pytest.mark.parametrize("fn", [linear_cka, rbf_cka, cca_r2, svcca, pwcca,
                                lambda x, y: linear_cka(x, y, unbiased=True)])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input_is_an_error(xy, fn, bad):
    X, Y = xy
    Xb = X.copy()
    Xb[5, 2] = bad
    with pytest.raises(KdlensError, match="non-finite"):
        fn(Xb, Y)
    with pytest.raises(KdlensError, match="non-finite"):
        fn(Y, Xb)


def test_hsic_errors():
    K = np.eye(3)
    with pytest.raises(KdlensError, match="more than 3 examples"):
        hsic(K, K, unbiased=True)
    with pytest.raises(KdlensError, match="square"):
        hsic(np.ones((3, 4)), np.ones((3, 4)))
    with pytest.raises(KdlensError, match="same examples"):
        hsic(np.eye(4), np.eye(5))
    K = np.eye(5)
    K[0, 1] = np.nan
    with pytest.raises(KdlensError, match="non-finite"):
        hsic(K, np.eye(5))


def test_unbiased_cka_needs_more_than_three_examples():
    X = np.random.default_rng(0).normal(size=(3, 2))
    with pytest.raises(KdlensError, match="more than 3"):
        linear_cka(X, X, unbiased=True)


def test_cca_errors(xy):
    X, Y = xy
    rng = np.random.default_rng(9)
    W = rng.normal(size=(10, 10))
    with pytest.raises(KdlensError, match="more examples than features.*N=10.*C=10"):
        cca_r2(W, W[:, :3])
    with pytest.raises(KdlensError, match="more examples than features"):
        pwcca(X[:, :3][:8], W[:8])
    Xd = np.hstack([X, X[:, :1] * 2.0])
    with pytest.raises(KdlensError, match="rank-deficient.*eps"):
        cca_r2(Xd, Y)
    assert 0.0 < cca_r2(Xd, Y, eps=1e-3) <= 1.0
    with pytest.raises(KdlensError, match="eps"):
        cca_r2(X, Y, eps=-1.0)
    with pytest.raises(KdlensError, match="keep"):
        svcca(X, Y, keep=1.5)


def test_shape_and_constant_errors(xy):
    X, Y = xy
    with pytest.raises(KdlensError, match="different numbers of examples"):
        linear_cka(X, Y[:-1])
    with pytest.raises(KdlensError, match="spatial mean"):
        linear_cka(np.zeros((4, 3, 2, 2)), X[:4])
    with pytest.raises(KdlensError, match="constant"):
        linear_cka(np.full((20, 3), 0.1), X[:20])
    with pytest.raises(KdlensError, match="constant"):
        cca_r2(X, np.ones_like(Y))
    with pytest.raises(KdlensError, match="sigma_frac"):
        rbf_cka(X, Y, sigma_frac=0)
