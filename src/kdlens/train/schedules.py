"""Optimiser and learning-rate schedules.

Defaults (see :class:`kdlens.config.OptimConfig`): RepDistiller (Tian et al. 2020) SGD
lr 0.05, momentum 0.9, wd 5e-4, ×0.1 at 150/180/210 of 240 epochs; Lee & Wallraven 2021
lr 0.1, ×0.2 every 60 epochs.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from kdlens.config import OptimConfig

REPDISTILLER_MILESTONE_FRACTIONS = (150 / 240, 180 / 240, 210 / 240)


def build_optimizer(params: Iterable[torch.nn.Parameter], cfg: OptimConfig) -> torch.optim.SGD:
    return torch.optim.SGD(
        list(params),
        lr=cfg.lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        nesterov=cfg.nesterov and cfg.momentum > 0,
    )


def default_milestones(epochs: int) -> list[int]:
    """RepDistiller's 150/180/210-of-240 milestones scaled to ``epochs``."""
    return sorted({max(1, round(f * epochs)) for f in REPDISTILLER_MILESTONE_FRACTIONS})


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: OptimConfig, epochs: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """A per-epoch scheduler (``step()`` once after each epoch)."""
    builders = {
        "multistep": lambda: torch.optim.lr_scheduler.MultiStepLR(
            optimizer, cfg.milestones or default_milestones(epochs), gamma=cfg.gamma
        ),
        "step": lambda: torch.optim.lr_scheduler.StepLR(optimizer, cfg.step_size, gamma=cfg.gamma),
        "cosine": lambda: torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs),
        "constant": lambda: torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0),
    }
    return builders[cfg.schedule]()
