"""Model cost: parameters, FLOPs / MACs and latency, student against teacher.

The numbers of PURSUhInT's Table 7 (Keser et al. 2022): each model's parameter count,
FLOPs and inference latency, the student's **compression ratio** and **speed-up** against
its teacher.

FLOPs come from :class:`torch.utils.flop_counter.FlopCounterMode`, which counts the
matrix multiplies and convolutions of one forward pass (``aten.mm/addmm/bmm``,
``aten.convolution``, attention kernels) and **counts one multiply-add as 2 FLOPs**:

* ``nn.Linear(in, out)`` on a batch of ``B``: ``2·B·in·out`` FLOPs;
* ``nn.Conv2d(Cin, Cout, k, groups=g)`` with output ``Hout×Wout``:
  ``2·B·Cout·Hout·Wout·(Cin/g)·k·k`` FLOPs.

Biases, batch norm, activations and pooling are not counted (they are O(activations),
small next to the multiplies).  **MACs = FLOPs / 2.**  Many papers, PURSUhInT's tables
among them, write "FLOPs" for what is a MAC count, so kdlens reports both; compare a
paper's number with the column that matches its convention.

Latency is wall-clock time of one forward pass of a batch, in eval mode without
autograd, on the device the model sits on (``torch.cuda.synchronize`` brackets each pass
on a GPU), after ``warmup`` untimed passes; the **median** and the inter-quartile range
over ``repeats`` passes are reported, with ``torch.get_num_threads()`` (latency on a
CPU depends on it and on whatever else runs on the machine).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from kdlens.errors import KdlensError
from kdlens.models.registry import count_parameters


@contextmanager
def _inference(model: nn.Module) -> Iterator[None]:
    """Eval mode and no autograd for the block; the model's training flag is restored."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)


def _device_of(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def count_flops(model: nn.Module, example: torch.Tensor) -> int:
    """FLOPs of one forward pass of ``model`` on the batch ``example`` (eval mode, no grad).

    Counted by torch's ``FlopCounterMode``: a multiply-add is **2 FLOPs**, so a linear layer
    costs ``2·B·in·out`` and a convolution ``2·B·Cout·Hout·Wout·(Cin/groups)·kh·kw``.
    Divide by 2 for MACs (see the module docstring).  The count is for the whole batch.
    """
    example = example.to(_device_of(model))
    counter = FlopCounterMode(display=False)
    with _inference(model), counter:
        model(example)
    return int(counter.get_total_flops())


def _quantile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated quantile (numpy's default method) of sorted values."""
    pos = (len(sorted_values) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def latency_summary(times_ms: list[float]) -> dict[str, float]:
    """Median, quartiles and IQR (= Q3 − Q1) of per-batch times in milliseconds."""
    if not times_ms:
        raise KdlensError("latency needs at least one timed repeat (--repeats ≥ 1)")
    s = sorted(times_ms)
    q1, q3 = _quantile(s, 0.25), _quantile(s, 0.75)
    return {"median_ms": statistics.median(s), "q1_ms": q1, "q3_ms": q3, "iqr_ms": q3 - q1,
            "min_ms": s[0], "max_ms": s[-1]}


def measure_latency(model: nn.Module, example: torch.Tensor, repeats: int = 30, warmup: int = 5) -> dict[str, Any]:
    """Time ``repeats`` forward passes of the batch ``example`` after ``warmup`` untimed ones.

    Eval mode, ``torch.inference_mode``, on the device of the model's parameters; on CUDA
    each pass is bracketed by ``torch.cuda.synchronize``.  Returns the median and IQR in
    milliseconds per batch (:func:`latency_summary`) plus ``repeats``, ``warmup``,
    ``batch_size``, ``device`` and ``threads`` (``torch.get_num_threads()``).
    """
    if repeats < 1 or warmup < 0:
        raise KdlensError(f"latency needs repeats ≥ 1 and warmup ≥ 0; got repeats={repeats}, warmup={warmup}")
    device = _device_of(model)
    example = example.to(device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    times: list[float] = []
    with _inference(model):
        for _ in range(warmup):
            model(example)
        sync()
        for _ in range(repeats):
            start = time.perf_counter()
            model(example)
            sync()
            times.append((time.perf_counter() - start) * 1000.0)
    return {**latency_summary(times), "repeats": repeats, "warmup": warmup,
            "batch_size": int(example.shape[0]), "device": str(device), "threads": torch.get_num_threads()}


def compression_ratio(teacher_params: int, student_params: int) -> float:
    """Teacher parameters / student parameters (PURSUhInT Table 7, "compression")."""
    return teacher_params / student_params


def speed_up(teacher_latency_ms: float, student_latency_ms: float) -> float:
    """Teacher latency / student latency (medians; PURSUhInT Table 7, "speed-up")."""
    return teacher_latency_ms / student_latency_ms


@dataclass
class ModelProfile:
    """One model's cost: parameters, FLOPs, MACs (= FLOPs / 2) and latency (see :func:`measure_latency`)."""

    name: str
    params: int
    flops: int
    macs: int
    latency: dict[str, Any]


@dataclass
class ProfileResult:
    """Student (and teacher) profiles with the ratios of PURSUhInT Table 7; ratios are
    ``None`` without a teacher."""

    student: ModelProfile
    teacher: ModelProfile | None
    input_shape: tuple[int, ...]
    compression: float | None = None  # teacher params / student params
    speed_up: float | None = None  # teacher median latency / student median latency
    flop_ratio: float | None = None  # teacher FLOPs / student FLOPs

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        return d


def profile_model(model: nn.Module, example: torch.Tensor, name: str = "model",
                  repeats: int = 30, warmup: int = 5) -> ModelProfile:
    """:class:`ModelProfile` of ``model`` on the batch ``example``.

    A model that cannot run ``example`` is a :class:`KdlensError` naming the input shape.
    """
    try:
        flops = count_flops(model, example)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise KdlensError(
            f"{name} cannot run an input batch of shape {tuple(example.shape)} (N,C,H,W): {exc}. "
            "Give the input it was built for (--input-shape C,H,W or --dataset NAME)"
        ) from None
    return ModelProfile(name=name, params=count_parameters(model), flops=flops, macs=flops // 2,
                        latency=measure_latency(model, example, repeats=repeats, warmup=warmup))


def profile_models(student: nn.Module, teacher: nn.Module | None = None, *, example: torch.Tensor,
                   repeats: int = 30, warmup: int = 5, student_name: str = "student",
                   teacher_name: str = "teacher") -> ProfileResult:
    """Profile ``student`` (and ``teacher``) on the batch ``example``; with a teacher, add
    compression = teacher params / student params, speed-up = teacher / student median
    latency and FLOP ratio = teacher FLOPs / student FLOPs (PURSUhInT Table 7)."""
    s = profile_model(student, example, student_name, repeats, warmup)
    result = ProfileResult(student=s, teacher=None, input_shape=tuple(int(d) for d in example.shape))
    if teacher is not None:
        t = profile_model(teacher, example, teacher_name, repeats, warmup)
        result.teacher = t
        result.compression = compression_ratio(t.params, s.params)
        result.speed_up = speed_up(t.latency["median_ms"], s.latency["median_ms"])
        result.flop_ratio = t.flops / s.flops if s.flops else None
    return result
