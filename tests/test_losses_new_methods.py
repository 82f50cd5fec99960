"""AFD, ReviewKD, OFD, KD-SVD, DIST and logit-standardised KD (issue 16).

Hand-worked values on tiny tensors, independent float64 formulas (numpy, written here
from the papers / authors' code, not from kdlens), gradients to the student features and
to the losses' own modules, several layer-pair shapes, and one end-to-end distillation
per method on digits."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from kdlens.config import DistillConfig, TrainConfig, validate
from kdlens.distill import METHODS, build_objective, create_loss, describe_methods
from kdlens.distill.losses.kdsvd import _TopRightSingularVectors
from kdlens.distill.losses.ofd import gaussian_negative_mean, margins_from_batchnorm, partial_l2
from kdlens.distill.losses.reviewkd import ABF, hierarchical_context_loss
from kdlens.errors import KdlensError

NEW = ("afd", "reviewkd", "ofd", "kdsvd", "dist", "lskd")
HINT = ("afd", "reviewkd", "ofd", "kdsvd")


@pytest.fixture
def f64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def A(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy().astype(np.float64)


def np_softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def np_batchnorm(x: np.ndarray, bn: nn.Module) -> np.ndarray:
    """Training-mode batch norm over axis 0 (and spatial axes for maps): biased variance."""
    axes = (0,) if x.ndim == 2 else (0, 2, 3)
    shape = (1, -1) if x.ndim == 2 else (1, -1, 1, 1)
    mean, var = x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True)
    return (x - mean) / np.sqrt(var + bn.eps) * A(bn.weight).reshape(shape) + A(bn.bias).reshape(shape)


# ---------------------------------------------------------------- DIST


def test_dist_hand_worked_opposite_rankings():
    # two classes: every row and every column of the student ranks opposite to the teacher,
    # so all Pearson correlations are −1 and L_inter = L_intra = 2
    zs = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    zt = torch.tensor([[0.0, 3.0], [1.0, 0.0]])
    assert create_loss("dist")(zs, zt).item() == pytest.approx(4.0, rel=1e-6)
    assert create_loss("dist", beta_inter=1.0, gamma_intra=0.5)(zs, zt).item() == pytest.approx(3.0, rel=1e-6)
    assert create_loss("dist", T=2.0)(zs, zt).item() == pytest.approx(16.0, rel=1e-6)  # τ² (2 + 2)
    # the same rankings: correlation 1 in every row and column → 0
    assert create_loss("dist")(zs, 5 * zs + 1).item() == pytest.approx(0.0, abs=1e-6)


def test_dist_matches_numpy_pearson(f64):
    zs, zt = rand(5, 4, seed=1) * 2, rand(5, 4, seed=2) * 3
    T, beta, gamma = 4.0, 2.0, 0.5
    ys, yt = np_softmax(A(zs) / T), np_softmax(A(zt) / T)
    inter = 1 - np.mean([np.corrcoef(ys[b], yt[b])[0, 1] for b in range(5)])
    intra = 1 - np.mean([np.corrcoef(ys[:, k], yt[:, k])[0, 1] for k in range(4)])
    expected = T**2 * (beta * inter + gamma * intra)
    got = create_loss("dist", T=T, beta_inter=beta, gamma_intra=gamma)(zs, zt).item()
    assert got == pytest.approx(expected, rel=1e-6)


# ---------------------------------------------------------------- LSKD


@pytest.mark.parametrize("form, z", [("code", 1 / math.sqrt(2)), ("paper", 1.0)])
@pytest.mark.parametrize("T", [1.0, 2.0])
def test_lskd_two_classes_closed_form(form, z, T):
    # K = 2: any two distinct logits standardise to ±z (z = 1/√2 with the 1/(K−1) σ, 1 with 1/K);
    # opposite rankings give KL = (2p − 1)·a with a = 2z/T, p = σ(a)
    zt = torch.tensor([[5.0, 1.0]])
    zs = torch.tensor([[-2.0, 4.0]])
    a = 2 * z / T
    p = 1 / (1 + math.exp(-a))
    expected = T**2 * (2 * p - 1) * a
    assert create_loss("lskd", T=T, form=form)(zs, zt).item() == pytest.approx(expected, rel=1e-6)


def test_lskd_ignores_logit_shift_and_scale_unlike_kd():
    zt = torch.tensor([[1.0, -2.0, 0.5, 3.0], [0.0, 0.2, -1.0, 0.1]])
    zs = 3 * zt + 7
    assert create_loss("lskd")(zs, zt).item() == pytest.approx(0.0, abs=1e-6)
    assert create_loss("kd")(zs, zt).item() > 0.1


@pytest.mark.parametrize("form, ddof", [("code", 1), ("paper", 0)])
def test_lskd_matches_numpy_formula(f64, form, ddof):
    zs, zt = rand(4, 6, seed=3) * 2, rand(4, 6, seed=4) * 5 + 1
    T = 2.0

    def z(x):
        return (x - x.mean(axis=1, keepdims=True)) / (x.std(axis=1, ddof=ddof, keepdims=True) + 1e-7)

    p_t, p_s = np_softmax(z(A(zt)) / T), np_softmax(z(A(zs)) / T)
    expected = T**2 * np.mean(np.sum(p_t * (np.log(p_t) - np.log(p_s)), axis=1))
    assert create_loss("lskd", T=T, form=form)(zs, zt).item() == pytest.approx(expected, rel=1e-10)


def test_lskd_rejects_unknown_form():
    with pytest.raises(KdlensError, match="form must be one of code, paper"):
        create_loss("lskd", form="zscore")


# ---------------------------------------------------------------- AFD


def _uniform_attention(loss):
    """Zero the bilinear key map and the positional embeddings: all attention logits 0."""
    with torch.no_grad():
        loss.bilinear[0].weight.zero_()
        loss.bilinear[0].bias.zero_()
        loss.pos_t.zero_()
        loss.pos_s.zero_()


def test_afd_hand_worked_uniform_attention(f64):
    # φ(F) = vec(mean_c F²)/‖·‖: s1 (all ones) → [.5]*4, s2 = [[2,0],[0,0]] → [1,0,0,0],
    # t1 = [[3,0],[0,0]] → [1,0,0,0], t2 (1×1) → [1].  Teacher 1: ½(mean(.5−[1,0,0,0])² + 0) = ½·.25;
    # teacher 2: both students pool to one cell → 0.  Total 0.125.
    one = lambda v: torch.tensor(v, dtype=torch.float64).reshape(1, 1, *np.shape(v)).repeat(2, 1, 1, 1)  # noqa: E731
    s = [one([[1.0, 1.0], [1.0, 1.0]]), one([[2.0, 0.0], [0.0, 0.0]])]
    t = [one([[3.0, 0.0], [0.0, 0.0]]), one([[5.0]])]
    loss = create_loss("afd", [(1, 2, 2), (1, 2, 2)], [(1, 2, 2), (1, 1, 1)], qk_dim=4)
    _uniform_attention(loss)
    att = loss.attention(s, t)
    assert torch.allclose(att, torch.full_like(att, 0.5))
    assert loss(s, t).item() == pytest.approx(0.125, abs=1e-12)


def test_afd_single_pair_attends_fully(f64):
    # one student layer: softmax over one link is 1, whatever the parameters
    s = [torch.ones(2, 1, 2, 2, dtype=torch.float64)]
    t = [torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]]).repeat(2, 1, 1, 1)]
    assert create_loss("afd", [(1, 2, 2)], [(1, 2, 2)])(s, t).item() == pytest.approx(0.25, abs=1e-12)


def np_afd(loss, fs, ft) -> float:
    """AFD from its equations (numpy, float64), with the module's parameters and batch-norm batch statistics."""
    fs, ft = [A(f) for f in fs], [A(f) for f in ft]
    b, n_s, n_t, d = fs[0].shape[0], len(fs), len(ft), loss.qk_dim

    def lin(x, seq):
        return x @ A(seq[0].weight).T + A(seq[0].bias)

    q = np.stack([np_batchnorm(lin(f.mean(axis=(2, 3)), loss.query[i]), loss.query[i][1]) for i, f in enumerate(ft)], 1)
    k = np.stack([np.maximum(np_batchnorm(lin(f.mean(axis=(2, 3)), loss.key[i]), loss.key[i][1]), 0)
                  for i, f in enumerate(fs)], 1)
    kb = np_batchnorm(lin(k.reshape(b * n_s, d), loss.bilinear), loss.bilinear[1]).reshape(b, n_s, n_t, d)
    logits = np.einsum("bstd,btd->bts", kb, q) + A(loss.pos_t) @ A(loss.pos_s).T
    e = np.exp(logits / math.sqrt(d))
    att = e / e.sum(axis=2, keepdims=True)

    def energy(f, size):
        m = (f**2).mean(axis=1)  # (B, H, W)
        h, w = m.shape[1:]
        if h > size[0]:  # block means
            m = m.reshape(b, size[0], h // size[0], size[1], w // size[1]).mean(axis=(2, 4))
        elif h < size[0]:  # adaptive pooling to a larger grid replicates cells
            m = m.repeat(size[0] // h, axis=1).repeat(size[1] // w, axis=2)
        v = m.reshape(b, -1)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    total = 0.0
    for ti, f_t in enumerate(ft):
        size = f_t.shape[2:]
        v_t = energy(f_t, size)
        for si, f_s in enumerate(fs):
            diff = ((energy(f_s, size) - v_t) ** 2).mean(axis=1)
            total += np.mean(att[:, ti, si] * diff)
    return total


def test_afd_matches_its_equations(f64):
    s_shapes, t_shapes = [(3, 4, 4), (5, 2, 2)], [(4, 4, 4), (6, 2, 2)]
    fs = [rand(6, *s, seed=10 + i).relu() for i, s in enumerate(s_shapes)]
    ft = [rand(6, *t, seed=20 + i).relu() for i, t in enumerate(t_shapes)]
    torch.manual_seed(0)
    loss = create_loss("afd", s_shapes, t_shapes, qk_dim=8)
    with torch.no_grad():  # non-trivial BN affine parameters
        for m in loss.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    assert loss(fs, ft).item() == pytest.approx(np_afd(loss, fs, ft), rel=1e-10)


def test_afd_attends_over_every_teacher_student_link(f64):
    s_shapes, t_shapes = [(4, 8, 8), (8, 4, 4), (16, 2, 2)], [(8, 8, 8), (16, 4, 4), (32, 2, 2)]
    loss = create_loss("afd", s_shapes, t_shapes)
    fs = [rand(5, *s, seed=i) for i, s in enumerate(s_shapes)]
    ft = [rand(5, *t, seed=9 + i) for i, t in enumerate(t_shapes)]
    att = loss.attention(fs, ft)
    assert att.shape == (5, 3, 3)
    assert torch.allclose(att.sum(dim=2), torch.ones(5, 3))
    assert (att > 0).all()  # all n × n links carry weight, not only the i ↔ i pairs
    with pytest.raises(KdlensError, match="convolutional feature maps"):
        create_loss("afd", [(4,)], [(4,)])


# ---------------------------------------------------------------- ReviewKD


def test_hcl_hand_worked(f64):
    # 4×4 checkerboard of ±1 vs zeros: MSE 1; its 2×2 and 1×1 poolings are 0 (level 4 skipped: 4 ≥ h)
    board = torch.tensor([[(-1.0) ** (i + j) for j in range(4)] for i in range(4)]).reshape(1, 1, 4, 4)
    assert hierarchical_context_loss(torch.zeros_like(board), board).item() == pytest.approx(1 / 1.75)
    # 8×8 with ones in the top-left quadrant vs zeros: MSEs .25 (8×8), .25 (4×4), .25 (2×2), 1/16 (1×1),
    # weights 1, 1/2, 1/4, 1/8 over their sum 1.875
    quad = torch.zeros(1, 1, 8, 8)
    quad[..., :4, :4] = 1.0
    expected = (0.25 + 0.25 / 2 + 0.25 / 4 + 0.0625 / 8) / 1.875
    assert hierarchical_context_loss(torch.zeros_like(quad), quad).item() == pytest.approx(expected)
    # a 1×1 level (pooled features) is a plain MSE
    v = torch.tensor([1.0, 3.0]).reshape(1, 2, 1, 1)
    assert hierarchical_context_loss(torch.zeros_like(v), v).item() == pytest.approx(5.0)


def test_abf_fusion_hand_worked(f64):
    # eval-mode BN with running stats (0, 1 − ε) is the identity; conv1 = 1; attention logits = biases
    abf = ABF(1, 1, 1, fuse=True).eval()
    for bn in (abf.conv1[1], abf.conv2[1]):
        bn.running_var.fill_(1 - bn.eps)
    with torch.no_grad():
        abf.conv1[0].weight.fill_(1.0)
        abf.att_conv[0].weight.zero_()
        abf.att_conv[0].bias.copy_(torch.tensor([0.0, math.log(3.0)]))  # σ = 1/2, 3/4
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 1, 2, 2)
    residual = torch.tensor([[[[8.0]]]])  # from the deeper level, upsampled (nearest) to 2×2
    _, fused = abf(x, residual, (2, 2))
    assert torch.allclose(fused, 0.5 * x + 0.75 * 8.0)
    _, resized = abf(x, residual, (4, 4))  # then resized to the teacher's 4×4, nearest
    assert torch.equal(resized, torch.nn.functional.interpolate(fused, size=(4, 4), mode="nearest"))


def test_reviewkd_reviews_deeper_levels_into_teacher_shapes(f64):
    s_shapes = [(16, 8, 8), (32, 4, 4), (64, 2, 2), (64,)]
    t_shapes = [(16, 8, 8), (32, 4, 4), (64, 2, 2), (128,)]
    loss = create_loss("reviewkd", s_shapes, t_shapes)
    assert [abf.att_conv is None for abf in loss.abfs] == [False, False, False, True]  # the deepest has no fusion
    assert loss.abfs[0].conv1[0].out_channels == 64  # mid = min(512, C of the deepest student layer)
    fs = [rand(4, *s, seed=i).requires_grad_(True) for i, s in enumerate(s_shapes)]
    outs = loss.reviewed(fs)
    assert [tuple(o.shape[1:]) for o in outs] == [(16, 8, 8), (32, 4, 4), (64, 2, 2), (128, 1, 1)]
    outs[0].sum().backward()  # the shallowest output reviews every deeper student level
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in fs)
    fs2 = [f.detach().requires_grad_(True) for f in fs]
    loss.reviewed(fs2)[-1].sum().backward()  # the deepest sees only itself
    assert fs2[0].grad is None and fs2[-1].grad.abs().sum() > 0
    assert create_loss("reviewkd", s_shapes, t_shapes, max_mid_channels=16).abfs[0].conv1[0].out_channels == 16


# ---------------------------------------------------------------- OFD


def test_ofd_margin_hand_worked(f64):
    # N(0, 1): E[x | x < 0] = −φ(0)/Φ(0) = −√(2/π); almost no negatives (μ = 4σ, Φ(−4) < 0.001): −3σ
    m = gaussian_negative_mean(torch.tensor([0.0, 4.0, 0.0]), torch.tensor([1.0, 1.0, 2.0]))
    assert torch.allclose(m, torch.tensor([-math.sqrt(2 / math.pi), -3.0, -2 * math.sqrt(2 / math.pi)]))
    bn = nn.BatchNorm2d(2)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([-2.0, 1.0]))  # σ = |γ|
        bn.bias.copy_(torch.tensor([0.0, -1.0]))
    # μ = −1, σ = 1: −1 − φ(1)/Φ(1)
    phi1, cdf1 = math.exp(-0.5) / math.sqrt(2 * math.pi), 0.5 * math.erfc(-1 / math.sqrt(2))
    assert torch.allclose(margins_from_batchnorm(bn), torch.tensor([-2 * math.sqrt(2 / math.pi), -1 - phi1 / cdf1]))


def _identity_connector(loss):
    """Eval mode with BN running statistics (0, 1 − ε) and a unit 1×1 conv: r(S) = S."""
    loss.eval()
    for conn in loss.connectors:
        conn[1].running_var.fill_(1 - conn[1].eps)
        with torch.no_grad():
            conn[0].weight.copy_(torch.eye(conn[0].out_channels)[:, :, None, None])


def test_ofd_partial_l2_hand_worked(f64):
    # margin m = −1: teacher [−3, −3, .5, −.2] → max(t, m) = [−1, −1, .5, −.2];
    # student −2 ≤ −1 ≤ 0: 0; −.5 > −1: .25; teacher positive: (1 − .5)² = .25; −1 ≤ −.2 ≤ 0: 0
    s = torch.tensor([[-2.0, -0.5], [1.0, -1.0]]).reshape(1, 1, 2, 2)
    t = torch.tensor([[-3.0, -3.0], [0.5, -0.2]]).reshape(1, 1, 2, 2)
    assert partial_l2(s, torch.maximum(t, torch.tensor(-1.0))).item() == pytest.approx(0.5)
    loss = create_loss("ofd", [(1, 2, 2)], [(1, 2, 2)])
    _identity_connector(loss)
    loss.set_margins([torch.tensor([-1.0])])
    assert loss([s], [t]).item() == pytest.approx(0.5)
    # layer weights 2^-(n-1-i): two identical pairs count ½ + 1
    two = create_loss("ofd", [(1, 2, 2)] * 2, [(1, 2, 2)] * 2)
    _identity_connector(two)
    two.set_margins([torch.tensor([-1.0])] * 2)
    assert two([s, s], [t, t]).item() == pytest.approx(0.75)


def test_ofd_margins_estimated_once_from_teacher_features(f64):
    # channel 0: values ±1 (μ 0, σ 1) → −√(2/π); channel 1: values 2, 4 (μ 3, σ 1) → 3 − φ(3)/Φ(−3)
    t = torch.empty(2, 2, 2, 2)
    t[:, 0] = torch.tensor([[1.0, -1.0], [-1.0, 1.0]])
    t[:, 1] = torch.tensor([[2.0, 4.0], [4.0, 2.0]])
    loss = create_loss("ofd", [(3, 2, 2)], [(2, 2, 2)])
    assert torch.isnan(loss.margin(0)).all()
    loss([rand(2, 3, 2, 2)], [t])
    phi3, cdf3 = math.exp(-4.5) / math.sqrt(2 * math.pi), 0.5 * math.erfc(3 / math.sqrt(2))
    expected = torch.tensor([-math.sqrt(2 / math.pi), 3 - phi3 / cdf3])
    assert torch.allclose(loss.margin(0), expected)
    loss([rand(2, 3, 2, 2, seed=1)], [t * 5 - 3])  # later batches leave the margins alone
    assert torch.allclose(loss.margin(0), expected)
    assert torch.allclose(loss.state_dict()["margin0"], expected)  # saved with checkpoints
    with pytest.raises(KdlensError, match="expected 1 margin tensors"):
        loss.set_margins([])


def test_ofd_matches_its_equations(f64):
    s_shapes, t_shapes = [(3, 4, 4), (4, 2, 2)], [(5, 8, 8), (6, 2, 2)]
    fs = [rand(4, *s, seed=30 + i) for i, s in enumerate(s_shapes)]
    ft = [rand(4, *t, seed=40 + i) - 0.5 for i, t in enumerate(t_shapes)]
    loss = create_loss("ofd", s_shapes, t_shapes)
    margins = [-rand(t[0], seed=50 + i).abs() for i, t in enumerate(t_shapes)]
    loss.set_margins(margins)
    expected = 0.0
    for i, (f_s, f_t) in enumerate(zip(fs, ft)):
        conv, bn = loss.connectors[i]
        s = np_batchnorm(np.einsum("oc,bchw->bohw", A(conv.weight)[:, :, 0, 0], A(f_s)), bn)
        t = A(f_t)
        b, c, h, w = t.shape
        hs = s.shape[2]
        t = t.reshape(b, c, hs, h // hs, hs, w // hs).mean(axis=(3, 5))  # teacher pooled to the student's size
        t = np.maximum(t, A(margins[i]).reshape(1, -1, 1, 1))
        d = np.where((s <= t) & (t <= 0), 0.0, (t - s) ** 2)
        expected += d.reshape(b, -1).sum(axis=1).mean() / 2 ** (len(fs) - 1 - i)
    assert loss(fs, ft).item() == pytest.approx(expected, rel=1e-10)


# ---------------------------------------------------------------- KD-SVD


def _rank_one(v: list[float], u: list[float]) -> torch.Tensor:
    """One sample whose HW × C matrix is u vᵀ (u over the 2×2 positions), as a (1, C, 2, 2) map."""
    m = torch.tensor(u)[:, None] * torch.tensor(v)[None, :]  # (HW, C)
    return m.t().reshape(1, len(v), 2, 2)


def test_kdsvd_hand_worked_rank_one(f64):
    # right singular vectors: teacher (1, 0) then (0, 1); student (1, 0) then (.6, .8) (its other
    # vector (.8, −.6) has |cos| .6 < .8 with the teacher's, so (.6, .8) is picked, sign +).
    # Graphs G[a, b] = exp(−(v₂[a] − v₁[b])²/8); k = 1, so the singular-value weight is 1.
    u = [1.0, 2.0, -1.0, 0.5]
    ft = [_rank_one([1.0, 0.0], u), _rank_one([0.0, 1.0], u)]
    fs = [_rank_one([1.0, 0.0], u), _rank_one([0.6, 0.8], u)]
    e = math.exp
    g_t = [[e(-1 / 8), 1.0], [1.0, e(-1 / 8)]]
    g_s = [[e(-0.16 / 8), e(-0.36 / 8)], [e(-0.04 / 8), e(-0.64 / 8)]]
    expected = sum((g_s[a][b] - g_t[a][b]) ** 2 for a in range(2) for b in range(2))
    loss = create_loss("kdsvd", [(2, 2, 2)] * 2, [(2, 2, 2)] * 2)
    assert loss(fs, ft).item() == pytest.approx(expected, rel=1e-9)
    assert loss(ft, ft).item() == pytest.approx(0.0, abs=1e-12)


def np_kdsvd(fs, ft, k: int, form: str) -> float:
    """KD-SVD from the paper / authors' TF code in numpy (np.linalg.svd per sample)."""

    def matrix(f):
        f = A(f)
        b, c, h, w = f.shape
        return f.transpose(0, 2, 3, 1).reshape(b, h * w, c) if form == "paper" else f.reshape(b, c * h, w)

    def top(x, n):
        out_s, out_v = [], []
        for m in x:
            _, s, vh = np.linalg.svd(m, full_matrices=False)
            out_s.append(s[:n])
            out_v.append(vh[:n].T)
        return np.stack(out_s), np.stack(out_v)

    total, prev = 0.0, None
    for f_s, f_t in zip(fs, ft):
        s_t, v_t = top(matrix(f_t), k)
        _, v_s = top(matrix(f_s), k + 3)
        for b in range(v_t.shape[0]):
            for j in range(v_t.shape[2]):
                if v_t[b, np.argmax(np.abs(v_t[b, :, j])), j] < 0:
                    v_t[b, :, j] *= -1
        cos = np.einsum("bdi,bdj->bij", v_s, v_t)
        pick = np.abs(cos).argmax(axis=1)  # (B, k)
        v_a = np.stack([np.stack([v_s[b, :, pick[b, j]] * np.sign(cos[b, pick[b, j], j]) for j in range(k)], 1)
                        for b in range(v_s.shape[0])])
        wgt = (s_t / np.linalg.norm(s_t, axis=1, keepdims=True))[:, None, :]
        v_a, v_t = v_a * wgt, v_t * wgt
        if prev is not None:
            g_s = np.exp(-((v_a[:, :, None, :] - prev[0][:, None, :, :]) ** 2) / 8)
            g_t = np.exp(-((v_t[:, :, None, :] - prev[1][:, None, :, :]) ** 2) / 8)
            total += ((g_s - g_t) ** 2).reshape(len(g_s), -1).sum(axis=1).mean()
        prev = (v_a, v_t)
    return total


@pytest.mark.parametrize("form, shapes", [
    ("paper", [(4, 6, 6), (8, 3, 3), (8, 3, 3)]),
    ("mdistiller", [(4, 8, 8), (8, 8, 8), (16, 4, 4)]),
])
@pytest.mark.parametrize("k", [1, 2])
def test_kdsvd_matches_numpy_svd(f64, form, shapes, k):
    fs = [rand(3, *s, seed=60 + i) for i, s in enumerate(shapes)]
    ft = [rand(3, *s, seed=70 + i) for i, s in enumerate(shapes)]
    got = create_loss("kdsvd", shapes, shapes, k=k, form=form)(fs, ft).item()
    assert got == pytest.approx(np_kdsvd(fs, ft, k, form), rel=1e-9)


@pytest.mark.parametrize("rows, cols, n", [(16, 6, 3), (4, 9, 4), (9, 9, 4)])
def test_kdsvd_singular_vector_gradient_is_the_svd_gradient(f64, rows, cols, n):
    x = rand(3, rows, cols, seed=rows).requires_grad_(True)
    w = rand(3, cols, n, seed=1)
    (_TopRightSingularVectors.apply(x, n) * w).sum().backward()
    ours, x.grad = x.grad.clone(), None
    v_ref = torch.linalg.svd(x, full_matrices=False)[2].mT[..., :n]
    v_ours = _TopRightSingularVectors.apply(x.detach(), n)
    sign = torch.sign((v_ref * v_ours).sum(dim=-2, keepdim=True)).detach()
    (v_ref * sign * w).sum().backward()
    assert torch.allclose(ours, x.grad, atol=1e-9)


def test_kdsvd_gradient_is_finite_on_rank_deficient_maps(f64):
    x = rand(2, 16, 8)
    x[:, :, 5:] = 0  # dead channels: repeated zero singular values
    x.requires_grad_(True)
    u, s, vh = torch.linalg.svd(x, full_matrices=False)
    (vh[:, :4] ** 2 * torch.arange(8.0)).sum().backward()
    assert not torch.isfinite(x.grad).all()  # torch's full-SVD backward divides 0 by 0
    x.grad = None
    (_TopRightSingularVectors.apply(x, 4) ** 2 * torch.arange(8.0)[:, None]).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_kdsvd_connects_unequal_channels_and_needs_two_pairs():
    loss = create_loss("kdsvd", [(3, 4, 4), (4, 2, 2)], [(5, 8, 8), (4, 4, 4)])
    assert isinstance(loss.connectors[0], nn.Conv2d) and isinstance(loss.connectors[1], nn.Identity)
    assert all(isinstance(c, nn.Identity) for c in create_loss("kdsvd", [(3, 4, 4)] * 2, [(5, 8, 8)] * 2,
                                                               form="mdistiller").connectors)
    with pytest.raises(KdlensError, match="at least 2 layer pair"):
        create_loss("kdsvd", [(3, 4, 4)], [(3, 4, 4)])


# ---------------------------------------------------------------- all hint methods

SHAPE_SETS = {
    "one pair, equal": ([(8, 4, 4)], [(8, 4, 4)]),
    "three pairs, wider teacher": ([(4, 8, 8), (8, 4, 4), (16, 2, 2)], [(8, 8, 8), (16, 4, 4), (32, 2, 2)]),
    "student maps larger": ([(6, 8, 8), (6, 4, 4)], [(3, 4, 4), (5, 2, 2)]),
}


@pytest.mark.parametrize("shapes", list(SHAPE_SETS), ids=list(SHAPE_SETS))
@pytest.mark.parametrize("name", HINT)
def test_gradients_reach_student_features_and_the_loss_modules(name, shapes):
    s_shapes, t_shapes = SHAPE_SETS[shapes]
    if name == "kdsvd" and len(s_shapes) < 2:
        pytest.skip("KD-SVD relates consecutive layers: two pairs at least")
    torch.manual_seed(0)
    loss = create_loss(name, s_shapes, t_shapes)
    fs = [torch.randn(6, *s, requires_grad=True) for s in s_shapes]
    ft = [torch.randn(6, *t, requires_grad=True) for t in t_shapes]
    out = loss(fs, ft)
    assert out.dim() == 0 and torch.isfinite(out) and out.item() > 0
    out.backward()
    for f in fs:
        assert f.grad is not None and torch.isfinite(f.grad).all() and f.grad.abs().sum() > 0
    assert all(f.grad is None for f in ft)  # the teacher is a fixed target
    params = list(loss.parameters())
    without_modules = name == "kdsvd" and all(s[0] == t[0] for s, t in zip(s_shapes, t_shapes))
    attention_is_constant = name == "afd" and len(s_shapes) == 1  # softmax over a single link
    if not (without_modules or attention_is_constant):
        assert params and any(p.grad is not None and p.grad.abs().sum() > 0 for p in params)
    for p in params:
        assert p.grad is None or torch.isfinite(p.grad).all()
    # connectors / fusion modules / query-key networks are in the objective, so the Trainer optimises them
    objective = build_objective(name, s_shapes, t_shapes)
    assert len(list(objective.parameters())) == len(params)


def test_reviewkd_takes_pooled_vectors_as_1x1_maps():
    loss = create_loss("reviewkd", [(4, 4, 4), (8,)], [(6, 8, 8), (12,)])
    fs = [torch.randn(3, 4, 4, 4, requires_grad=True), torch.randn(3, 8, requires_grad=True)]
    loss(fs, [torch.randn(3, 6, 8, 8), torch.randn(3, 12)]).backward()
    assert all(f.grad.abs().sum() > 0 for f in fs)


def test_single_sample_batches_are_explained():
    # batch norm in AFD's query/key networks and on ReviewKD's 1×1 levels needs two samples in training
    afd = create_loss("afd", [(2, 2, 2)], [(2, 2, 2)])
    with pytest.raises(KdlensError, match="at least 2 samples"):
        afd([torch.randn(1, 2, 2, 2)], [torch.randn(1, 2, 2, 2)])
    assert torch.isfinite(afd.eval()([torch.randn(1, 2, 2, 2)], [torch.randn(1, 2, 2, 2)]))
    review = create_loss("reviewkd", [(2, 2, 2), (4,)], [(2, 2, 2), (4,)])
    with pytest.raises(KdlensError, match="at least 2 samples"):
        review([torch.randn(1, 2, 2, 2), torch.randn(1, 4)], [torch.randn(1, 2, 2, 2), torch.randn(1, 4)])
    maps_only = create_loss("reviewkd", [(2, 2, 2)], [(2, 2, 2)])
    assert torch.isfinite(maps_only([torch.randn(1, 2, 2, 2)], [torch.randn(1, 2, 2, 2)]))


def test_methods_table_lists_the_new_methods_with_sources():
    rows = {r["name"]: r for r in describe_methods()}
    expected = {  # (γ, α, β) and the hyper-parameter defaults, from the papers / authors' code
        "afd": ((1, 0, 200), {"qk_dim": 128}),
        "reviewkd": ((1, 0, 1), {"max_mid_channels": 512}),
        "ofd": ((1, 0, 0.001), {"connector_kernel": 1}),
        "kdsvd": ((1, 0, 1), {"k": 1, "form": "paper"}),
        "dist": ((1, 2, 0), {"T": 1.0, "beta_inter": 1.0, "gamma_intra": 1.0}),
        "lskd": ((0.1, 9, 0), {"T": 2.0, "form": "code"}),
    }
    for name, (weights, hyper) in expected.items():
        row = rows[name]
        assert (row["gamma"], row["alpha"], row["beta"]) == weights, name
        assert row["hyper"] == hyper, name
        assert row["source"] and row["hyper_source"] and row["citation"] == METHODS[name].citation
    from typer.testing import CliRunner

    from kdlens.cli.main import app

    result = CliRunner().invoke(app, ["methods"], env={"COLUMNS": "400"})
    assert result.exit_code == 0
    for name in NEW:
        assert f" {name} " in result.output


# ---------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def resnet8_teacher(tmp_path_factory):
    from kdlens.train.run import run_training

    out = tmp_path_factory.mktemp("teacher")
    cfg = validate(TrainConfig, {"model": {"name": "resnet8"}, "data": {"name": "digits"},
                                 "epochs": 1, "out": str(out), "name": "t"})
    return run_training(cfg, progress=False).path


PREACT = ["layer1.0.preact", "layer2.0.preact", "layer3.0.preact"]
E2E = {
    "afd": {},  # conventional points: every resnet8 block, 3 × 3 links
    "reviewkd": {"hints": PREACT + ["penultimate"], "student_hints": ["layer1.0", "layer2.0", "layer3.0", "penultimate"]},
    "ofd": {"hints": PREACT},  # student layers follow with their .preact suffix
    "kdsvd": {},
    "dist": {},
    "lskd": {},
}


@pytest.mark.slow
@pytest.mark.parametrize("method", list(E2E))
def test_one_epoch_distillation_on_digits(resnet8_teacher, tmp_path, method):
    from kdlens.train.distill_run import run_distillation

    cfg = validate(DistillConfig, {"teacher": {"run": str(resnet8_teacher)}, "model": {"name": "resnet8"},
                                   "data": {"name": "digits"}, "epochs": 1, "out": str(tmp_path), "method": method,
                                   **E2E[method]})
    outcome = run_distillation(cfg, progress=False)
    m = outcome.metrics
    assert math.isfinite(m["final_acc"]) and m["final_acc"] > 10.0  # 10 classes: better than chance
    layers = m["hint_layers"]
    if method in HINT:
        assert len(layers["teacher"]) == len(layers["student"]) >= 3
        if method == "ofd":
            assert all(name.endswith(".preact") for name in layers["teacher"] + layers["student"])
    else:
        assert layers == {"teacher": [], "student": []}
