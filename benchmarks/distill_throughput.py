"""Distillation throughput: teacher-output cache vs a teacher forward on every batch.

In one process, on Fashion-MNIST (or synthetic 28×28 data when absent), kdlens's CNN
teacher (``cnn_teacher_small``, 1.56M parameters) → ``cnn_student``, KD (T=4):

1. reference: a plain loop as in most KD repositories — ``DataLoader`` over per-image
   PIL → ToTensor → Normalize, teacher forward on every batch, KD + CE, SGD step;
2. kdlens, live teacher (``LiveTeacher``: forward on every batch, in-memory batches);
3. kdlens, cached teacher (``CachedTeacher``: logits computed once, then looked up) —
   the build time is printed separately; a sweep of S students pays it once.

It also checks that the cached and live teacher give the same losses (to 1e-6) on the
same batches.  Usage::

    python benchmarks/distill_throughput.py [--images 12000] [--epochs 1] [--teacher RUN_DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchvision import transforms

from kdlens.config import OptimConfig
from kdlens.data import BatchAugment, load_dataset, normalize
from kdlens.distill import build_objective
from kdlens.distill.cache import TeacherOutputCache, weights_hash
from kdlens.models import create_model
from kdlens.train import Trainer
from kdlens.train.data_setup import InMemorySource
from kdlens.train.distill_loop import CachedTeacher, DistillLoop, LiveTeacher
from kdlens.train.teacher import load_teacher

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import PerImageDataset  # noqa: E402  (run from benchmarks/ or with it on sys.path)


def reference_kd_epoch(student, teacher, images, labels, mean, std, batch_size, T=4.0, gamma=0.1, alpha=0.9) -> float:
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean, std)])
    loader = DataLoader(PerImageDataset(images, labels, tf), batch_size=batch_size, shuffle=True, num_workers=0)
    opt = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    teacher.eval()
    student.train()
    n, start = 0, time.perf_counter()
    for x, y in loader:
        with torch.no_grad():
            t = teacher(x)
        s = student(x)
        kd = F.kl_div(F.log_softmax(s / T, 1), F.softmax(t / T, 1), reduction="batchmean") * T * T
        loss = gamma * F.cross_entropy(s, y) + alpha * kd
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        n += x.shape[0]
    return n / (time.perf_counter() - start)


def kdlens_kd_epochs(student, teacher_outputs, images, labels, mean, std, batch_size, epochs, bf16=False) -> float:
    source = InMemorySource(images, labels, None, batch_size, BatchAugment(mean=mean, std=std), torch.device("cpu"))
    loop = DistillLoop(source, teacher_outputs, build_objective("kd"))
    trainer = Trainer(student, loop, OptimConfig(schedule="constant"), epochs, device="cpu", progress=False,
                      bf16=bf16, channels_last=bf16)
    return trainer.fit().images_per_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=12000)
    parser.add_argument("--epochs", type=int, default=1, help="epochs for the kdlens variants")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--teacher", default=None, help="trained teacher run directory (default: untrained)")
    args = parser.parse_args()
    try:
        data = load_dataset("fashion-mnist", "train")
    except Exception:
        data = load_dataset("synthetic", "train", n=args.images, channels=1, size=28)
    idx = torch.arange(min(args.images, len(data)))
    images, labels, mean, std = data.images[idx], data.labels[idx], data.mean, data.std
    torch.manual_seed(0)
    if args.teacher:
        teacher = load_teacher(args.teacher, data).model
    else:
        teacher = create_model("cnn_teacher_small", 10, in_channels=1, input_size=28).eval()
    make_student = lambda: create_model("cnn_student", 10, in_channels=1, input_size=28)  # noqa: E731
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {len(idx)} images, batch {args.batch_size}")

    device = torch.device("cpu")
    prepare = lambda x: normalize(x, mean, std)  # noqa: E731
    with tempfile.TemporaryDirectory() as tmp:
        cache = TeacherOutputCache(tmp, weights_hash(teacher), "bench", "train", "normalize")
        t0 = time.perf_counter()
        cache.build(teacher, images, prepare, device)
        build_s = time.perf_counter() - t0
        # same losses, cached vs live, on identical batches
        source = InMemorySource(images, labels, None, args.batch_size, BatchAugment(mean=mean, std=std), device)
        student = make_student()
        live_loop = DistillLoop(source, LiveTeacher(teacher), build_objective("kd"))
        cached_loop = DistillLoop(source, CachedTeacher(cache, device), build_objective("kd"))
        diffs = []
        for i, batch in enumerate(source.epoch(torch.Generator().manual_seed(0))):
            if i == 20:
                break
            diffs.append(abs(live_loop.step(student, batch).loss.item() - cached_loop.step(student, batch).loss.item()))
        print(f"max |loss(live) - loss(cached)| over 20 batches: {max(diffs):.2e}")

        torch.manual_seed(0)
        ref = reference_kd_epoch(make_student(), teacher, images, labels, mean, std, args.batch_size)
        torch.manual_seed(0)
        live = kdlens_kd_epochs(make_student(), LiveTeacher(teacher), images, labels, mean, std, args.batch_size, args.epochs)
        torch.manual_seed(0)
        cached = kdlens_kd_epochs(make_student(), CachedTeacher(cache, device), images, labels, mean, std, args.batch_size, args.epochs)
        torch.manual_seed(0)
        cached_bf16 = kdlens_kd_epochs(make_student(), CachedTeacher(cache, device), images, labels, mean, std, args.batch_size, args.epochs, bf16=True)
    print(f"{'variant':48s} {'img/s':>8s} {'vs reference':>12s}")
    for name, speed in [
        ("reference (DataLoader, teacher every batch)", ref),
        ("kdlens, live teacher", live),
        ("kdlens, cached teacher", cached),
        ("kdlens, cached teacher, channels_last+bf16", cached_bf16),
    ]:
        print(f"{name:48s} {speed:8.0f} {speed / ref:11.2f}x")
    print(f"cache build (one teacher pass over {len(idx)} images, paid once per sweep): {build_s:.1f} s")
    one_student = len(idx) * args.epochs
    print(f"cached incl. build, 1 student x {args.epochs} epoch(s): {one_student / (one_student / cached + build_s):.0f} img/s")


if __name__ == "__main__":
    main()
