"""The optimiser: :func:`sgd_step_`, ``torch.optim.SGD``'s formula applied functionally to
stacked ``S×…`` tensors for the active students only, the per-epoch learning rates of a
Trainer's schedule (:func:`_epoch_lrs`) and the default optimiser settings of a sweep."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from kdlens.config import OptimConfig
from kdlens.train.schedules import build_optimizer, build_scheduler


def sgd_step_(
    params: Sequence[Tensor],
    grads: Sequence[Tensor | None],
    momentum_buffers: list[Tensor],
    started: Tensor,
    active: Tensor,
    lr: float | Tensor,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    nesterov: bool = False,
) -> None:
    """One SGD step on stacked ``S×…`` tensors, in place, for the ``active`` students only.

    The formula of :class:`torch.optim.SGD` (dampening 0): ``g ← g + λ·p``;
    ``b ← g`` on a student's first step, else ``b ← μ·b + g``; ``d ← g + μ·b`` (Nesterov) or
    ``d ← b``; ``p ← p − η·d``. Students that are not ``active`` keep parameters and momentum
    untouched (as if the step did not exist). ``started`` (bool ``S``) says which students have
    a momentum buffer; it is updated. ``lr`` is a float or a per-student tensor ``S``.
    """
    with torch.no_grad():
        for k, p in enumerate(params):
            g = grads[k]
            if g is None:
                g = torch.zeros_like(p)
            view = (-1,) + (1,) * (p.dim() - 1)
            if weight_decay:
                g = g.add(p, alpha=weight_decay)
            if momentum:
                buf = momentum_buffers[k]
                running = buf.mul(momentum).add_(g)
                new_buf = torch.where(started.view(view), running, g)
                d = g.add(new_buf, alpha=momentum) if nesterov else new_buf
                buf.copy_(torch.where(active.view(view), new_buf, buf))
            else:
                d = g
            if isinstance(lr, Tensor):
                new_p = p.addcmul(d, (-lr).to(p.dtype).view(view))
            else:
                new_p = p.add(d, alpha=-lr)
            p.copy_(torch.where(active.view(view), new_p, p))
        started |= active


def _epoch_lrs(optim: OptimConfig, epochs: int) -> list[float]:
    """Learning rate of every epoch under ``optim``'s schedule (the Trainer's scheduler)."""
    dummy = build_optimizer([nn.Parameter(torch.zeros(1))], optim)
    sched = build_scheduler(dummy, optim, epochs)
    lrs = []
    for _ in range(epochs):
        lrs.append(float(dummy.param_groups[0]["lr"]))
        dummy.step()
        sched.step()
    return lrs


def _default_optim() -> OptimConfig:
    return OptimConfig(schedule="constant")
