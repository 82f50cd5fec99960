"""Batched augmentation and normalisation on tensors (any device, no per-image Python).

The usual CIFAR recipe (He et al. 2016, §4.2: "4 pixels are padded on each side, and a
32×32 crop is randomly sampled from the padded image or its horizontal flip") applied
to a whole batch at once: pad once with zeros, then gather every sample's crop (and
flip) with one advanced-indexing operation built from per-sample offsets.

Randomness comes from a ``torch.Generator`` (CPU); the random numbers are drawn on the
CPU and moved to the batch's device, so the same seed gives the same augmentation on
CPU and GPU.  Draw order per call: vertical offsets, horizontal offsets (N each, only
if ``crop``), then flip coins (N, only if ``hflip``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from kdlens.errors import KdlensError


def _stats(values: Sequence[float] | None, channels: int, what: str, x: torch.Tensor) -> torch.Tensor | None:
    if values is None:
        return None
    t = torch.as_tensor(values, dtype=torch.float32).flatten()
    if t.numel() == 1:
        t = t.expand(channels)
    if t.numel() != channels:
        raise KdlensError(f"{what} has {t.numel()} values for a batch with {channels} channels")
    if what == "std" and bool((t <= 0).any()):
        raise KdlensError(f"std must be positive, got {t.tolist()}")
    return t.to(x.device).view(1, channels, 1, 1)


def to_float(batch: torch.Tensor) -> torch.Tensor:
    """uint8 0..255 -> float32 in [0, 1]; floating batches are returned as float32 as is."""
    if batch.dtype == torch.uint8:
        return batch.to(torch.float32).div_(255.0)
    if batch.is_floating_point():
        return batch.to(torch.float32)
    raise KdlensError(f"expected a uint8 or floating batch, got {batch.dtype}")


def normalize(
    batch: torch.Tensor,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> torch.Tensor:
    """``(to_float(batch) - mean[c]) / std[c]`` for an N×C×H×W batch (evaluation path).

    uint8 batches are first scaled to [0, 1]; floating batches are taken as already in
    [0, 1] units (or, for ``mnist1d``, already standardised: mean 0, std 1).
    ``mean``/``std`` of ``None`` skip that step.
    """
    if batch.ndim != 4:
        raise KdlensError(f"expected an N×C×H×W batch, got shape {tuple(batch.shape)}")
    x = to_float(batch)
    if x is batch:
        x = x.clone()
    m = _stats(mean, x.shape[1], "mean", x)
    s = _stats(std, x.shape[1], "std", x)
    if m is not None:
        x.sub_(m)
    if s is not None:
        x.div_(s)
    return x


class BatchAugment:
    """Random crop with zero padding, random horizontal flip, then :func:`normalize`.

    Args:
        crop: padding in pixels for the random crop (4 for CIFAR), or ``None``/0 for no
            crop.  Output keeps the input's H×W.
        hflip: flip each sample horizontally with probability 1/2.
        mean, std: per-channel constants in [0, 1] units (``Dataset.mean``/``.std``).
        generator: default ``torch.Generator`` for the random draws (CPU); a call may
            pass its own.  ``None`` uses torch's global generator.

    ``aug(batch)`` = ``aug.apply(batch, *aug.sample(len(batch)))``; :meth:`sample` and
    :meth:`apply` are public so the parameters can be logged or tested.
    """

    def __init__(
        self,
        crop: int | None = None,
        hflip: bool = False,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        if crop is not None and (not isinstance(crop, int) or isinstance(crop, bool) or crop < 0):
            raise KdlensError(f"crop (padding in pixels) must be a non-negative integer or None, got {crop!r}")
        self.crop = crop
        self.hflip = hflip
        self.mean = mean
        self.std = std
        self.generator = generator

    def __repr__(self) -> str:
        return f"BatchAugment(crop={self.crop}, hflip={self.hflip}, mean={self.mean}, std={self.std})"

    @property
    def padding(self) -> int:
        return self.crop or 0

    def sample(
        self, n: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Random ``(dy, dx, flip)`` for ``n`` samples (CPU tensors).

        ``dy``/``dx`` in ``0..2·padding`` are the crop's top-left corner in the padded
        image (``padding`` = no shift); ``flip`` is boolean.
        """
        gen = generator if generator is not None else self.generator
        p = self.padding
        if p:
            dy = torch.randint(0, 2 * p + 1, (n,), generator=gen)
            dx = torch.randint(0, 2 * p + 1, (n,), generator=gen)
        else:
            dy = dx = torch.zeros(n, dtype=torch.int64)
        flip = torch.rand(n, generator=gen) < 0.5 if self.hflip else torch.zeros(n, dtype=torch.bool)
        return dy, dx, flip

    def apply(self, batch: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
        """Crop at the given offsets, flip where ``flip``, then normalise; float32 out."""
        if batch.ndim != 4:
            raise KdlensError(f"expected an N×C×H×W batch, got shape {tuple(batch.shape)}")
        n, c, h, w = batch.shape
        p = self.padding
        if p or bool(flip.any()):
            dev = batch.device
            dy, dx, flip = dy.to(dev), dx.to(dev), flip.to(dev)
            padded = F.pad(batch, (p, p, p, p)) if p else batch
            ar_h = torch.arange(h, device=dev)
            ar_w = torch.arange(w, device=dev)
            rows = dy[:, None] + ar_h  # N×H, rows of the padded image
            cols = dx[:, None] + torch.where(flip[:, None], w - 1 - ar_w, ar_w)  # N×W, reversed if flipped
            sample = torch.arange(n, device=dev)[:, None, None]
            # advanced indices around a slice: result is N×H×W×C
            batch = padded.permute(0, 2, 3, 1)[sample, rows[:, :, None], cols[:, None, :]]
            batch = batch.permute(0, 3, 1, 2).contiguous()
        return normalize(batch, self.mean, self.std)

    def __call__(self, batch: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        dy, dx, flip = self.sample(batch.shape[0], generator)
        return self.apply(batch, dy, dx, flip)
