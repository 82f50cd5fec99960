"""Response-based (logit) losses: hand-worked cases, invariances, numpy references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kdlens.distill import create_loss
from kdlens.distill.losses.noisy_kd import perturb_soft_labels
from kdlens.errors import KdlensError

# ---------------------------------------------------------------- numpy references


def np_softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


def np_kl(p: np.ndarray, q: np.ndarray) -> float:
    return float(sum(pk * math.log(pk / qk) for pk, qk in zip(p, q) if pk > 0))


def np_kd(zs: np.ndarray, zt: np.ndarray, T: float) -> float:
    return T * T * float(np.mean([np_kl(np_softmax(t / T), np_softmax(s / T)) for s, t in zip(zs, zt)]))


def logits(b: int = 5, k: int = 4, seed: int = 0, scale: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, k, generator=g, dtype=torch.float64) * scale,
            torch.randn(b, k, generator=g, dtype=torch.float64) * scale)


# ---------------------------------------------------------------- kd


def test_kd_two_class_by_hand():
    # teacher p = [3/4, 1/4] at T = 2 (logit gap 2 ln 3), student uniform
    zt = torch.tensor([[2 * math.log(3.0), 0.0]], dtype=torch.float64)
    zs = torch.zeros(1, 2, dtype=torch.float64)
    expected = 4 * (0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5))
    assert create_loss("kd", T=2.0)(zs, zt).item() == pytest.approx(expected, rel=1e-12)


def test_kd_zero_and_zero_gradient_when_student_equals_teacher():
    zs, _ = logits()
    zs.requires_grad_(True)
    loss = create_loss("kd")(zs, zs.detach().clone())
    loss.backward()
    assert loss.item() == pytest.approx(0.0, abs=1e-12)
    assert torch.allclose(zs.grad, torch.zeros_like(zs), atol=1e-12)


def test_kd_matches_numpy_reference():
    zs, zt = logits(b=6, k=5, seed=1)
    for T in (1.0, 4.0):
        got = create_loss("kd", T=T)(zs, zt).item()
        assert got == pytest.approx(np_kd(zs.numpy(), zt.numpy(), T), rel=1e-10)


def test_kd_high_temperature_limit_is_logit_matching():
    # Hinton et al. §2.1: for zero-mean logits and T → ∞, T²·KL → Σ_k (z_s − z_t)² / (2K)
    zs, zt = logits(b=3, k=4, seed=2)
    zs, zt = zs - zs.mean(1, keepdim=True), zt - zt.mean(1, keepdim=True)
    got = create_loss("kd", T=1000.0)(zs, zt).item()
    expected = ((zs - zt) ** 2).sum(1).mean().item() / (2 * 4)
    assert got == pytest.approx(expected, rel=1e-3)


def test_kd_rejects_bad_temperature():
    with pytest.raises(KdlensError, match="T must be > 0"):
        create_loss("kd", T=0.0)


# ---------------------------------------------------------------- ls


def test_ls_two_class_by_hand():
    zs = torch.tensor([[math.log(3.0), 0.0]], dtype=torch.float64)  # p = [3/4, 1/4]
    got = create_loss("ls", alpha_ls=0.2)(zs, None, torch.tensor([0])).item()
    assert got == pytest.approx(-(0.9 * math.log(0.75) + 0.1 * math.log(0.25)), rel=1e-12)


def test_ls_without_smoothing_is_cross_entropy_and_ignores_unlabeled():
    zs, _ = logits(b=6, k=5)
    y = torch.tensor([0, 4, -1, 2, -1, 1])
    got = create_loss("ls", alpha_ls=0.0)(zs, None, y)
    assert got.item() == pytest.approx(F.cross_entropy(zs[y >= 0], y[y >= 0]).item(), rel=1e-12)
    assert create_loss("ls")(zs, None, torch.full((6,), -1)).item() == 0.0


def test_ls_matches_numpy_reference_and_is_kd_without_similarity():
    zs, _ = logits(b=4, k=5, seed=3)
    y = np.array([1, 0, 4, 2])
    a, k = 0.3, 5
    got = create_loss("ls", alpha_ls=a)(zs, None, torch.from_numpy(y)).item()
    ref, kl = [], []
    for z, yy in zip(zs.numpy(), y):
        q = np.full(k, a / k)
        q[yy] += 1 - a
        p = np_softmax(z)
        ref.append(-sum(q * np.log(p)))
        kl.append(np_kl(q, p))
    assert got == pytest.approx(np.mean(ref), rel=1e-10)
    # the soft-label view: LS = KL(q ‖ p_s) + H(q), H(q) a constant
    q = np.full(k, a / k)
    q[0] += 1 - a
    entropy = -sum(q * np.log(q))
    assert got == pytest.approx(np.mean(kl) + entropy, rel=1e-10)


def test_ls_needs_targets():
    with pytest.raises(KdlensError, match="targets"):
        create_loss("ls")(torch.zeros(2, 3), None, None)


# ---------------------------------------------------------------- skd


def np_skd(zs, zt, T, form="paper", multiplier=2.0):
    out = []
    radius = np.mean([np.linalg.norm(t) for t in zt])
    for s, t in zip(zs, zt):
        if form == "paper":
            s2, t2 = s / np.linalg.norm(s) * radius, t / np.linalg.norm(t) * radius
        else:
            s2 = (s - s.mean()) / math.sqrt(s.var() + 1e-7) * multiplier
            t2 = (t - t.mean()) / math.sqrt(t.var() + 1e-7) * multiplier
        out.append(np_kl(np_softmax(t2 / T), np_softmax(s2 / T)))
    return T * T * float(np.mean(out))


@pytest.mark.parametrize("form", ["paper", "code"])
def test_skd_matches_numpy_reference(form):
    zs, zt = logits(b=5, k=6, seed=4)
    got = create_loss("skd", T=3.0, form=form)(zs, zt).item()
    assert got == pytest.approx(np_skd(zs.numpy(), zt.numpy(), 3.0, form), rel=1e-8)


def test_skd_ignores_student_logit_norm():
    zs, zt = logits(seed=5)
    loss = create_loss("skd")
    scale = torch.tensor([[0.5], [2.0], [7.0], [1.0], [3.0]], dtype=torch.float64)
    assert loss(zs * scale, zt).item() == pytest.approx(loss(zs, zt).item(), rel=1e-10)


def test_skd_equals_kd_when_all_logits_share_one_norm():
    zs, zt = logits(seed=6)
    zs, zt = F.normalize(zs, dim=1) * 3.0, F.normalize(zt, dim=1) * 3.0
    assert create_loss("skd")(zs, zt).item() == pytest.approx(create_loss("kd")(zs, zt).item(), rel=1e-10)


# ---------------------------------------------------------------- wsl


def np_wsl(zs, zt, y, T):
    out = []
    for s, t, yy in zip(zs, zt, y):
        ce_s, ce_t = -math.log(np_softmax(s)[yy]), -math.log(np_softmax(t)[yy])
        w = 1 - math.exp(-ce_s / ce_t)
        out.append(w * -np.sum(np_softmax(t / T) * np.log(np_softmax(s / T))))
    return T * T * float(np.mean(out))


def test_wsl_matches_numpy_reference_and_uses_teacher_argmax_for_unlabeled():
    zs, zt = logits(b=6, k=4, seed=7)
    y = torch.tensor([0, 3, 1, -1, 2, -1])
    y_ref = torch.where(y >= 0, y, zt.argmax(1)).numpy()
    got = create_loss("wsl", T=2.0)(zs, zt, y).item()
    assert got == pytest.approx(np_wsl(zs.numpy(), zt.numpy(), y_ref, 2.0), rel=1e-10)


def test_wsl_weight_by_hand_and_is_constant_for_gradient():
    # student = teacher: CE_s / CE_t = 1, so w = 1 − 1/e for every sample
    zt, _ = logits(b=3, k=4, seed=8)
    y = torch.tensor([0, 1, 2])
    loss = create_loss("wsl", T=2.0)
    w = loss.sample_weights(zt, zt, y)
    assert torch.allclose(w, torch.full((3,), 1 - math.exp(-1.0), dtype=torch.float64))
    zs = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    loss(zs, zt, y).backward()
    w = loss.sample_weights(zs.detach(), zt, y)
    zs2 = zs.detach().clone().requires_grad_(True)
    soft = -(F.softmax(zt / 2, 1) * F.log_softmax(zs2 / 2, 1)).sum(1)
    (4 * (w * soft).mean()).backward()
    assert torch.allclose(zs.grad, zs2.grad, atol=1e-12)


# ---------------------------------------------------------------- dkd


def np_dkd_parts(zs, zt, y, T):
    tckd, nckd = [], []
    for s, t, yy in zip(zs, zt, y):
        ps, pt = np_softmax(s / T), np_softmax(t / T)
        bs, bt = np.array([ps[yy], 1 - ps[yy]]), np.array([pt[yy], 1 - pt[yy]])
        tckd.append(np_kl(bt, bs))
        others = [k for k in range(len(s)) if k != yy]
        nckd.append(np_kl(np_softmax(t[others] / T), np_softmax(s[others] / T)))
    return np.array(tckd), np.array(nckd)


def test_dkd_matches_numpy_reference():
    zs, zt = logits(b=5, k=6, seed=9)
    y = torch.tensor([0, 5, 2, 2, 1])
    tckd, nckd = np_dkd_parts(zs.numpy(), zt.numpy(), y.numpy(), 4.0)
    got = create_loss("dkd", T=4.0, alpha_tckd=1.5, beta_nckd=8.0)(zs, zt, y).item()
    assert got == pytest.approx(16 * np.mean(1.5 * tckd + 8.0 * nckd), rel=1e-10)


def test_dkd_reformulates_kd():
    # Zhao et al. 2022 eq. 5: KD = TCKD + (1 − p^t_y) NCKD
    zs, zt = logits(b=5, k=6, seed=10)
    y = torch.tensor([1, 0, 3, 5, 2])
    T = 2.0
    tckd, nckd = create_loss("dkd", T=T).decoupled(zs, zt, y)
    pt_y = F.softmax(zt / T, 1).gather(1, y[:, None]).squeeze(1)
    kd = (tckd + (1 - pt_y) * nckd).mean() * T * T
    assert kd.item() == pytest.approx(create_loss("kd", T=T)(zs, zt).item(), rel=1e-10)


def test_dkd_zero_for_identical_logits_and_pseudo_labels_for_unlabeled():
    zs, zt = logits(b=4, k=3, seed=11)
    loss = create_loss("dkd")
    assert loss(zt, zt, torch.tensor([0, 1, -1, 2])).item() == pytest.approx(0.0, abs=1e-12)
    y = torch.tensor([-1, -1, -1, -1])
    assert loss(zs, zt, y).item() == pytest.approx(loss(zs, zt, zt.argmax(1)).item(), rel=1e-12)


# ---------------------------------------------------------------- noisy_kd


def test_noisy_kd_without_noise_is_kd():
    zs, zt = logits(seed=12)
    got = create_loss("noisy_kd", scale=0.0, T=3.0)(zs, zt).item()
    assert got == pytest.approx(create_loss("kd", T=3.0)(zs, zt).item(), rel=1e-12)


@pytest.mark.parametrize("noise", ["uniform", "normal"])
def test_noisy_kd_matches_numpy_reference_with_same_noise_stream(noise):
    zs, zt = logits(b=4, k=5, seed=13)
    T, scale, seed = 2.0, 0.3, 7
    loss = create_loss("noisy_kd", T=T, noise=noise, scale=scale, seed=seed)
    got = [loss(zs, zt).item() for _ in range(2)]
    gen = torch.Generator().manual_seed(seed)
    for call in range(2):
        if noise == "uniform":
            eps = ((2 * torch.rand(4, 5, generator=gen, dtype=torch.float64) - 1) * scale).numpy()
        else:
            eps = (torch.randn(4, 5, generator=gen, dtype=torch.float64) * scale).numpy()
        ref = []
        for s, t, e in zip(zs.numpy(), zt.numpy(), eps):
            p = np.maximum(np_softmax(t / T) + e, 0.0)
            ref.append(np_kl(p / p.sum(), np_softmax(s / T)))
        assert got[call] == pytest.approx(T * T * np.mean(ref), rel=1e-10)
    assert got[0] != got[1]  # redrawn every call


def test_noisy_kd_is_reproducible_from_its_seed_and_checkpoint():
    zs, zt = logits(seed=14)
    a, b = create_loss("noisy_kd", seed=3), create_loss("noisy_kd", seed=3)
    assert [a(zs, zt).item() for _ in range(3)] == [b(zs, zt).item() for _ in range(3)]
    c = create_loss("noisy_kd", seed=99)
    c.load_state_dict(a.state_dict())
    assert a(zs, zt).item() == c(zs, zt).item()


def test_noisy_soft_labels_are_distributions():
    p = torch.tensor([[0.7, 0.2, 0.1], [0.5, 0.5, 0.0]])
    out = perturb_soft_labels(p, torch.tensor([[-0.8, 0.1, 0.0], [-1.0, -1.0, -1.0]]))
    assert torch.allclose(out[0], torch.tensor([0.0, 0.3, 0.1]) / 0.4)
    assert torch.allclose(out[1], torch.full((3,), 1 / 3))  # all mass clamped away: uniform


def test_noisy_kd_from_label_smoothing_source():
    zs, _ = logits(b=4, k=5, seed=15)
    y = torch.tensor([1, -1, 0, 4])
    got = create_loss("noisy_kd", source="ls", scale=0.0, T=1.0, alpha_ls=0.2)(zs, None, y).item()
    ls = create_loss("ls", alpha_ls=0.2)(zs, None, y).item()
    q = np.full(5, 0.2 / 5)
    q[0] += 0.8
    assert got == pytest.approx(ls + float(np.sum(q * np.log(q))), rel=1e-10)  # LS − H(q)
