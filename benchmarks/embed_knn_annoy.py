"""Annoy kNN graph: the per-point Python loop kdlens had vs the threaded, array-based form (issue 17).

Both build the same forest (same seed, trees and build threads) and return the same
neighbours; the benchmark checks that, then times ``build(x, k)`` (insert, forest, every
point's k nearest others) in the same process, interleaved:

* ``loop-T``  — kdlens before issue 17 session 5 with ``n_jobs=T``: forest built on T threads,
  then ``get_nns_by_item`` per point on one thread, the point itself filtered out with a
  list comprehension, rows written one at a time;
* ``new-T``   — :class:`kdlens.explain.embed.knn.AnnoyKNN` with ``n_jobs=T``: the same forest,
  queries on T threads (Annoy releases the GIL while it searches), answers stacked into
  arrays and stripped of each point itself at once;
* ``calls-only-1`` — not a usable form: the forest and the bare Annoy calls on one thread, the
  floor that no single-thread form can go below (Annoy's own search time).

T = 1 and T = ``--threads``; ratios are against ``loop-1`` of the same repetition.  Wall time
and CPU time (``time.process_time``, summed over the process's threads) are both printed: on a
machine loaded by other jobs the wall time mostly measures the load; the CPU time measures
the work (a thread waiting for a core costs wall time, not CPU time).

    python benchmarks/embed_knn_annoy.py --n 4000 --dim 50 --k 150 --reps 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np


def loop_build(x: np.ndarray, k: int, metric: str, seed: int, n_trees: int, search_k: int, build_jobs: int):
    """The per-point form, as it was in ``AnnoyKNN.build``."""
    from annoy import AnnoyIndex

    index = AnnoyIndex(x.shape[1], metric)
    index.set_seed(seed)
    for i, row in enumerate(x):
        index.add_item(i, row)
    index.build(n_trees, n_jobs=build_jobs)
    idx = np.empty((x.shape[0], k), dtype=np.int64)
    dist = np.empty((x.shape[0], k), dtype=np.float32)
    for i in range(x.shape[0]):
        nb, ds = index.get_nns_by_item(i, k + 1, search_k=search_k, include_distances=True)
        pairs = [(j, d) for j, d in zip(nb, ds, strict=True) if j != i][:k]
        if len(pairs) < k:
            nb, ds = index.get_nns_by_item(i, k + 1, search_k=max(search_k, 10 * k * n_trees), include_distances=True)
            pairs = [(j, d) for j, d in zip(nb, ds, strict=True) if j != i][:k]
        idx[i] = [p[0] for p in pairs]
        dist[i] = [p[1] for p in pairs]
    return idx, dist


def calls_only(x: np.ndarray, k: int, metric: str, seed: int, n_trees: int, build_jobs: int):
    """The floor of any one-thread form: insert, forest, and the bare ``get_nns_by_item`` calls
    (no arrays, no removal of the point itself)."""
    from annoy import AnnoyIndex

    index = AnnoyIndex(x.shape[1], metric)
    index.set_seed(seed)
    for i, row in enumerate(x):
        index.add_item(i, row)
    index.build(n_trees, n_jobs=build_jobs)
    get = index.get_nns_by_item
    return [get(i, k + 1, -1, True) for i in range(x.shape[0])]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=4000, help="points")
    ap.add_argument("--dim", type=int, default=50, help="dimensions (Annoy's useful range is tens)")
    ap.add_argument("--k", type=int, default=150, help="neighbours (Ivis's default k = 150)")
    ap.add_argument("--trees", type=int, default=50, help="Annoy trees (reference Ivis: 50)")
    ap.add_argument("--metric", default="angular", help="angular | euclidean")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                    help="T of loop-T / new-T besides 1 (default: all cores)")
    ap.add_argument("--reps", type=int, default=3, help="interleaved repetitions of each variant")
    ap.add_argument("--seed", type=int, default=0, help="seed of the data and of the forest")
    args = ap.parse_args()

    from kdlens.explain.embed.knn import AnnoyKNN

    x = np.random.default_rng(args.seed).normal(size=(args.n, args.dim)).astype(np.float32)
    common = {"metric": args.metric, "seed": args.seed, "n_trees": args.trees}

    def loop(jobs: int):
        return lambda: loop_build(x, args.k, args.metric, args.seed, args.trees, -1, jobs)

    def new(jobs: int):
        def run():
            nb = AnnoyKNN(n_jobs=jobs, **common).build(x, args.k)
            return nb.indices, nb.distances
        return run

    # the forest depends on the build's thread count, so each new form is checked against the
    # loop with the same threads (the old code built with n_jobs threads and queried on one)
    thread_counts = sorted({1, args.threads})
    variants = {}
    for jobs in thread_counts:
        variants[f"loop-{jobs}"] = loop(jobs)
        variants[f"new-{jobs}"] = new(jobs)
    variants["calls-only-1"] = lambda: calls_only(x, args.k, args.metric, args.seed, args.trees, 1)
    for jobs in thread_counts:
        ref_i, ref_d = variants[f"loop-{jobs}"]()
        got_i, got_d = variants[f"new-{jobs}"]()
        same = np.array_equal(got_i, ref_i) and np.array_equal(got_d, ref_d)
        print(f"new-{jobs}: neighbours and distances identical to loop-{jobs}'s: {same}")
        if not same:
            raise SystemExit(f"new-{jobs} differs from the loop form")
    times: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    for rep in range(args.reps):
        order = list(variants)[rep % len(variants):] + list(variants)[:rep % len(variants)]
        for name in order:
            t0, c0 = time.perf_counter(), time.process_time()
            variants[name]()
            times[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(f"n={args.n} dim={args.dim} k={args.k} trees={args.trees} metric={args.metric} threads={args.threads} "
          f"reps={args.reps}; load average now {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    loop_med = statistics.median(times["loop-1"])
    loop_cpu = statistics.median(cpu["loop-1"])
    print("| variant | wall median s | wall min–max s | loop-1 ÷ variant (wall) | per-rep wall ratios | "
          "CPU median s (all threads) | CPU min–max s | loop-1 ÷ variant (CPU) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, ts in times.items():
        med, cmed = statistics.median(ts), statistics.median(cpu[name])
        ratios = ", ".join(f"{a / b:.2f}" for a, b in zip(times["loop-1"], ts, strict=True))
        print(f"| {name} | {med:.3f} | {min(ts):.3f}–{max(ts):.3f} | {loop_med / med:.2f}× | {ratios} | "
              f"{cmed:.3f} | {min(cpu[name]):.3f}–{max(cpu[name]):.3f} | {loop_cpu / cmed:.2f}× |")


if __name__ == "__main__":
    main()
