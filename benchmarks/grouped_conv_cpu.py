"""Why the stacked CNN sweep is slower than one-by-one on CPU: the convolution kernels, alone.

For the thesis student's two inner convolutions (16→32 channels at 14×14, 32→64 at 7×7),
``--students`` students and a batch of ``--batch-size``, one forward + backward of:

* ``one-by-one``: a separate ``conv2d`` per student on its own contiguous tensors;
* ``grouped``: one grouped ``conv2d`` (``groups = S``) over the stacked layout that
  ``kdlens.train.vectorized``'s ``grouped`` backend uses (NCHW, and channels-last);
* ``split``: the stacked layout cut into per-student slices, one ``conv2d`` each, re-joined
  with ``torch.cat`` (what a per-student loop inside the stack would cost).

    python benchmarks/grouped_conv_cpu.py --threads 1

Prints milliseconds per variant and each one's ratio to one-by-one (> 1: slower).
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from median_time import median_seconds


def _ms(fn, repeats: int) -> float:
    return median_seconds(fn, repeats) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--students", type=int, default=35)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    s, b = args.students, args.batch_size
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {s} students, batch {b}, fp32, forward + backward")
    for cin, cout, hw in [(16, 32, 14), (32, 64, 7)]:
        xs = [torch.randn(b, cin, hw, hw, requires_grad=True) for _ in range(s)]
        ws = [torch.randn(cout, cin, 3, 3, requires_grad=True) for _ in range(s)]
        x = torch.cat([t.detach() for t in xs], 1).requires_grad_()
        x_cl = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
        w = torch.cat([t.detach() for t in ws], 0).requires_grad_()

        def one_by_one() -> None:
            for xi, wi in zip(xs, ws):
                F.conv2d(xi, wi, None, 1, 1).sum().backward()

        def grouped(inp: torch.Tensor = x) -> None:
            F.conv2d(inp, w, None, 1, 1, 1, s).sum().backward()

        def split() -> None:
            parts = [F.conv2d(xi, wi, None, 1, 1) for xi, wi in zip(x.split(cin, 1), w.split(cout, 0))]
            torch.cat(parts, 1).sum().backward()

        base = _ms(one_by_one, args.repeats)
        rows = [("one-by-one", base), ("grouped NCHW", _ms(grouped, args.repeats)),
                ("grouped channels-last", _ms(lambda: grouped(x_cl), args.repeats)), ("split + cat", _ms(split, args.repeats))]
        for name, ms in rows:
            print(f"  conv {cin}→{cout} at {hw}×{hw}: {name:<22} {ms:8.1f} ms  ({ms / base:.2f}× one-by-one)")


if __name__ == "__main__":
    main()
