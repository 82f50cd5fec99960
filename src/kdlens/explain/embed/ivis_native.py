"""Ivis's default training step (PN loss, no classifier head) as one compiled C++ call.

``ivis_native.cpp`` does what :func:`kdlens.explain.embed.ivis_step.manual_step` does with
:func:`~kdlens.explain.embed.ivis_step.pn_loss_and_grad` — the same formulas, the same dropout
masks (drawn here, in Python, from each layer's numpy RNG) — but fuses each layer's
element-wise work (SELU, AlphaDropout and their derivatives) into one vectorised loop and
leaves only the matrix products to ATen. At 384 rows × 128 units that work and the per-operation
overhead were more than half of a step (``benchmarks/ivis_step.py``).

It is built on first use with ``torch.utils.cpp_extension`` (a C++ compiler and ninja; about a
minute, once per machine and source version; AVX2/FMA flags where the CPU has them) and cached
by torch under ``TORCH_EXTENSIONS_DIR``. Where it cannot be built, or with
``KDLENS_IVIS_NATIVE=0``, Ivis uses the Python step: same results up to float rounding
(SELU's exponential here is a degree-6 polynomial, relative error < 3e-7). Concurrent first
uses (study workers) wait for one build under torch's lock file; a build killed half-way leaves
``TORCH_EXTENSIONS_DIR/kdlens_ivis_native_*/lock`` behind, which must be deleted by hand.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor

from kdlens.explain.embed.flat_adam import FlatAdam

SOURCE = Path(__file__).with_name("ivis_native.cpp")
_state: dict[str, object] = {}


def _flags() -> list[str]:
    flags = ["-O3", "-ffast-math"]
    if torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"):
        flags += ["-mavx2", "-mfma"]
    return flags


def native_module() -> ModuleType | None:
    """The compiled step (built on the first call), or ``None`` where it is switched off
    (``KDLENS_IVIS_NATIVE=0``) or cannot be built — the reason is printed once to stderr."""
    if os.environ.get("KDLENS_IVIS_NATIVE", "1") == "0":
        return None
    if "module" not in _state:
        try:
            from torch.utils.cpp_extension import load

            flags = _flags()
            name = "kdlens_ivis_native_" + ("avx2" if "-mavx2" in flags else "generic")
            print("kdlens: loading the native Ivis step (built once per machine, about a minute)",
                  file=sys.stderr, flush=True)
            _state["module"] = load(name=name, sources=[str(SOURCE)], extra_cflags=flags, verbose=False)
        except Exception as exc:  # no compiler, no ninja, a build error: the Python step does the same
            first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            print(f"kdlens: native Ivis step unavailable ({first_line}); using the Python step",
                  file=sys.stderr, flush=True)
            _state["module"] = None
    return _state["module"]  # type: ignore[return-value]


def native_applies(layers, x: Tensor, optimizer) -> bool:
    """Whether :func:`native_pn_step` can run this step: float32 on the CPU, gradients in a
    :class:`FlatAdam` buffer, and the module built."""
    return (x.device.type == "cpu" and x.dtype == torch.float32 and isinstance(optimizer, FlatAdam)
            and all(lin.weight.dtype == torch.float32 for lin, _ in layers) and native_module() is not None)


def native_pn_step(net, layers, x: Tensor, margin: float) -> Tensor:
    """One step of ``net`` on ``x`` (3b rows) with the PN loss; writes the gradients into the
    parameters' ``.grad`` (which must exist: FlatAdam's views). Returns the loss as a 0-d tensor."""
    module = native_module()
    weights, biases, keep, a, b, c0, grads = [], [], [], [], [], [], []
    rows = x.shape[0]
    for linear, drop in layers:
        weights.append(linear.weight)
        biases.append(linear.bias)
        grads += [linear.weight.grad, linear.bias.grad]
        if drop is not None and drop.p > 0:
            keep.append(torch.from_numpy(drop.keep_bits(rows * linear.out_features).view("uint8")))
            a.append(drop.a)
            b.append(drop.b)
            c0.append(drop.dropped)
        else:
            keep.append(torch.empty(0, dtype=torch.uint8))
            a.append(1.0)
            b.append(0.0)
            c0.append(0.0)
    emb = net.embedding
    grads += [emb.weight.grad, emb.bias.grad]
    loss = module.pn_step(x.contiguous(), weights, biases, keep, a, b, c0, emb.weight, emb.bias, float(margin), grads)
    return torch.tensor(loss, dtype=x.dtype)
