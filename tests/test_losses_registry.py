"""Every registered loss, tested generically: a new loss is covered automatically.

Finite, non-zero gradients for the student and none for the teacher, metadata
in the method table, readable errors.
"""

from __future__ import annotations

import re

import pytest
import torch

from kdlens.distill import LOSSES, METHODS, create_loss, describe_methods
from kdlens.errors import KdlensError

B, K = 6, 5
STUDENT_SHAPES = [(3, 4, 4), (4, 2, 2)]
TEACHER_SHAPES = [(5, 8, 8), (6, 4, 4)]
# only what a loss cannot work with by default
SPECIAL = {
    "fsp": {"teacher_shapes": [(3, 8, 8), (4, 4, 4)]},
    "crd": {"hyper": {"n_data": 20, "nce_k": 5}},
}


def build(name: str):
    spec = SPECIAL.get(name, {})
    s, t = spec.get("student_shapes", STUDENT_SHAPES), spec.get("teacher_shapes", TEACHER_SHAPES)
    return create_loss(name, s, t, **spec.get("hyper", {})), s, t


def features(shapes, seed, grad):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, *s, generator=g).requires_grad_(grad) for s in shapes]


def hint_names():
    return [n for n in LOSSES.names() if LOSSES.get(n).kind == "hint"]


def logit_names():
    return [n for n in LOSSES.names() if LOSSES.get(n).kind == "logit"]


@pytest.mark.parametrize("name", logit_names())
def test_logit_loss_gradients_are_finite(name):
    g = torch.Generator().manual_seed(0)
    zs = torch.randn(B, K, generator=g, requires_grad=True)
    zt = torch.randn(B, K, generator=g, requires_grad=True)
    y = torch.tensor([0, 1, -1, 4, 2, -1])
    loss = create_loss(name)(zs, zt, y)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(zs.grad).all() and zs.grad.abs().sum() > 0
    assert zt.grad is None  # the teacher is a fixed target


@pytest.mark.parametrize("name", hint_names())
def test_hint_loss_gradients_are_finite(name):
    loss, s_shapes, t_shapes = build(name)
    fs, ft = features(s_shapes, 1, True), features(t_shapes, 2, True)
    context = {"indices": torch.arange(B), "targets": torch.tensor([0, 1, -1, 4, 2, -1])}
    out = loss(fs, ft, **context)
    assert out.dim() == 0 and torch.isfinite(out)
    out.backward()
    for f in fs:
        assert f.grad is not None and torch.isfinite(f.grad).all()
    assert any(f.grad.abs().sum() > 0 for f in fs)
    assert all(f.grad is None for f in ft)
    for p in loss.parameters():
        assert p.grad is None or torch.isfinite(p.grad).all()


@pytest.mark.parametrize("name", [n for n in hint_names() if build(n)[0].requires_pretraining])
def test_pretraining_phase_gives_finite_gradients(name):
    loss, s_shapes, t_shapes = build(name)
    fs, ft = features(s_shapes, 3, True), features(t_shapes, 4, False)
    out = loss.pretrain_loss(fs, ft, indices=torch.arange(B))
    assert torch.isfinite(out)
    out.backward()
    own = list(loss.pretrain_parameters())
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in own)
    if loss.pretrain_trains_student:
        assert all(f.grad is not None for f in fs)


def test_losses_without_pretraining_say_so():
    loss, s, t = build("sp")
    with pytest.raises(KdlensError, match="no pre-training"):
        loss.pretrain_loss(features(s, 0, False), features(t, 0, False))


def test_every_loss_has_a_method_entry_and_a_cited_docstring():
    assert set(METHODS) == set(LOSSES.names())
    rows = {r["name"]: r for r in describe_methods()}
    assert set(rows) == set(LOSSES.names())
    for name, row in rows.items():
        cls = LOSSES.get(name)
        assert row["kind"] == cls.kind in ("logit", "hint")
        assert re.search(r"(19|20)\d\d", cls.__doc__ or ""), f"{name}: docstring should cite its source"
        assert re.search(r"(19|20)\d\d", row["citation"])
        assert row["summary"] and row["hyper_source"] and row["source"]
        if cls.kind == "logit":
            assert row["beta"] == 0.0
        else:
            assert row["alpha"] == 0.0 and row["beta"] > 0


def test_documented_default_weights():
    expected_beta = {"fitnet": 100, "at": 1000, "vid": 1, "crd": 0.8, "sp": 3000, "cc": 0.02, "rkd": 1,
                     "pkt": 30000, "ab": 1, "ft": 200, "fsp": 50, "nst": 50}
    for name, beta in expected_beta.items():
        assert METHODS[name].beta == beta and METHODS[name].gamma == 1.0
    assert (METHODS["kd"].gamma, METHODS["kd"].alpha) == (0.1, 0.9)
    rows = {r["name"]: r for r in describe_methods()}
    assert rows["crd"]["required"] == ["n_data"]
    assert rows["crd"]["hyper"]["nce_k"] == 16384 and rows["crd"]["hyper"]["nce_t"] == 0.07
    assert rows["rkd"]["hyper"] == {"distance_weight": 25.0, "angle_weight": 50.0}


def test_create_loss_errors_are_readable():
    with pytest.raises(KdlensError, match="Did you mean: at"):
        create_loss("att", STUDENT_SHAPES, TEACHER_SHAPES)
    with pytest.raises(KdlensError, match="student_shapes and teacher_shapes"):
        create_loss("at")
    with pytest.raises(KdlensError, match="Did you mean: form"):
        create_loss("at", STUDENT_SHAPES, TEACHER_SHAPES, from_="code")
    with pytest.raises(KdlensError, match="needs n_data"):
        create_loss("crd", [(3,)], [(3,)])
    with pytest.raises(KdlensError, match="2 student layers but 1 teacher"):
        create_loss("sp", STUDENT_SHAPES, TEACHER_SHAPES[:1])


def test_feature_shape_mismatch_is_reported():
    loss, s, t = build("sp")
    wrong = features([(3, 4, 5), (4, 2, 2)], 0, False)
    with pytest.raises(KdlensError, match=r"student feature 0 has per-sample shape \(3, 4, 5\)"):
        loss(wrong, features(t, 0, False))


def test_describe_methods_is_json_serialisable():
    import json

    assert json.loads(json.dumps(describe_methods()))


@pytest.mark.parametrize("name", hint_names())
def test_half_precision_teacher_features_are_accepted(name):
    # a teacher-output cache may store features in bf16; the student runs in float32
    loss, s_shapes, t_shapes = build(name)
    fs = features(s_shapes, 5, True)
    ft = [f.to(torch.bfloat16) for f in features(t_shapes, 6, False)]
    out = loss(fs, ft, indices=torch.arange(B))
    assert out.dtype == torch.float32 and torch.isfinite(out)


@pytest.mark.parametrize("name", logit_names())
def test_half_precision_teacher_logits_are_accepted(name):
    zs = torch.randn(B, K)
    zt = torch.randn(B, K).to(torch.bfloat16)
    out = create_loss(name)(zs, zt, torch.tensor([0, 1, -1, 4, 2, -1]))
    assert out.dtype == torch.float32 and torch.isfinite(out)
