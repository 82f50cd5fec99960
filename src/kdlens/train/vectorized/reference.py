"""The one-by-one reference: :func:`train_single_student` trains one student alone (a plain
``nn.Module`` with ``torch.optim.SGD``) on exactly the batches and loss it would get in a
stack; the baseline of the equivalence tests and of the speed comparisons."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from kdlens.config import OptimConfig
from kdlens.data import Dataset, normalize
from kdlens.train.schedules import build_optimizer
from kdlens.train.vectorized.batching import (
    _allowed,
    _Batcher,
    _build_students,
    _teacher_stack,
)
from kdlens.train.vectorized.evaluation import accuracies
from kdlens.train.vectorized.sgd import _default_optim, _epoch_lrs
from kdlens.train.vectorized.spec import StudentSpec
from kdlens.train.vectorized.targets import _Targets, _weighted_mean
from kdlens.train.vectorized.weighted_bn import _swap_batch_norms


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
