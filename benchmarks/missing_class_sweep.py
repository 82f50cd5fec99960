"""Fashion-MNIST missing-class sweep (Vats 2021 §4.4): vectorised vs one-by-one, in one process.

10 removed classes × 7 temperatures (3, 6, 9, 12, 15, 18, 20) = 70 thesis students (or, with
``--student baseline_student``, the thesis's linear baseline student), fixed epochs, distilled from a ``thesis_teacher_small`` whose logits are computed **once** and shared
by both paths.

* vectorised: :func:`kdlens.train.vectorized.train_students` — all 70 students in stacks of
  ``--chunk-size`` sharing every batch and teacher lookup; removed classes masked (weight 0 in
  loss and batch norm), batches drawn from the full transfer set.
* one-by-one: kdlens's standard path, ``Trainer`` + ``DistillLoop`` (method ``kd``) on a subset
  loader without the removed class, teacher logits looked up in the same in-memory cache. Only
  a fixed subset of students is run (the first ``--single-count`` cells: class 0 at T = 3, 6, 9
  by default) and its time is **extrapolated ×70/count**.

Both use SGD lr 0.05, momentum 0.9, weight decay 5e-4, constant schedule, batch 128, loss
0.9·T²·KL + 0.1·CE, fp32, and evaluate once on the 10,000 test images at the end. The
teacher is trained for ``--teacher-epochs`` on ``--teacher-examples`` images unless ``--teacher``
loads one (a run directory, or a checkpoint with ``--teacher-model``).

    python benchmarks/missing_class_sweep.py --train-subset 2560 --test-subset 2000 --epochs 1 --teacher-examples 2000
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from kdlens.config import OptimConfig
from kdlens.data import BatchAugment, load_dataset, normalize, remove_classes
from kdlens.distill import build_objective
from kdlens.explain.softlabels import THESIS_TEMPERATURES, teacher_logits
from kdlens.train.data_setup import InMemorySource
from kdlens.train.distill_loop import DistillLoop
from kdlens.train.evaluate import EvalSet, evaluate, predict_logits
from kdlens.train.loop import SupervisedLoop
from kdlens.train.model_setup import model_for_data
from kdlens.train.trainer import Trainer, resolve_device
from kdlens.train.vectorized import StudentSpec, train_students


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train-subset", type=int, default=None, help="transfer-set size (random, seeded); default all 60k")
    ap.add_argument("--test-subset", type=int, default=None, help="evaluate on N random test images (default all 10k)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--student", default="thesis_student", help="thesis_student (general CNN) or baseline_student (linear)")
    ap.add_argument("--chunk-size", type=int, default=35, help="students per stacked forward pass (35: ~3 GB)")
    ap.add_argument("--backend", default="grouped", choices=["grouped", "vmap"])
    ap.add_argument("--single-count", type=int, default=3, help="students run one-by-one (extrapolated)")
    ap.add_argument("--teacher", default=None, help="teacher run directory / checkpoint (default: train one)")
    ap.add_argument("--teacher-model", default="thesis_teacher_small")
    ap.add_argument("--teacher-epochs", type=int, default=1)
    ap.add_argument("--teacher-examples", type=int, default=10000)
    ap.add_argument("--channels-last", action="store_true", help="channels-last activations in both paths")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    train = load_dataset("fashion-mnist", "train")
    test = load_dataset("fashion-mnist", "test")
    rng = np.random.default_rng(args.seed)
    if args.train_subset is not None and args.train_subset < len(train):
        train = train.subset(np.sort(rng.choice(len(train), args.train_subset, replace=False)))
    if args.test_subset is not None and args.test_subset < len(test):
        test = test.subset(np.sort(rng.choice(len(test), args.test_subset, replace=False)))
    optim = OptimConfig(lr=0.05, momentum=0.9, weight_decay=5e-4, schedule="constant")
    evalset = EvalSet(test.images, test.labels, lambda x: normalize(x, train.mean, train.std))
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {device}; "
          f"transfer set {len(train)} images, test {len(test)}, epochs {args.epochs}, batch {args.batch_size}, "
          f"{'channels-last' if args.channels_last else 'NCHW'} fp32, student {args.student}")

    # -- teacher, logits cached once -------------------------------------------------------------
    t0 = time.perf_counter()
    if args.teacher:
        from kdlens.train.teacher import load_teacher

        teacher = load_teacher(args.teacher, train, args.teacher_model).model
        how = f"loaded {args.teacher}"
    else:
        teacher = model_for_data(args.teacher_model, train, args.seed)
        idx = np.sort(rng.choice(len(train), min(args.teacher_examples, len(train)), replace=False))
        src = InMemorySource(train.images, train.labels, idx, 128, BatchAugment(mean=train.mean, std=train.std), device)
        Trainer(teacher, SupervisedLoop(src), optim, args.teacher_epochs, seed=args.seed, device=device,
                progress=False).fit()
        how = f"trained {args.teacher_epochs} epoch(s) on {len(idx)} images"
    t_acc = evaluate(teacher.to(device), evalset, device)["acc"]
    t1 = time.perf_counter()
    logits = teacher_logits(teacher, train, device)
    t2 = time.perf_counter()
    print(f"teacher {args.teacher_model}: {how} in {t1 - t0:.1f}s, test acc {t_acc:.2f}%; "
          f"logits cached once in {t2 - t1:.1f}s (shared by both paths)")

    specs = [StudentSpec(seed=args.seed, temperature=T, removed_classes=(c,), tags={"class": c, "T": T})
             for c in range(10) for T in THESIS_TEMPERATURES]

    # -- vectorised -------------------------------------------------------------------------------
    t0 = time.perf_counter()
    result = train_students(args.student, specs, train, logits, test=test, epochs=args.epochs,
                            batch_size=args.batch_size, optim=optim, seed=args.seed, backend=args.backend,
                            chunk_size=args.chunk_size, device=device, keep_states=False,
                            channels_last=args.channels_last)
    vec_s = time.perf_counter() - t0
    print(f"vectorised: {len(specs)} students in {vec_s:.1f}s ({vec_s / len(specs):.2f}s per student; "
          f"chunks of {args.chunk_size}, backend {args.backend}, training {result.seconds:.1f}s + build/eval)")

    # -- one-by-one (fixed subset, extrapolated) ------------------------------------------------------
    single = specs[: args.single_count]
    cached = logits.to(device)
    times, accs = [], []
    for spec in single:
        t0 = time.perf_counter()
        keep = remove_classes(train.labels, spec.removed_classes)
        student = model_for_data(args.student, train, spec.seed)
        src = InMemorySource(train.images, train.labels, keep, args.batch_size,
                             BatchAugment(mean=train.mean, std=train.std), device)
        loop = DistillLoop(src, lambda batch: (cached[batch.idx], []), build_objective("kd", T=spec.temperature))
        trainer = Trainer(student, loop, optim, args.epochs, eval_set=evalset, seed=args.seed, device=device,
                          progress=False, channels_last=args.channels_last)
        trainer.fit()  # evaluates on the test set after the last epoch, like the vectorised path
        times.append(time.perf_counter() - t0)
        pred = predict_logits(student, evalset, device, channels_last=args.channels_last).argmax(1)
        c = spec.removed_classes[0]
        accs.append(float((pred[test.labels == c] == c).float().mean() * 100))
    per = float(np.mean(times))
    est = per * len(specs)
    print(f"one-by-one: {len(single)} students (class 0, T = {', '.join(f'{s.temperature:g}' for s in single)}) "
          f"in {sum(times):.1f}s = {per:.2f}s per student (each {', '.join(f'{t:.1f}' for t in times)}s); "
          f"extrapolated ×{len(specs)}/{len(single)} → {est:.1f}s for all {len(specs)}")
    print(f"speed-up vectorised vs one-by-one: {est / vec_s:.2f}×")

    # -- results ------------------------------------------------------------------------------------
    mat = np.array([[result.class_accuracy[i * 7 + j, i] for j in range(7)] for i in range(10)])
    print("missing-class accuracy (%), rows = removed class, columns = T " + " ".join(f"{t:g}" for t in THESIS_TEMPERATURES))
    for i, name in enumerate(train.classes):
        print(f"  {i} {name[:12]:<12} " + " ".join(f"{v:5.1f}" for v in mat[i]))
    print(f"vectorised students' overall test accuracy: mean {np.mean(result.accuracy):.2f}%, "
          f"min {np.min(result.accuracy):.2f}%, max {np.max(result.accuracy):.2f}%")
    print("one-by-one vs vectorised missing-class accuracy for the same cells (batches differ: subset loader "
          "vs masked full-set batches): " + ", ".join(
              f"T={s.temperature:g}: {a:.1f}% vs {mat[0, j]:.1f}%" for j, (s, a) in enumerate(zip(single, accs))))


if __name__ == "__main__":
    main()
