"""Adam over one flat buffer: every parameter (and its gradient) is a view into a single
vector, so a step is six element-wise operations on that vector, not a per-parameter loop.

Adam (Kingma & Ba 2015, Algorithm 1) in the order ``torch.optim.Adam`` evaluates it:

    m ← β₁·m + (1 − β₁)·g,    v ← β₂·v + (1 − β₂)·g²,
    θ ← θ − (lr / (1 − β₁ᵗ)) · m / (√v / √(1 − β₂ᵗ) + ε)

Why: an Ivis step is small (384 rows through a 128-128-128 network, ≈ 40,000 parameters), and
``torch.optim.Adam.step`` (fused) spends most of its time in Python bookkeeping around one
small kernel: the step alone takes about half as long here (``benchmarks/ivis_step.py``, rows
``Adam only`` / ``FlatAdam only``) — a few per cent of an Ivis step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


class FlatAdam:
    """Adam on ``params``, which are re-pointed at views of one flat buffer (their values kept);
    their ``.grad`` become views of one flat gradient buffer. Write gradients into those views
    (autograd accumulates into them in place; :meth:`zero_grad` clears them all at once).
    A ``.grad`` that was replaced by a new tensor is copied back into its view before the step."""

    def __init__(self, params: Sequence[nn.Parameter], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        params = list(params)
        if not params:
            raise ValueError("FlatAdam needs at least one parameter")
        if len({(p.device, p.dtype) for p in params}) != 1:
            raise ValueError("FlatAdam needs every parameter on one device with one dtype")
        first = params[0]
        total = sum(p.numel() for p in params)
        self.values = torch.empty(total, dtype=first.dtype, device=first.device)
        self.grads = torch.zeros_like(self.values)
        self.m, self.v, self._denom = (torch.zeros_like(self.values) for _ in range(3))
        self.params, self._grad_views, start = params, [], 0
        for p in params:
            end = start + p.numel()
            self.values[start:end].copy_(p.detach().reshape(-1))
            p.data = self.values[start:end].view_as(p)
            view = self.grads[start:end].view_as(p)
            p.grad = view
            self._grad_views.append(view)
            start = end
        self.lr, (self.beta1, self.beta2), self.eps, self.t = float(lr), betas, float(eps), 0

    def zero_grad(self) -> None:
        self.grads.zero_()
        for p, view in zip(self.params, self._grad_views):
            p.grad = view

    def step(self) -> None:
        for p, view in zip(self.params, self._grad_views):
            if p.grad is not view:  # replaced (e.g. set_to_none, or a new tensor assigned)
                if p.grad is None:
                    view.zero_()
                else:
                    view.copy_(p.grad)
                p.grad = view
        self.t += 1
        g, b1, b2 = self.grads, self.beta1, self.beta2
        self.m.lerp_(g, 1 - b1)
        self.v.mul_(b2).addcmul_(g, g, value=1 - b2)
        bias1, bias2 = 1 - b1**self.t, 1 - b2**self.t
        torch.sqrt(self.v, out=self._denom).div_(math.sqrt(bias2)).add_(self.eps)
        self.values.addcdiv_(self.m, self._denom, value=-self.lr / bias1)
