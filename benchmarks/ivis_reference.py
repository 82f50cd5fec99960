"""Benchmark: kdlens ``Ivis`` vs reference ivis (TensorFlow), seeds interleaved, threads matched.

Issue 17's Ivis goals: training per epoch ≥ 2× the reference at matched threads and equal
quality (trustworthiness at 10 within 0.01), end-to-end ≥ 2× on 10,000 points. This script
prints the two ratios separately, per data set, as the median over seeds with [min–max].

Data sets (``--datasets``):

* ``digits``: scikit-learn's 8 × 8 digits, 1,797 × 64, pixels / 16;
* ``gauss``: 10,000 × 50 standard normal (seeded), the issue's "10,000 × 50 set";
* ``fmnist``: the first 10,000 Fashion-MNIST test images, 784 pixels / 255
  (Debian package dataset-fashion-mnist).

Both implementations run their defaults (2-D, k = 150, PN loss, batch 128, Adam 1e-3, up to
1,000 epochs, patience 20; kdlens ``loss="pn"``, the reference its own PN form — see
``kdlens.explain.embed.ivis.pn_reference_loss``). Threads: training on ``--threads`` threads
in both (torch ``n_threads``; TensorFlow intra- and inter-op pools); the neighbour search is
left at each one's own setting on the whole machine (the reference's Annoy build and
neighbour extraction take every core and cannot be limited through ``ivis.Ivis``; kdlens's
exact search uses torch's threads). The reference runs in its own interpreter
(``--reference-python``: TensorFlow ≤ 2.15 needs numpy < 2) in a subprocess started right
before or after kdlens's run of the same seed and data set — the order alternates by seed.

* **per epoch**: the median epoch time from epoch 2 on (the reference's first epoch also
  traces its graph), each implementation timing its own epochs (kdlens ``epoch_seconds_``,
  a Keras callback for the reference);
* **end-to-end**: ``fit_transform`` wall time, neighbours included, imports excluded;
* **quality**: trustworthiness and kNN preservation at 10 against the input.

    pip install 'ivis[cpu]==2.0.11'   # in another venv, e.g. /tmp/ivisref
    python benchmarks/ivis_reference.py --reference-python /tmp/ivisref/bin/python --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from kdlens.explain.embed import Ivis, embedding_quality

REFERENCE_SCRIPT = r"""
import json, os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np
import tensorflow as tf
threads, seed, max_epochs = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
tf.config.threading.set_intra_op_parallelism_threads(threads)
tf.config.threading.set_inter_op_parallelism_threads(threads)
np.random.seed(seed)
tf.random.set_seed(seed)
import ivis
x = np.load(sys.argv[1])
epoch_times = []
class EpochTimer(tf.keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.t = time.perf_counter()
    def on_epoch_end(self, epoch, logs=None):
        epoch_times.append(time.perf_counter() - self.t)
t = time.perf_counter()
model = ivis.Ivis(embedding_dims=2, k=150, verbose=0, callbacks=[EpochTimer()],
                  **({"epochs": max_epochs} if max_epochs > 0 else {}))
emb = model.fit_transform(x)
seconds = time.perf_counter() - t
np.save(sys.argv[2], emb)
print("RESULT " + json.dumps({"seconds": seconds, "epoch_seconds": epoch_times,
                              "loss": min(model.loss_history_), "version": ivis.__version__,
                              "tf": tf.__version__}))
"""


def load(name: str) -> np.ndarray:
    if name == "digits":
        from sklearn.datasets import load_digits

        return (load_digits().data / 16.0).astype(np.float32)
    if name == "gauss":
        return np.random.default_rng(12345).standard_normal((10_000, 50)).astype(np.float32)
    if name == "fmnist":
        from kdlens.data import load_dataset

        images = load_dataset("fashion-mnist", "test").images[:10_000]
        return images.reshape(len(images), -1).float().div_(255).numpy()
    raise SystemExit(f"unknown data set {name!r}: digits | gauss | fmnist")


def run_kdlens(x: np.ndarray, seed: int, threads: int, max_epochs: int) -> tuple[np.ndarray, dict]:
    t = time.perf_counter()
    model = Ivis(random_state=seed, n_threads=threads, **({"epochs": max_epochs} if max_epochs else {}))
    emb = model.fit_transform(x)
    return emb, {"seconds": time.perf_counter() - t, "epoch_seconds": model.epoch_seconds_,
                 "loss": model.loss_, "knn_seconds": model.knn_seconds_}


def run_reference(x: np.ndarray, python: str, seed: int, threads: int, max_epochs: int) -> tuple[np.ndarray, dict]:
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "x.npy", Path(tmp) / "emb.npy"
        np.save(src, x)
        proc = subprocess.run([python, "-c", REFERENCE_SCRIPT, str(src), str(dst), str(threads), str(seed), str(max_epochs)],
                              capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
            raise SystemExit(f"reference ivis failed (exit {proc.returncode}): {tail}")
        return np.load(dst), json.loads(lines[-1][7:])


def per_epoch(info: dict) -> float:
    times = info["epoch_seconds"][1:] or info["epoch_seconds"]
    return statistics.median(times)


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}× [{min(values):.2f}–{max(values):.2f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=["digits", "gauss", "fmnist"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=1, help="training threads of both implementations")
    ap.add_argument("--max-epochs", type=int, default=0, help="cap epochs of both (0: defaults, 1,000 + patience 20)")
    ap.add_argument("--reference-python", default=os.environ.get("KDLENS_IVIS_PYTHON"),
                    help="python of a venv with reference ivis and TensorFlow (env KDLENS_IVIS_PYTHON)")
    args = ap.parse_args()
    if not args.reference_python:
        raise SystemExit("give --reference-python PATH (a venv with `pip install 'ivis[cpu]==2.0.11'`)")

    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((ln.split(":", 1)[1].strip() for ln in flags.splitlines() if ln.startswith("model name")), platform.machine())
    print(f"kdlens Ivis vs reference ivis — {model}, {os.cpu_count()} CPUs, AVX-512 {'yes' if 'avx512f' in flags else 'no'}, "
          f"torch {torch.__version__}, training threads {args.threads}, load average {os.getloadavg()[0]:.1f}", flush=True)
    torch.set_num_threads(max(args.threads, 1))
    rows = []
    for i, seed in enumerate(args.seeds):
        for name in args.datasets:
            x = load(name)
            order = ("kdlens", "reference") if i % 2 == 0 else ("reference", "kdlens")
            result = {}
            for impl in order:
                if impl == "kdlens":
                    torch.set_num_threads(os.cpu_count() or 1)  # the exact kNN search on every core, as the reference's Annoy
                    result[impl] = run_kdlens(x, seed, args.threads, args.max_epochs)
                else:
                    result[impl] = run_reference(x, args.reference_python, seed, args.threads, args.max_epochs)
            quality = embedding_quality(x, {k: v[0] for k, v in result.items()}, k=10)
            for impl, (_, info) in result.items():
                row = {"dataset": name, "seed": seed, "impl": impl, "seconds": info["seconds"],
                       "per_epoch": per_epoch(info), "epochs": len(info["epoch_seconds"]), "loss": info["loss"],
                       "T10": quality[impl]["trustworthiness"], "kNNp10": quality[impl]["knn_preservation"]}
                rows.append(row)
                print(f"  {name:<7} seed {seed} {impl:<9} {row['seconds']:7.1f} s  {row['per_epoch'] * 1e3:7.1f} ms/epoch "
                      f"{row['epochs']:4d} epochs  T@10 {row['T10']:.4f}  kNNp@10 {row['kNNp10']:.4f}  loss {row['loss']:.4f}",
                      flush=True)

    print("\ndataset  per-epoch speed-up (ref/kdlens)  end-to-end speed-up  ΔT@10 (kdlens − ref)  ΔkNNp@10")
    for name in args.datasets:
        pairs = [({r["impl"]: r for r in rows if r["dataset"] == name and r["seed"] == s}) for s in args.seeds]
        epoch_ratio = [p["reference"]["per_epoch"] / p["kdlens"]["per_epoch"] for p in pairs]
        total_ratio = [p["reference"]["seconds"] / p["kdlens"]["seconds"] for p in pairs]
        d_t = [p["kdlens"]["T10"] - p["reference"]["T10"] for p in pairs]
        d_k = [p["kdlens"]["kNNp10"] - p["reference"]["kNNp10"] for p in pairs]
        print(f"{name:<8} {spread(epoch_ratio):<33} {spread(total_ratio):<20} {statistics.mean(d_t):+.4f} "
              f"[{min(d_t):+.4f}, {max(d_t):+.4f}]  {statistics.mean(d_k):+.4f}")
    print(f"load average now {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    sys.exit(main())
