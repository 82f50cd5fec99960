"""Batched augmentation and normalisation on tensors (any device, no per-image Python).

The usual CIFAR recipe (He et al. 2016, §4.2: "4 pixels are padded on each side, and a
32×32 crop is randomly sampled from the padded image or its horizontal flip") applied
to a whole batch at once: every sample's crop (and flip) is one ``gather`` with
per-sample source indices, zero padding is a mask (see :func:`crop_and_flip`).

Randomness comes from a ``torch.Generator`` (CPU); the random numbers are drawn on the
CPU and moved to the batch's device, so the same seed gives the same augmentation on
CPU and GPU.  Draw order per call: vertical offsets, horizontal offsets (N each, only
if ``crop``), then flip coins (N, only if ``hflip``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

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


def crop_and_flip(batch: torch.Tensor, top: torch.Tensor, left: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Per-sample H×W windows of ``batch`` starting at ``(top[i], left[i])`` (may be
    negative or run past the edge: those pixels are zero, i.e. zero padding), each
    mirrored left-right where ``flip[i]``.  Same dtype and shape as ``batch``.

    One ``gather`` over the flattened H·W plane with a per-sample source index
    (shared by the channels), then a validity mask for the padded border; nothing
    is padded or looped over per image.
    """
    n, c, h, w = batch.shape
    dev = batch.device
    top, left, flip = top.to(dev), left.to(dev), flip.to(dev)
    ar_h = torch.arange(h, device=dev)
    ar_w = torch.arange(w, device=dev)
    rows = top[:, None] + ar_h  # N×H source rows
    cols = left[:, None] + torch.where(flip[:, None], w - 1 - ar_w, ar_w)  # N×W source columns
    inside = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]  # N×H×W
    source = rows.clamp(0, h - 1)[:, :, None] * w + cols.clamp(0, w - 1)[:, None, :]  # N×H×W
    out = batch.reshape(n, c, h * w).gather(2, source.view(n, 1, h * w).expand(n, c, h * w))
    return out.view(n, c, h, w) * inside[:, None]


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
        p = self.padding
        if p or bool(flip.any()):
            batch = crop_and_flip(batch, dy - p, dx - p, flip)
        return normalize(batch, self.mean, self.std)

    def __call__(self, batch: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        dy, dx, flip = self.sample(batch.shape[0], generator)
        return self.apply(batch, dy, dx, flip)
