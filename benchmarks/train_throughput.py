"""kdlens Trainer vs a plain reference loop: training images/s, side by side in one process.

The reference is how RepDistiller and most KD repositories train: a ``torch.utils.data``
``DataLoader`` over a dataset that yields one PIL image at a time through a torchvision
transform pipeline (random crop + flip for 32×32 colour images, then ToTensor and
Normalize), then the usual SGD step.  kdlens slices pre-loaded uint8 tensors and augments
whole batches (:mod:`kdlens.data.augment`), optionally with channels_last + bf16 autocast.

Usage::

    python benchmarks/train_throughput.py [--images 4096] [--batch-size 64] [--workers 0 2]

Prints one table row per (model, variant) with img/s and the ratio to the reference.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import transforms

from kdlens.config import OptimConfig
from kdlens.data import BatchAugment, load_dataset
from kdlens.models import create_model
from kdlens.train import SupervisedLoop, Trainer
from kdlens.train.data_setup import InMemorySource


class PerImageDataset(torch.utils.data.Dataset):
    """torchvision-style dataset: one PIL image per ``__getitem__`` through ``transform``."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform) -> None:
        self.images = images.permute(0, 2, 3, 1).numpy()  # N×H×W×C uint8, as CIFAR stores it
        self.labels = labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        img = self.images[i]
        img = Image.fromarray(img[:, :, 0] if img.shape[2] == 1 else img)
        return self.transform(img), self.labels[i]


def reference_epoch(model, images, labels, mean, std, augment: bool, batch_size: int, workers: int) -> float:
    steps = [transforms.RandomCrop(images.shape[-1], padding=4), transforms.RandomHorizontalFlip()] if augment else []
    tf = transforms.Compose(steps + [transforms.ToTensor(), transforms.Normalize(mean, std)])
    loader = DataLoader(
        PerImageDataset(images, labels, tf), batch_size=batch_size, shuffle=True, num_workers=workers,
        persistent_workers=False,
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    model.train()
    start = time.perf_counter()
    n = 0
    for x, y in loader:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        n += x.shape[0]
    return n / (time.perf_counter() - start)


def kdlens_epoch(model, images, labels, mean, std, augment: bool, batch_size: int, bf16: bool, channels_last: bool) -> float:
    aug = BatchAugment(crop=4 if augment else None, hflip=augment, mean=mean, std=std)
    source = InMemorySource(images, labels, None, batch_size, aug, torch.device("cpu"))
    trainer = Trainer(
        model, SupervisedLoop(source), OptimConfig(schedule="constant"), epochs=1, device="cpu",
        bf16=bf16, channels_last=channels_last, progress=False,
    )
    return trainer.fit().images_per_s


def cases(n_images: int):
    fm = "fashion-mnist"
    try:
        data = load_dataset(fm, "train")
        name = fm
    except Exception:  # not installed: synthetic 28×28 grey images of the same size
        data = load_dataset("synthetic", "train", n=n_images, channels=1, size=28)
        name = "synthetic-28"
    idx = torch.arange(min(n_images, len(data)))
    yield ("cnn_student", {"input_size": 28}, name, data.images[idx], data.labels[idx], data.mean, data.std, False)
    # 32×32 colour images (CIFAR-shaped): synthetic, with CIFAR-style crop + flip.
    cifar = load_dataset("synthetic", "train", n=n_images, channels=3, size=32)
    yield ("resnet20", {}, "synthetic-32x32x3", cifar.images, cifar.labels, cifar.mean, cifar.std, True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4096, help="images per timed epoch")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="reference DataLoader workers")
    args = parser.parse_args()
    torch.manual_seed(0)
    from kdlens.config.precision import cpu_bf16_flags

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch {args.batch_size}, "
          f"{args.images} images per epoch")
    print(f"CPU capability {torch.backends.cpu.get_cpu_capability()}, native bf16 flags: "
          f"{', '.join(cpu_bf16_flags()) or 'none (bf16 autocast is emulated and slow here)'}")
    print(f"{'model':16s} {'data':20s} {'variant':34s} {'img/s':>8s} {'ratio':>6s}")
    for model_name, kw, data_name, images, labels, mean, std, augment in cases(args.images):
        c = images.shape[1]
        make = lambda: create_model(model_name, num_classes=10, in_channels=c, **kw)  # noqa: E731
        # warm-up (first-call allocations) on a few batches
        kdlens_epoch(make(), images[:256], labels[:256], mean, std, augment, args.batch_size, False, False)
        refs = {}
        for w in args.workers:
            torch.manual_seed(0)
            refs[w] = reference_epoch(make(), images, labels, mean, std, augment, args.batch_size, w)
        best_ref = max(refs.values())
        for w, speed in refs.items():
            print(f"{model_name:16s} {data_name:20s} {f'reference DataLoader workers={w}':34s} {speed:8.0f} {speed / best_ref:6.2f}")
        for bf16, cl in ((False, False), (True, True)):
            torch.manual_seed(0)
            speed = kdlens_epoch(make(), images, labels, mean, std, augment, args.batch_size, bf16, cl)
            label = "kdlens fp32" if not bf16 else "kdlens channels_last+bf16"
            print(f"{model_name:16s} {data_name:20s} {label:34s} {speed:8.0f} {speed / best_ref:6.2f}")
    print("ratio = img/s / best reference (higher is better)")


if __name__ == "__main__":
    main()
