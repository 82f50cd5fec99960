"""Training a sweep: :func:`train_students` builds the students of the specs, stacks them in
chunks and trains them together on one batch stream (loss of :mod:`.targets`, steps of
:mod:`.sgd`), then evaluates them on the test set."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from kdlens.config import OptimConfig
from kdlens.data import Dataset, normalize
from kdlens.errors import KdlensError
from kdlens.train.vectorized.batching import (
    _allowed,
    _Batcher,
    _build_students,
    _per_student,
    _teacher_stack,
)
from kdlens.train.vectorized.cpu_memory import reuse_cpu_memory
from kdlens.train.vectorized.evaluation import evaluate_stack
from kdlens.train.vectorized.sgd import _default_optim, _epoch_lrs, sgd_step_
from kdlens.train.vectorized.spec import StackResult, StudentSpec
from kdlens.train.vectorized.stack import StackedStudents
from kdlens.train.vectorized.targets import _Targets, _weighted_mean


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
    """Train the students ``specs`` of architecture ``student`` together (see :mod:`kdlens.train.vectorized`).

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
