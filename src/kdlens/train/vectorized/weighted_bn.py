"""Batch norm with per-sample weights: :func:`weighted_batch_norm` (statistics over each
student's kept samples, closed-form backward) and :class:`SampleWeightedBatchNorm2d`, the
``nn.BatchNorm2d`` drop-in used by the ``vmap`` backend and the one-by-one reference, with
:func:`_swap_batch_norms` to install it in a model."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def _sc(t: Tensor, dims: int) -> Tensor:
    """An ``S×C`` tensor viewed as ``1×S×C×1×…`` to broadcast against ``B×S×C×spatial`` (``dims`` = x.dim())."""
    return t.view(1, *t.shape, *([1] * (dims - 3)))


class _WeightedBatchNormFn(torch.autograd.Function):
    """Weighted batch-norm normalisation ``y = (x−μ)·r·γ + β`` with a closed-form backward.

    Shapes: ``xc = x−μ`` ``B×S×C×spatial…`` (any memory layout), ``w`` ``B×S×1×…``, ``n``
    ``S×1``, ``rstd``/``gamma``/``beta`` ``S×C``. With ``x̂ = (x−μ)·r`` and ``g`` the output
    gradient, summing over samples and positions (masked samples included: they are normalised
    with the kept statistics): ``dx = γ·r·(g − w·(Σg + x̂·Σ g·x̂)/n)``, ``dγ = Σ g·x̂``,
    ``dβ = Σ g`` (the derivatives of μ and σ² = Σ w (x−μ)²/n with respect to ``x_i`` are
    ``w_i/n`` and ``2 w_i (x_i−μ)/n``). Few passes over the activations, like native batch norm.
    """

    generate_vmap_rule = True  # usable under torch.func.vmap (backend="vmap")

    @staticmethod
    def forward(xc: Tensor, w: Tensor, n: Tensor, rstd: Tensor, gamma: Tensor, beta: Tensor) -> Tensor:  # type: ignore[override]
        d = xc.dim()
        return torch.addcmul(_sc(beta, d), xc, _sc(rstd * gamma, d))

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:  # type: ignore[override]
        xc, w, n, rstd, gamma, _ = inputs
        ctx.save_for_backward(xc, w, n, rstd, gamma)

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        xc, w, n, rstd, gamma = ctx.saved_tensors
        d = xc.dim()
        red = (0, *range(3, d))
        sum_g = g.sum(red)  # S×C
        sum_gxc = (g * xc).sum(red)  # S×C  (Σ g·x̂ = r·Σ g·xc)
        coef = rstd * gamma  # S×C
        wn = w / n.view(1, -1, *([1] * (d - 2)))  # B×S×1×…
        a = -_sc(coef * sum_g, d) * wn  # B×S×C×1…
        b = -_sc(coef * rstd * rstd * sum_gxc, d) * wn
        dx = torch.addcmul(torch.addcmul(a, xc, b), g, _sc(coef, d))
        return dx, None, None, None, sum_gxc * rstd, sum_g


def weighted_batch_norm(
    x: Tensor,
    w: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    momentum: float,
    eps: float,
) -> Tensor:
    """Training-mode batch norm of ``S`` students over their weighted samples.

    ``x``: ``B×S×C×…`` (any spatial dims and memory layout), ``w``: ``S×B`` non-negative sample
    weights, ``running_*``/``weight``/``bias``: ``S×C`` (running statistics updated in place).
    Per student and channel, with ``n = Σ_b w_b · (spatial size)``:
    ``μ = Σ w·x / n``, ``σ² = Σ w·(x−μ)² / n``, ``y = (x−μ)/√(σ²+ε)·γ + β``,
    running mean ← ``(1−m)·running + m·μ``, running var ← ``(1−m)·running + m·σ²·n/(n−1)``.
    With 0/1 weights this is ``nn.BatchNorm`` on the kept samples (Ioffe & Szegedy 2015); the
    gradient flows through μ and σ² as in batch norm (closed form, :class:`_WeightedBatchNormFn`).
    A student with ``n = 0`` is normalised with ``μ = 0, σ² = 1`` (its output is unused) and
    its running statistics stay unchanged.
    """
    b, s, c = x.shape[:3]
    d = x.dim()
    spatial_dims = tuple(range(3, d))
    spatial = math.prod(x.shape[3:])
    wt = w.to(x.dtype).t()  # B×S
    n = (wt.sum(0) * spatial).unsqueeze(1)  # S×1
    has = n > 0
    n_safe = torch.where(has, n, torch.ones_like(n))
    w_b = wt.view(b, s, *([1] * (d - 2)))
    with torch.no_grad():
        per_sample = x.sum(spatial_dims) if spatial_dims else x  # B×S×C
        mean = (per_sample * wt.unsqueeze(2)).sum(0) / n_safe  # S×C
    # x − μ with the gradient passed straight to x: μ's and σ²'s dependence on x is part of
    # _WeightedBatchNormFn's closed-form backward
    xc = _Center.apply(x, mean)
    with torch.no_grad():
        # ‖x−μ‖² per sample and channel without a squared temporary (one pass)
        xd = xc.detach()
        sq = torch.linalg.vector_norm(xd, dim=spatial_dims).square() if spatial_dims else xd.square()
        var = (sq * wt.unsqueeze(2)).sum(0) / n_safe
        var_norm = torch.where(has, var, torch.ones_like(var))
        rstd = torch.rsqrt(var_norm + eps)
    gamma = weight if weight is not None else torch.ones(s, c, dtype=x.dtype, device=x.device)
    beta = bias if bias is not None else torch.zeros(s, c, dtype=x.dtype, device=x.device)
    y = _WeightedBatchNormFn.apply(xc, w_b, n_safe, rstd, gamma, beta)
    if running_mean is not None and running_var is not None:
        with torch.no_grad():
            unbiased = torch.where(n > 1, var * n / (n - 1).clamp_min(1), var)
            new_mean = running_mean * (1 - momentum) + mean * momentum
            new_var = running_var * (1 - momentum) + unbiased * momentum
            running_mean.copy_(torch.where(has, new_mean, running_mean))
            running_var.copy_(torch.where(has, new_var, running_var))
    return y


class _Center(torch.autograd.Function):
    """``x − μ`` whose backward passes the gradient straight to ``x``: the dependence of μ
    (and σ²) on ``x`` is already part of :class:`_WeightedBatchNormFn`'s closed form."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, mean: Tensor) -> Tensor:  # type: ignore[override]
        return x - _sc(mean, x.dim())

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:  # type: ignore[override]
        pass

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        return g, None


def _bn_factor(bn: nn.modules.batchnorm._BatchNorm, tracked: Tensor | None) -> float:
    """``nn.BatchNorm``'s exponential-average factor (cumulative average when momentum is None)."""
    if bn.momentum is not None:
        return float(bn.momentum)
    steps = int(tracked.max()) if tracked is not None and tracked.numel() else 1
    return 1.0 / max(steps, 1)


class SampleWeightedBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` that, in training mode with ``sample_weight`` set (shape ``B``),
    normalises with statistics of the weighted samples (:func:`weighted_batch_norm`).

    Used by the ``vmap`` backend (the weight is set inside the vmapped function, so it is the
    student's own row) and by :func:`train_single_student` for masked students.
    """

    sample_weight: Tensor | None = None

    @classmethod
    def from_bn(cls, bn: nn.BatchNorm2d) -> SampleWeightedBatchNorm2d:
        new = cls(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
        state = bn.state_dict()
        like = next((t for t in state.values() if t.is_floating_point()), None)
        if like is not None:
            new = new.to(device=like.device, dtype=like.dtype)
        new.load_state_dict(state)
        return new

    def forward(self, x: Tensor) -> Tensor:
        w = self.sample_weight
        if not self.training or w is None:
            return super().forward(x)
        tracking = self.track_running_stats and self.running_mean is not None
        if tracking:
            self.num_batches_tracked.add_((w.sum() > 0).long())
        factor = _bn_factor(self, self.num_batches_tracked if tracking else None)
        rm = self.running_mean.view(1, -1) if tracking else None
        rv = self.running_var.view(1, -1) if tracking else None
        y = weighted_batch_norm(
            x.unsqueeze(1), w.view(1, -1), rm, rv,
            None if self.weight is None else self.weight.view(1, -1),
            None if self.bias is None else self.bias.view(1, -1), factor, self.eps,
        )
        return y.squeeze(1)


def _swap_batch_norms(model: nn.Module) -> list[SampleWeightedBatchNorm2d]:
    """Replace every ``BatchNorm2d`` of ``model`` (in place) by :class:`SampleWeightedBatchNorm2d`."""
    swapped = []
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if type(child) is nn.BatchNorm2d:
                new = SampleWeightedBatchNorm2d.from_bn(child)
                new.train(child.training)
                setattr(module, child_name, new)
                swapped.append(new)
            elif isinstance(child, SampleWeightedBatchNorm2d):
                swapped.append(child)
    return swapped
