"""KD with noisy soft labels (Vats 2021, §4.8, the soft-label hypothesis)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from kdlens.distill.losses.base import LogitLoss, register_loss
from kdlens.distill.losses.kd import check_temperature, soft_target_kl
from kdlens.distill.losses.ls import smoothed_labels
from kdlens.errors import KdlensError


def perturb_soft_labels(probs: Tensor, noise: Tensor) -> Tensor:
    """``probs + noise``, clamped at 0 and renormalised to sum to 1 per row.

    A row that the noise pushed entirely to 0 becomes uniform.
    """
    noisy = (probs + noise).clamp_min(0.0)
    total = noisy.sum(dim=1, keepdim=True)
    uniform = torch.full_like(noisy, 1.0 / noisy.shape[1])
    return torch.where(total > 0, noisy / total.clamp_min(torch.finfo(noisy.dtype).tiny), uniform)


@register_loss("noisy_kd")
class NoisyKDLoss(LogitLoss):
    r"""KD against soft labels perturbed by random noise (Vats 2021, *Response-based
    knowledge distillation*, §4.8: how much of KD's benefit survives noise in the
    teacher's soft labels).

    .. math::
        \tilde p = \frac{\max(p + \epsilon, 0)}{\sum_k \max(p_k + \epsilon_k, 0)},\qquad
        L = T^2\,\frac1B\sum_b \mathrm{KL}\big(\tilde p_b \,\|\, \sigma(z^s_b/T)\big)

    ``source="teacher"``: p = σ(z^t/T).  ``source="ls"``: p is the label-smoothed
    target (1 − α_LS)·onehot + α_LS/K (the no-similarity soft label; samples with
    target −1 are then excluded; use T = 1 for plain noisy label smoothing).

    ``noise="uniform"``: ε ~ U(−scale, scale); ``noise="normal"``: ε ~ N(0, scale²).
    Fresh noise is drawn on every call from the loss's own generator (seeded by
    ``seed``, one generator per device), so runs are reproducible and the global
    RNG is untouched.  Defaults (kdlens): T = 4, uniform noise, scale = 0.1.
    """

    def __init__(
        self,
        T: float = 4.0,
        noise: str = "uniform",
        scale: float = 0.1,
        source: str = "teacher",
        alpha_ls: float = 0.1,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.T = check_temperature("noisy_kd", T)
        if noise not in ("uniform", "normal"):
            raise KdlensError(f"noisy_kd: noise must be 'uniform' or 'normal', got {noise!r}")
        if source not in ("teacher", "ls"):
            raise KdlensError(f"noisy_kd: source must be 'teacher' or 'ls', got {source!r}")
        if scale < 0:
            raise KdlensError(f"noisy_kd: noise scale must be >= 0, got {scale}")
        self.noise, self.scale, self.source = noise, float(scale), source
        self.alpha_ls, self.seed = float(alpha_ls), int(seed)
        self._generators: dict[str, torch.Generator] = {}

    @property
    def needs_teacher(self) -> bool:  # type: ignore[override]
        return self.source == "teacher"

    @property
    def needs_targets(self) -> bool:  # type: ignore[override]
        return self.source == "ls"

    def generator(self, device: torch.device) -> torch.Generator:
        key = str(device)
        if key not in self._generators:
            self._generators[key] = torch.Generator(device=device).manual_seed(self.seed)
        return self._generators[key]

    def draw_noise(self, like: Tensor) -> Tensor:
        gen = self.generator(like.device)
        if self.noise == "uniform":
            u = torch.rand(like.shape, generator=gen, device=like.device, dtype=like.dtype)
            return (2.0 * u - 1.0) * self.scale
        return torch.randn(like.shape, generator=gen, device=like.device, dtype=like.dtype) * self.scale

    def forward(self, student_logits: Tensor, teacher_logits: Tensor | None = None, targets: Tensor | None = None) -> Tensor:
        if self.source == "teacher":
            p = F.softmax(self._teacher(teacher_logits, student_logits) / self.T, dim=1)
        else:
            targets = self._targets(targets)
            labeled = targets >= 0
            if not bool(labeled.any()):
                return student_logits.sum() * 0.0
            student_logits = student_logits[labeled]
            p = smoothed_labels(targets[labeled], student_logits.shape[1], self.alpha_ls, student_logits.dtype)
        p_noisy = perturb_soft_labels(p, self.draw_noise(p))
        return soft_target_kl(student_logits / self.T, p_noisy).mean() * self.T**2

    def get_extra_state(self) -> dict:
        """Generator states, so that a resumed run draws the same noise stream."""
        return {key: gen.get_state() for key, gen in self._generators.items()}

    def set_extra_state(self, state: dict) -> None:
        for key, st in state.items():
            self.generator(torch.device(key)).set_state(st)
