"""Deterministic class-conditional toy images for tests and quick demos.

Each class has a smooth random prototype (a ``channels×4×4`` uniform pattern,
bilinearly upsampled to ``size×size``); a sample is its class prototype plus
Gaussian pixel noise (σ = 0.2) and a per-image brightness offset (σ = 0.05), clipped
to [0, 1] and stored as uint8.  Classes are therefore easy to tell apart (a
nearest-class-mean classifier is near-perfect), yet not identical within a class.

Everything follows from ``seed``: prototypes come from ``seed`` alone (shared by the
splits), samples from ``(seed, split)``.  Labels are balanced (``n`` samples,
``i % num_classes`` then shuffled).  ``num_coarse`` groups consecutive classes into
superclasses (``coarse = label * num_coarse // num_classes``) to exercise code written
for CIFAR-100's coarse labels.  ``mean``/``std`` are computed from the training split.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from kdlens.data.catalog import register_dataset
from kdlens.data.dataset import Dataset
from kdlens.errors import KdlensError

_SPLIT_STREAM = {"train": 1, "test": 2}


def _check(name: str, value: int, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise KdlensError(f"synthetic dataset: {name} must be an integer in {low}..{high}, got {value!r}")


def _generate(
    split: str, n: int, num_classes: int, channels: int, size: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    proto_gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(num_classes, channels, 4, 4, generator=proto_gen)
    prototypes = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)

    gen = torch.Generator().manual_seed(seed * 7919 + _SPLIT_STREAM[split])
    labels = (torch.arange(n) % num_classes)[torch.randperm(n, generator=gen)]
    noise = 0.2 * torch.randn(n, channels, size, size, generator=gen)
    brightness = 0.05 * torch.randn(n, 1, 1, 1, generator=gen)
    images = (prototypes[labels] + noise + brightness).clamp_(0, 1)
    return images.mul_(255).round_().to(torch.uint8), labels


@register_dataset(
    "synthetic",
    mean=None,
    std=None,
    description="synthetic class-conditional images from a seed (options: n, n_test, num_classes, channels, size, seed, num_coarse)",
)
def load_synthetic(
    split: str,
    root: Path | None,
    download: bool,
    n: int = 512,
    n_test: int | None = None,
    num_classes: int = 10,
    channels: int = 1,
    size: int = 16,
    seed: int = 0,
    num_coarse: int | None = None,
) -> Dataset:
    """Train split: ``n`` samples; test split: ``n_test`` (default ``n``)."""
    _check("n", n, 1, 10_000_000)
    if n_test is not None:
        _check("n_test", n_test, 1, 10_000_000)
    _check("num_classes", num_classes, 2, 10_000)
    _check("channels", channels, 1, 64)
    _check("size", size, 2, 1024)
    _check("seed", seed, 0, 2**62)
    if num_coarse is not None:
        _check("num_coarse", num_coarse, 1, num_classes)
    size_of_split = n if split == "train" or n_test is None else n_test
    images, labels = _generate(split, size_of_split, num_classes, channels, size, seed)
    train = images if split == "train" else _generate("train", n, num_classes, channels, size, seed)[0]
    pixels = train.transpose(0, 1).reshape(channels, -1).double() / 255
    mean = tuple(round(float(v), 6) for v in pixels.mean(1))
    std = tuple(round(float(v), 6) for v in pixels.std(1, correction=0).clamp_min(1e-6))
    coarse_labels = coarse_classes = None
    if num_coarse is not None:
        coarse_labels = labels * num_coarse // num_classes
        coarse_classes = [f"group_{g}" for g in range(num_coarse)]
    return Dataset(
        name="synthetic",
        images=images,
        labels=labels,
        classes=[f"class_{c}" for c in range(num_classes)],
        coarse_labels=coarse_labels,
        coarse_classes=coarse_classes,
        mean=mean,
        std=std,
        split=split,
    )
