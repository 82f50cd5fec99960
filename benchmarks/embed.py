"""Benchmark: kdlens Ivis vs openTSNE vs UMAP vs the reference ``ivis`` (TensorFlow).

Data: the first ``--n`` Fashion-MNIST test images (Debian package dataset-fashion-mnist)

* ``raw``: the 784 pixels scaled to [0, 1];
* ``act``: a 16,384-d layer activation: the images zero-padded to 32 × 32, the thesis student
  CNN (``cnn_student``, input_size 32) trained for ``--train-epochs`` epochs (default 1,
  Adam 1e-3, batch 128, on the 60,000 training images; 0 = untrained, seeded), extraction point
  A = ``stage1.0``, 16 channels × 32 × 32 flattened — the size of the paper's 10,000 × 16,384
  case (Lee & Wallraven 2021: Ivis 600 s, t-SNE 3,700 s). Every method embeds its PCA to
  ``--act-pca`` (default 50) dimensions (kNN trees degenerate at 16,384 dims); the quality
  metrics are computed against the full 16,384-d activations, so they include what PCA loses.
  ``--act-pca 0`` embeds the full 16,384 dims (slow).

Methods (defaults of each, 2-D): kdlens ``Ivis`` (k = 150, PN loss, patience 20, exact kNN,
one training thread), openTSNE through ``embed(method="tsne")`` (FFT gradients, perplexity 30,
neighbours from the kdlens exact back-end), UMAP (umap-learn, seeded), and the reference
``ivis`` 2.x when importable in this interpreter or given by ``--reference-python`` (a Python
with ivis, tf-keras and TensorFlow; run with ``TF_USE_LEGACY_KERAS=1``), else reported absent.

Quality at k = ``--k`` (default 10): trustworthiness, continuity, kNN preservation (kNN
recall), leave-one-out 5-NN accuracy, Spearman of pairwise distances (1,000-point sample).
Goal (issue 6): kdlens Ivis faster than the reference at equal or better quality (within 0.01).

    python benchmarks/embed.py --n 10000 --skip-act
    python benchmarks/embed.py --n 10000 --skip-raw --reference-python /tmp/ivis-venv/bin/python

Measured here (2 shared CPU cores, load average 5–8 from other jobs, torch 2.15 CPU, reference
ivis 2.0.11 on TensorFlow 2.21 + tf-keras; seconds are wall time of fit_transform incl. kNN):

    case method          seconds   T@10   C@10 kNNp@10 5NN-acc   rho epochs    loss
    raw  kdlens-ivis        35.6 0.8834 0.9774  0.0816  0.6598 0.486     74 0.11317
    raw  reference-ivis     49.9 0.8887 0.9789  0.0883  0.6596 0.506     74 0.06615
    raw  opentsne           35.5 0.9903 0.9863  0.4101  0.8082 0.666
    raw  umap               26.8 0.9790 0.9878  0.2457  0.7484 0.575
    act  kdlens-ivis        32.4 0.9320 0.9793  0.0861  0.6630 0.467     61 0.11920
    act  reference-ivis     57.9 0.9373 0.9837  0.0958  0.6649 0.573    107 0.05292
    act  opentsne           31.4 0.9855 0.9812  0.3393  0.8029 0.556
    act  umap               75.7 0.9712 0.9830  0.2196  0.7449 0.504

kdlens Ivis was 1.40× (raw) and 1.79× (act) the reference's speed with trustworthiness and kNN
preservation within 0.01 (ΔT −0.005 / −0.005, ΔkNNp −0.007 / −0.010); its distance Spearman
was lower on act (0.47 vs 0.57). The two implementations' loss values are not comparable
(ours ≈ 2× the reference's at a similar embedding quality). Without PCA, kdlens Ivis trains
at 8.5 s per epoch on 10,000 × 16,384 (one thread; 28 s with two on the loaded machine).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from kdlens.data import TensorBatches, load_dataset, normalize
from kdlens.explain.embed import Ivis, PCAEmbedder, TSNEEmbedder, UMAPEmbedder, embedding_quality, point_activations
from kdlens.models import create_model

REFERENCE_SCRIPT = r"""
import json, os, sys, time
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np
import ivis
x = np.load(sys.argv[1])
kw = {} if int(sys.argv[3]) <= 0 else {"epochs": int(sys.argv[3])}
t = time.perf_counter()
model = ivis.Ivis(embedding_dims=2, k=150, verbose=0, **kw)
emb = model.fit_transform(x)
secs = time.perf_counter() - t
np.save(sys.argv[2], emb)
hist = list(getattr(model, "loss_history_", []) or [])
print("RESULT " + json.dumps({"seconds": secs, "epochs": len(hist), "loss": min(hist) if hist else None,
                              "version": getattr(ivis, "__version__", "?")}))
"""


def load_images(n: int) -> tuple[torch.Tensor, np.ndarray, object]:
    test = load_dataset("fashion-mnist", "test")
    return test.images[:n], test.labels[:n].numpy(), test


def quick_cnn(epochs: int, seed: int = 0) -> torch.nn.Module:
    """cnn_student at 32 × 32, trained ``epochs`` epochs on padded Fashion-MNIST (0: untrained)."""
    torch.manual_seed(seed)
    model = create_model("cnn_student", num_classes=10, in_channels=1, input_size=32)
    if epochs <= 0:
        return model.eval()
    train = load_dataset("fashion-mnist", "train")
    images = torch.nn.functional.pad(train.images, (2, 2, 2, 2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(epochs):
        for x, y, _ in TensorBatches(images, train.labels, 128, generator=torch.Generator().manual_seed(seed)):
            loss = torch.nn.functional.cross_entropy(model(normalize(x, train.mean, train.std)), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()


def run_reference(x: np.ndarray, python: str | None, epochs: int) -> tuple[np.ndarray | None, dict | str]:
    """Reference ivis on x: in-process if importable, else through ``python``; (embedding, info) or (None, why)."""
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "x.npy", Path(tmp) / "emb.npy"
        np.save(src, x)
        if python is None:
            if importlib.util.find_spec("ivis") is None:
                return None, "reference ivis is not importable here (pip install 'kdlens[bench]', or --reference-python PATH)"
            python = sys.executable
        env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
        proc = subprocess.run([python, "-c", REFERENCE_SCRIPT, str(src), str(dst), str(epochs)],
                              capture_output=True, text=True, env=env)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            return None, f"reference ivis failed (exit {proc.returncode}): {' | '.join(tail)}"
        return np.load(dst), json.loads(lines[-1][7:])


def bench_case(name: str, high: np.ndarray, x_in: np.ndarray, labels: np.ndarray, args) -> list[dict]:
    print(f"\n== {name}: {high.shape[0]} points, metrics on {high.shape[1]}-d, methods embed {x_in.shape[1]}-d ==", flush=True)
    embeddings, rows = {}, []

    def record(method: str, emb: np.ndarray, secs: float, **extra) -> None:
        embeddings[method] = emb
        rows.append({"case": name, "method": method, "seconds": secs, **extra})
        print(f"  {method:<16} {secs:8.1f} s  {json.dumps(extra) if extra else ''}", flush=True)

    if not args.skip_ivis:
        t = time.perf_counter()
        model = Ivis(random_state=0, **({"epochs": args.ivis_epochs} if args.ivis_epochs else {}))
        emb = model.fit_transform(x_in)
        record("kdlens-ivis", emb, time.perf_counter() - t, epochs=model.n_epochs_, loss=round(model.loss_, 5),
               knn_s=round(model.knn_seconds_, 1))
    if not args.skip_reference:
        t = time.perf_counter()
        emb, info = run_reference(x_in, args.reference_python, args.ivis_epochs or 0)
        if emb is None:
            print(f"  reference-ivis   absent: {info}", flush=True)
        else:
            record("reference-ivis", emb, info["seconds"], epochs=info["epochs"],
                   loss=None if info["loss"] is None else round(info["loss"], 5), version=info["version"],
                   wall_s=round(time.perf_counter() - t, 1))
    if not args.skip_tsne:
        t = time.perf_counter()
        emb = TSNEEmbedder(seed=0, n_jobs=args.threads).fit_transform(x_in)
        record("opentsne", emb, time.perf_counter() - t)
    if not args.skip_umap:
        if importlib.util.find_spec("umap") is None:
            print("  umap             absent: umap-learn is not installed (pip install 'kdlens[umap]')")
        else:
            t = time.perf_counter()
            emb = UMAPEmbedder(seed=0).fit_transform(x_in)
            record("umap", emb, time.perf_counter() - t)
    if not embeddings:
        return rows
    t = time.perf_counter()
    quality = embedding_quality(high, embeddings, labels=labels, k=args.k)
    print(f"  (quality metrics for {len(embeddings)} embeddings: {time.perf_counter() - t:.1f} s)")
    for row in rows:
        row.update(quality[row["method"]])
    return rows


def print_table(rows: list[dict], k: int) -> None:
    print(f"\n{'case':<5} {'method':<16} {'seconds':>8} {'T@' + str(k):>7} {'C@' + str(k):>7} {'kNNp@' + str(k):>8} "
          f"{'5NN-acc':>8} {'rho':>6} {'epochs':>6} {'loss':>8}")
    for r in rows:
        print(f"{r['case']:<5} {r['method']:<16} {r['seconds']:8.1f} {r['trustworthiness']:7.4f} {r['continuity']:7.4f} "
              f"{r['knn_preservation']:8.4f} {r['knn_accuracy']:8.4f} {r['distance_spearman']:6.3f} "
              f"{r.get('epochs', ''):>6} {'' if r.get('loss') is None else format(r['loss'], '.5f'):>8}")
    for case in dict.fromkeys(r["case"] for r in rows):
        by = {r["method"]: r for r in rows if r["case"] == case}
        ours, ref = by.get("kdlens-ivis"), by.get("reference-ivis")
        if ours and ref:
            faster = ref["seconds"] / ours["seconds"]
            dt = ours["trustworthiness"] - ref["trustworthiness"]
            dp = ours["knn_preservation"] - ref["knn_preservation"]
            ok = faster > 1 and dt >= -0.01 and dp >= -0.01
            print(f"{case}: kdlens Ivis {faster:.2f}x the reference's speed; ΔT = {dt:+.4f}, ΔkNN-preservation = {dp:+.4f} "
                  f"→ goal (faster, quality within 0.01) {'met' if ok else 'NOT met'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000, help="test images (first n)")
    ap.add_argument("--k", type=int, default=10, help="k of the quality metrics")
    ap.add_argument("--skip-raw", action="store_true", help="skip the raw 784-d case")
    ap.add_argument("--skip-act", action="store_true", help="skip the 16,384-d activation case")
    ap.add_argument("--skip-ivis", action="store_true")
    ap.add_argument("--skip-reference", action="store_true")
    ap.add_argument("--skip-tsne", action="store_true")
    ap.add_argument("--skip-umap", action="store_true")
    ap.add_argument("--reference-python", default=os.environ.get("KDLENS_IVIS_PYTHON"),
                    help="python of an environment with the reference ivis (env KDLENS_IVIS_PYTHON)")
    ap.add_argument("--ivis-epochs", type=int, default=0, help="cap epochs of both Ivis (0: defaults, 1000 + patience 20)")
    ap.add_argument("--train-epochs", type=int, default=1, help="epochs of the quick CNN for the activation case (0: untrained)")
    ap.add_argument("--act-pca", type=int, default=50, help="PCA dimensions the methods get in the activation case (0: full)")
    ap.add_argument("--threads", type=int, default=1, help="openTSNE threads")
    args = ap.parse_args()

    print(f"kdlens embedding benchmark — {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), load average {os.getloadavg()[0]:.1f}")
    t_all = time.perf_counter()
    images, labels, test = load_images(args.n)
    rows: list[dict] = []
    if not args.skip_raw:
        raw = images.reshape(len(images), -1).float().div_(255).numpy()
        rows += bench_case("raw", raw, raw, labels, args)
    if not args.skip_act:
        t = time.perf_counter()
        cnn = quick_cnn(args.train_epochs)
        t_train = time.perf_counter() - t
        padded = dataclasses.replace(test, images=torch.nn.functional.pad(images, (2, 2, 2, 2)), labels=test.labels[: len(images)])
        t = time.perf_counter()
        acts = point_activations(cnn, padded, points="A", batch_size=500)
        act = acts.features["A"]
        t_fwd = time.perf_counter() - t
        t = time.perf_counter()
        x_in = act if args.act_pca <= 0 else PCAEmbedder(args.act_pca).fit_transform(act)
        print(f"\nactivation: cnn_student {acts.layers['A']} {acts.shapes['A']} → {act.shape[1]} features; "
              f"CNN training {t_train:.1f} s ({args.train_epochs} epochs), forward {t_fwd:.1f} s, "
              f"PCA to {x_in.shape[1]}: {time.perf_counter() - t:.1f} s", flush=True)
        rows += bench_case("act", act, np.ascontiguousarray(x_in), acts.labels, args)
    if rows:
        print_table(rows, args.k)
    print(f"\ntotal {time.perf_counter() - t_all:.0f} s; load average now {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
