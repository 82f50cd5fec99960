"""Streamed image-folder batches: kdlens LoaderBatches vs torchvision ImageFolder + DataLoader.

Data: an ImageFolder of ``--images`` (100,000) 64×64 RGB JPEGs (quality 90) in 10 classes
under ``--root/train`` (plus 1% under ``--root/val``), generated once with a process pool
and kept (a ``.complete`` marker records the parameters).  Each image is a smooth colour
gradient with a low-frequency wave and Gaussian noise (σ = 8): random, yet compressible
(≈ 2.5 KB a file).

Variants, same ``--workers``, batch 128, same torch threads:

- ``kdlens``: ``LoaderBatches(ImageFolderDataset(train), 128, num_workers=W)`` (uint8
  batches decoded by ``torchvision.io.decode_image``) + ``BatchAugment(crop=4, hflip=True,
  mean, std)`` on each whole batch in the main process;
- ``torchvision``: ``datasets.ImageFolder`` + ``DataLoader(batch_size=128, num_workers=W,
  shuffle=True)`` with ``Compose([RandomCrop(64, padding=4), RandomHorizontalFlip(),
  ToTensor(), Normalize(mean, std)])`` (PIL decoding, per-image transforms);
- ``kdlens-pil`` (optional): kdlens with ``decoder="pil"``, to show what the decoder is worth;
- ``kdlens-all-threads`` (optional): kdlens with ``main_threads=None`` — the main process
  keeps all its torch threads while the workers run (see :mod:`kdlens.data.streamed`).

Each (variant, repetition) runs in a fresh subprocess; the order of the variants
alternates between repetitions.  Timed: ``--batches`` batches after the first one (worker
start-up excluded for both).  Peak memory of the process tree (the subprocess and its
DataLoader workers), sampled every 0.1 s from /proc (psutil if installed): the sum of RSS
(counts pages shared between the processes once per process) and the sum of PSS (shared
pages split between the processes).  mean/std: ``estimate_mean_std`` (2,000 images).

    .venv/bin/python benchmarks/folder_stream.py --workers 2
    .venv/bin/python benchmarks/folder_stream.py --images 20000 --batches 50 --reps 1   # quick look

Prints each repetition, then per variant the median img/s and peak memory, and the
median kdlens/torchvision ratio with its min–max over the repetitions.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from multiprocessing import Pool
from pathlib import Path

DEFAULT_ROOT = Path(tempfile.gettempdir()) / "kdlens-folder-stream"


# --- data -----------------------------------------------------------------------------------


def _write_chunk(job: tuple[str, int, int, int, int]) -> int:
    """Write images ``start..stop-1`` of one split (seeded by the global image number)."""
    import numpy as np
    from PIL import Image

    folder, start, stop, classes, size = job
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    for i in range(start, stop):
        rng = np.random.default_rng(i)
        label = i % classes
        base = rng.uniform(40, 215, 3)
        slope = rng.uniform(-60, 60, (2, 3))
        freq, phase = rng.uniform(1, 4, 2), rng.uniform(0, 6.3, 3)
        wave = 25 * np.sin(2 * np.pi * (freq[0] * xx + freq[1] * yy))[..., None] + phase * 0
        img = base + slope[0] * xx[..., None] + slope[1] * yy[..., None] + wave + rng.normal(0, 8, (size, size, 3))
        out = Path(folder) / f"class_{label}" / f"img_{i:06d}.jpg"
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(out, quality=90)
    return stop - start


def ensure_folder(root: Path, images: int, classes: int, size: int, procs: int) -> None:
    marker = root / ".complete"
    params = {"images": images, "classes": classes, "size": size, "version": 1}
    if marker.is_file() and json.loads(marker.read_text()) == params:
        return
    print(f"generating {images} + {images // 100} {size}×{size} JPEGs under {root} with {procs} processes …", flush=True)
    t0 = time.perf_counter()
    jobs = []
    offset = 0
    for split, n in (("train", images), ("val", max(classes, images // 100))):
        for c in range(classes):
            (root / split / f"class_{c}").mkdir(parents=True, exist_ok=True)
        step = 2000
        jobs += [(str(root / split), offset + s, offset + min(s + step, n), classes, size) for s in range(0, n, step)]
        offset += n  # distinct seeds for the val images; labels stay i % classes
    with Pool(procs) as pool:
        done = sum(pool.imap_unordered(_write_chunk, jobs))
    marker.write_text(json.dumps(params))
    print(f"  {done} files in {time.perf_counter() - t0:.1f} s", flush=True)


# --- memory of a process tree ---------------------------------------------------------------


def _tree_pids(pid: int) -> list[int]:
    try:
        import psutil

        p = psutil.Process(pid)
        return [pid] + [c.pid for c in p.children(recursive=True)]
    except ImportError:
        pass
    except Exception:
        return []
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            parents.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += parents.get(p, [])
    return out


def _rss_pss(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in bytes from /proc/PID/smaps_rollup (0, 0 when gone)."""
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1]) * 1024
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1]) * 1024
    except OSError:
        pass
    return rss, pss


class TreeMemory(threading.Thread):
    """Samples the summed RSS and PSS of a process tree every ``interval`` s; keeps the peaks."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak_rss = self.peak_pss = self.peak_procs = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            pids = _tree_pids(self.pid)
            sizes = [_rss_pss(p) for p in pids]
            self.peak_rss = max(self.peak_rss, sum(r for r, _ in sizes))
            self.peak_pss = max(self.peak_pss, sum(p for _, p in sizes))
            self.peak_procs = max(self.peak_procs, len(pids))
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


# --- one measurement (in a subprocess) ------------------------------------------------------


def child(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    mean, std = tuple(args.mean), tuple(args.std)
    root = Path(args.root)
    if args.child.startswith("kdlens"):
        from kdlens.data.augment import BatchAugment
        from kdlens.data.folder import ImageFolderDataset, scan_image_folder
        from kdlens.data.streamed import LoaderBatches

        layout = scan_image_folder(root)
        ds = ImageFolderDataset(layout.train, layout.classes, channels=3, size=None,
                                decoder="pil" if args.child == "kdlens-pil" else "torchvision")
        del layout  # the dataset keeps its own compact copy of the paths
        gen = torch.Generator().manual_seed(args.seed)
        aug = BatchAugment(crop=4, hflip=True, mean=mean, std=std)
        kw = {"main_threads": None} if args.child == "kdlens-all-threads" else {}
        batches = LoaderBatches(ds, args.batch_size, generator=gen, num_workers=args.workers, **kw)

        def stream():
            for x, y, _ in batches:
                yield aug(x, gen), y
    else:
        from torch.utils.data import DataLoader
        from torchvision import datasets, transforms

        tf = transforms.Compose([
            transforms.RandomCrop(64, padding=4), transforms.RandomHorizontalFlip(),
            transforms.ToTensor(), transforms.Normalize(mean, std),
        ])
        data = datasets.ImageFolder(str(root / "train"), transform=tf)
        torch.manual_seed(args.seed)
        loader = DataLoader(data, batch_size=args.batch_size, num_workers=args.workers, shuffle=True)

        def stream():
            yield from loader
    it = stream()
    x, _ = next(it)  # worker start-up and the first batch: not timed
    shape = tuple(x.shape)
    n = 0
    t0 = time.perf_counter()
    for _ in range(args.batches):
        try:
            x, y = next(it)
        except StopIteration:
            break
        n += x.shape[0]
    seconds = time.perf_counter() - t0
    print(json.dumps({"variant": args.child, "images": n, "seconds": seconds, "img_s": n / seconds,
                      "shape": shape, "dtype": str(x.dtype)}), flush=True)


def run_child(variant: str, args: argparse.Namespace, mean, std) -> dict:
    cmd = [sys.executable, __file__, "--child", variant, "--root", str(args.root), "--workers", str(args.workers),
           "--batch-size", str(args.batch_size), "--batches", str(args.batches), "--threads", str(args.threads),
           "--seed", str(args.seed), "--mean", *map(str, mean), "--std", *map(str, std)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    mem = TreeMemory(proc.pid)
    mem.start()
    out, err = proc.communicate()
    mem.stop()
    if proc.returncode != 0:
        raise SystemExit(f"{variant} failed:\n{err[-3000:]}")
    result = json.loads(out.strip().splitlines()[-1])
    result.update(peak_rss=mem.peak_rss, peak_pss=mem.peak_pss, procs=mem.peak_procs)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="image folder (generated once)")
    parser.add_argument("--images", type=int, default=100_000, help="training images to generate")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers (both variants)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--batches", type=int, default=780,
                        help="timed batches per measurement (780: the rest of a 100,000-image epoch)")
    parser.add_argument("--reps", type=int, default=3, help="interleaved repetitions")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--variants", nargs="+", default=["kdlens", "torchvision"],
                        choices=["kdlens", "torchvision", "kdlens-pil", "kdlens-all-threads"])
    parser.add_argument("--gen-procs", type=int, default=os.cpu_count() or 1, help="processes generating the JPEGs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--mean", type=float, nargs=3, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--std", type=float, nargs=3, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    import torch

    if args.threads is None:
        args.threads = torch.get_num_threads()
    if args.child:
        child(args)
        return

    from kdlens.data.folder import ImageFolderDataset, estimate_mean_std, scan_image_folder

    ensure_folder(args.root, args.images, args.classes, 64, args.gen_procs)
    layout = scan_image_folder(args.root)
    t0 = time.perf_counter()
    total = sum(len(p.read_bytes()) for p, _ in layout.train)  # warm the page cache for both variants
    print(f"{len(layout.train)} training images, {total / 2**20:.0f} MiB, read once in "
          f"{time.perf_counter() - t0:.1f} s (page cache warm-up)")
    mean, std = estimate_mean_std(ImageFolderDataset(layout.train, layout.classes, channels=3, size=None))
    print(f"mean {tuple(round(m, 4) for m in mean)}, std {tuple(round(s, 4) for s in std)} (2,000-image estimate)")
    print(f"torch {torch.__version__}, threads {args.threads}, workers {args.workers}, batch {args.batch_size}, "
          f"{args.batches} timed batches ({args.batches * args.batch_size} images) per measurement, cores {os.cpu_count()}")
    results: dict[str, list[dict]] = {v: [] for v in args.variants}
    for rep in range(args.reps):
        order = args.variants if rep % 2 == 0 else list(reversed(args.variants))
        for variant in order:
            r = run_child(variant, args, mean, std)
            results[variant].append(r)
            print(f"rep {rep + 1} {variant:12s} {r['img_s']:8.0f} img/s  ({r['images']} images in {r['seconds']:.1f} s)  "
                  f"peak RSS {r['peak_rss'] / 2**20:6.0f} MiB, PSS {r['peak_pss'] / 2**20:6.0f} MiB "
                  f"over {r['procs']} processes; batch {r['dtype']} {r['shape']}", flush=True)
    print()
    for variant, rs in results.items():
        speeds = [r["img_s"] for r in rs]
        print(f"{variant:12s} median {statistics.median(speeds):8.0f} img/s (min {min(speeds):.0f}, max {max(speeds):.0f}); "
              f"peak RSS {max(r['peak_rss'] for r in rs) / 2**20:.0f} MiB, PSS {max(r['peak_pss'] for r in rs) / 2**20:.0f} MiB")
    if "kdlens" in results and "torchvision" in results:
        ratios = [k["img_s"] / t["img_s"] for k, t in zip(results["kdlens"], results["torchvision"], strict=True)]
        print(f"kdlens / torchvision: median {statistics.median(ratios):.2f}× "
              f"(min {min(ratios):.2f}×, max {max(ratios):.2f}×; per rep {', '.join(f'{r:.2f}' for r in ratios)})")


if __name__ == "__main__":
    main()
