"""Feature / relation (hint) losses: numpy references of the published formulas,
hand-worked cases and invariances.  Everything runs in float64 on tiny tensors."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from kdlens.distill import build_objective, create_loss
from kdlens.errors import KdlensError

@pytest.fixture(autouse=True)
def _float64():
    """Module parameters in float64, for comparisons with the numpy references."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def rand(*shape: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def A(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy().astype(np.float64)


def block_mean(x: np.ndarray, h: int, w: int) -> np.ndarray:
    """Average pooling of (B, C, H, W) to (h, w) when H, W are multiples of h, w."""
    b, c, hh, ww = x.shape
    return x.reshape(b, c, h, hh // h, w, ww // w).mean(axis=(3, 5))


def huber(a: float, b: float) -> float:
    d = abs(a - b)
    return 0.5 * d * d if d < 1 else d - 0.5


# ---------------------------------------------------------------- fitnet


def np_conv_valid(x, w, bias):
    b, cin, h, wd = x.shape
    cout, _, kh, kw = w.shape
    out = np.zeros((b, cout, h - kh + 1, wd - kw + 1))
    for n, o, y, z in itertools.product(range(b), range(cout), range(h - kh + 1), range(wd - kw + 1)):
        out[n, o, y, z] = bias[o] + np.sum(w[o] * x[n, :, y : y + kh, z : z + kw])
    return out


def np_conv_transpose(x, w, bias):
    b, cin, h, wd = x.shape
    _, cout, kh, kw = w.shape
    out = np.zeros((b, cout, h + kh - 1, wd + kw - 1)) + bias[None, :, None, None]
    for n, c, y, z in itertools.product(range(b), range(cin), range(h), range(wd)):
        out[n, :, y : y + kh, z : z + kw] += w[c] * x[n, c, y, z]
    return out


@pytest.mark.parametrize("s_shape,t_shape", [((3, 5, 5), (2, 3, 3)), ((3, 3, 3), (2, 5, 4))])
def test_fitnet_matches_numpy_reference(s_shape, t_shape):
    loss = create_loss("fitnet", [s_shape], [t_shape])
    conv = loss.regressors[0][0]
    fs, ft = rand(2, *s_shape, seed=1), rand(2, *t_shape, seed=2)
    w, b = A(conv.weight), A(conv.bias)
    pred = np_conv_valid(A(fs), w, b) if s_shape[1] >= t_shape[1] else np_conv_transpose(A(fs), w, b)
    assert pred.shape[1:] == t_shape
    assert loss([fs], [ft]).item() == pytest.approx(np.mean((pred - A(ft)) ** 2), rel=1e-10)


def test_fitnet_identity_regressor_is_plain_mse_and_vectors_use_linear():
    loss = create_loss("fitnet", [(2, 3, 3)], [(2, 3, 3)])
    conv = loss.regressors[0][0]
    with torch.no_grad():
        conv.weight.copy_(torch.eye(2).view(2, 2, 1, 1))
        conv.bias.zero_()
    fs, ft = rand(2, 2, 3, 3, seed=3), rand(2, 2, 3, 3, seed=4)
    assert loss([fs], [ft]).item() == pytest.approx(((fs - ft) ** 2).mean().item(), rel=1e-12)
    assert isinstance(create_loss("fitnet", [(5,)], [(7,)]).regressors[0][0], nn.Linear)


def test_fitnet_bn_regressor_standardises_each_channel_then_relu():
    # RepDistiller's form: conv → BN → ReLU; in training mode BN makes each output channel
    # zero-mean, unit-variance over (batch, H, W) before the ReLU (float64 reference)
    loss = create_loss("fitnet", [(3, 4, 4)], [(2, 4, 4)], regressor_bn=True, regressor_relu=True).double()
    conv, bn, relu = loss.regressors[0]
    assert isinstance(bn, nn.BatchNorm2d) and isinstance(relu, nn.ReLU)
    fs, ft = rand(5, 3, 4, 4, seed=7).double(), rand(5, 2, 4, 4, seed=8).double()
    z = np_conv_valid(A(fs), A(conv.weight), A(conv.bias))
    mean, var = z.mean(axis=(0, 2, 3), keepdims=True), z.var(axis=(0, 2, 3), keepdims=True)
    pred = np.maximum((z - mean) / np.sqrt(var + bn.eps), 0.0)
    assert loss([fs], [ft]).item() == pytest.approx(np.mean((pred - A(ft)) ** 2), rel=1e-9)
    objective = build_objective("fitnet+kd", [(3, 4, 4)], [(2, 4, 4)], regressor_bn=True)
    assert isinstance(objective.hint_loss.regressors[0][1], nn.BatchNorm2d)
    assert isinstance(create_loss("fitnet", [(5,)], [(7,)], regressor_bn=True).regressors[0][1], nn.BatchNorm1d)


def test_fitnet_two_stage_flags():
    one = create_loss("fitnet", [(2, 3, 3)], [(4, 3, 3)])
    two = create_loss("fitnet", [(2, 3, 3)], [(4, 3, 3)], two_stage=True)
    assert not one.requires_pretraining and two.requires_pretraining and two.pretrain_trains_student
    fs, ft = rand(2, 2, 3, 3), rand(2, 4, 3, 3)
    assert two.pretrain_loss([fs], [ft]).item() == pytest.approx(two([fs], [ft]).item())
    assert {id(p) for p in two.pretrain_parameters()} == {id(p) for p in two.regressors.parameters()}


# ---------------------------------------------------------------- at


def np_attention(f):
    q = (np.abs(f) ** 2).sum(axis=1).reshape(f.shape[0], -1)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


@pytest.mark.parametrize("form", ["code", "paper"])
def test_at_matches_numpy_reference_with_pooling(form):
    fs, ft = rand(3, 3, 4, 4, seed=5), rand(3, 5, 8, 8, seed=6)
    qs, qt = np_attention(A(fs)), np_attention(block_mean(A(ft), 4, 4))
    if form == "code":
        expected = 0.5 * np.mean((qs - qt) ** 2)
    else:
        expected = 0.5 * np.mean([np.sqrt(np.sum((a - b) ** 2)) for a, b in zip(qs, qt)])
    got = create_loss("at", [(3, 4, 4)], [(5, 8, 8)], form=form)([fs], [ft]).item()
    assert got == pytest.approx(expected, rel=1e-10)


def test_at_invariant_to_positive_scaling_and_zero_for_rescaled_copy():
    fs, ft = rand(2, 3, 4, 4, seed=7), rand(2, 6, 4, 4, seed=8)
    loss = create_loss("at", [(3, 4, 4)], [(6, 4, 4)])
    base = loss([fs], [ft]).item()
    assert loss([fs * 7.5], [ft * 0.01]).item() == pytest.approx(base, rel=1e-9)
    scale = torch.tensor([0.3, 4.0]).view(2, 1, 1, 1)
    assert loss([fs * scale], [ft]).item() == pytest.approx(base, rel=1e-9)
    # the teacher's own features (channels repeated) give the same attention map
    same = create_loss("at", [(6, 4, 4)], [(3, 4, 4)], form="paper")
    assert same([torch.cat([fs, fs], 1) * 3], [fs]).item() == pytest.approx(0.0, abs=1e-12)


def test_at_needs_feature_maps():
    with pytest.raises(KdlensError, match=r"\(C, H, W\)"):
        create_loss("at", [(16,)], [(32,)])


# ---------------------------------------------------------------- vid


def test_vid_matches_numpy_reference():
    loss = create_loss("vid", [(3, 4, 4)], [(2, 2, 2)], form="paper", hidden=4)
    with torch.no_grad():
        loss.log_scales[0].copy_(torch.tensor([0.3, -1.2]))
    fs, ft = rand(2, 3, 4, 4, seed=9), rand(2, 2, 2, 2, seed=10)
    h = block_mean(A(fs), 2, 2)  # the larger (student) map is pooled to 2×2
    for k, layer in enumerate(m for m in loss.regressors[0] if isinstance(m, nn.Conv2d)):
        h = np.einsum("oc,bchw->bohw", A(layer.weight)[:, :, 0, 0], h) + A(layer.bias)[None, :, None, None]
        if k < 2:
            h = np.maximum(h, 0)
    var = np.log1p(np.exp(np.array([0.3, -1.2]))) + 1e-5
    v = var[None, :, None, None]
    expected = np.mean(np.log(np.sqrt(v)) + (A(ft) - h) ** 2 / (2 * v))
    assert loss([fs], [ft]).item() == pytest.approx(expected, rel=1e-10)


def test_vid_initial_variance_and_vector_features():
    loss = create_loss("vid", [(6,)], [(4,)], init_var=5.0)
    assert torch.allclose(loss.variance(0), torch.full((4,), 5.0))
    out = loss([rand(3, 6)], [rand(3, 4, seed=1)])
    assert torch.isfinite(out)


# ---------------------------------------------------------------- sp


def np_sp(fs, ft):
    def g(f):
        q = f.reshape(f.shape[0], -1)
        m = q @ q.T
        return m / np.linalg.norm(m, axis=1, keepdims=True)

    b = fs.shape[0]
    return np.sum((g(ft) - g(fs)) ** 2) / b**2


def test_sp_matches_numpy_reference_and_is_scale_invariant():
    fs, ft = rand(4, 3, 2, 2, seed=11), rand(4, 7, seed=12)
    loss = create_loss("sp", [(3, 2, 2)], [(7,)])
    got = loss([fs], [ft]).item()
    assert got == pytest.approx(np_sp(A(fs), A(ft)), rel=1e-10)
    assert loss([fs * 13.0], [ft * 0.2]).item() == pytest.approx(got, rel=1e-10)


# ---------------------------------------------------------------- cc


def np_cc(fs, ft, gamma, order):
    def k(f):
        x = f.reshape(f.shape[0], -1)
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        out = np.zeros((x.shape[0], x.shape[0]))
        for i, j in itertools.product(range(x.shape[0]), repeat=2):
            s = float(x[i] @ x[j])
            out[i, j] = sum(math.exp(-2 * gamma) * (2 * gamma) ** p / math.factorial(p) * s**p for p in range(order + 1))
        return out

    return np.sum((k(ft) - k(fs)) ** 2) / fs.shape[0] ** 2


def test_cc_matches_numpy_reference():
    fs, ft = rand(5, 6, seed=13), rand(5, 2, 2, 2, seed=14)
    got = create_loss("cc", [(6,)], [(2, 2, 2)], form="paper", rbf_gamma=0.7, order=3)([fs], [ft]).item()
    assert got == pytest.approx(np_cc(A(fs), A(ft), 0.7, 3), rel=1e-10)


def test_cc_taylor_series_converges_to_gaussian_rbf():
    from kdlens.distill.losses.cc import rbf_correlation

    x = rand(4, 5, seed=15)
    xn = x / x.norm(dim=1, keepdim=True)
    exact = torch.exp(-0.4 * torch.cdist(xn, xn) ** 2)
    assert torch.allclose(rbf_correlation(x, 0.4, 25), exact, atol=1e-12)


# ---------------------------------------------------------------- rkd


def np_rkd(fs, ft, wd=25.0, wa=50.0):
    def dist(x):
        b = len(x)
        d = {(i, j): np.linalg.norm(x[i] - x[j]) for i in range(b) for j in range(b) if i != j}
        mu = np.mean(list(d.values()))
        return {k: v / mu for k, v in d.items()}

    def ang(x):
        b, out = len(x), {}
        for i, j, k in itertools.permutations(range(b), 3):
            e1 = (x[i] - x[j]) / np.linalg.norm(x[i] - x[j])
            e2 = (x[k] - x[j]) / np.linalg.norm(x[k] - x[j])
            out[(i, j, k)] = float(e1 @ e2)
        return out

    xs, xt = fs.reshape(len(fs), -1), ft.reshape(len(ft), -1)
    ds, dt = dist(xs), dist(xt)
    as_, at = ang(xs), ang(xt)
    return wd * np.mean([huber(ds[k], dt[k]) for k in ds]) + wa * np.mean([huber(as_[k], at[k]) for k in as_])


def test_rkd_matches_numpy_reference():
    fs, ft = rand(5, 4, seed=16), rand(5, 3, seed=17) * 3
    got = create_loss("rkd", [(4,)], [(3,)])([fs], [ft]).item()
    assert got == pytest.approx(np_rkd(A(fs), A(ft)), rel=1e-9)


def test_rkd_invariant_to_rotation_translation_and_scale():
    fs, ft = rand(6, 4, seed=18), rand(6, 4, seed=19)
    q, _ = torch.linalg.qr(rand(4, 4, seed=20))
    loss = create_loss("rkd", [(4,)], [(4,)])
    base = loss([fs], [ft]).item()
    moved = 2.5 * fs @ q + torch.tensor([1.0, -3.0, 0.5, 2.0])
    assert loss([moved], [ft]).item() == pytest.approx(base, rel=1e-8)
    assert loss([ft @ q + 4.0], [ft]).item() == pytest.approx(0.0, abs=1e-10)


# ---------------------------------------------------------------- pkt


def np_pkt(fs, ft):
    def cond(f):
        x = f.reshape(len(f), -1)
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        b = len(x)
        k = np.array([[0.5 * (x[i] @ x[j] + 1) for i in range(b)] for j in range(b)])  # k[j, i]
        p = np.zeros_like(k)
        for j in range(b):
            norm = sum(k[j, m] for m in range(b) if m != j)
            for i in range(b):
                if i != j:
                    p[j, i] = k[j, i] / norm
        return p

    pt, ps = cond(ft), cond(fs)
    b = len(fs)
    kl = sum(pt[j, i] * math.log(pt[j, i] / ps[j, i]) for i in range(b) for j in range(b) if i != j)
    return kl / (b * (b - 1))


def test_pkt_matches_numpy_reference_and_ignores_feature_norms():
    fs, ft = rand(5, 2, 2, 2, seed=21), rand(5, 6, seed=22)
    loss = create_loss("pkt", [(2, 2, 2)], [(6,)], form="paper")
    got = loss([fs], [ft]).item()
    assert got == pytest.approx(np_pkt(A(fs), A(ft)), rel=1e-10)
    scale = torch.tensor([1.0, 3.0, 0.2, 7.0, 1.5]).view(5, 1, 1, 1)
    assert loss([fs * scale], [ft]).item() == pytest.approx(got, rel=1e-9)


def test_pkt_zero_for_identical_geometry():
    ft = rand(4, 6, seed=23)
    assert create_loss("pkt", [(6,)], [(6,)])([ft * 3], [ft]).item() == pytest.approx(0.0, abs=1e-12)


# ---------------------------------------------------------------- nst


def np_nst(fs, ft, degree=2, c=0.0):
    out = []
    for s, t in zip(fs, ft):
        s = s.reshape(len(s), -1)
        t = t.reshape(len(t), -1)
        s = s / np.linalg.norm(s, axis=1, keepdims=True)
        t = t / np.linalg.norm(t, axis=1, keepdims=True)

        def k(a, b):
            return np.mean([(float(x @ y) + c) ** degree for x in a for y in b])

        out.append(k(t, t) + k(s, s) - 2 * k(t, s))
    return 0.5 * np.mean(out)


@pytest.mark.parametrize("degree", [1, 2])
def test_nst_matches_numpy_reference(degree):
    fs, ft = rand(2, 3, 4, 4, seed=24), rand(2, 5, 2, 2, seed=25)
    got = create_loss("nst", [(3, 4, 4)], [(5, 2, 2)], degree=degree)([fs], [ft]).item()
    assert got == pytest.approx(np_nst(block_mean(A(fs), 2, 2), A(ft), degree), rel=1e-10)


def test_nst_zero_for_same_channel_set():
    ft = rand(2, 4, 3, 3, seed=26)
    perm = ft[:, [2, 0, 3, 1]] * 5.0  # channels permuted and rescaled: same normalised set
    assert create_loss("nst", [(4, 3, 3)], [(4, 3, 3)])([perm], [ft]).item() == pytest.approx(0.0, abs=1e-12)


# ---------------------------------------------------------------- ab


def test_ab_by_hand_with_identity_connector():
    loss = create_loss("ab", [(4,)], [(4,)], form="paper", margin=1.0)
    loss.connectors[0] = nn.Identity()
    s = torch.tensor([[2.0, 0.5, -3.0, 0.0]])
    t = torch.tensor([[1.0, 1.0, -1.0, -1.0]])
    # active & r ≥ μ: 0; active & r = .5: (1 − .5)²; inactive & r ≤ −μ: 0; inactive & r = 0: (1 + 0)²
    assert loss([s], [t]).item() == pytest.approx(0.25 + 1.0)


def test_ab_matches_numpy_reference():
    loss = create_loss("ab", [(3, 2, 2)], [(2, 2, 2)], form="paper", margin=0.5, layer_weights=[2.0])
    fs, ft = rand(4, 3, 2, 2, seed=27), rand(4, 2, 2, 2, seed=28)
    w = A(loss.connectors[0][0].weight)[:, :, 0, 0]
    r = np.einsum("oc,bchw->bohw", w, A(fs))
    mu, var = r.mean(axis=(0, 2, 3), keepdims=True), r.var(axis=(0, 2, 3), keepdims=True)
    r = (r - mu) / np.sqrt(var + 1e-5)  # batch norm, training mode, γ = 1, β = 0
    t = A(ft)
    per = np.where(t > 0, np.maximum(0.5 - r, 0) ** 2, np.maximum(0.5 + r, 0) ** 2)
    expected = 2.0 * per.reshape(4, -1).sum(axis=1).mean()
    assert loss([fs], [ft]).item() == pytest.approx(expected, rel=1e-9)
    assert loss.requires_pretraining and not loss.active_in_main_phase


# ---------------------------------------------------------------- ft


def test_ft_factor_distance_matches_numpy_reference():
    fs, ft = rand(3, 2, 4, 4, seed=29), rand(3, 4, 4, 4, seed=30)
    for form in ("code", "paper"):
        loss = create_loss("ft", [(2, 4, 4)], [(4, 4, 4)], form=form)
        loss.train()
        got = loss([fs], [ft]).item()
        f_s = A(loss.student_factor(0, fs, (4, 4))).reshape(3, -1)
        f_t = A(loss.teacher_factor(0, ft)).reshape(3, -1)
        assert f_t.shape[1] == 2 * 16  # rate 0.5: 2 factor channels
        d = f_s / np.linalg.norm(f_s, axis=1, keepdims=True) - f_t / np.linalg.norm(f_t, axis=1, keepdims=True)
        expected = np.mean(np.abs(d)) if form == "code" else np.mean(np.abs(d).sum(axis=1))
        assert got == pytest.approx(expected, rel=1e-9)


def test_ft_paraphraser_is_frozen_in_main_phase_and_trained_in_pretraining():
    loss = create_loss("ft", [(2, 4, 4)], [(4, 4, 4)], form="paper")
    fs, ft = rand(3, 2, 4, 4, seed=31).requires_grad_(True), rand(3, 4, 4, 4, seed=32)
    running = loss.paraphrasers[0].encoder[1].running_mean.clone()
    loss([fs], [ft]).backward()
    assert all(p.grad is None for p in loss.paraphrasers.parameters())
    assert all(p.grad is not None for p in loss.translators.parameters())
    assert torch.equal(loss.paraphrasers[0].encoder[1].running_mean, running)
    assert loss.requires_pretraining and not loss.pretrain_trains_student
    rec = loss.pretrain_loss([fs], [ft])
    recon = loss.paraphrasers[0](ft)
    assert recon.shape == ft.shape
    rec.backward()
    assert all(p.grad is not None for p in loss.pretrain_parameters())


# ---------------------------------------------------------------- fsp


def np_fsp(f1, f2):
    b, m, h, w = f1.shape
    n = f2.shape[1]
    g = np.zeros((b, m, n))
    for x, i, j in itertools.product(range(b), range(m), range(n)):
        g[x, i, j] = np.sum(f1[x, i] * f2[x, j]) / (h * w)
    return g


def test_fsp_matches_numpy_reference_over_consecutive_layers():
    s_shapes, t_shapes = [(2, 4, 4), (3, 4, 4), (3, 2, 2)], [(2, 8, 8), (3, 4, 4), (3, 4, 4)]
    fs = [rand(2, *s, seed=40 + k) for k, s in enumerate(s_shapes)]
    ft = [rand(2, *t, seed=50 + k) for k, t in enumerate(t_shapes)]
    got = create_loss("fsp", s_shapes, t_shapes)(fs, ft).item()
    s, t = [A(f) for f in fs], [A(f) for f in ft]
    terms = [
        np.mean((np_fsp(block_mean(t[0], 4, 4), t[1]) - np_fsp(s[0], s[1])) ** 2),
        np.mean((np_fsp(t[1], t[2]) - np_fsp(block_mean(s[1], 2, 2), s[2])) ** 2),
    ]
    assert got == pytest.approx(sum(terms), rel=1e-10)


def test_fsp_needs_equal_channels_and_two_layers():
    with pytest.raises(KdlensError, match="equal channel counts"):
        create_loss("fsp", [(2, 4, 4), (3, 4, 4)], [(4, 4, 4), (3, 4, 4)])
    with pytest.raises(KdlensError, match="at least 2"):
        create_loss("fsp", [(2, 4, 4)], [(2, 4, 4)])


# ---------------------------------------------------------------- crd


def np_crd(loss, fs, ft, idx, contrast, n_data, T):
    ws, bs = A(loss.embed_s[0].weight), A(loss.embed_s[0].bias)
    wt, bt = A(loss.embed_t[0].weight), A(loss.embed_t[0].bias)
    vs = A(fs).reshape(len(fs), -1) @ ws.T + bs
    vt = A(ft).reshape(len(ft), -1) @ wt.T + bt
    vs /= np.linalg.norm(vs, axis=1, keepdims=True)
    vt /= np.linalg.norm(vt, axis=1, keepdims=True)
    mem_s, mem_t = A(loss.memory_s0).copy(), A(loss.memory_t0).copy()
    k = contrast.shape[1] - 1

    def nce(anchor, bank):
        x = np.array([[math.exp(bank[c] @ a / T) for c in row] for a, row in zip(anchor, contrast)])
        x = x / (x.mean() * n_data)
        m = k / n_data
        return -np.mean([math.log(r[0] / (r[0] + m)) + sum(math.log(m / (v + m)) for v in r[1:]) for r in x])

    expected = nce(vs, mem_t) + nce(vt, mem_s)
    new_s = {i: (0.5 * mem_s[i] + 0.5 * v) / np.linalg.norm(0.5 * mem_s[i] + 0.5 * v) for i, v in zip(idx, vs)}
    return expected, new_s


def test_crd_matches_numpy_reference_and_updates_memory():
    n_data, k = 12, 4
    loss = create_loss("crd", [(3,)], [(2, 2, 2)], n_data=n_data, embed_dim=5, nce_k=k, nce_t=0.5)
    fs, ft = rand(3, 3, seed=60), rand(3, 2, 2, 2, seed=61)
    idx = torch.tensor([4, 0, 9])
    contrast = torch.tensor([[4, 1, 2, 3, 5], [0, 6, 7, 8, 9], [9, 10, 11, 0, 1]])
    expected, new_s = np_crd(loss, fs, ft, idx.numpy(), contrast.numpy(), n_data, 0.5)
    before = loss.memory_s0.clone()
    got = loss([fs], [ft], indices=idx, contrast_idx=contrast).item()
    assert got == pytest.approx(expected, rel=1e-9)
    for i, row in new_s.items():
        assert np.allclose(A(loss.memory_s0)[i], row, atol=1e-12)
    untouched = [i for i in range(n_data) if i not in new_s]
    assert torch.equal(loss.memory_s0[untouched], before[untouched])
    z = loss.z_s0.item()
    loss([fs * 2], [ft], indices=idx, contrast_idx=contrast)
    assert loss.z_s0.item() == z  # the normaliser is fixed after the first batch


def test_crd_negative_sampling_excludes_positive_and_is_seeded():
    loss = create_loss("crd", [(3,)], [(3,)], n_data=6, nce_k=50, seed=1)
    idx = torch.tensor([0, 5, 2])
    c = loss.sample_contrast(idx)
    assert c.shape == (3, 51) and torch.equal(c[:, 0], idx)
    assert not (c[:, 1:] == idx[:, None]).any() and c.min() >= 0 and c.max() < 6
    other = create_loss("crd", [(3,)], [(3,)], n_data=6, nce_k=50, seed=1)
    assert torch.equal(other.sample_contrast(idx), c)


def test_crd_memory_untouched_in_eval_and_needs_indices():
    loss = create_loss("crd", [(3,)], [(3,)], n_data=8, nce_k=3)
    before = loss.memory_t0.clone()
    loss.eval()
    loss([rand(2, 3)], [rand(2, 3, seed=1)], indices=torch.tensor([1, 2]))
    assert torch.equal(loss.memory_t0, before)
    with pytest.raises(KdlensError, match="indices"):
        loss([rand(2, 3)], [rand(2, 3, seed=1)])
    assert "memory_s0" in loss.state_dict()
