"""The ``grouped`` backend's layers: convolution, batch norm, linear and flatten layers holding
every student's tensors in the grouped layout (student ``s``'s feature map in channels
``s·C … s·C+C-1``), the per-call :class:`_StackContext` they share, and
:func:`_build_grouped`, which swaps them into a copy of the template model."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdlens.errors import KdlensError
from kdlens.train.vectorized.weighted_bn import (
    SampleWeightedBatchNorm2d,
    _bn_factor,
    weighted_batch_norm,
)


class _StackContext:
    """State shared by the stacked layers during one forward call."""

    def __init__(self, num_students: int) -> None:
        self.num_students = num_students
        self.shared_input: Tensor | None = None
        self.sample_weight: Tensor | None = None  # S×B (grouped) or B (vmap, per student)


def _stack(tensors: Sequence[Tensor]) -> Tensor:
    return torch.stack([t.detach() for t in tensors]).contiguous()


class _GroupedConv2d(nn.Module):
    def __init__(self, convs: Sequence[nn.Conv2d], ctx: _StackContext) -> None:
        super().__init__()
        c = convs[0]
        if c.padding_mode != "zeros":
            raise KdlensError(f"grouped stacking supports zero-padded convolutions only, got padding_mode={c.padding_mode!r}")
        self.ctx = [ctx]  # a list, so the context is not registered as a submodule
        self.in_channels, self.out_channels, self.groups = c.in_channels, c.out_channels, c.groups
        self.stride, self.padding, self.dilation = c.stride, c.padding, c.dilation
        self.weight = nn.Parameter(_stack([m.weight for m in convs]))
        self.bias = nn.Parameter(_stack([m.bias for m in convs])) if c.bias is not None else None

    def forward(self, x: Tensor) -> Tensor:
        s = self.ctx[0].num_students
        w = self.weight.reshape(s * self.out_channels, *self.weight.shape[2:])
        b = None if self.bias is None else self.bias.reshape(-1)
        if x.shape[1] == self.in_channels and s > 1:  # shared input: every student sees the same x
            if self.groups == 1:
                return F.conv2d(x, w, b, self.stride, self.padding, self.dilation, 1)
            x = x.repeat(1, s, 1, 1)
        return F.conv2d(x, w, b, self.stride, self.padding, self.dilation, s * self.groups)


class _GroupedBatchNorm2d(nn.Module):
    def __init__(self, bns: Sequence[nn.BatchNorm2d], ctx: _StackContext) -> None:
        super().__init__()
        bn = bns[0]
        self.ctx = [ctx]
        self.num_features, self.eps, self.momentum = bn.num_features, bn.eps, bn.momentum
        self.track_running_stats = bn.track_running_stats
        self.weight = nn.Parameter(_stack([m.weight for m in bns])) if bn.affine else None
        self.bias = nn.Parameter(_stack([m.bias for m in bns])) if bn.affine else None
        if bn.track_running_stats:
            self.register_buffer("running_mean", _stack([m.running_mean for m in bns]))
            self.register_buffer("running_var", _stack([m.running_var for m in bns]))
            self.register_buffer("num_batches_tracked", _stack([m.num_batches_tracked for m in bns]))
        else:
            self.running_mean = self.running_var = self.num_batches_tracked = None

    def forward(self, x: Tensor) -> Tensor:
        ctx = self.ctx[0]
        s, c = ctx.num_students, self.num_features
        if x.shape[1] == c and s > 1:
            x = x.repeat(1, s, 1, 1)
        flat = lambda t: None if t is None else t.reshape(-1)  # noqa: E731
        if not self.training:
            if self.running_mean is None:
                return F.batch_norm(x, None, None, flat(self.weight), flat(self.bias), True, 0.0, self.eps)
            return F.batch_norm(x, flat(self.running_mean), flat(self.running_var), flat(self.weight),
                                flat(self.bias), False, 0.0, self.eps)
        w = ctx.sample_weight
        if w is None:
            if self.num_batches_tracked is not None:
                self.num_batches_tracked.add_(1)
            factor = _bn_factor(self, self.num_batches_tracked)  # type: ignore[arg-type]
            # views of the S×C buffers: batch_norm's in-place update lands in them
            return F.batch_norm(x, flat(self.running_mean), flat(self.running_var), flat(self.weight),
                                flat(self.bias), True, factor, self.eps)
        if self.num_batches_tracked is not None:
            self.num_batches_tracked.add_((w.sum(1) > 0).long())
        factor = _bn_factor(self, self.num_batches_tracked)  # type: ignore[arg-type]
        y = weighted_batch_norm(x.unflatten(1, (s, c)), w, self.running_mean, self.running_var,
                                self.weight, self.bias, factor, self.eps)
        return y.flatten(1, 2)


class _StackedLinear(nn.Module):
    def __init__(self, linears: Sequence[nn.Linear], ctx: _StackContext) -> None:
        super().__init__()
        self.ctx = [ctx]
        self.weight = nn.Parameter(_stack([m.weight for m in linears]))
        self.bias = nn.Parameter(_stack([m.bias for m in linears])) if linears[0].bias is not None else None

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 2:  # shared B×in input: one GEMM against all students' weights
            s, o, i = self.weight.shape
            out = F.linear(x, self.weight.reshape(s * o, i), None if self.bias is None else self.bias.reshape(-1))
            return out.view(x.shape[0], s, o).transpose(0, 1)  # S×B×out
        wt = self.weight.transpose(1, 2)  # S×in×out
        if self.bias is None:
            return torch.bmm(x, wt)
        return torch.baddbmm(self.bias.unsqueeze(1), x, wt)


class _GroupedFlatten(nn.Module):
    def __init__(self, flatten: nn.Flatten, ctx: _StackContext) -> None:
        super().__init__()
        if flatten.start_dim != 1 or flatten.end_dim != -1:
            raise KdlensError("grouped stacking supports Flatten(start_dim=1, end_dim=-1) only")
        self.ctx = [ctx]

    def forward(self, x: Tensor) -> Tensor:
        ctx = self.ctx[0]
        if x is ctx.shared_input:
            return x.flatten(1)  # B×D, shared by every student
        return x.reshape(x.shape[0], ctx.num_students, -1).transpose(0, 1)  # S×B×D


_PARAMETER_FREE_OK = True  # other parameter-free modules run unchanged (checked by the probe)


def _build_grouped(models: Sequence[nn.Module], ctx: _StackContext) -> nn.Module:
    """A copy of ``models[0]`` whose layers hold all students' tensors in the grouped layout."""
    stacked = copy.deepcopy(models[0])
    per_model = [dict(m.named_modules()) for m in models]
    for name, module in list(stacked.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            group = [mods[full] for mods in per_model]
            if type(child) is nn.Conv2d:
                setattr(module, child_name, _GroupedConv2d(group, ctx))
            elif type(child) in (nn.BatchNorm2d, SampleWeightedBatchNorm2d):
                setattr(module, child_name, _GroupedBatchNorm2d(group, ctx))
            elif type(child) is nn.Linear:
                setattr(module, child_name, _StackedLinear(group, ctx))
            elif type(child) is nn.Flatten:
                setattr(module, child_name, _GroupedFlatten(group[0], ctx))
    leftover = [
        f"{n} ({type(m).__name__})" for n, m in stacked.named_modules()
        if not isinstance(m, (_GroupedConv2d, _GroupedBatchNorm2d, _StackedLinear))
        and any(True for _ in m.parameters(recurse=False))
    ]
    if leftover:
        raise KdlensError(
            "grouped stacking cannot stack these layers: " + ", ".join(leftover[:6])
            + ". Use backend='vmap' (any module, slower)."
        )
    return stacked
