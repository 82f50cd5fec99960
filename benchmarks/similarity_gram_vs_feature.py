"""All-pairs layer similarity: kdlens feature-space forms vs a direct N×N Gram form.

Times ``similarity_matrix`` over 54 layers (widths 16/32/64, 18 each — the shape of a
CIFAR resnet110's block outputs after spatial mean) on N random examples, for linear CKA
and R²_CCA, against a direct float64 N×N Gram-matrix implementation of the same formulas:

* linear CKA:  tr(K_c L_c) / sqrt(tr(K_c K_c) tr(L_c L_c)),  K_c = H X Xᵀ H
  (Kornblith et al. 2019, eq. 3 with the biased HSIC);
* R²_CCA:      tr(P_X P_Y) / min(p, q),  P_X = X_c (X_cᵀX_c)⁻¹ X_cᵀ the N×N hat matrix
  (Yanai's GCD; = ‖Q_YᵀQ_X‖²_F / min(p, q)).

The Gram form is timed on a few pairs only and **extrapolated** to all 1,485 pairs plus
the 54 diagonal entries (as a direct per-pair implementation would compute them).  Peak
memory: tracemalloc peak of each section (numpy allocations are traced) and the process
max RSS.

    python benchmarks/similarity_gram_vs_feature.py --n 10000
"""

from __future__ import annotations

import argparse
import os
import resource
import time
import tracemalloc

import numpy as np

from kdlens.explain.similarity import cca_r2, linear_cka, similarity_matrix

WIDTHS = [16] * 18 + [32] * 18 + [64] * 18


def make_layers(n: int, seed: int) -> list[np.ndarray]:
    """A chain of random ReLU layers (float32, like real activations), so neighbouring
    layers are similar and far-apart ones less so."""
    rng = np.random.default_rng(seed)
    h = rng.normal(size=(n, WIDTHS[0])).astype(np.float32)
    layers = []
    for c in WIDTHS:
        w = rng.normal(scale=1.0 / np.sqrt(h.shape[1]), size=(h.shape[1], c)).astype(np.float32)
        h = np.maximum(h @ w, 0) + 0.3 * rng.normal(size=(n, c)).astype(np.float32)
        layers.append(h)
    return layers


def gram_linear_cka(x: np.ndarray, y: np.ndarray, dtype=np.float64) -> float:
    def centred_gram(a):
        a = a.astype(dtype)
        k = a @ a.T
        k -= k.mean(axis=0, keepdims=True)  # K H
        k -= k.mean(axis=1, keepdims=True)  # H K H
        return k

    k = centred_gram(x)
    l = centred_gram(y)  # noqa: E741
    return float(np.vdot(k, l) / np.sqrt(np.vdot(k, k) * np.vdot(l, l)))


def gram_cca_r2(x: np.ndarray, y: np.ndarray) -> float:
    def hat(a):
        a = a.astype(np.float64)
        a = a - a.mean(axis=0)
        return a @ np.linalg.solve(a.T @ a, a.T)

    px = hat(x)
    py = hat(y)
    return float(np.vdot(px, py) / min(x.shape[1], y.shape[1]))


def measure(fn):
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    t0 = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] - base
    return out, dt, peak


def maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000, help="examples per layer")
    ap.add_argument("--gram-pairs", type=int, default=3, help="pairs timed with the N×N Gram form")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--blas-threads", type=int, default=None,
                    help="limit BLAS threads (threadpoolctl) for both forms; default: library default")
    args = ap.parse_args()
    if args.blas_threads is not None:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=args.blas_threads, user_api="blas")
    try:
        from threadpoolctl import threadpool_info

        blas = ", ".join(f"{d['internal_api']} {d['num_threads']} threads" for d in threadpool_info()
                         if d["user_api"] == "blas")
    except ImportError:  # pragma: no cover
        blas = "unknown"

    layers = make_layers(args.n, args.seed)
    L = len(layers)
    n_pairs = L * (L - 1) // 2
    n_evals = n_pairs + L
    mib = 2.0**20
    print(f"N={args.n}, {L} layers (widths 16/32/64 × 18), {n_pairs} pairs (+{L} diagonal); "
          f"BLAS: {blas}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"input: {sum(a.nbytes for a in layers) / mib:.1f} MiB float32; max RSS after data {maxrss_mib():.0f} MiB")

    tracemalloc.start()
    results = {}
    for metric in ("cka", "cca"):
        S, dt, peak = measure(lambda m=metric: similarity_matrix(layers, metric=m))
        results[metric] = (S, dt)
        print(f"[feature] similarity_matrix(metric={metric!r}): {dt:8.2f} s for all pairs "
              f"({1e3 * dt / n_pairs:.2f} ms/pair), tracemalloc peak {peak / mib:.0f} MiB, "
              f"max RSS {maxrss_mib():.0f} MiB")

    # pairs for the Gram form: one of each width combination
    picks = [(0, 18), (20, 40), (37, 53), (5, 50), (30, 31)][: args.gram_pairs]
    for metric, gram_fn, pair_fn in (("cka", gram_linear_cka, linear_cka), ("cca", gram_cca_r2, cca_r2)):
        S, t_feat = results[metric]
        times, diffs, peaks = [], [], []
        for i, j in picks:
            v, dt, peak = measure(lambda i=i, j=j: gram_fn(layers[i], layers[j]))
            times.append(dt)
            peaks.append(peak)
            diffs.append(abs(v - S[i, j]))
            assert abs(S[i, j] - pair_fn(layers[i], layers[j])) < 1e-12
        per_pair = float(np.mean(times))
        est = per_pair * n_evals
        print(f"[gram]    {metric}: {per_pair:.2f} s/pair over {len(picks)} timed pairs "
              f"({', '.join(f'{t:.2f}' for t in times)} s) → EXTRAPOLATED {n_evals} evaluations "
              f"≈ {est:.0f} s ({est / 60:.1f} min); tracemalloc peak {max(peaks) / mib:.0f} MiB, "
              f"max RSS {maxrss_mib():.0f} MiB")
        print(f"          ratio Gram (extrapolated) / feature = {est / t_feat:,.0f}×; "
              f"max |Gram − feature| on timed pairs = {max(diffs):.2e}")

    # float32 Gram form precision, one pair
    i, j = picks[0]
    v32 = gram_linear_cka(layers[i], layers[j], dtype=np.float32)
    v64 = results["cka"][0][i, j]
    print(f"[float32 Gram] linear CKA pair ({i},{j}): {v32:.6f} vs float64 feature form {v64:.6f} "
          f"(relative error {abs(v32 - v64) / v64:.2e})")
    tracemalloc.stop()


if __name__ == "__main__":
    main()
