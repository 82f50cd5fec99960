"""RepDistiller-form losses (issue 16, "Parity with RepDistiller"): FT, PKT, AB, CC, FitNet, VID.

Each ``form="repdistiller"`` (FitNet: ``regressor="repdistiller"``) is tested against

* a hand-worked value on tiny tensors, and
* a reference written here in plain torch from RepDistiller's documented behaviour
  (``distiller_zoo/*.py``, ``models/util.py``), on float64 tensors.

These tests do not import RepDistiller.  Separately, outside the repository, each form was
run beside RepDistiller's own code (HobbitLong/RepDistiller commit
b84f547c7db6a35318d4671d7d5c4de74c822403) on identical float64 tensors with the module
weights copied across, on 2026-11-29.  Max abs differences of the loss values:
FT 0 (3 shape pairs; paraphraser reconstruction 0), PKT 3.5e-18 (B = 4, 8, 16, 64),
AB 0 (3 pairs incl. identity and stride-2 connectors; through ``Objective.pretrain_loss`` at
β = 1: 0), CC 0, FitNet 0 (2×, ½×, valid and 1×1 regressors), VID 1.1e-16; the gradients
w.r.t. the student features agreed to ≤ 3.3e-19.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdlens.distill import build_objective, create_loss
from kdlens.errors import KdlensError


@pytest.fixture(autouse=True)
def _float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def rand(*shape: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def pool_larger(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """RepDistiller's rule for maps of different height: the larger is average-pooled."""
    ha, hb = a.shape[2], b.shape[2]
    if ha > hb:
        a = F.adaptive_avg_pool2d(a, (hb, hb))
    elif ha < hb:
        b = F.adaptive_avg_pool2d(b, (ha, ha))
    return a, b


# ---------------------------------------------------------------- FT


def ref_ft_distance(factor_s: torch.Tensor, factor_t: torch.Tensor) -> torch.Tensor:
    """RepDistiller FactorTransfer(p1=2, p2=1): pool, q = mean_c F², q/‖q‖, mean |·|."""
    factor_s, factor_t = pool_larger(factor_s, factor_t)

    def att(f):
        q = f.pow(2).mean(1).reshape(f.shape[0], -1)
        return q / q.norm(dim=1, keepdim=True)

    return (att(factor_s) - att(factor_t)).abs().mean()


def test_ft_repdistiller_distance_by_hand():
    from kdlens.distill.losses.ft import factor_distance

    # teacher factor: all energy at one position → a = (1, 0, 0, 0); student: uniform → (½, ½, ½, ½)
    ft = torch.zeros(1, 2, 2, 2)
    ft[0, :, 0, 0] = torch.tensor([3.0, -4.0])
    fs = torch.full((1, 2, 2, 2), 0.7)
    assert factor_distance(fs, ft, 1.0, "repdistiller").item() == pytest.approx(0.5, abs=1e-12)
    # a sign flip of the factor leaves the attention map unchanged (not so for the flattened forms)
    assert factor_distance(-ft, ft, 1.0, "repdistiller").item() == pytest.approx(0.0, abs=1e-12)
    # flattened: F_T/‖F_T‖ has 3/5 and −4/5 at two of 8 elements; |−a − a| = 2|a| → 2 · 1.4 / 8
    assert factor_distance(-ft, ft, 1.0, "code").item() == pytest.approx(2 * 1.4 / 8, abs=1e-12)


@pytest.mark.parametrize("s_shape,t_shape", [((3, 4, 4), (4, 4, 4)), ((3, 8, 8), (4, 4, 4)), ((3, 2, 2), (6, 4, 4))])
def test_ft_repdistiller_matches_reference(s_shape, t_shape):
    loss = create_loss("ft", [s_shape], [t_shape])
    assert loss.form == "repdistiller"
    loss.train()
    fs, ft = rand(4, *s_shape, seed=1), rand(4, *t_shape, seed=2)
    para = loss.paraphrasers[0]
    para.eval()
    with torch.no_grad():
        factor_t = para.encoder(ft)
    factor_s = loss.translators[0](fs)
    assert loss([fs], [ft]).item() == pytest.approx(ref_ft_distance(factor_s, factor_t).item(), rel=1e-12)


def test_ft_repdistiller_paraphraser_has_no_bn_and_ends_with_leaky_relu():
    loss = create_loss("ft", [(3, 4, 4)], [(5, 4, 4)])
    para = loss.paraphrasers[0]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in para.modules())
    assert isinstance(para.decoder[-1], nn.LeakyReLU) and para.decoder[-1].negative_slope == 0.1
    assert isinstance(para.encoder[-1], nn.LeakyReLU)
    assert para.encoder[-2].out_channels == 2  # ⌊0.5 · 5⌋, as RepDistiller's int(C·k)
    # the translator keeps its BN (RepDistiller's Translator, use_bn=True)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in loss.translators[0].modules()) == 3
    # the paper form: BN, linear last layer
    paper = create_loss("ft", [(3, 4, 4)], [(5, 4, 4)], form="paper").paraphrasers[0]
    assert isinstance(paper.decoder[-1], nn.ConvTranspose2d) and isinstance(paper.encoder[1], nn.BatchNorm2d)
    # reconstruction pre-training: mean squared error through the whole auto-encoder
    ft = rand(3, 5, 4, 4, seed=3)
    rec = loss.pretrain_loss([rand(3, 3, 4, 4)], [ft])
    assert rec.item() == pytest.approx(F.mse_loss(para(ft), ft).item(), rel=1e-12)
    with pytest.raises(KdlensError, match="form must be one of"):
        create_loss("ft", [(3, 4, 4)], [(5, 4, 4)], form="tian")


# ---------------------------------------------------------------- PKT


def ref_pkt(fs: torch.Tensor, ft: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """RepDistiller's PKT: rows / (‖x‖ + ε), K = (cos + 1)/2 *with* i = j, rows normalised,
    mean over all B² entries of p_t·log((p_t + ε)/(p_s + ε))."""

    def probs(f):
        x = f.reshape(f.shape[0], -1)
        x = x / (torch.sqrt((x**2).sum(1, keepdim=True)) + eps)
        k = (x @ x.t() + 1.0) / 2.0
        return k / k.sum(1, keepdim=True)

    p_s, p_t = probs(fs), probs(ft)
    return torch.mean(p_t * torch.log((p_t + eps) / (p_s + eps)))


def test_pkt_repdistiller_by_hand():
    # teacher: orthogonal pair, K = [[1, ½], [½, 1]] → rows (⅔, ⅓); student: parallel pair → rows (½, ½)
    ft = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    fs = torch.tensor([[2.0, 0.0], [1.0, 0.0]])
    expected = 0.25 * 2 * (2 / 3 * math.log(4 / 3) + 1 / 3 * math.log(2 / 3))
    assert create_loss("pkt", [(2,)], [(2,)])([fs], [ft]).item() == pytest.approx(expected, abs=1e-6)
    # the paper's form excludes i = j: with B = 2 each row has one neighbour, probability 1
    assert create_loss("pkt", [(2,)], [(2,)], form="paper")([fs], [ft]).item() == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("b", [4, 8, 64])
def test_pkt_repdistiller_matches_reference(b):
    fs, ft = rand(b, 3, 2, 2, seed=b), rand(b, 7, seed=b + 1)
    got = create_loss("pkt", [(3, 2, 2)], [(7,)])([fs], [ft]).item()
    assert got == pytest.approx(ref_pkt(fs, ft).item(), rel=1e-12)


def test_pkt_paper_over_repdistiller_shrinks_with_batch():
    ratios = []
    for b in (8, 16, 64):
        fs, ft = rand(b, 12, seed=b), rand(b, 20, seed=b + 1)
        paper = create_loss("pkt", [(12,)], [(20,)], form="paper")([fs], [ft]).item()
        ratios.append(paper / create_loss("pkt", [(12,)], [(20,)])([fs], [ft]).item())
    assert ratios[0] > ratios[1] > ratios[2] > 1.0 and ratios[2] < 1.1


# ---------------------------------------------------------------- AB


def ref_ab_pair(r: torch.Tensor, t: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """RepDistiller's criterion_alternative_l2, summed and divided by the batch size."""
    loss = (r + margin) ** 2 * ((r > -margin) & (t <= 0)).double() + (r - margin) ** 2 * (
        (r <= margin) & (t > 0)
    ).double()
    return loss.sum() / r.shape[0]


def test_ab_repdistiller_by_hand_and_beta_weights_pretraining():
    s = torch.tensor([[2.0, 0.5, -3.0, 0.0]])
    t = torch.tensor([[1.0, 1.0, -1.0, -1.0]])
    # per pair: active & r ≥ μ → 0; active & r = .5 → .25; inactive & r ≤ −μ → 0; inactive & r = 0 → 1
    loss = create_loss("ab", [(4,), (4,)], [(4,), (4,)])
    assert all(isinstance(c, nn.Identity) for c in loss.connectors)  # equal shapes: no connector
    assert loss.weights() == pytest.approx([0.0015, 0.003])  # 3/1000 · 2^(i − n + 1)
    assert loss([s, s], [t, t]).item() == pytest.approx((0.0015 + 0.003) * 1.25, rel=1e-12)
    # the term exists only in pre-training, where the objective's β weights it
    obj = build_objective("ab", [(4,), (4,)], [(4,), (4,)], beta=2.0)
    assert obj.pretrain_loss([s, s], [t, t]).item() == pytest.approx(2.0 * 0.0045 * 1.25, rel=1e-12)
    assert build_objective("ab", [(4,)], [(4,)]).beta == 1.0  # RepDistiller's init applies no β
    assert obj.main_phase().hint_loss is None
    # the paper form: unit weights, a connector always
    paper = create_loss("ab", [(4,), (4,)], [(4,), (4,)], form="paper")
    paper.connectors = nn.ModuleList([nn.Identity(), nn.Identity()])
    assert paper([s, s], [t, t]).item() == pytest.approx(2 * 1.25, rel=1e-12)


def test_fitnet_pretraining_is_not_weighted_by_beta():
    obj = build_objective("fitnet", [(2, 3, 3)], [(4, 3, 3)], two_stage=True, beta=7.0)
    fs, ft = [rand(2, 2, 3, 3)], [rand(2, 4, 3, 3, seed=1)]
    assert obj.pretrain_loss(fs, ft).item() == pytest.approx(obj.hint_loss(fs, ft).item(), rel=1e-12)


def test_ab_repdistiller_matches_reference_with_connectors():
    s_shapes = [(4, 8, 8), (4, 8, 8), (6, 4, 4)]
    t_shapes = [(4, 8, 8), (6, 4, 4), (8, 4, 4)]
    loss = create_loss("ab", s_shapes, t_shapes)
    loss.train()
    c0, c1, c2 = loss.connectors
    assert isinstance(c0, nn.Identity)
    assert (c1[0].kernel_size, c1[0].stride, c1[0].padding) == ((3, 3), (2, 2), (1, 1))  # 8×8 → 4×4
    assert c2[0].kernel_size == (1, 1) and c2[0].bias is not None and isinstance(c2[1], nn.BatchNorm2d)
    assert len(c1) == 2  # conv + BN, no ReLU
    fs = [rand(3, *s, seed=10 + i) for i, s in enumerate(s_shapes)]
    ft = [rand(3, *t, seed=20 + i) for i, t in enumerate(t_shapes)]

    def conv_bn(x, conv, stride, padding):
        z = F.conv2d(x, conv.weight, conv.bias, stride=stride, padding=padding)
        return F.batch_norm(z, None, None, training=True, eps=1e-5)

    rs = [fs[0], conv_bn(fs[1], c1[0], 2, 1), conv_bn(fs[2], c2[0], 1, 0)]
    weights = [3 / 1000 * 2.0 ** (i - 2) for i in range(3)]
    expected = sum(w * ref_ab_pair(r, t) for w, r, t in zip(weights, rs, ft))
    assert loss(fs, ft).item() == pytest.approx(expected.item(), rel=1e-12)


# ---------------------------------------------------------------- CC


def test_cc_repdistiller_by_hand_with_identity_embeddings():
    loss = create_loss("cc", [(2,)], [(2,)], embed_dim=2)
    for emb in (loss.embed_s[0], loss.embed_t[0]):
        with torch.no_grad():
            emb.weight.copy_(torch.eye(2))
            emb.bias.zero_()
    fs = torch.tensor([[1.0, 2.0], [3.0, 0.0], [0.0, 1.0]])
    ft = torch.tensor([[0.0, 0.0], [1.0, 1.0], [1.0, 1.0]])
    # δ = |fs − ft| = (1, 2), (2, 1), (1, 0); δ0·δ1 = 4, δ1·δ2 = 2 → mean 3
    assert loss([fs], [ft]).item() == pytest.approx(3.0, abs=1e-12)
    # the batch order matters (consecutive samples), and one sample gives 0
    assert loss([fs[[0, 2, 1]]], [ft[[0, 2, 1]]]).item() == pytest.approx((1 + 2) / 2, abs=1e-12)
    assert loss([fs[:1]], [ft[:1]]).item() == 0.0


def test_cc_repdistiller_matches_reference_and_trains_both_embeddings():
    loss = create_loss("cc", [(3, 2, 2)], [(5,)])
    assert loss.embed_s[0].out_features == loss.embed_t[0].out_features == 128
    fs, ft = rand(6, 3, 2, 2, seed=4).requires_grad_(True), rand(6, 5, seed=5)
    e_s = F.linear(fs.reshape(6, -1), loss.embed_s[0].weight, loss.embed_s[0].bias)
    e_t = F.linear(ft, loss.embed_t[0].weight, loss.embed_t[0].bias)
    d = (e_s - e_t).abs().detach()
    expected = sum(float(d[b] @ d[b + 1]) for b in range(5)) / 5
    out = loss([fs], [ft])
    assert out.item() == pytest.approx(expected, rel=1e-12)
    out.backward()
    assert all(p.grad is not None for p in loss.parameters())
    assert not any(True for _ in create_loss("cc", [(5,)], [(5,)], form="paper").parameters())


# ---------------------------------------------------------------- FitNet


def test_fitnet_repdistiller_regressor_by_hand():
    # student (1, 2, 2) twice the teacher (1, 1, 1): 3×3 stride-2 convolution, padding 1
    loss = create_loss("fitnet", [(1, 2, 2)], [(1, 1, 1)], regressor="repdistiller")
    conv, bn, relu = loss.regressors[0]
    assert (conv.kernel_size, conv.stride, conv.padding) == ((3, 3), (2, 2), (1, 1))
    assert isinstance(bn, nn.BatchNorm2d) and isinstance(relu, nn.ReLU)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        conv.bias.zero_()
    fs = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]], [[[0.0, 0.0], [0.0, 0.0]]]])
    ft = torch.full((2, 1, 1, 1), 0.5)
    # conv → 10 and 0; BN (batch mean 5, variance 25) → +1, −1; ReLU → 1, 0; MSE vs ½ → ¼
    z = 5 / math.sqrt(25 + 1e-5)
    assert loss([fs], [ft]).item() == pytest.approx(((z - 0.5) ** 2 + 0.25) / 2, rel=1e-12)


@pytest.mark.parametrize(
    "s_shape,t_shape,kind",
    [((3, 8, 8), (5, 4, 4), "stride2"), ((3, 4, 4), (5, 8, 8), "up2"), ((3, 6, 6), (5, 4, 4), "valid")],
)
def test_fitnet_repdistiller_matches_reference(s_shape, t_shape, kind):
    loss = create_loss("fitnet", [s_shape], [t_shape], regressor="repdistiller")
    loss.train()
    conv = loss.regressors[0][0]
    fs, ft = rand(4, *s_shape, seed=6), rand(4, *t_shape, seed=7).relu()
    if kind == "stride2":
        z = F.conv2d(fs, conv.weight, conv.bias, stride=2, padding=1)
    elif kind == "up2":
        assert isinstance(conv, nn.ConvTranspose2d) and conv.kernel_size == (4, 4)
        z = F.conv_transpose2d(fs, conv.weight, conv.bias, stride=2, padding=1)
    else:
        assert conv.kernel_size == (3, 3) and conv.stride == (1, 1)
        z = F.conv2d(fs, conv.weight, conv.bias)
    pred = F.batch_norm(z, None, None, training=True, eps=1e-5).clamp_min(0.0)
    assert loss([fs], [ft]).item() == pytest.approx(((pred - ft) ** 2).mean().item(), rel=1e-12)


def test_fitnet_bn_alone_is_not_the_repdistiller_regressor():
    s, t = (3, 4, 4), (5, 4, 4)
    repd = create_loss("fitnet", [s], [t], regressor="repdistiller")
    bn_only = create_loss("fitnet", [s], [t], regressor_bn=True)
    bn_only.load_state_dict(repd.state_dict())  # same conv and BN parameters
    fs, ft = rand(4, *s, seed=8), rand(4, *t, seed=9).relu()
    a, b = repd([fs], [ft]).item(), bn_only([fs], [ft]).item()
    assert abs(a - b) / a > 0.1
    both = create_loss("fitnet", [s], [t], regressor_bn=True, regressor_relu=True)
    both.load_state_dict(repd.state_dict())
    assert both([fs], [ft]).item() == pytest.approx(a, rel=1e-12)  # equal sizes: the same regressor
    with pytest.raises(KdlensError, match="regressor must be"):
        create_loss("fitnet", [s], [t], regressor="convreg")


def test_divergence_advice_names_the_full_repdistiller_regressor():
    from kdlens.train.trainer import TrainingDivergedError, _check_finite

    with pytest.raises(TrainingDivergedError, match=r"regressor=repdistiller.*regressor_bn=true alone"):
        _check_finite({"hint": float("nan")}, torch.tensor(float("nan")), 0, 0)


# ---------------------------------------------------------------- VID


def test_vid_repdistiller_has_no_bias_and_by_hand_value():
    loss = create_loss("vid", [(3, 4, 4)], [(2, 4, 4)])
    convs = [m for m in loss.regressors[0] if isinstance(m, nn.Conv2d)]
    assert len(convs) == 3 and all(c.bias is None and c.kernel_size == (1, 1) for c in convs)
    assert all(m.bias is None for m in create_loss("vid", [(3,)], [(2,)]).regressors[0] if isinstance(m, nn.Linear))
    assert all(c.bias is not None for c in create_loss("vid", [(3, 4, 4)], [(2, 4, 4)], form="paper").regressors[0]
               if isinstance(c, nn.Conv2d))
    with torch.no_grad():
        convs[-1].weight.zero_()  # μ = 0 (no bias to move it)
    ft = torch.ones(2, 2, 4, 4)
    # σ² = 5 at the start: ½ log 5 + 1²/(2·5)
    assert loss([rand(2, 3, 4, 4)], [ft]).item() == pytest.approx(0.5 * math.log(5) + 0.1, rel=1e-9)


def test_vid_repdistiller_matches_reference():
    loss = create_loss("vid", [(3, 8, 8)], [(4, 4, 4)], hidden=5)
    with torch.no_grad():
        loss.log_scales[0].copy_(torch.tensor([0.3, -1.2, 2.0, 0.0]))
    fs, ft = rand(2, 3, 8, 8, seed=11), rand(2, 4, 4, 4, seed=12)
    h = F.adaptive_avg_pool2d(fs, (4, 4))
    convs = [m for m in loss.regressors[0] if isinstance(m, nn.Conv2d)]
    for k, c in enumerate(convs):
        h = F.conv2d(h, c.weight)
        if k < 2:
            h = h.relu()
    var = (torch.log(1.0 + torch.exp(torch.tensor([0.3, -1.2, 2.0, 0.0]))) + 1e-5).view(1, -1, 1, 1)
    expected = torch.mean(0.5 * ((h - ft) ** 2 / var + torch.log(var)))
    assert loss([fs], [ft]).item() == pytest.approx(expected.item(), rel=1e-12)


# ---------------------------------------------------------------- defaults


def test_default_forms_are_the_ones_the_default_betas_were_tuned_for():
    from kdlens.distill import METHODS
    from kdlens.distill.methods import default_hyperparameters

    for name in ("ft", "pkt", "ab", "cc", "vid"):
        assert default_hyperparameters(name)["form"] == "repdistiller", name
        assert "form=repdistiller" in METHODS[name].source, name
    # FitNet keeps the paper's plain regressor (kdlens's hint study ran with it at β = 10)
    assert default_hyperparameters("fitnet")["regressor"] == "plain"
    assert "regressor=repdistiller" in METHODS["fitnet"].source
