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
    with pytest.raises(KdlensError, match="at most one logit loss"):
        build_objective("kd+dkd")


def test_describe_methods_lists_every_registered_loss():
    rows = describe_methods()
    kd = next(r for r in rows if r["name"] == "kd")
    assert kd["kind"] == "logit" and kd["hyper"] == {"T": 4.0}
    assert kd["gamma"] == 0.1 and kd["alpha"] == 0.9 and "Hinton" in kd["citation"]
