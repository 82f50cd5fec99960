"""Objective: L = γ·CE + α·L_logit + β·L_hint, and build_objective."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kdlens.distill import Objective, build_objective, create_loss, describe_methods
from kdlens.errors import KdlensError


def batch(b: int = 6, k: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    zs = torch.randn(b, k, generator=g, dtype=torch.float64, requires_grad=True)
    zt = torch.randn(b, k, generator=g, dtype=torch.float64)
    y = torch.randint(0, k, (b,), generator=g)
    return zs, zt, y


def test_weighted_sum_equals_hand_combined_parts():
    zs, zt, y = batch()
    obj = Objective(create_loss("kd", T=2.0), gamma=0.3, alpha=0.7)
    total, parts = obj(zs, y, zt)
    ce = F.cross_entropy(zs, y).item()
    kd = create_loss("kd", T=2.0)(zs, zt).item()
    assert parts["ce"] == pytest.approx(ce, rel=1e-12)
    assert parts["logit"] == pytest.approx(kd, rel=1e-12)
    assert total.item() == pytest.approx(0.3 * ce + 0.7 * kd, rel=1e-12)
    assert parts["total"] == pytest.approx(total.item())
    assert all(isinstance(v, float) for v in parts.values())
    total.backward()
    assert zs.grad is not None and torch.isfinite(zs.grad).all()


def test_unlabeled_targets_are_excluded_from_ce():
    zs, zt, y = batch()
    y = y.clone()
    y[[1, 4]] = -1
    obj = Objective(create_loss("kd"), gamma=1.0, alpha=1.0)
    _, parts = obj(zs, y, zt)
    assert parts["ce"] == pytest.approx(F.cross_entropy(zs[y >= 0], y[y >= 0]).item(), rel=1e-12)
    # unlabeled samples still count for the distillation term
    assert parts["logit"] == pytest.approx(create_loss("kd")(zs, zt).item(), rel=1e-12)
    total, parts = obj(zs, torch.full_like(y, -1), zt)
    assert parts["ce"] == 0.0
    total.backward()
    assert torch.isfinite(zs.grad).all()


def test_ce_only_objective_and_missing_teacher():
    zs, _, y = batch()
    total, parts = Objective()(zs, y)
    assert set(parts) == {"ce", "total"}
    assert total.item() == pytest.approx(F.cross_entropy(zs, y).item())
    with pytest.raises(KdlensError, match="teacher logits"):
        Objective(create_loss("kd"), alpha=1.0)(zs, y, None)
    with pytest.raises(KdlensError, match="alpha"):
        Objective(alpha=0.5)


def test_build_objective_logit_defaults_and_overrides():
    obj = build_objective("kd")
    assert obj.weights == {"gamma": 0.1, "alpha": 0.9, "beta": 0.0}
    assert obj.logit_loss.T == 4.0 and obj.hint_loss is None
    obj = build_objective("kd", T=2.0, gamma=1.0)
    assert obj.logit_loss.T == 2.0 and obj.gamma == 1.0
    assert build_objective("kd", **{"kd.T": 3.0}).logit_loss.T == 3.0
    assert build_objective("dkd").weights == {"gamma": 1.0, "alpha": 1.0, "beta": 0.0}


def test_unknown_method_lists_close_matches():
    with pytest.raises(KdlensError, match=r"unknown loss 'kdd'.*Did you mean: .*kd"):
        build_objective("kdd")
    with pytest.raises(KdlensError, match="Did you mean: beta_nckd"):
        build_objective("dkd", beta_nkcd=2.0)
    with pytest.raises(KdlensError, match="cannot parse"):
        build_objective("kd+")
    with pytest.raises(KdlensError, match="names a loss twice"):
        build_objective("kd+kd")  # any number of terms (issue 16), but each loss once


def test_describe_methods_lists_every_registered_loss():
    rows = describe_methods()
    kd = next(r for r in rows if r["name"] == "kd")
    assert kd["kind"] == "logit" and kd["hyper"] == {"T": 4.0}
    assert kd["gamma"] == 0.1 and kd["alpha"] == 0.9 and "Hinton" in kd["citation"]


S_SHAPES, T_SHAPES = [(3, 4, 4)], [(5, 8, 8)]


def feats(seed: int = 1, b: int = 6):
    g = torch.Generator().manual_seed(seed)
    return (
        [torch.randn(b, *S_SHAPES[0], generator=g, dtype=torch.float64, requires_grad=True)],
        [torch.randn(b, *T_SHAPES[0], generator=g, dtype=torch.float64)],
    )


def test_build_objective_at_plus_kd_gets_documented_weights():
    obj = build_objective("at+kd", S_SHAPES, T_SHAPES)
    assert obj.weights == {"gamma": 0.1, "alpha": 0.9, "beta": 1000.0}
    assert obj.hint_loss.name == "at" and obj.logit_loss.name == "kd"
    assert build_objective("kd+at", S_SHAPES, T_SHAPES).weights == obj.weights
    alone = build_objective("at", S_SHAPES, T_SHAPES)
    assert alone.weights == {"gamma": 1.0, "alpha": 0.0, "beta": 1000.0} and alone.logit_loss is None
    assert build_objective("fitnet+kd", S_SHAPES, T_SHAPES).weights["beta"] == 100.0
    crd = build_objective("crd", [(8,)], [(16,)], n_data=50, nce_k=4)
    assert crd.weights == {"gamma": 1.0, "alpha": 0.0, "beta": 0.8} and crd.hint_loss.nce_k == 4


def test_weighted_sum_with_hint_term():
    torch.manual_seed(0)
    zs, zt, y = batch()
    fs, ft = feats()
    obj = build_objective("at+kd", S_SHAPES, T_SHAPES, form="paper").double()
    total, parts = obj(zs, y, zt, fs, ft)
    hint = create_loss("at", S_SHAPES, T_SHAPES, form="paper")(fs, ft).item()
    assert parts["hint"] == pytest.approx(hint, rel=1e-12)
    assert total.item() == pytest.approx(0.1 * parts["ce"] + 0.9 * parts["logit"] + 1000 * hint, rel=1e-12)


def test_objective_parameters_include_adapters_and_context_reaches_crd():
    obj = build_objective("fitnet+kd", S_SHAPES, T_SHAPES)
    assert {id(p) for p in obj.parameters()} == {id(p) for p in obj.hint_loss.regressors.parameters()}
    crd = build_objective("crd+kd", [(8,)], [(16,)], n_data=50, nce_k=4).double()
    zs, zt, y = batch()
    g = torch.Generator().manual_seed(3)
    fs = [torch.randn(6, 8, generator=g, dtype=torch.float64, requires_grad=True)]
    ft = [torch.randn(6, 16, generator=g, dtype=torch.float64)]
    total, parts = crd(zs, y, zt, fs, ft, indices=torch.arange(6))
    total.backward()
    assert torch.isfinite(fs[0].grad).all() and all(p.grad is not None for p in crd.hint_loss.embed_s.parameters())
    with pytest.raises(KdlensError, match="indices"):
        crd(zs, y, zt, fs, ft)


def test_pretraining_is_delegated_to_the_hint_loss():
    obj = build_objective("fitnet", S_SHAPES, T_SHAPES, two_stage=True).double()
    fs, ft = feats()
    assert obj.requires_pretraining
    assert obj.pretrain_loss(fs, ft).item() == pytest.approx(obj.hint_loss(fs, ft).item())
    assert not build_objective("kd").requires_pretraining


def test_override_routing_errors():
    with pytest.raises(KdlensError, match="accepted by crd and noisy_kd"):
        build_objective("crd+noisy_kd", [(8,)], [(16,)], n_data=50, seed=1)
    obj = build_objective("crd+noisy_kd", [(8,)], [(16,)], n_data=50, **{"noisy_kd.seed": 5})
    assert obj.logit_loss.seed == 5 and obj.hint_loss.seed == 0
    with pytest.raises(KdlensError, match="not part of"):
        build_objective("kd", **{"at.p": 2})
    with pytest.raises(KdlensError, match="hint method"):
        build_objective("at+kd")
    with pytest.raises(KdlensError, match="Did you mean: at"):
        build_objective("atx+kd", S_SHAPES, T_SHAPES)
