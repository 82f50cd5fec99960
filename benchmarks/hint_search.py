"""PURSUhInT hint-point search on resnet110: the whole search timed, and step 2 vs per-pair baselines.

Keser et al. 2022 (PURSUhInT), Table 1, report for resnet110: step 1 (layer
representations) 941 s; step 2 (54×54 similarity + clustering) 336 s with R²_CCA and
4,797 s with CKA.  Goal (issues 4 and 16): the whole search (step 1 + step 2) < 120 s on
2 threads of the 2-core machine here, step 2 far faster than per-pair implementations.

* teacher: ``create_model("resnet110", 10, in_channels=C)`` — 54 residual sub-blocks,
  widths 16/32/64 — **untrained** (He-initialised): timings do not depend on the weights,
  the hint points of an untrained net mean nothing.  BatchNorm statistics are calibrated
  on 1,000 images (train-mode forwards, no gradient steps, not timed) so activations have
  a realistic scale.
* data: ``--dataset fashion-mnist`` (default; 28×28×1, /usr/share/datasets/fashion-mnist)
  or ``synthetic`` (32×32×3); N = ``--n`` training images sampled as the search samples them.
* whole search: :func:`kdlens.explain.hint_search.find_hint_points` (k = 3, fp32, no
  representation cache, step 1 ``parallel="batches"``: one single-threaded worker per torch
  thread) with ``torch.set_num_threads(--torch-threads)`` and ``blas_threads=--blas-threads``,
  for each metric, ``--repeats`` interleaved repetitions (``--compare-intra-op`` adds a CKA
  search with step 1 over intra-op threads to each); median and min–max.  The load average is printed beside every figure: the machine is
  shared with other jobs.
* step 2 vs baselines, on one set of representations, same BLAS thread limit for both
  (threadpoolctl), ``--repeats`` interleaved repetitions:
  - R²_CCA: kdlens's ``similarity_matrix(reps, "cca", eps=0)`` (each layer's basis once, all
    pairs from one GEMM per layer) vs the **per-pair QR form**: for every pair, centre both
    layers, orthonormal bases by pivoted QR (numerical ranks p, q), R² = ‖Q_YᵀQ_X‖²_F / min(p, q).
    The QR form is timed on ``--qr-pairs`` pairs and extrapolated to all L(L−1)/2 pairs
    (stated); ratio = QR-form estimate / kdlens time, per repetition.
  - linear CKA: kdlens's feature-space form vs the N×N Gram form ⟨K_c, L_c⟩_F / (‖K_c‖‖L_c‖)
    (Kornblith et al. 2019) on ``--gram-pairs`` pairs, extrapolated likewise.
* bf16: on ``--bf16-n`` of the samples, step-1 img/s in fp32 and in bf16 autocast and the
  largest change of any similarity entry, max |S_bf16 − S_fp32|, for CKA and R²_CCA.

    .venv/bin/python benchmarks/hint_search.py                  # N = 10,000, Fashion-MNIST
    .venv/bin/python benchmarks/hint_search.py --n 2000 --repeats 1 --bf16-n 0   # quick
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import time

import numpy as np
import scipy.linalg
import torch

from kdlens.data import load_dataset
from kdlens.explain.hint_search import dataset_prepare, find_hint_points, sample_indices
from kdlens.explain.representations import candidate_layers, layer_representations
from kdlens.explain.similarity import similarity_matrix

PAPER = {"step1": 941.0, "cca": 336.0, "cka": 4797.0}
_EPS64 = float(np.finfo(np.float64).eps)


def load() -> str:
    a, b, c = os.getloadavg()
    return f"load {a:.2f} {b:.2f} {c:.2f}"


def spread(values: list[float], fmt: str = ".1f") -> str:
    """median [min–max] (n)"""
    return (f"{statistics.median(values):{fmt}} [{min(values):{fmt}}–{max(values):{fmt}}] "
            f"(n={len(values)})")


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


# ------------------------------------------------------------------- per-pair baselines
def qr_basis(a: np.ndarray) -> np.ndarray:
    """Orthonormal basis of the centred columns of ``a`` by pivoted QR, truncated to the
    numerical rank (tolerance |R_00| · max(N, C) · ε, as numpy.linalg.matrix_rank)."""
    a = np.asarray(a, dtype=np.float64)
    a = a - a.mean(axis=0)
    q, r, _ = scipy.linalg.qr(a, mode="economic", pivoting=True)
    d = np.abs(np.diagonal(r))
    rank = int(np.sum(d > d[0] * max(a.shape) * _EPS64))
    return q[:, :rank]


def qr_pair_cca_r2(x: np.ndarray, y: np.ndarray) -> float:
    """R²_CCA of one pair from scratch (both bases recomputed): ‖Q_YᵀQ_X‖²_F / min(p, q)."""
    qx, qy = qr_basis(x), qr_basis(y)
    return float(np.sum((qy.T @ qx) ** 2) / min(qx.shape[1], qy.shape[1]))


def gram_linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA through the centred N×N Gram matrices, float64."""

    def centred_gram(a: np.ndarray) -> np.ndarray:
        a = a.astype(np.float64)
        k = a @ a.T
        k -= k.mean(axis=0, keepdims=True)
        k -= k.mean(axis=1, keepdims=True)
        return k

    k = centred_gram(x)
    lg = centred_gram(y)
    return float(np.vdot(k, lg) / np.sqrt(np.vdot(k, k) * np.vdot(lg, lg)))


# ------------------------------------------------------------------------------ setup
def calibrate_batchnorm(model: torch.nn.Module, images: torch.Tensor, prepare) -> None:
    """BatchNorm running statistics from train-mode forward passes (no gradient steps):
    with the initial statistics an untrained resnet110's activations grow to ~1e7 through
    the 54 residual sums in eval mode; calibrated, they look like a trained net's."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        for start in range(0, len(images), 250):
            model(prepare(images[start : start + 250]))
    model.eval()


def pick_pairs(n_layers: int, count: int) -> list[tuple[int, int]]:
    pairs = [(i, j) for i in range(n_layers) for j in range(i + 1, n_layers)]
    idx = np.random.default_rng(0).choice(len(pairs), size=min(count, len(pairs)), replace=False)
    return [pairs[i] for i in sorted(idx)]


# ----------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="fashion-mnist", choices=["fashion-mnist", "synthetic"])
    ap.add_argument("--n", type=int, default=10_000, help="samples (PURSUhInT: 10,000)")
    ap.add_argument("--batch-size", type=int, default=250)
    ap.add_argument("--torch-threads", type=int, default=2, help="intra-op threads for step 1")
    ap.add_argument("--blas-threads", type=int, default=1, help="BLAS threads for step 2 and the baselines")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repetitions of each timing")
    ap.add_argument("--metrics", default="cka,cca", help="metrics of the whole-search timing")
    ap.add_argument("--qr-pairs", type=int, default=30, help="pairs timed with the per-pair QR form of R²_CCA")
    ap.add_argument("--gram-pairs", type=int, default=3, help="pairs timed with the N×N Gram form of CKA (0: skip)")
    ap.add_argument("--bf16-n", type=int, default=256, help="samples for the bf16 check (0: skip)")
    ap.add_argument("--skip-search", action="store_true", help="skip the whole-search timing")
    ap.add_argument("--compare-intra-op", action="store_true",
                    help="also time a CKA search with parallel='intra-op' in every repetition")
    args = ap.parse_args()

    from threadpoolctl import threadpool_info, threadpool_limits

    torch.set_num_threads(args.torch_threads)
    blas = ", ".join(f"{d['internal_api']} {d['num_threads']} threads" for d in threadpool_info() if d["user_api"] == "blas")
    uptime = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs, torch {torch.__version__}, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}; torch threads {torch.get_num_threads()}, BLAS default: {blas}")
    print(f"uptime at start: {uptime}")

    if args.dataset == "synthetic":
        ds = load_dataset("synthetic", "train", n=args.n, n_test=1, channels=3, size=32, num_classes=10)
    else:
        ds = load_dataset("fashion-mnist", "train")
    prepare = dataset_prepare(ds)
    torch.manual_seed(0)
    from kdlens.models import create_model

    model = create_model("resnet110", 10, in_channels=int(ds.images.shape[1]))  # untrained
    calibrate_batchnorm(model, ds.images[:1000], prepare)
    layers = candidate_layers(model, "post")
    L = len(layers)
    n_pairs = L * (L - 1) // 2
    rows = sample_indices(len(ds.images), args.n, seed=0)
    print(f"teacher resnet110 (UNTRAINED, BN calibrated), {L} candidate layers; {args.dataset} "
          f"{tuple(ds.images.shape[1:])}, N={rows.size}; batch {args.batch_size}")

    # ------------------------------------------------------------- whole search
    metrics = [m for m in args.metrics.split(",") if m]
    if not args.skip_search:
        runs = [(m, "batches") for m in metrics] + ([("cka", "intra-op")] if args.compare_intra_op else [])
        totals: dict[tuple[str, str], list[float]] = {r: [] for r in runs}
        step1: list[float] = []
        for rep in range(args.repeats):
            for metric, parallel in runs:
                res = find_hint_points(model, ds.images, prepare, k=3, metric=metric, n=args.n, seed=0,
                                       blas_threads=args.blas_threads, batch_size=args.batch_size, parallel=parallel)
                t = res.timings
                totals[(metric, parallel)].append(t["total"])
                if parallel == "batches":
                    step1.append(t["step1_representations"])
                print(f"[search] rep {rep + 1} {metric} (step 1 parallel={parallel}): total {t['total']:.1f} s = step 1 "
                      f"{t['step1_representations']:.1f} s ({res.n / t['step1_representations']:.0f} img/s) + step 2 "
                      f"{t['step2']:.2f} s; hints (1-based) {list(res.selection.indices_1based)}; {load()}", flush=True)
        for metric, parallel in runs:
            print(f"[search] {metric}, step 1 parallel={parallel}: whole search {spread(totals[(metric, parallel)])} s "
                  f"(goal < 120 s; paper {PAPER['step1'] + PAPER[metric]:.0f} s)")
        print(f"[search] step 1 (parallel=batches) alone: {spread(step1)} s over those searches")

    # ------------------------------------------------------------- step 2 vs baselines
    with torch.inference_mode():
        reps = layer_representations(model, ds.images, prepare, layers=layers, indices=rows,
                                     batch_size=args.batch_size)
    arrays = list(reps.values())
    qr_pairs = pick_pairs(L, args.qr_pairs)
    with threadpool_limits(limits=args.blas_threads, user_api="blas"):
        qr_pair_cca_r2(arrays[1], arrays[2])  # untimed warm-up
        ratios, kd_times, qr_per_pair = [], [], []
        for rep in range(args.repeats):
            t0 = time.perf_counter()
            S = similarity_matrix(reps, "cca", eps=0.0)
            t_kd = time.perf_counter() - t0
            t0 = time.perf_counter()
            values = [qr_pair_cca_r2(arrays[i], arrays[j]) for i, j in qr_pairs]
            per_pair = (time.perf_counter() - t0) / len(qr_pairs)
            diff = max(abs(v - S[i, j]) for v, (i, j) in zip(values, qr_pairs, strict=True))
            kd_times.append(t_kd)
            qr_per_pair.append(per_pair)
            ratios.append(per_pair * n_pairs / t_kd)
            print(f"[cca]    rep {rep + 1}: kdlens {t_kd:.2f} s for all {n_pairs} pairs; per-pair QR "
                  f"{per_pair:.3f} s/pair over {len(qr_pairs)} pairs → EXTRAPOLATED {per_pair * n_pairs:.0f} s; "
                  f"ratio {ratios[-1]:.0f}×; max |QR − kdlens| {diff:.1e}; {load()}", flush=True)
        print(f"[cca]    kdlens R²_CCA matrix {spread(kd_times, '.2f')} s; per-pair QR {spread(qr_per_pair, '.3f')} "
              f"s/pair; ratio (QR form, extrapolated / kdlens) {spread(ratios, '.0f')}×; "
              f"{args.blas_threads} BLAS thread(s) for both")

        if args.gram_pairs > 0:
            gram_pairs = pick_pairs(L, args.gram_pairs)
            gram_linear_cka(arrays[1], arrays[2])  # untimed warm-up
            g_ratios = []
            for rep in range(args.repeats):
                t0 = time.perf_counter()
                S = similarity_matrix(reps, "cka")
                t_kd = time.perf_counter() - t0
                t0 = time.perf_counter()
                values = [gram_linear_cka(arrays[i], arrays[j]) for i, j in gram_pairs]
                per_pair = (time.perf_counter() - t0) / len(gram_pairs)
                diff = max(abs(v - S[i, j]) for v, (i, j) in zip(values, gram_pairs, strict=True))
                g_ratios.append(per_pair * n_pairs / t_kd)
                print(f"[cka]    rep {rep + 1}: kdlens {t_kd:.2f} s for all {n_pairs} pairs; Gram form "
                      f"{per_pair:.2f} s/pair over {len(gram_pairs)} pairs → EXTRAPOLATED {per_pair * n_pairs / 60:.0f} "
                      f"min; ratio {g_ratios[-1]:,.0f}×; max |Gram − kdlens| {diff:.1e}; {load()}", flush=True)
            print(f"[cka]    ratio (Gram form, extrapolated / kdlens) {spread(g_ratios, ',.0f')}×")

    # ------------------------------------------------------------- bf16
    if args.bf16_n > 0:
        sub = sample_indices(rows, args.bf16_n, seed=0)
        out = {}
        with torch.inference_mode():
            for label, bf16 in (("fp32", False), ("bf16", True)):
                t0 = time.perf_counter()
                out[label] = layer_representations(model, ds.images, prepare, layers=layers, indices=sub,
                                                   batch_size=args.batch_size, bf16=bf16)
                dt = time.perf_counter() - t0
                print(f"[bf16]   step 1 {label} on {sub.size} samples: {dt:.1f} s ({sub.size / dt:.1f} img/s); "
                      f"{load()}", flush=True)
        for metric, options in (("cka", {}), ("cca", {"eps": 0.0})):
            s32 = similarity_matrix(out["fp32"], metric, blas_threads=args.blas_threads, **options)
            s16 = similarity_matrix(out["bf16"], metric, blas_threads=args.blas_threads, **options)
            change = float(np.max(np.abs(s16 - s32)))
            print(f"[bf16]   {metric}: max |S_bf16 − S_fp32| = {change:.2e} on {sub.size} samples "
                  f"({'<' if change < 1e-3 else '≥'} 1e-3)")

    uptime = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    print(f"uptime at the end: {uptime}")


if __name__ == "__main__":
    main()
