"""Soft targets and the per-sample loss, shared by the stack and the single-student reference:
:class:`_Targets` (teacher softmax or label smoothing at each student's temperature, optional
noise, ``α·T²·KL + γ·CE``) and :func:`_weighted_mean` (each student's loss over its kept
samples)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from kdlens.distill.losses.noisy_kd import perturb_soft_labels
from kdlens.train.vectorized.spec import StudentSpec


class _Targets:
    """Per-student constants for the loss, as tensors with the student axis first."""

    def __init__(self, specs: Sequence[StudentSpec], num_classes: int, device: torch.device) -> None:
        self.T = torch.tensor([s.temperature for s in specs], dtype=torch.float32, device=device)
        self.alpha = torch.tensor([s.alpha for s in specs], dtype=torch.float32, device=device)
        self.gamma = torch.tensor([s.gamma for s in specs], dtype=torch.float32, device=device)
        self.alpha_ls = torch.tensor([s.alpha_ls for s in specs], dtype=torch.float32, device=device)
        self.use_ls = torch.tensor([s.soft_source == "ls" for s in specs], device=device)
        self.teacher = torch.tensor([s.teacher for s in specs], dtype=torch.long, device=device)
        self.any_teacher = any(s.soft_source == "teacher" for s in specs)
        self.any_ls = any(s.soft_source == "ls" for s in specs)
        self.any_ce = any(s.gamma > 0 for s in specs)
        self.num_classes = num_classes
        self.noisy = [(i, s) for i, s in enumerate(specs) if s.noise != "none" and s.noise_scale > 0]
        self.generators = {i: torch.Generator().manual_seed(s.noise_seed) for i, s in self.noisy}

    def soft(self, t_logits: Tensor | None, y: Tensor) -> Tensor:
        """Soft targets ``S×B×K``; ``t_logits`` ``S×B×K``, ``y`` ``S×B``."""
        T = self.T.view(-1, 1, 1)
        p = None
        if self.any_teacher:
            p = F.softmax(t_logits.float() / T, dim=2)  # type: ignore[union-attr]
        if self.any_ls:
            a = self.alpha_ls.view(-1, 1, 1)
            q = (1.0 - a) * F.one_hot(y, self.num_classes).float() + a / self.num_classes
            p = q if p is None else torch.where(self.use_ls.view(-1, 1, 1), q, p)
        assert p is not None
        if self.noisy:
            p = p.clone()
            for i, s in self.noisy:
                gen = self.generators[i]
                shape = p[i].shape
                if s.noise == "uniform":
                    eps = (2.0 * torch.rand(shape, generator=gen) - 1.0) * s.noise_scale
                else:
                    eps = torch.randn(shape, generator=gen) * s.noise_scale
                p[i] = perturb_soft_labels(p[i], eps.to(p.device))
        return p

    def per_sample_loss(self, z: Tensor, p: Tensor, y: Tensor) -> Tensor:
        """``ℓ = α·T²·KL(p ‖ softmax(z/T)) + γ·CE(z, y)``, shape ``S×B``."""
        z = z.float().contiguous()  # (log-)softmax over a strided last dim takes a slow path
        T = self.T.view(-1, 1, 1)
        log_q = F.log_softmax(z / T, dim=2)
        kl = (torch.xlogy(p, p) - p * log_q).sum(2) * (self.T**2).view(-1, 1)
        loss = self.alpha.view(-1, 1) * kl
        if self.any_ce:
            s, b, k = z.shape
            ce = F.cross_entropy(z.reshape(s * b, k), y.reshape(-1), reduction="none").view(s, b)
            loss = loss + self.gamma.view(-1, 1) * ce
        return loss


def _weighted_mean(loss: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    """``Σ w·ℓ / Σ w`` per student (0 where ``Σ w = 0``) and the active mask."""
    total = w.sum(1)
    active = total > 0
    per_student = (w * loss).sum(1) / torch.where(active, total, torch.ones_like(total))
    return per_student, active
