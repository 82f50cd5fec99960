"""Benchmark: one Ivis training step, eight ways, interleaved in one process (one thread).

* ``session-5``: the step as kdlens had it before session 6 — ``nn.AlphaDropout`` (torch
  Bernoulli draws), the plain (for-each) Adam, autograd through the whole network;
* ``autograd``: numpy-drawn dropout (:class:`~kdlens.explain.embed.ivis.IvisAlphaDropout`) and
  fused ``torch.optim.Adam``, autograd through the network;
* ``session-6 by hand``: session 6's hand-written backward (SELU' recomputed from ``z``, new
  gradient tensors) with fused ``torch.optim.Adam``;
* ``by hand + torch Adam``: today's :func:`~kdlens.explain.embed.ivis_step.manual_step` (SELU'
  from its output, a·m folded into the mask) with fused ``torch.optim.Adam``;
* ``by hand + FlatAdam``: the same with :class:`~kdlens.explain.embed.flat_adam.FlatAdam`;
* ``+ PN grad by hand``: that and the PN loss's gradient by hand
  (:func:`~kdlens.explain.embed.ivis_step.pn_loss_and_grad`), the Python step
  :class:`~kdlens.explain.embed.ivis.Ivis` takes with the default loss where the native one
  cannot be built;
* ``native``: the same step compiled (:mod:`kdlens.explain.embed.ivis_native`), as Ivis
  trains where it can be built — the default since session 8;
* ``Adam only`` / ``FlatAdam only``: the optimiser step alone (fused ``torch.optim.Adam`` vs
  :class:`~kdlens.explain.embed.flat_adam.FlatAdam`) on the same network's gradients;
* ``matmuls only``: the step's matrix products alone (4 forward, 4 weight-gradient and 3
  input-gradient products), the floor no implementation of this network goes below.

Default shapes: the Ivis default network (128-128-128 SELU, 2-D embedding), 128 triplets
(384 rows), input ``--dim`` (50). Prints the median per step over ``--reps`` interleaved
repetitions of ``--steps`` steps, with [min–max], and the ratios to ``session-5``.

    python benchmarks/ivis_step.py --dim 50 --reps 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch
from torch import nn

from kdlens.explain.embed.flat_adam import FlatAdam
from kdlens.explain.embed.ivis import IvisNetwork, _adam, pn_triplet_loss
from kdlens.explain.embed.ivis_native import native_module, native_pn_step
from kdlens.explain.embed.ivis_step import SELU_ALPHA, SELU_SCALE, hidden_layers, manual_step, pn_loss_and_grad


def session5_network(dim: int) -> IvisNetwork:
    net = IvisNetwork(dim, (128, 128, 128), 2, 0.1)
    for i, m in enumerate(net.body):
        if type(m).__name__ == "IvisAlphaDropout":
            net.body[i] = nn.AlphaDropout(0.1)
    return net


def session6_step(net, layers, x, loss_of_embedding):
    """Session 6's hand-written step, kept here as the baseline of this session's changes."""
    saved = []
    with torch.no_grad():
        h = x
        for linear, drop in layers:
            z = torch.addmm(linear.bias, h, linear.weight.t())
            s = torch.selu(z)
            bits = drop.rng.integers(0, 65536, z.numel(), dtype=np.uint16)  # session 6's mask: bool → float
            m = torch.from_numpy(bits < drop.threshold).view(z.shape).to(z.dtype)
            c0 = drop.a * (-SELU_SCALE * SELU_ALPHA) + drop.b
            h_next = torch.addcmul(z.new_tensor(c0), m, torch.add(z.new_tensor(drop.b - c0), s, alpha=drop.a))
            saved.append((h, z, m, drop.a))
            h = h_next
        e = torch.addmm(net.embedding.bias, h, net.embedding.weight.t())
    e.requires_grad_(True)
    loss = loss_of_embedding(e)
    loss.backward()
    with torch.no_grad():
        g = e.grad
        net.embedding.weight.grad = g.t() @ h
        net.embedding.bias.grad = g.sum(0)
        g = g @ net.embedding.weight
        for i in range(len(layers) - 1, -1, -1):
            h_in, z, m, a = saved[i]
            gz = torch.ops.aten.elu_backward(g * m, SELU_ALPHA, SELU_SCALE * a, 1.0, False, z)
            layers[i][0].weight.grad = gz.t() @ h_in
            layers[i][0].bias.grad = gz.sum(0)
            if i > 0:
                g = gz @ layers[i][0].weight
    return loss.detach()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dim", type=int, default=50)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    x = torch.randn(10_000, args.dim)
    b = 128

    def objective(e: torch.Tensor) -> torch.Tensor:
        return pn_triplet_loss(e[:b], e[b : 2 * b], e[2 * b :], 1.0).mean()

    old = session5_network(args.dim).train()
    old_opt = torch.optim.Adam(old.parameters(), lr=1e-3)
    auto = IvisNetwork(args.dim, (128, 128, 128), 2, 0.1).train()
    auto_opt = _adam(list(auto.parameters()), 1e-3)
    nets = {name: IvisNetwork(args.dim, (128, 128, 128), 2, 0.1).train() for name in ("s6", "hand", "flat", "today", "native")}
    layers = {name: hidden_layers(net) for name, net in nets.items()}
    opts = {"s6": _adam(list(nets["s6"].parameters()), 1e-3), "hand": _adam(list(nets["hand"].parameters()), 1e-3),
            "flat": FlatAdam(list(nets["flat"].parameters()), 1e-3),
            "today": FlatAdam(list(nets["today"].parameters()), 1e-3),
            "native": FlatAdam(list(nets["native"].parameters()), 1e-3)}
    weights = [torch.randn(128, args.dim), torch.randn(128, 128), torch.randn(128, 128), torch.randn(2, 128)]

    def step_autograd(net: nn.Module, opt: torch.optim.Optimizer, rows: torch.Tensor) -> None:
        loss = objective(net(x.index_select(0, rows)))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def analytic_step(net, layers, x, _objective):
        return manual_step(net, layers, x, loss_and_grad=pn_loss_and_grad)

    def native_step(net, layers, x, _objective):
        return native_pn_step(net, layers, x, 1.0)

    if native_module() is None:
        raise SystemExit("the native step cannot be built here (needs a C++ compiler and ninja)")

    def step_by_hand(name: str, step, rows: torch.Tensor) -> None:
        step(nets[name], layers[name], x.index_select(0, rows), objective)
        opts[name].step()

    def step_matmuls(rows: torch.Tensor) -> None:
        h, inputs = x.index_select(0, rows), []
        for w in weights:
            inputs.append(h)
            h = h @ w.t()
        g = torch.ones_like(h)
        for i in range(len(weights) - 1, -1, -1):
            _ = g.t() @ inputs[i]
            if i > 0:
                g = g @ weights[i]

    variants = {
        "session-5": lambda r: step_autograd(old, old_opt, r),
        "autograd": lambda r: step_autograd(auto, auto_opt, r),
        "session-6 by hand": lambda r: step_by_hand("s6", session6_step, r),
        "by hand + torch Adam": lambda r: step_by_hand("hand", manual_step, r),
        "by hand + FlatAdam": lambda r: step_by_hand("flat", manual_step, r),
        "+ PN grad by hand": lambda r: step_by_hand("today", analytic_step, r),
        "native": lambda r: step_by_hand("native", native_step, r),
        "Adam only": lambda r: opts["hand"].step(),
        "FlatAdam only": lambda r: opts["flat"].step(),
        "matmuls only": step_matmuls,
    }
    gen = torch.Generator().manual_seed(1)
    times: dict[str, list[float]] = {k: [] for k in variants}
    for rep in range(args.reps + 1):  # the first repetition warms up and is not counted
        for name, fn in variants.items():
            batches = [torch.randint(0, len(x), (3 * b,), generator=gen) for _ in range(args.steps)]
            t = time.perf_counter()
            for rows in batches:
                fn(rows)
            if rep:
                times[name].append((time.perf_counter() - t) / args.steps * 1e3)
    base, s6 = statistics.median(times["session-5"]), statistics.median(times["session-6 by hand"])
    print(f"Ivis step, 384 × {args.dim} rows, 1 thread, {args.reps} interleaved repetitions of {args.steps} steps, "
          f"load average {os.getloadavg()[0]:.1f}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"  {name:<21} {med:6.2f} ms/step [{min(ts):.2f}–{max(ts):.2f}]   session-5 / this = {base / med:.2f}×"
              f"   session-6 / this = {s6 / med:.2f}×")


if __name__ == "__main__":
    main()
