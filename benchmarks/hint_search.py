"""PURSUhInT hint-point search on a resnet110-shaped teacher: step 1 + step 2, vs N×N Gram forms.

Keser et al. 2022 (PURSUhInT), Table 1, report for resnet110: step 1 (layer
representations) 941 s; step 2 (54×54 similarity + clustering) 336 s with R²_CCA and
4,797 s with CKA.  Goal of kdlens issue 4: step 2 ≥ 20× faster than a Gram-matrix (N×N)
implementation of the same formulas run here, < 1 GiB peak memory, and the whole search
(step 1 + step 2) < 2 minutes on 2 CPU cores.

* teacher: ``create_model("resnet110", 10, in_channels=3)`` — 54 residual sub-blocks,
  widths 16/32/64 — with its **untrained** (He-initialised) weights: timings and memory
  do not depend on the weights; the chosen hint points of an untrained net mean nothing.
  Its BatchNorm statistics are calibrated on 1,000 of the images (train-mode forwards, no
  gradient steps, not timed) so that activations have a realistic scale.
* data: N = 10,000 synthetic 32×32×3 images (``load_dataset("synthetic", …)``).
* step 1: :func:`kdlens.explain.representations.layer_representations` (batches of 250,
  spatial mean inside the forward hook) with ``torch.set_num_threads(2)``; peak RSS
  growth over the step, sampled every 20 ms from /proc/self/statm (torch allocations are
  not seen by tracemalloc), plus ru_maxrss.
* step 2: ``similarity_matrix(reps, metric, blas_threads=1)`` + ``select_hint_points``
  (k = 3, rule centre) for linear CKA ("cka") and R²_CCA ("cca"); peak memory by
  tracemalloc (numpy allocations are traced) and RSS sampling.
* Gram form, same process, same BLAS threads (1), float64:
  linear CKA = ⟨K_c, L_c⟩_F / (‖K_c‖_F ‖L_c‖_F), K_c = H X Xᵀ H (Kornblith et al. 2019);
  R²_CCA = tr(P_X P_Y) / min(p, q), P_X = X_c (X_cᵀ X_c)⁺ X_cᵀ (Yanai's GCD; p, q the ranks).
  After one untimed warm-up pair, a few pairs are timed; the time for all 1,431 off-diagonal pairs is
  **extrapolated** (mean s/pair × 1,431), which flatters the Gram form (no diagonal, no
  clustering).

    .venv/bin/python benchmarks/hint_search.py            # N = 10,000
    .venv/bin/python benchmarks/hint_search.py --n 2000   # quick
"""

from __future__ import annotations

import argparse
import os
import resource
import threading
import time
import tracemalloc

import numpy as np
import torch

from kdlens.data import load_dataset
from kdlens.explain.hint_search import dataset_prepare, sample_indices
from kdlens.explain.hints import conventional_hint_indices, select_hint_points
from kdlens.explain.representations import candidate_layers, layer_representations
from kdlens.explain.similarity import similarity_matrix

MIB = 2.0**20
PAPER = {"step1": 941.0, "cca": 336.0, "cka": 4797.0}


# --------------------------------------------------------------------- memory meters
def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


class PeakRSS:
    """Peak resident set size while the block runs (sampled every ``interval`` s)."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRSS:
        self.start = rss_bytes()
        self.peak = self.start
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())

    @property
    def growth_mib(self) -> float:
        return (self.peak - self.start) / MIB


def traced(fn):
    """(result, seconds, tracemalloc peak bytes above the start, PeakRSS)."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    with PeakRSS() as rss:
        t0 = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return out, dt, peak, rss


# ------------------------------------------------------------------ Gram (N×N) forms
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


def gram_cca_r2(x: np.ndarray, y: np.ndarray) -> float:
    """Mean squared CCA through the N×N projection (hat) matrices, float64; the
    pseudo-inverse and rank(X_c) stand for the inverse and p where a layer has dead
    channels (the same definition as kdlens' ``eps=0``)."""

    def hat(a: np.ndarray) -> tuple[np.ndarray, int]:
        a = a.astype(np.float64)
        a = a - a.mean(axis=0)
        g = a.T @ a
        return a @ np.linalg.pinv(g, hermitian=True) @ a.T, int(np.linalg.matrix_rank(a))

    (px, rx), (py, ry) = hat(x), hat(y)
    return float(np.vdot(px, py) / min(rx, ry))


GRAM = {"cka": gram_linear_cka, "cca": gram_cca_r2}


def calibrate_batchnorm(model: torch.nn.Module, images: torch.Tensor, prepare) -> None:
    """BatchNorm running statistics from train-mode forward passes (no gradient steps):
    with the initial statistics (mean 0, var 1) the activations of an untrained resnet110
    grow to ~1e7 through the 54 residual sums in eval mode; calibrated, they look like a
    trained net's."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        for start in range(0, len(images), 250):
            model(prepare(images[start : start + 250]))
    model.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000, help="samples (PURSUhInT: 10,000)")
    ap.add_argument("--batch-size", type=int, default=250)
    ap.add_argument("--torch-threads", type=int, default=2, help="intra-op threads for step 1")
    ap.add_argument("--blas-threads", type=int, default=1, help="BLAS threads for step 2 and the Gram form")
    ap.add_argument("--gram-pairs", type=int, default=3, help="pairs timed with the N×N Gram form")
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--no-channels-last", action="store_true", help="feed contiguous (NCHW) batches in step 1")
    ap.add_argument("--bf16", action="store_true", help="bfloat16 autocast in step 1")
    args = ap.parse_args()

    from threadpoolctl import threadpool_info, threadpool_limits

    torch.set_num_threads(args.torch_threads)
    load = os.getloadavg()
    blas = ", ".join(f"{d['internal_api']} {d['num_threads']} threads" for d in threadpool_info() if d["user_api"] == "blas")
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
          f"torch threads {torch.get_num_threads()}, BLAS default: {blas}")

    ds = load_dataset("synthetic", "train", n=args.n, n_test=1, channels=3, size=32, num_classes=10)
    torch.manual_seed(0)
    from kdlens.models import create_model

    model = create_model("resnet110", 10, in_channels=3)  # untrained: He-initialised weights
    calibrate_batchnorm(model, ds.images[:1000], dataset_prepare(ds))
    layers = candidate_layers(model, "post")
    L = len(layers)
    rows = sample_indices(len(ds.images), args.n, seed=0)
    print(f"teacher resnet110 (UNTRAINED weights, BN statistics calibrated), {L} candidate layers "
          f"(post-activation), N={rows.size} synthetic 32×32×3 images; before step 1: RSS "
          f"{rss_bytes() / MIB:.0f} MiB (torch, data, model), max RSS so far {maxrss_mib():.0f} MiB")

    # ---------------------------------------------------------------- step 1
    rss0 = maxrss_mib()
    with PeakRSS() as rss1:
        t0 = time.perf_counter()
        reps = layer_representations(model, ds.images, dataset_prepare(ds), layers=layers, indices=rows,
                                     batch_size=args.batch_size, channels_last=not args.no_channels_last,
                                     bf16=args.bf16)
        t_step1 = time.perf_counter() - t0
    out_mib = sum(r.nbytes for r in reps.values()) / MIB
    full_gib = sum(args.n * c * h * w * 4 for c, h, w in [(16, 32, 32)] * 18 + [(32, 16, 16)] * 18 + [(64, 8, 8)] * 18) / 2**30
    print(f"[step 1] representations: {t_step1:.1f} s ({rows.size / t_step1:.0f} img/s, batch {args.batch_size}, "
          f"{args.torch_threads} torch threads, {'NCHW' if args.no_channels_last else 'channels-last'}"
          f"{', bf16' if args.bf16 else ', fp32'}); output {out_mib:.1f} MiB float32 (full maps would be "
          f"{full_gib:.1f} GiB); peak RSS growth {rss1.growth_mib:.0f} MiB (sampled), "
          f"ru_maxrss growth {maxrss_mib() - rss0:.0f} MiB")

    # ---------------------------------------------------------------- step 2
    n_pairs = L * (L - 1) // 2
    conv = conventional_hint_indices([18, 18, 18])
    results = {}
    for metric in ("cka", "cca"):
        def step2(m=metric):
            # "cca" with eps=0 (what find_hint_points uses): CCA on each layer's column space
            options = {"eps": 0.0} if m == "cca" else {}
            S = similarity_matrix(reps, m, blas_threads=args.blas_threads, **options)
            return S, select_hint_points(S, args.k, rule="centre", names=layers, metric=m)

        (S, sel), dt, peak, rss = traced(step2)
        results[metric] = (S, dt)
        print(f"[step 2] {metric}: {dt:.2f} s ({L}×{L} similarity + k-means, {1e3 * dt / n_pairs:.2f} ms/pair, "
              f"{args.blas_threads} BLAS thread); tracemalloc peak {peak / MIB:.0f} MiB, peak RSS growth "
              f"{rss.growth_mib:.0f} MiB; hint points (1-based) {list(sel.indices_1based)} "
              f"(conventional {[c + 1 for c in conv]})")

    # ---------------------------------------------------------------- Gram form
    arrays = list(reps.values())
    picks = [(0, 18), (20, 40), (37, 53), (5, 50), (30, 31)][: args.gram_pairs]
    with threadpool_limits(limits=args.blas_threads, user_api="blas"):
        for metric in ("cka", "cca"):
            GRAM[metric](arrays[1], arrays[2])  # untimed warm-up (first-touch page faults, BLAS start)
            S, t_feat = results[metric]
            times, peaks, rss_peaks, diffs = [], [], [], []
            for i, j in picks:
                v, dt, peak, rss = traced(lambda i=i, j=j, m=metric: GRAM[m](arrays[i], arrays[j]))
                times.append(dt)
                peaks.append(peak)
                rss_peaks.append(rss.growth_mib)
                diffs.append(abs(v - S[i, j]))
            per_pair = float(np.mean(times))
            est = per_pair * n_pairs
            print(f"[gram]   {metric}: {per_pair:.2f} s/pair over {len(picks)} timed pairs "
                  f"({', '.join(f'{t:.2f}' for t in times)} s) → EXTRAPOLATED to {n_pairs} pairs ≈ {est:.0f} s "
                  f"({est / 60:.1f} min); tracemalloc peak {max(peaks) / MIB:.0f} MiB, peak RSS growth "
                  f"{max(rss_peaks):.0f} MiB; max |Gram − feature| {max(diffs):.1e}")
            print(f"         step 2 speed-up vs Gram form: {est / t_feat:,.0f}× (goal ≥ 20×); "
                  f"paper step 2: {PAPER[metric]:.0f} s")

    # ---------------------------------------------------------------- summary
    for metric in ("cka", "cca"):
        total = t_step1 + results[metric][1]
        print(f"[search] {metric}: step 1 + step 2 = {total:.1f} s (goal < 120 s; paper "
              f"{PAPER['step1'] + PAPER[metric]:.0f} s)")
    load = os.getloadavg()
    print(f"load average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; process max RSS {maxrss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
