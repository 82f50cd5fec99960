"""How much can stacking students speed up CPU training at all? A roofline bound, measured.

Stacking (``kdlens.train.vectorized``) never reduces the arithmetic: S students stacked still do
S times one student's FLOPs. It can only win by running those FLOPs at a higher rate than one
student does alone (bigger kernels, fewer calls, shared batch preparation). So the speed-up of
*any* vectorised sweep over the one-by-one sweep is bounded by

    bound = (attainable FLOP/s of this machine) / (FLOP/s of one student's training step)

This script measures both numbers in one process, side by side, with the same threads:

* one student's full training step (forward, backward, SGD update; KD loss at T = 4 against
  fixed random teacher logits) at the sweep's batch size; its FLOPs are counted by
  ``torch.utils.flop_counter.FlopCounterMode`` (convolutions and matrix products; element-wise
  work is not counted, which makes the student's rate look *higher*, the bound *lower*);
* a large square fp32 matrix product (the best case for this CPU's BLAS), as the attainable rate.

    python benchmarks/student_step_roofline.py --threads 2

If the printed bound is below the goal (issue 5: ≥ 5× for the 70-student missing-class sweep),
no CPU implementation of the stacked sweep can reach the goal on this machine at that precision
(``--bf16``: bfloat16 autocast for the student, bfloat16 for the reference product).
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from median_time import median_seconds
from torch.utils.flop_counter import FlopCounterMode

from kdlens.models import create_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--student", default="cnn_student")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--gemm-size", type=int, default=2048, help="n for the n×n·n×n reference product")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--bf16", action="store_true",
                    help="student step under bfloat16 autocast with channels-last, reference product in bfloat16")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    model = create_model(args.student, num_classes=10, in_channels=1, input_size=28)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(args.batch_size, 1, 28, 28)
    if args.bf16:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (args.batch_size,))
    t_logits = torch.randn(args.batch_size, 10) * 3
    T = 4.0

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            z = model(x).float()
        kd = F.kl_div(F.log_softmax(z / T, 1), F.softmax(t_logits / T, 1), reduction="batchmean") * T * T
        (0.9 * kd + 0.1 * F.cross_entropy(z, y)).backward()
        opt.step()

    counter = FlopCounterMode(display=False)
    with counter:
        step()
    step_flops = float(counter.get_total_flops())

    n = args.gemm_size
    dtype = torch.bfloat16 if args.bf16 else torch.float32
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    gemm_flops = 2.0 * n**3

    # interleave the two measurements so both see the same machine load
    step_s, gemm_s = [], []
    for _ in range(3):
        step_s.append(median_seconds(step, args.repeats, warmup=2))
        gemm_s.append(median_seconds(lambda: a @ b, max(3, args.repeats // 5), warmup=2))
    s_sec, g_sec = min(step_s), min(gemm_s)
    s_rate, g_rate = step_flops / s_sec, gemm_flops / g_sec
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {args.student}, batch {args.batch_size}, "
          f"{'bf16 autocast + channels-last' if args.bf16 else 'fp32'}")
    print(f"one student's training step: {step_flops / 1e9:.3f} GFLOP (conv + matmul, counted) in "
          f"{s_sec * 1e3:.2f} ms → {s_rate / 1e9:.1f} GFLOP/s")
    print(f"{n}×{n} {str(dtype).removeprefix('torch.')} matrix product: {gemm_flops / 1e9:.1f} GFLOP in {g_sec * 1e3:.1f} ms → {g_rate / 1e9:.1f} GFLOP/s")
    print(f"roofline bound on any stacked/vectorised speed-up: {g_rate / s_rate:.2f}×")


if __name__ == "__main__":
    main()
