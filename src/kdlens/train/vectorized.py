"""Vectorised student sweeps: train many small students of one architecture together.

The soft-label experiments (Vats 2021, *Response-based knowledge distillation*: missing-class
test, entropy-ranked transfer sets, noisy soft labels, teacher pre-training sweeps) train tens
to hundreds of students that differ only in their seed, transfer set or soft-target settings.
Here they are **stacked**: every parameter and buffer gets a leading student axis ``S`` (the
layout of :func:`torch.func.stack_module_state`), one mini-batch and one cached teacher output
serve every student, and one forward/backward pass computes all their gradients.

>>> specs = [StudentSpec(seed=0, temperature=T, removed_classes=(c,)) for c in range(10) for T in (3, 9)]
>>> result = train_students("thesis_student", specs, train, teacher_logits, test=test, epochs=2)
>>> result.class_accuracy[:, 3]          # every student's accuracy on class 3's test images

Backends
--------
``backend="grouped"`` (default): the template model is deep-copied and its layers are swapped
for stacked versions that work on a **grouped layout**: a feature map of student ``s`` occupies
channels ``s·C … s·C+C-1`` of one ``B×(S·C)×H×W`` tensor. Then

* ``Conv2d(Cin→Cout, groups=g)`` becomes one convolution with ``groups=S·g`` (weights
  ``S×Cout×Cin/g×k×k`` reshaped to ``S·Cout×…``); on the shared input image (``Cin``
  channels, not ``S·Cin``) it is a single ordinary convolution with ``S·Cout`` filters;
* ``BatchNorm2d(C)`` becomes batch norm over ``S·C`` channels, which is exactly per-student
  batch norm (statistics are per channel); running statistics are views of ``S×C`` buffers;
* ``Flatten`` turns ``B×(S·C)×H×W`` into ``S×B×(C·H·W)`` (each student's features in the
  original ``(C, H, W)`` order) and ``Linear`` becomes a batched matmul on ``S×B×D``;
* element-wise and channel-local modules (ReLU, pooling, dropout, identity, …) and element-wise
  functional code in ``forward`` (residual sums, ``F.relu``) work on the grouped layout as they are.

The model's own ``forward`` runs unchanged, so any zoo model made of these parts works (thesis
CNNs and linear student, CIFAR ResNets, WRNs, MobileNetV2). Code that mixes channels outside a
module (channel shuffle, ``torch.cat`` on channels) would silently be wrong, so every stack is
checked once at construction: its eval-mode output on a probe batch must equal each student's
own output, otherwise a :class:`~kdlens.errors.KdlensError` suggests ``backend="vmap"``.

``backend="vmap"``: :func:`torch.func.stack_module_state` + :func:`torch.func.functional_call`
+ :func:`torch.func.vmap` over (parameters, buffers, sample weights), input shared
(``in_dims=None``) or per student. Works for any module; slower on CPU.

BatchNorm under stacking
------------------------
Running statistics are buffers with the student axis: ``grouped`` updates them in place through
channel views, ``vmap`` passes them with ``in_dims=0`` and batch norm updates the batched
buffers in place (supported by vmap because the buffers themselves are batched). In training
mode with sample weights (masked students, padded batches, see below) batch norm is computed
by :func:`weighted_batch_norm`: mean and (biased) variance over the student's samples with
weight ``w > 0`` only, the running variance with Bessel's correction ``n/(n−1)``, ``n`` = kept
samples × spatial size — exactly ``nn.BatchNorm2d`` applied to the kept samples. So a removed
class's images never influence a student, not even through batch statistics. A student with no
kept sample in a batch leaves its running statistics (and, see below, its parameters) alone.
``masked_batch_norm=False`` uses plain batch norm over the whole batch instead (faster; the
removed images then do enter the statistics).

Per-student sample weights and their semantics
----------------------------------------------
``batches="shared"`` (default): one batch stream over the whole training set (shuffled with
the per-epoch generator of :class:`~kdlens.train.trainer.Trainer`). Student ``s`` gives sample
``b`` the weight ``w[s,b] = 1`` if its label is not among ``spec.removed_classes`` and (when
``spec.subset`` is given) its index is in the subset, else 0, and minimises
``L_s = Σ_b w[s,b]·ℓ[s,b] / Σ_b w[s,b]``. A student whose batch has no kept sample takes no
step at all (no weight decay, no momentum update). Hence a stacked student is trained **on its
subset with batches that are the full-set batches restricted to the subset**: every kept
example once per epoch, in a uniformly random order, but with *variable batch sizes* (about
``B·|subset|/N``) and as many steps as there are non-empty restricted batches. That is **not**
the batch composition of a loader over the subset (fixed batch size ``B``, ``⌈|subset|/B⌉``
steps); for 90 % subsets (missing-class test) the difference is small, for tiny subsets it is
not — use ``batches="own"`` there.

``batches="own"``: every student iterates over its own subset exactly like a subset loader
(:class:`~kdlens.data.TensorBatches` over ``spec.subset`` minus the removed classes, shuffled
with the same per-epoch generator as the Trainer, batch size ``B``); the per-student batches are
stacked (a last, smaller batch is padded with weight-0 rows), so the stacked student equals a
student trained alone on its subset. Students whose epochs are shorter finish first and then
sit idle (they take no steps) while the others continue.

Optimiser
---------
SGD with momentum, dampening 0, weight decay and optional Nesterov, implemented functionally on
the stacked tensors with the formula of :class:`torch.optim.SGD`
(``g ← g + λ·p; b ← μ·b + g`` (``b ← g`` on a student's first step); ``d ← g + μ·b`` (Nesterov)
or ``d ← b``; ``p ← p − η·d``); the learning rate per epoch comes from the same scheduler
(:func:`~kdlens.train.schedules.build_scheduler`) a Trainer would use.

Loss
----
Per sample, with ``p`` the soft target of the student's source at its temperature ``T``:
``ℓ = α·T²·KL(p ‖ softmax(z/T)) + γ·CE(z, y)`` (Hinton et al. 2015; ``α, γ`` default to kdlens's
``kd`` method weights 0.9 / 0.1). ``spec.soft_source="ls"`` uses the label-smoothed target
``(1−α_LS)·onehot(y) + α_LS/K`` instead (the no-similarity control, Vats 2021 §4.4); ``noise``
adds uniform or normal noise to ``p``, clamps at 0 and renormalises (Vats 2021 §4.8, as
:class:`~kdlens.distill.losses.noisy_kd.NoisyKDLoss`), redrawn every step from the student's own
generator (seeded by ``spec.noise_seed``).

Equivalence: with the same init seed and batch order, a student trained in a stack matches
:func:`train_single_student` (a plain ``nn.Module`` and ``torch.optim.SGD``) up to float
rounding (grouped convolutions sum in a different order); the tests check 1e-4 relative, and
that a ``batches="own"`` student equals ``Trainer`` + ``DistillLoop`` (method ``kd``) on its
subset. Rounding differences stay at that level in well-conditioned training; in chaotic
regimes (large ``lr·T²`` with batch norm over a handful of samples) any two float orders
diverge, stacked or not. Students with active dropout draw different random masks in a stack
than alone. The ``vmap`` backend needs batch-norm layers with a ``momentum`` (the default 0.1),
not the cumulative average (``momentum=None``).

Where the time goes
-------------------
Stacking shares the batch gathering and normalisation, the teacher-logit lookup, the soft
targets, the first convolution on the shared image (one wide convolution) and the Python and
dispatch overhead of every step. It does not reduce the arithmetic or the activation memory
traffic, which grow linearly with ``S``; on a CPU the training of a small CNN is bound by that
traffic. Measured on this project's 2-core CPU (``benchmarks/missing_class_sweep.py``, 70
students, both paths with the same allocator setting): thesis CNN student 0.9–1.2× the speed
of one-by-one training (no gain), linear baseline student about 6× (per-step overhead dominates
it). Large gains are expected where single small models leave the device idle (GPUs; not
measured here). ``chunk_size`` bounds the students per
pass (memory: a chunk's activations are ``chunk_size`` times a model's), ``channels_last``
helps oneDNN's grouped convolutions, and on CPUs :class:`reuse_cpu_memory` keeps big
activations off fresh ``mmap`` pages.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdlens.config import OptimConfig
from kdlens.data import Dataset, TensorBatches, normalize
from kdlens.data.dataset import as_index_tensor
from kdlens.distill.losses.noisy_kd import perturb_soft_labels
from kdlens.errors import KdlensError
from kdlens.train.schedules import build_optimizer, build_scheduler
from kdlens.train.trainer import epoch_seed

__all__ = [
    "StackResult",
    "StackedStudents",
    "StudentSpec",
    "train_single_student",
    "train_students",
    "reuse_cpu_memory",
    "sgd_step_",
    "weighted_batch_norm",
]

KD_ALPHA, KD_GAMMA = 0.9, 0.1  # kdlens's "kd" method weights (distill/methods.py)


# ----------------------------------------------------------------------------------------------
# what differs between the students of a stack
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StudentSpec:
    """One student of a sweep: initialisation, transfer set and soft targets.

    Attributes:
        seed: initialisation seed (``torch.manual_seed(seed)`` before building the model,
            as :func:`~kdlens.train.model_setup.model_for_data` does).
        temperature: distillation temperature ``T`` (> 0).
        soft_source: ``"teacher"`` (softmax of the teacher logits at ``T``) or ``"ls"``
            (label smoothing with ``alpha_ls``: no class similarity).
        alpha_ls: α_LS of the ``"ls"`` source.
        noise, noise_scale, noise_seed: ``"none"``, ``"uniform"`` (U(−s, s)) or ``"normal"``
            (N(0, s²)) noise added to the soft target, clamped and renormalised.
        removed_classes: classes whose examples get weight 0 (missing-class test).
        subset: training-set indices this student may use (``None``: all).
        teacher: which teacher's logits (index into a stack of teacher logits).
        alpha, gamma: weights of the soft (KD) and hard (CE) terms.
        tags: free-form labels carried into results (``{"class": 3, "T": 9}``).
    """

    seed: int = 0
    temperature: float = 4.0
    soft_source: Literal["teacher", "ls"] = "teacher"
    alpha_ls: float = 0.1
    noise: Literal["none", "uniform", "normal"] = "none"
    noise_scale: float = 0.0
    noise_seed: int = 0
    removed_classes: tuple[int, ...] = ()
    subset: tuple[int, ...] | np.ndarray | None = field(default=None, compare=False)
    teacher: int = 0
    alpha: float = KD_ALPHA
    gamma: float = KD_GAMMA
    tags: dict[str, Any] = field(default_factory=dict, compare=False)

    def check(self, num_classes: int, num_teachers: int, n_train: int) -> None:
        """Raise a :class:`KdlensError` naming the bad field."""
        if not self.temperature > 0:
            raise KdlensError(f"student spec: temperature must be > 0, got {self.temperature}")
        if self.soft_source not in ("teacher", "ls"):
            raise KdlensError(f"student spec: soft_source must be 'teacher' or 'ls', got {self.soft_source!r}")
        if not 0.0 <= self.alpha_ls <= 1.0:
            raise KdlensError(f"student spec: alpha_ls must be in [0, 1], got {self.alpha_ls}")
        if self.noise not in ("none", "uniform", "normal"):
            raise KdlensError(f"student spec: noise must be 'none', 'uniform' or 'normal', got {self.noise!r}")
        if self.noise_scale < 0:
            raise KdlensError(f"student spec: noise_scale must be >= 0, got {self.noise_scale}")
        bad = [c for c in self.removed_classes if not 0 <= int(c) < num_classes]
        if bad:
            raise KdlensError(f"student spec: removed class id(s) {bad} do not exist; allowed 0..{num_classes - 1}")
        if len(set(self.removed_classes)) >= num_classes:
            raise KdlensError("student spec: removing every class leaves nothing to train on")
        if self.soft_source == "teacher" and not 0 <= self.teacher < max(num_teachers, 0):
            if num_teachers == 0:
                raise KdlensError("student spec: soft_source='teacher' needs teacher logits, none were given")
            raise KdlensError(f"student spec: teacher index {self.teacher} out of range 0..{num_teachers - 1}")
        if self.alpha < 0 or self.gamma < 0 or self.alpha + self.gamma == 0:
            raise KdlensError(f"student spec: need alpha, gamma >= 0, not both 0; got {self.alpha}, {self.gamma}")
        if self.subset is not None:
            as_index_tensor(self.subset, n_train, "student spec subset")


# ----------------------------------------------------------------------------------------------
# batch norm with per-sample weights
# ----------------------------------------------------------------------------------------------
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


class _StackContext:
    """State shared by the stacked layers during one forward call."""

    def __init__(self, num_students: int) -> None:
        self.num_students = num_students
        self.shared_input: Tensor | None = None
        self.sample_weight: Tensor | None = None  # S×B (grouped) or B (vmap, per student)


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


# ----------------------------------------------------------------------------------------------
# grouped-layout layers
# ----------------------------------------------------------------------------------------------
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


# ----------------------------------------------------------------------------------------------
# the stack
# ----------------------------------------------------------------------------------------------
class StackedStudents:
    """``S`` students of one architecture with stacked parameters and buffers.

    ``forward(x, sample_weight)``: ``x`` is one batch shared by all students (``B×C×H×W``) or
    one batch per student (``S×B×C×H×W``); ``sample_weight`` ``S×B`` (or ``None``) selects the
    samples batch norm uses in training mode. Returns logits ``S×B×K``.
    :attr:`params` / :attr:`buffers` map the template's names to ``S×…`` tensors.
    """

    def __init__(
        self,
        models: Sequence[nn.Module],
        backend: Literal["grouped", "vmap"] = "grouped",
        example_input: Tensor | None = None,
        check_atol: float = 1e-4,
    ) -> None:
        if not models:
            raise KdlensError("a stack needs at least one student")
        if backend not in ("grouped", "vmap"):
            raise KdlensError(f"unknown stacking backend {backend!r}; use 'grouped' or 'vmap'")
        names = [tuple(n for n, _ in m.named_parameters()) for m in models]
        if any(n != names[0] for n in names):
            raise KdlensError("all students of a stack must have the same architecture")
        self.num_students = len(models)
        self.backend = backend
        #: grouped backend: feed the stack channels-last tensors (oneDNN's preferred layout on CPUs)
        self.channels_last = False
        self.template = copy.deepcopy(models[0]).cpu()
        self.ctx = _StackContext(self.num_students)
        self.training = True
        if backend == "grouped":
            self.module = _build_grouped(models, self.ctx)
            self.params = dict(self.module.named_parameters())
            self.buffers = dict(self.module.named_buffers())
        else:
            from torch.func import stack_module_state

            base = copy.deepcopy(models[0])
            self._weighted_bns = _swap_batch_norms(base)
            self.module = base.to("meta")
            params, buffers = stack_module_state(list(models))
            self.params = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
            self.buffers = {k: v.detach().clone() for k, v in buffers.items()}
        if example_input is not None:
            self._check(models, example_input, check_atol)

    # -- modes and devices ---------------------------------------------------------
    def train(self, mode: bool = True) -> StackedStudents:
        self.training = mode
        self.module.train(mode)
        return self

    def eval(self) -> StackedStudents:
        return self.train(False)

    def to(self, device: torch.device | str) -> StackedStudents:
        if self.backend == "grouped":
            self.module.to(device)
            self.params = dict(self.module.named_parameters())
            self.buffers = dict(self.module.named_buffers())
        else:
            self.params = {k: v.detach().to(device).requires_grad_(True) for k, v in self.params.items()}
            self.buffers = {k: v.to(device) for k, v in self.buffers.items()}
        return self

    def parameters(self) -> list[Tensor]:
        return list(self.params.values())

    # -- forward ------------------------------------------------------------------
    def __call__(self, x: Tensor, sample_weight: Tensor | None = None) -> Tensor:
        return self.forward(x, sample_weight)

    def forward(self, x: Tensor, sample_weight: Tensor | None = None) -> Tensor:
        s = self.num_students
        per_student = x.dim() >= 2 and x.shape[0] == s and x.dim() == 5
        if self.backend == "grouped":
            if per_student:
                x = x.transpose(0, 1).flatten(1, 2)  # B×(S·C)×H×W
            if self.channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            self.ctx.shared_input = None if per_student else x
            self.ctx.sample_weight = sample_weight if self.training else None
            try:
                out = self.module(x)
            finally:
                self.ctx.shared_input = None
                self.ctx.sample_weight = None
            if out.dim() == 2:  # a model whose output never met a stacked Linear (shared)
                out = out.unsqueeze(0).expand(s, *out.shape)
            return out
        return self._vmap_forward(x, sample_weight, per_student)

    def _vmap_forward(self, x: Tensor, w: Tensor | None, per_student: bool) -> Tensor:
        from torch.func import functional_call, vmap

        module, bns = self.module, self._weighted_bns

        def one(params: dict, buffers: dict, w_s: Tensor | None, x_s: Tensor) -> Tensor:
            for bn in bns:
                bn.sample_weight = w_s if self.training else None
            try:
                return functional_call(module, (params, buffers), (x_s,))
            finally:
                for bn in bns:
                    bn.sample_weight = None

        in_dims = (0, 0, None if w is None else 0, 0 if per_student else None)
        return vmap(one, in_dims=in_dims, randomness="different")(self.params, self.buffers, w, x)

    # -- students -----------------------------------------------------------------
    def student_state_dict(self, i: int) -> dict[str, Tensor]:
        """Student ``i``'s state dict in the template's layout (CPU tensors)."""
        state = {**self.params, **self.buffers}
        own = self.template.state_dict()
        out = {}
        for key in own:
            if key in state:
                out[key] = state[key][i].detach().cpu().clone()
            else:  # a grouped BN swapped from SampleWeightedBatchNorm etc. keeps names; be strict
                raise KdlensError(f"stack lost tensor {key!r}")
        return out

    def student(self, i: int) -> nn.Module:
        """Student ``i`` as an ordinary module (a copy of the template with its weights)."""
        model = copy.deepcopy(self.template)
        model.load_state_dict(self.student_state_dict(i))
        return model

    def _check(self, models: Sequence[nn.Module], x: Tensor, atol: float) -> None:
        """Eval-mode outputs of the stack must equal each student's own outputs."""
        was = self.training
        self.eval()
        try:
            with torch.no_grad():
                stacked = self.forward(x)
                for i, m in enumerate(models):
                    m_was = m.training
                    m.eval()
                    own = m(x)
                    m.train(m_was)
                    err = float((stacked[i] - own).abs().max())
                    scale = float(own.abs().max()) + 1.0
                    if not err <= atol * scale:
                        raise KdlensError(
                            f"{type(models[0]).__name__} cannot be stacked with backend={self.backend!r}: "
                            f"student {i}'s stacked output differs from its own by {err:.3g} (its forward "
                            "mixes channels outside the supported layers). Use backend='vmap'."
                        )
        finally:
            self.train(was)


# ----------------------------------------------------------------------------------------------
# optimiser
# ----------------------------------------------------------------------------------------------
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


# ----------------------------------------------------------------------------------------------
# soft targets and the per-sample loss (shared by the stack and the single-student reference)
# ----------------------------------------------------------------------------------------------
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


# ----------------------------------------------------------------------------------------------
# data plumbing
# ----------------------------------------------------------------------------------------------
def _teacher_stack(teacher_logits: Tensor | Sequence[Tensor] | None, n: int, k: int) -> Tensor | None:
    if teacher_logits is None:
        return None
    t = torch.stack(list(teacher_logits)) if isinstance(teacher_logits, (list, tuple)) else teacher_logits
    t = torch.as_tensor(t).float()
    if t.dim() == 2:
        t = t.unsqueeze(0)
    if t.dim() != 3 or t.shape[1] != n or t.shape[2] != k:
        raise KdlensError(
            f"teacher logits must be N×K (or M×N×K for M teachers) for the {n} training examples and "
            f"{k} classes; got shape {tuple(t.shape)}"
        )
    return t


def _allowed(specs: Sequence[StudentSpec], labels: Tensor, n: int) -> Tensor:
    """Bool ``S×N``: which training examples each student may use."""
    allowed = torch.ones(len(specs), n, dtype=torch.bool)
    for i, spec in enumerate(specs):
        if spec.subset is not None:
            row = torch.zeros(n, dtype=torch.bool)
            row[as_index_tensor(spec.subset, n, "student spec subset")] = True
            allowed[i] = row
        if spec.removed_classes:
            allowed[i] &= ~torch.isin(labels.cpu(), torch.tensor(list(spec.removed_classes)))
    if not bool(allowed.any(1).all()):
        empty = [i for i in range(len(specs)) if not bool(allowed[i].any())]
        raise KdlensError(f"student(s) {empty} have no training example left (subset minus removed classes)")
    return allowed


@dataclass
class StackResult:
    """What a sweep produced: per-student test accuracies, histories and weights.

    ``accuracy``: ``S`` test accuracy in %; ``class_accuracy``: ``S×K`` accuracy on each
    class's test images in % (NaN for a class without test images); ``steps``: optimiser steps
    each student took; ``history``: one row per epoch with each student's mean loss;
    ``state_dicts``: each student's weights in the template's layout (CPU), when kept.
    """

    specs: list[StudentSpec]
    accuracy: np.ndarray
    class_accuracy: np.ndarray
    steps: np.ndarray
    history: list[dict[str, Any]]
    seconds: float
    state_dicts: list[dict[str, Tensor]] = field(default_factory=list, repr=False)

    def rows(self) -> list[dict[str, Any]]:
        """One tidy row per student: its tags, spec fields and accuracies."""
        out = []
        for i, spec in enumerate(self.specs):
            row: dict[str, Any] = dict(spec.tags)
            row.update(
                student=i, seed=spec.seed, T=spec.temperature, soft_source=spec.soft_source,
                alpha_ls=spec.alpha_ls, noise=spec.noise, noise_scale=spec.noise_scale,
                removed_classes=list(spec.removed_classes), teacher=spec.teacher,
                test_acc=float(self.accuracy[i]), steps=int(self.steps[i]),
            )
            out.append(row)
        return out


def _build_students(student: str | Callable[[int], nn.Module], specs: Sequence[StudentSpec], train: Dataset) -> list[nn.Module]:
    if isinstance(student, str):
        from kdlens.train.model_setup import model_for_data

        return [model_for_data(student, train, spec.seed) for spec in specs]
    models = []
    for spec in specs:
        torch.manual_seed(spec.seed)
        models.append(student(spec.seed))
    return models


class _Batcher:
    """Batches for the stack: one shared stream, or one per student padded to ``S×B``."""

    def __init__(self, mode: str, train: Dataset, allowed: Tensor, batch_size: int, seed: int, device: torch.device):
        self.mode = mode
        self.images = train.images.to(device)
        self.labels = train.labels.to(device)
        self.mean, self.std = train.mean, train.std
        self.allowed = allowed.to(device)
        self.batch_size = batch_size
        self.seed = seed
        self.device = device
        n = len(train)
        self.indices = [torch.nonzero(allowed[i]).flatten() for i in range(allowed.shape[0])]
        self.steps_per_epoch = (
            -(-n // batch_size) if mode == "shared" else [-(-int(ix.numel()) // batch_size) for ix in self.indices]
        )

    def prepare(self, x: Tensor) -> Tensor:
        return normalize(x, self.mean, self.std)

    def total_steps(self, epochs: int | Sequence[int]) -> int:
        if self.mode == "shared":
            return int(epochs) * int(self.steps_per_epoch)  # type: ignore[arg-type,call-overload]
        per = _per_student(epochs, len(self.indices))
        return max(e * n for e, n in zip(per, self.steps_per_epoch))  # type: ignore[arg-type]

    def shared_epochs(self, epochs: int):
        """Yield ``(epoch, x, y, idx, w)`` with ``w`` = S×B allowed mask."""
        for epoch in range(epochs):
            gen = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
            torch.manual_seed(epoch_seed(self.seed, epoch) + 1)
            for x, y, idx in TensorBatches(self.images, self.labels, self.batch_size, shuffle=True, generator=gen):
                w = self.allowed[:, idx].float()
                yield epoch, self.prepare(x), y, idx, w

    def own_epochs(self, epochs: int | Sequence[int]):
        """Yield ``(student_epochs, x S×B×…, y S×B, idx S×B, w S×B)``; each student runs its own
        subset loader (per-epoch generator as the Trainer) for its own number of epochs;
        finished students get weight 0."""
        s, b = len(self.indices), self.batch_size
        per = _per_student(epochs, s)
        iters: list[Any] = [None] * s
        epoch_of = [0] * s
        done = [False] * s

        def start(i: int) -> None:
            gen = torch.Generator().manual_seed(epoch_seed(self.seed, epoch_of[i]))
            iters[i] = iter(TensorBatches(self.images, self.labels, b, shuffle=True, generator=gen,
                                          indices=self.indices[i].cpu()))

        for i in range(s):
            start(i)
        while True:
            idx = torch.zeros(s, b, dtype=torch.long, device=self.device)
            w = torch.zeros(s, b, device=self.device)
            for i in range(s):
                if done[i]:
                    continue
                batch = next(iters[i], None)
                if batch is None:
                    epoch_of[i] += 1
                    if epoch_of[i] >= per[i]:
                        done[i] = True
                        continue
                    start(i)
                    batch = next(iters[i])
                got = batch[2]
                idx[i, : got.numel()] = got
                w[i, : got.numel()] = 1.0
            if all(done):
                return
            flat = idx.flatten()
            x = self.prepare(self.images.index_select(0, flat)).view(s, b, *self.images.shape[1:])
            yield list(epoch_of), x, self.labels[flat].view(s, b), idx, w


def _per_student(epochs: int | Sequence[int], s: int) -> list[int]:
    if isinstance(epochs, (int, np.integer)):
        return [int(epochs)] * s
    per = [int(e) for e in epochs]
    if len(per) != s:
        raise KdlensError(f"{len(per)} epoch counts for {s} students")
    return per


# ----------------------------------------------------------------------------------------------
# training
# ----------------------------------------------------------------------------------------------
class reuse_cpu_memory:  # noqa: N801  (a context manager used like a function)
    """Keep large CPU allocations on glibc's heap for the duration of a ``with`` block.

    glibc's ``malloc`` serves blocks above its mmap threshold (adaptive, at most 32 MiB on
    64-bit) with fresh ``mmap`` pages and unmaps them on ``free``, so every allocation of such a
    tensor pays page faults on first touch. A stack's activations are ``S`` times a model's and
    easily exceed 32 MiB (thesis student, batch 128, 10 students: 64 MiB per feature map);
    measured here, copying one such tensor took 45 ms with fresh pages and 8 ms from the heap,
    and the page faults made a stack slower per student than single models. (Single models
    suffer too before glibc's threshold adapts: one thesis student's 18-step KD run took 7.9 s in a
    fresh process and 0.45 s inside this block.) Inside the block
    ``mallopt(M_MMAP_MAX=0)`` serves them from the heap and ``M_TRIM_THRESHOLD`` keeps freed
    memory for reuse; on exit the settings become those of a fully adapted glibc (mmap
    threshold 32 MiB, trim threshold 64 MiB) and ``malloc_trim`` returns the freed heap. A no-op
    where glibc's ``mallopt`` is missing. Process-wide while active.
    """

    _M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._mallopt = None

    def __enter__(self) -> reuse_cpu_memory:
        if not self.enabled:
            return self
        try:
            import ctypes

            mallopt = ctypes.CDLL(None).mallopt
        except (OSError, AttributeError):
            return self
        mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        self._mallopt = mallopt
        mallopt(self._M_MMAP_MAX, 0)
        mallopt(self._M_TRIM_THRESHOLD, 1 << 30)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._mallopt is not None:
            self._mallopt(self._M_MMAP_MAX, 65536)
            self._mallopt(self._M_MMAP_THRESHOLD, 32 << 20)
            self._mallopt(self._M_TRIM_THRESHOLD, 64 << 20)
            self._mallopt = None
            try:  # hand the freed heap back to the system
                import ctypes

                ctypes.CDLL(None).malloc_trim(0)
            except (OSError, AttributeError):
                pass


def _default_optim() -> OptimConfig:
    return OptimConfig(schedule="constant")


def train_students(
    student: str | Callable[[int], nn.Module],
    specs: Sequence[StudentSpec],
    train: Dataset,
    teacher_logits: Tensor | Sequence[Tensor] | None,
    *,
    test: Dataset | None = None,
    epochs: int | Sequence[int] = 1,
    batch_size: int = 128,
    optim: OptimConfig | None = None,
    seed: int = 0,
    batches: Literal["shared", "own"] = "shared",
    backend: Literal["grouped", "vmap"] = "grouped",
    chunk_size: int | None = None,
    masked_batch_norm: bool = True,
    device: torch.device | str = "cpu",
    keep_states: bool = True,
    progress: bool = False,
    heap_allocations: bool = True,
    channels_last: bool = False,
) -> StackResult:
    """Train the students ``specs`` of architecture ``student`` together (see module docstring).

    Args:
        student: a zoo model name (built for ``train`` with each spec's seed) or a factory
            ``f(seed) -> nn.Module`` (called after ``torch.manual_seed(seed)``).
        specs: one :class:`StudentSpec` per student.
        train: the transfer set (uint8 images are normalised with its mean/std; no augmentation).
        teacher_logits: ``N×K`` logits of one teacher for every training example (a cache), or
            ``M×N×K`` / a list for several teachers (``spec.teacher`` picks one); ``None`` when
            every student uses ``soft_source="ls"``.
        test: evaluated after the last epoch (accuracy and per-class accuracy).
        epochs, batch_size, optim: as for a Trainer (default optim: SGD lr 0.05, momentum 0.9,
            weight decay 5e-4, constant schedule); ``seed`` fixes the batch order. With
            ``batches="own"``, ``epochs`` may be one count per student (over its own subset;
            its learning-rate schedule then spans its own epochs).
        batches: ``"shared"`` (masks on one stream) or ``"own"`` (each student its subset loader).
        backend: ``"grouped"`` or ``"vmap"``.
        chunk_size: students per forward pass (``None``: all). Chunks share each batch and teacher
            lookup; smaller chunks keep activations in cache on CPUs.
        masked_batch_norm: batch statistics over each student's kept samples only.
        heap_allocations: on a CPU device, run inside :class:`reuse_cpu_memory` (large stacked
            activations without page faults).
        channels_last: grouped backend: channels-last activations.
    """
    device = torch.device(device) if isinstance(device, str) else device
    with reuse_cpu_memory(heap_allocations and device.type == "cpu"):
        return _train_students(
            student, specs, train, teacher_logits, test=test, epochs=epochs, batch_size=batch_size,
            optim=optim, seed=seed, batches=batches, backend=backend, chunk_size=chunk_size,
            masked_batch_norm=masked_batch_norm, device=device, keep_states=keep_states, progress=progress,
            channels_last=channels_last,
        )


def _train_students(
    student: str | Callable[[int], nn.Module],
    specs: Sequence[StudentSpec],
    train: Dataset,
    teacher_logits: Tensor | Sequence[Tensor] | None,
    *,
    test: Dataset | None,
    epochs: int | Sequence[int],
    batch_size: int,
    optim: OptimConfig | None,
    seed: int,
    batches: str,
    backend: str,
    chunk_size: int | None,
    masked_batch_norm: bool,
    device: torch.device,
    keep_states: bool,
    progress: bool,
    channels_last: bool,
) -> StackResult:
    optim = optim or _default_optim()
    specs = list(specs)
    if not specs:
        raise KdlensError("no students to train")
    if batches not in ("shared", "own"):
        raise KdlensError(f"batches must be 'shared' or 'own', got {batches!r}")
    if batches == "shared" and not isinstance(epochs, (int, np.integer)):
        raise KdlensError("per-student epoch counts need batches='own'")
    per_epochs = _per_student(epochs, len(specs))
    if min(per_epochs) < 1 or batch_size < 1:
        raise KdlensError(f"epochs and batch_size must be >= 1, got {epochs}, {batch_size}")
    n, k = len(train), train.num_classes
    t_stack = _teacher_stack(teacher_logits, n, k)
    num_teachers = 0 if t_stack is None else t_stack.shape[0]
    for spec in specs:
        spec.check(k, num_teachers, n)
    allowed = _allowed(specs, train.labels, n)
    chunk = len(specs) if chunk_size is None else max(1, int(chunk_size))
    bounds = [(a, min(a + chunk, len(specs))) for a in range(0, len(specs), chunk)]

    models = _build_students(student, specs, train)
    probe = normalize(train.images[:4], train.mean, train.std)
    stacks = [StackedStudents(models[a:e], backend, example_input=probe).to(device).train() for a, e in bounds]
    for stack in stacks:
        stack.channels_last = channels_last
    del models
    targets = [_Targets(specs[a:e], k, device) for a, e in bounds]
    if t_stack is not None:
        t_stack = t_stack.to(device)
    batcher = _Batcher(batches, train, allowed, batch_size, seed, device)
    weighted = masked_batch_norm and (batches == "own" or not bool(allowed.all()))
    lr_table = {e: _epoch_lrs(optim, e) for e in set(per_epochs)}
    lrs = lr_table[per_epochs[0]]
    state = []
    for stack in stacks:
        ps = stack.parameters()
        state.append(([torch.zeros_like(p) for p in ps], torch.zeros(stack.num_students, dtype=torch.bool, device=device)))
    # accumulators stay on the device: no host synchronisation per step
    steps = torch.zeros(len(specs), dtype=torch.long, device=device)
    loss_sum = torch.zeros(len(specs), dtype=torch.float64, device=device)
    loss_n = torch.zeros(len(specs), dtype=torch.float64, device=device)
    history: list[dict[str, Any]] = []
    start = time.perf_counter()
    epoch_start = start
    current_epoch = 0
    total = batcher.total_steps(epochs)

    def close_epoch(epoch: int) -> None:
        nonlocal epoch_start
        now = time.perf_counter()
        mean = (loss_sum / loss_n.clamp_min(1)).tolist()
        history.append({"epoch": epoch + 1, "lr": lrs[min(epoch, len(lrs) - 1)], "train_loss": mean,
                        "epoch_seconds": now - epoch_start})
        if progress:
            print(f"epoch {epoch + 1}/{max(per_epochs)}: mean loss {float(np.mean(mean)):.4f} "
                  f"({now - epoch_start:.1f}s)", flush=True)
        loss_sum.zero_()
        loss_n.zero_()
        epoch_start = now

    stream = batcher.shared_epochs(epochs) if batches == "shared" else batcher.own_epochs(epochs)
    for step_i, (ep, x, y, idx, w) in enumerate(stream):
        if batches == "shared":
            if ep != current_epoch:
                close_epoch(current_epoch)
                current_epoch = ep
        elif progress and step_i % max(1, total // 10) == 0:
            print(f"step {step_i}/{total}", flush=True)
        for (a, e), stack, tg, (bufs, started) in zip(bounds, stacks, targets, state):
            s = e - a
            w_c = w[a:e]
            if batches == "shared":
                y_c = y.unsqueeze(0).expand(s, -1)
                idx_c = idx.unsqueeze(0).expand(s, -1)
                x_c = x
            else:
                y_c, idx_c, x_c = y[a:e], idx[a:e], x[a:e]
            t_c = None
            if t_stack is not None and tg.any_teacher:
                t_c = t_stack[tg.teacher.view(-1, 1), idx_c]  # S×B×K
            logits = stack(x_c, w_c if weighted else None)
            p = tg.soft(t_c, y_c)
            per_student, active = _weighted_mean(tg.per_sample_loss(logits, p, y_c), w_c)
            params = stack.parameters()
            grads = torch.autograd.grad(per_student.sum(), params, allow_unused=True)
            if batches == "shared":
                lr: float | Tensor = lrs[ep]
            else:
                lr_list = [lr_table[per_epochs[i]][min(ep[i], per_epochs[i] - 1)] for i in range(a, e)]
                lr = lr_list[0] if len(set(lr_list)) == 1 else torch.tensor(lr_list, device=device)
            sgd_step_(params, grads, bufs, started, active, lr, optim.momentum, optim.weight_decay,
                      optim.nesterov and optim.momentum > 0)
            steps[a:e] += active.long()
            loss_sum[a:e] += torch.where(active, per_student.detach().double(), 0.0)
            loss_n[a:e] += active.double()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    close_epoch(current_epoch if batches == "shared" else max(per_epochs) - 1)
    seconds = time.perf_counter() - start

    acc = np.full(len(specs), np.nan)
    cls_acc = np.full((len(specs), k), np.nan)
    if test is not None:
        for (a, e), stack in zip(bounds, stacks):
            # a stack's activations are S times a model's: keep evaluation batches of about 1000 student-images × 2
            eval_batch = max(batch_size, 2000 // stack.num_students)
            acc[a:e], cls_acc[a:e] = evaluate_stack(stack, test, device, eval_batch)
    states = []
    if keep_states:
        for stack in stacks:
            states += [stack.student_state_dict(i) for i in range(stack.num_students)]
    return StackResult(specs, acc, cls_acc, steps.cpu().numpy(), history, seconds, states)


@torch.no_grad()
def stack_logits(stack: StackedStudents, data: Dataset, device: torch.device | str = "cpu", batch_size: int = 1000) -> Tensor:
    """Eval-mode logits ``S×N×K`` (CPU) of every student for every example of ``data``."""
    was = stack.training
    stack.eval()
    out = []
    try:
        for start in range(0, len(data), batch_size):
            x = normalize(data.images[start : start + batch_size].to(device), data.mean, data.std)
            out.append(stack(x).float().cpu())
    finally:
        stack.train(was)
    return torch.cat(out, dim=1)


def evaluate_stack(
    stack: StackedStudents, data: Dataset, device: torch.device | str = "cpu", batch_size: int = 1000
) -> tuple[np.ndarray, np.ndarray]:
    """``(accuracy S, class_accuracy S×K)`` in % on ``data``."""
    logits = stack_logits(stack, data, device, batch_size)
    return accuracies(logits, data.labels, data.num_classes)


def accuracies(logits: Tensor, labels: Tensor, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Overall and per-class top-1 accuracy (%) of ``S×N×K`` (or ``N×K``) logits."""
    if logits.dim() == 2:
        logits = logits.unsqueeze(0)
    labels = labels.cpu()
    correct = (logits.argmax(2) == labels.unsqueeze(0)).double()  # S×N
    acc = correct.mean(1).numpy() * 100.0
    counts = torch.bincount(labels, minlength=num_classes).double()
    per_class = torch.zeros(correct.shape[0], num_classes, dtype=torch.float64)
    per_class.index_add_(1, labels, correct)
    cls = (per_class / counts.clamp_min(1)).numpy() * 100.0
    cls[:, counts.numpy() == 0] = np.nan
    return acc, cls


# ----------------------------------------------------------------------------------------------
# the one-by-one reference
# ----------------------------------------------------------------------------------------------
def train_single_student(
    student: str | Callable[[int], nn.Module],
    spec: StudentSpec,
    train: Dataset,
    teacher_logits: Tensor | Sequence[Tensor] | None,
    *,
    test: Dataset | None = None,
    epochs: int = 1,
    batch_size: int = 128,
    optim: OptimConfig | None = None,
    seed: int = 0,
    batches: Literal["shared", "own"] = "shared",
    masked_batch_norm: bool = True,
    device: torch.device | str = "cpu",
) -> tuple[nn.Module, dict[str, Any]]:
    """Train one student alone — a plain ``nn.Module`` with ``torch.optim.SGD`` — on exactly the
    batches and loss it would get in :func:`train_students` (same seed, same batch order).

    The reference for the stacking equivalence test and the one-by-one baseline. Masked
    students use :class:`SampleWeightedBatchNorm2d` (statistics over kept samples); a step
    without kept samples is skipped. Returns the model and ``{"accuracy", "class_accuracy",
    "steps", "seconds"}``.
    """
    device = torch.device(device) if isinstance(device, str) else device
    optim = optim or _default_optim()
    n, k = len(train), train.num_classes
    t_stack = _teacher_stack(teacher_logits, n, k)
    spec.check(k, 0 if t_stack is None else t_stack.shape[0], n)
    allowed = _allowed([spec], train.labels, n)
    model = _build_students(student, [spec], train)[0].to(device).train()
    weighted = masked_batch_norm and (batches == "own" or not bool(allowed.all()))
    bns = _swap_batch_norms(model) if weighted else []
    opt = build_optimizer(model.parameters(), optim)
    lrs = _epoch_lrs(optim, epochs)
    tg = _Targets([spec], k, device)
    t_stack = None if t_stack is None else t_stack.to(device)
    batcher = _Batcher(batches, train, allowed, batch_size, seed, device)
    stream = batcher.shared_epochs(epochs) if batches == "shared" else batcher.own_epochs(epochs)
    steps = 0
    start = time.perf_counter()
    for ep, x, y, idx, w in stream:
        if batches == "own":
            x, y, idx, w = x[0], y[0], idx[0], w[0:1]
            ep = ep[0]
        for group in opt.param_groups:
            group["lr"] = lrs[min(ep, epochs - 1)]
        for bn in bns:
            bn.sample_weight = w[0]
        logits = model(x).unsqueeze(0)
        for bn in bns:
            bn.sample_weight = None
        t = None if t_stack is None or not tg.any_teacher else t_stack[spec.teacher, idx].unsqueeze(0)
        p = tg.soft(t, y.unsqueeze(0))
        loss, active = _weighted_mean(tg.per_sample_loss(logits, p, y.unsqueeze(0)), w)
        if not bool(active[0]):
            continue
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        opt.step()
        steps += 1
    seconds = time.perf_counter() - start
    info: dict[str, Any] = {"steps": steps, "seconds": seconds}
    if test is not None:
        from kdlens.train.evaluate import EvalSet, predict_logits

        logits = predict_logits(model, EvalSet(test.images, test.labels, lambda b: normalize(b, test.mean, test.std)), device)
        acc, cls = accuracies(logits, test.labels, k)
        info.update(accuracy=float(acc[0]), class_accuracy=cls[0])
    return model, info
