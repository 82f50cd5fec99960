"""Benchmark: one Ivis training step, four ways, interleaved in one process (one thread).

* ``session-5``: the step as kdlens had it before session 6 — ``nn.AlphaDropout`` (torch
  Bernoulli draws), the plain (for-each) Adam, autograd through the whole network;
* ``autograd``: today's dropout (:class:`~kdlens.explain.embed.ivis.IvisAlphaDropout`, numpy
  16-bit draws) and fused Adam, autograd through the network;
* ``by hand``: today's step, :func:`kdlens.explain.embed.ivis_step.manual_step`;
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

import torch
from torch import nn

from kdlens.explain.embed.ivis import IvisNetwork, _adam, pn_triplet_loss
from kdlens.explain.embed.ivis_step import hidden_layers, manual_step


def session5_network(dim: int) -> IvisNetwork:
    net = IvisNetwork(dim, (128, 128, 128), 2, 0.1)
    for i, m in enumerate(net.body):
        if type(m).__name__ == "IvisAlphaDropout":
            net.body[i] = nn.AlphaDropout(0.1)
    return net


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
    hand = IvisNetwork(args.dim, (128, 128, 128), 2, 0.1).train()
    hand_opt, layers = _adam(list(hand.parameters()), 1e-3), hidden_layers(hand)
    weights = [torch.randn(128, args.dim), torch.randn(128, 128), torch.randn(128, 128), torch.randn(2, 128)]

    def step_autograd(net: nn.Module, opt: torch.optim.Optimizer, rows: torch.Tensor) -> None:
        loss = objective(net(x.index_select(0, rows)))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def step_hand(rows: torch.Tensor) -> None:
        manual_step(hand, layers, x.index_select(0, rows), objective)
        hand_opt.step()

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
        "by hand": step_hand,
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
    base = statistics.median(times["session-5"])
    print(f"Ivis step, 384 × {args.dim} rows, 1 thread, {args.reps} interleaved repetitions of {args.steps} steps, "
          f"load average {os.getloadavg()[0]:.1f}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"  {name:<13} {med:6.2f} ms/step [{min(ts):.2f}–{max(ts):.2f}]   session-5 / this = {base / med:.2f}×")


if __name__ == "__main__":
    main()
