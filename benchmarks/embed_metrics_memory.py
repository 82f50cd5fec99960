"""Peak memory and time of the embedding metrics (issue 6) on N = 10,000 points.

Issue 8 asks that the embedding metrics on N = 10,000 stay within the memory limit stated in
their issue.  Issue 6 states no number for the metrics, so the limit used here is the one
issue 4 states for the hint search at the same N: **1 GiB** peak.

Each metric runs in a **fresh subprocess** (``--worker``), so one metric's high-water mark
does not hide another's:

1. import numpy, torch, scipy (``stats``, ``spatial``) and ``kdlens.explain.embed`` — every
   module a metric imports lazily — and read ``ru_maxrss``: the *idle* baseline;
2. make the data (below) and read ``ru_maxrss`` again (the inputs alone);
3. compute the metric (timed with ``perf_counter``) and read ``ru_maxrss``.

*Growth* = peak after the metric − the idle baseline of the same process: the metric's own
memory **plus its inputs** (X is 10,000 × 784 float32 = 30 MiB).  ``ru_maxrss`` is a
high-water mark, so a short-lived temporary counts in full.

Data (seeded, float32): 10 Gaussian classes in ``--dim`` (784) dimensions — class centres
N(0, 3²) per coordinate, unit noise — and a 2-D "embedding" = a random projection of X plus
noise; labels = the classes; model outputs for the superclass correlation = noisy one-hot
logits (10 classes, the documented Fashion-MNIST groups tops / footwear / other).  The metrics run
with their defaults (``k`` 5 for trustworthiness, continuity and the kNN classifier, 10 for
kNN preservation; Spearman on a 1,000-point sample; class-area grid 128²).
``distance_spearman_all`` (``sample = N``: all 50 M pairs) is measured as well, to show what
a caller who asks for every pair pays; it is not a default.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/embed_metrics_memory.py
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/embed_metrics_memory.py --metrics embedding_quality --json
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

GIB = 2**30
KIB = 2**10
LIMIT_GIB = 1.0  # issue 4's limit at N = 10,000 (issue 6 states none for the metrics)
METRICS = ("trustworthiness", "continuity", "knn_preservation", "knn_classifier_accuracy", "distance_spearman",
           "class_area_ratio", "superclass_correlation", "embedding_quality", "distance_spearman_all")


def _maxrss() -> int:
    """Peak resident set size of this process so far, in bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * KIB


def make_data(n: int, dim: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    centres = (3.0 * rng.standard_normal((10, dim))).astype(np.float32)
    x = centres[labels]
    x += rng.standard_normal((n, dim), dtype=np.float32)
    proj = rng.standard_normal((dim, 2), dtype=np.float32) / np.float32(dim**0.5)
    y = x @ proj
    y += 0.1 * rng.standard_normal((n, 2), dtype=np.float32)
    logits = 4.0 * np.eye(10, dtype=np.float32)[labels] + rng.standard_normal((n, 10), dtype=np.float32)
    return x, y, labels, logits


def worker(metric: str, n: int, dim: int) -> dict:
    """Run one metric in this (fresh) process and measure it."""
    import numpy as np  # noqa: F401
    import scipy.spatial.distance  # noqa: F401
    import scipy.stats  # noqa: F401
    import torch

    from kdlens.explain import embed
    from kdlens.explain.embed.superclass import FASHION_MNIST_GROUPS

    idle = _maxrss()
    x, y, labels, logits = make_data(n, dim)
    with_data = _maxrss()
    calls = {
        "trustworthiness": lambda: embed.trustworthiness(x, y),
        "continuity": lambda: embed.continuity(x, y),
        "knn_preservation": lambda: embed.knn_preservation(x, y),
        "knn_classifier_accuracy": lambda: embed.knn_classifier_accuracy(y, labels),
        "distance_spearman": lambda: embed.distance_spearman(x, y),
        "distance_spearman_all": lambda: embed.distance_spearman(x, y, sample=n),
        "class_area_ratio": lambda: embed.class_area_ratio(y, labels),
        "superclass_correlation": lambda: embed.superclass_correlation(logits, FASHION_MNIST_GROUPS).within,
        "embedding_quality": lambda: embed.embedding_quality(x, y, labels),
    }
    t0 = time.perf_counter()
    value = calls[metric]()
    seconds = time.perf_counter() - t0
    peak = _maxrss()
    return {"metric": metric, "n": n, "dim": dim, "value": value, "seconds": seconds, "idle_bytes": idle,
            "data_bytes": with_data - idle, "peak_bytes": peak, "growth_bytes": peak - idle,
            "torch_threads": torch.get_num_threads()}


def measure(metric: str, n: int, dim: int) -> dict:
    """``worker(metric)`` in a fresh interpreter."""
    out = subprocess.run([sys.executable, __file__, "--worker", metric, "--n", str(n), "--dim", str(dim)],
                         capture_output=True, text=True, check=False)
    if out.returncode:
        raise RuntimeError(f"{metric} failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _short(value) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {v:.3f}" for k, v in value.items())
    return f"{value:.4f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=784)
    parser.add_argument("--metrics", nargs="+", choices=METRICS, default=list(METRICS))
    parser.add_argument("--json", action="store_true", help="one JSON object per metric instead of the table")
    parser.add_argument("--worker", choices=METRICS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.n, args.dim)))
        return 0
    rows = []
    for metric in args.metrics:
        row = measure(metric, args.n, args.dim)
        row["within_limit"] = row["growth_bytes"] < LIMIT_GIB * GIB
        rows.append(row)
        if args.json:
            print(json.dumps(row), flush=True)
    if not args.json:
        mib = lambda b: f"{b / 2**20:,.0f}"  # noqa: E731
        print(f"N = {args.n:,}, {args.dim}-d input, 2-d embedding; torch threads {rows[0]['torch_threads']}; "
              f"idle interpreter (numpy, torch, scipy, kdlens.explain.embed) {mib(rows[0]['idle_bytes'])} MiB; "
              f"inputs {mib(rows[0]['data_bytes'])} MiB; limit {LIMIT_GIB:g} GiB growth")
        print(f"{'metric':<26}{'seconds':>9}{'peak RSS growth MiB':>22}  within limit  value")
        for r in rows:
            print(f"{r['metric']:<26}{r['seconds']:>9.2f}{mib(r['growth_bytes']):>22}  "
                  f"{'yes' if r['within_limit'] else 'NO':<12}  {_short(r['value'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
