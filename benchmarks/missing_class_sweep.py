"""Fashion-MNIST missing-class sweep (Vats 2021 §4.4): vectorised vs one-by-one, in one process.

10 removed classes × 7 temperatures (3, 6, 9, 12, 15, 18, 20) = 70 CNN students (``cnn_student``; or, with
``--student baseline_student``, the thesis's linear baseline student), fixed epochs, distilled from a ``cnn_teacher_small`` whose logits are computed **once** and shared
by both paths.

* vectorised: :func:`kdlens.train.vectorized.train_students` — all 70 students in stacks of
  ``--chunk-size`` sharing every batch and teacher lookup; removed classes masked (weight 0 in
  loss and batch norm), batches drawn from the full transfer set.
* one-by-one: kdlens's standard path, ``Trainer`` + ``DistillLoop`` (method ``kd``) on a subset
  loader without the removed class, teacher logits looked up in the same in-memory cache. Only
  a fixed subset of students is run (the first ``--single-count`` cells: class 0 at T = 3, 6, 9
  by default) and its time is **extrapolated ×70/count**.

Both paths are warmed up first (untimed), both run with the same allocator setting
(:class:`~kdlens.train.vectorized.reuse_cpu_memory`: glibc heap instead of fresh mmap pages for
big tensors), and the single students are run *between* the stacks (student, stack, student,
stack, …) so that both see the same machine load; wall-clock and process CPU time are reported
(CPU time includes OpenMP spin-waiting under contention).

Both use SGD lr 0.05, momentum 0.9, weight decay 5e-4, constant schedule, batch 128, loss
0.9·T²·KL + 0.1·CE, fp32, and evaluate once on the 10,000 test images at the end. The
teacher is trained for ``--teacher-epochs`` on ``--teacher-examples`` images unless ``--teacher``
loads one (a run directory, or a checkpoint with ``--teacher-model``).

    python benchmarks/missing_class_sweep.py --train-subset 12800 --epochs 1 --teacher-examples 10000 --single-count 5

Measured here (2-core CPU, quiet): CNN student 0.87× (12,800 images, full test set) to
1.20× (2,560 images): stacking gives the CNN nothing on this CPU, where its training is bound by
activation memory traffic that grows with the number of students; ``--student
baseline_student``: 6.3×. ``benchmarks/student_step_roofline.py`` measures the ceiling: one CNN student
already runs at half this CPU's best matrix-product rate, so no stacking can exceed ≈ 2× here in fp32.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn

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
from kdlens.train.vectorized import StudentSpec, reuse_cpu_memory, train_students


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train-subset", type=int, default=None, help="transfer-set size (random, seeded); default all 60k")
    ap.add_argument("--test-subset", type=int, default=None, help="evaluate on N random test images (default all 10k)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--student", default="cnn_student", help="cnn_student (general CNN) or baseline_student (linear)")
    ap.add_argument("--chunk-size", type=int, default=35, help="students per stacked forward pass (35: ~3 GB)")
    ap.add_argument("--backend", default="grouped", choices=["grouped", "vmap"])
    ap.add_argument("--single-count", type=int, default=3, help="students run one-by-one (extrapolated)")
    ap.add_argument("--teacher", default=None, help="teacher run directory / checkpoint (default: train one)")
    ap.add_argument("--teacher-model", default="cnn_teacher_small")
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

    single = specs[: args.single_count]
    cached = logits.to(device)

    def vectorised(group: list[StudentSpec], data=train, tst=test):
        return train_students(args.student, group, data, logits[: len(data)], test=tst, epochs=args.epochs,
                              batch_size=args.batch_size, optim=optim, seed=args.seed, backend=args.backend,
                              chunk_size=args.chunk_size, device=device, keep_states=False,
                              channels_last=args.channels_last)

    def one_by_one(spec: StudentSpec, data=train, ev=evalset) -> nn.Module:
        keep = remove_classes(data.labels, spec.removed_classes)
        student = model_for_data(args.student, data, spec.seed)
        src = InMemorySource(data.images, data.labels, keep, args.batch_size,
                             BatchAugment(mean=data.mean, std=data.std), device)
        loop = DistillLoop(src, lambda batch: (cached[batch.idx], []), build_objective("kd", T=spec.temperature))
        # the same allocator setting as train_students uses (glibc heap, no mmap page faults): on this
        # VM a fresh process's single-student training was up to ~17× slower without it
        with reuse_cpu_memory(device.type == "cpu"):
            Trainer(student, loop, optim, args.epochs, eval_set=ev, seed=args.seed, device=device, progress=False,
                    channels_last=args.channels_last).fit()  # evaluates after the last epoch, like the vectorised path
        return student

    # -- warm-up (untimed): first-call costs (oneDNN primitives, allocator) of both paths --------------
    small = train.subset(range(min(512, len(train))))
    small_eval = EvalSet(test.images[:256], test.labels[:256], evalset.prepare)
    vectorised(specs[:2], small, test.subset(range(256)))
    one_by_one(specs[0], small, small_eval)

    # -- interleaved: chunk of the sweep, one single student, chunk, … (same machine load for both) ----
    groups = [specs[a : a + args.chunk_size] for a in range(0, len(specs), args.chunk_size)]
    vec_wall = vec_cpu = 0.0
    times, cpus, accs, parts = [], [], [], []
    for i in range(max(len(groups), len(single))):
        if i < len(single):
            spec = single[i]
            w0, c0 = time.perf_counter(), time.process_time()
            student = one_by_one(spec)
            times.append(time.perf_counter() - w0)
            cpus.append(time.process_time() - c0)
            pred = predict_logits(student, evalset, device, channels_last=args.channels_last).argmax(1)
            c = spec.removed_classes[0]
            accs.append(float((pred[test.labels == c] == c).float().mean() * 100))
        if i < len(groups):
            w0, c0 = time.perf_counter(), time.process_time()
            parts.append(vectorised(groups[i]))
            vec_wall += time.perf_counter() - w0
            vec_cpu += time.process_time() - c0
    class_accuracy = np.concatenate([p.class_accuracy for p in parts])
    accuracy = np.concatenate([p.accuracy for p in parts])
    print(f"vectorised: {len(specs)} students in {vec_wall:.1f}s wall, {vec_cpu:.1f}s CPU "
          f"({vec_wall / len(specs):.2f}s per student; {len(groups)} stacks of ≤{args.chunk_size}, backend "
          f"{args.backend}, training {sum(p.seconds for p in parts):.1f}s + build/eval)")
    per, per_cpu, med = float(np.mean(times)), float(np.mean(cpus)), float(np.median(times))
    est, est_cpu, est_med = per * len(specs), per_cpu * len(specs), med * len(specs)
    print(f"one-by-one: {len(single)} students (class 0, T = {', '.join(f'{s.temperature:g}' for s in single)}), "
          f"interleaved with the stacks: {per:.2f}s wall (median {med:.2f}s) / {per_cpu:.2f}s CPU per student "
          f"(each {', '.join(f'{t:.2f}' for t in times)}s); extrapolated ×{len(specs)}/{len(single)} → "
          f"{est:.1f}s wall (median-based {est_med:.1f}s), {est_cpu:.1f}s CPU for all {len(specs)}")
    print(f"speed-up vectorised vs one-by-one: {est / vec_wall:.2f}× (wall, mean), {est_med / vec_wall:.2f}× "
          f"(wall, median), {est_cpu / vec_cpu:.2f}× (CPU time)")

    # -- results ------------------------------------------------------------------------------------
    mat = np.array([[class_accuracy[i * 7 + j, i] for j in range(7)] for i in range(10)])
    print("missing-class accuracy (%), rows = removed class, columns = T " + " ".join(f"{t:g}" for t in THESIS_TEMPERATURES))
    for i, name in enumerate(train.classes):
        print(f"  {i} {name[:12]:<12} " + " ".join(f"{v:5.1f}" for v in mat[i]))
    print(f"vectorised students' overall test accuracy: mean {np.mean(accuracy):.2f}%, "
          f"min {np.min(accuracy):.2f}%, max {np.max(accuracy):.2f}%")
    print("one-by-one vs vectorised missing-class accuracy for the same cells (batches differ: subset loader "
          "vs masked full-set batches): " + ", ".join(
              f"T={s.temperature:g}: {a:.1f}% vs {mat[0, j]:.1f}%" for j, (s, a) in enumerate(zip(single, accs))))


if __name__ == "__main__":
    main()
