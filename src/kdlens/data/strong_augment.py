"""Batched RandAugment (FixMatch's variant) and Cutout on image tensors.

FixMatch (Sohn et al. 2020, §2.3 and Table 12) makes its *strong* view with RandAugment
(Cubuk et al. 2020) in a variant without a global magnitude: every image draws
``num_ops = 2`` operations from the list below, each with its own magnitude uniformly
from the operation's range, and then Cutout (DeVries & Taylor 2017) sets a square of side
``v · min(H, W)``, ``v ~ U[0, 0.5]``, to grey.

| operation | magnitude (Table 12) | here |
| --- | --- | --- |
| identity, autocontrast, equalize | – | per image and channel (PIL's rules) |
| brightness, color, contrast, sharpness | factor in [0.05, 0.95] | PIL ``ImageEnhance`` blends |
| posterize | bits in [4, 8] | keep the top ``bits`` bits of the 8-bit level |
| rotate | ±30° | about the centre |
| shear_x, shear_y | ±0.3 | about the centre (PIL shears about the corner: only a shift apart) |
| solarize | threshold in [0, 1] | invert pixels ≥ threshold |
| translate_x, translate_y | ±0.3 of the side | |

Geometric operations fill the uncovered area with ``fill`` (grey, 0.5, as Cutout) and
sample the nearest pixel (PIL's default).  Everything is batched: one pass per
(operation slot, operation) over the images that drew it, no per-image Python.

Images come in as uint8 (0–255) or floating in [0, 1]; the result is float32 in [0, 1]
(normalise afterwards).  Randomness comes from a ``torch.Generator`` on the CPU and is
moved to the batch's device, so a seed gives the same images on CPU and GPU.  Draw order
of :meth:`RandAugment.sample`: operation indices (N × num_ops), magnitudes (N × num_ops),
then Cutout's centres (N × 2) and sizes (N).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from kdlens.data.augment import to_float
from kdlens.errors import KdlensError, unknown_name

Op = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]

#: FixMatch's RandAugment operations and magnitude ranges (Sohn et al. 2020, Table 12)
FIXMATCH_OPS: tuple[str, ...] = (
    "autocontrast", "brightness", "color", "contrast", "equalize", "identity", "posterize",
    "rotate", "sharpness", "shear_x", "shear_y", "solarize", "translate_x", "translate_y",
)
MAGNITUDE_RANGES: dict[str, tuple[float, float]] = {
    "brightness": (0.05, 0.95),
    "color": (0.05, 0.95),
    "contrast": (0.05, 0.95),
    "sharpness": (0.05, 0.95),
    "posterize": (4.0, 9.0),  # floored: 4…8 bits equally likely
    "rotate": (-30.0, 30.0),
    "shear_x": (-0.3, 0.3),
    "shear_y": (-0.3, 0.3),
    "solarize": (0.0, 1.0),
    "translate_x": (-0.3, 0.3),
    "translate_y": (-0.3, 0.3),
}


def _factor(v: torch.Tensor) -> torch.Tensor:
    return v.view(-1, 1, 1, 1)


def blend(degenerate: torch.Tensor, image: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """PIL ``ImageEnhance``: ``degenerate + factor · (image − degenerate)``, clipped to [0, 1]
    (factor 0 gives the degenerate image, 1 the image)."""
    return (degenerate + _factor(factor) * (image - degenerate)).clamp_(0.0, 1.0)


def grey(x: torch.Tensor) -> torch.Tensor:
    """N×1×H×W luminance: ITU-R 601 weights (PIL's ``L``) for RGB, the channel mean otherwise."""
    if x.shape[1] == 3:
        w = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return (x * w).sum(1, keepdim=True)
    return x.mean(1, keepdim=True)


def _identity(x: torch.Tensor, v: torch.Tensor, fill: float) -> torch.Tensor:
    return x


def _autocontrast(x: torch.Tensor, v: torch.Tensor, fill: float) -> torch.Tensor:
    lo = x.amin((2, 3), keepdim=True)
    hi = x.amax((2, 3), keepdim=True)
    flat = hi <= lo
    scale = torch.where(flat, torch.ones_like(hi), 1.0 / (hi - lo).clamp_min(1e-12))
    return ((x - torch.where(flat, torch.zeros_like(lo), lo)) * scale).clamp_(0.0, 1.0)


def _brightness(x: torch.Tensor, v: torch.Tensor, fill: float) -> torch.Tensor:
    return blend(torch.zeros_like(x), x, v)


def _color(x: torch.Tensor, v: torch.Tensor, fill: float) -> torch.Tensor:
    return blend(grey(x).expand_as(x), x, v)


def _contrast(x: torch.Tensor, v: torch.Tensor, fill: float) -> torch.Tensor:
    mean = grey(x).mean((1, 2, 3), keepdim=True)
    return blend(mean.expand_as(x), x, v)


def _sharpness(x: torch.Tensor, v: torch.Tensor, fill: float) -> torch.Tensor:
    """PIL's SMOOTH kernel [[1,1,1],[1,5,1],[1,1,1]]/13 on the interior (the border stays)."""
    n, c, h, w = x.shape
    if h < 3 or w < 3:
        return x
    kernel = torch.ones(3, 3, device=x.device, dtype=x.dtype)
    kernel[1, 1] = 5.0
    kernel = (kernel / 13.0).expand(c, 1, 3, 3)
    degenerate = x.clone()
    degenerate[:, :, 1:-1, 1:-1] = F.conv2d(x, kernel, groups=c)
    return blend(degenerate, x, v)


def _levels(x: torch.Tensor) -> torch.Tensor:
    """8-bit levels 0…255 of a [0, 1] image (exact for images that were uint8)."""
    return (x * 255.0).round_().clamp_(0, 255).long()


def _posterize(x: torch.Tensor, v: torch.Tensor, fill: float) -> torch.Tensor:
    bits = v.floor().clamp(4, 8).long()
    step = (2 ** (8 - bits)).view(-1, 1, 1, 1)
    return (_levels(x) // step * step).to(x.dtype) / 255.0


def _solarize(x: torch.Tensor, v: torch.Tensor, fill: float) -> torch.Tensor:
    return torch.where(x >= _factor(v), 1.0 - x, x)


def _equalize(x: torch.Tensor, v: torch.Tensor, fill: float) -> torch.Tensor:
    """PIL ``ImageOps.equalize`` per image and channel: with ``h`` the 256-bin histogram and
    ``step = (Σh − h[last used level]) // 255``, level ``i`` ↦ ``(Σ_{j<i} h[j] + step // 2) // step``
    (capped at 255); a channel with ``step = 0`` is left as it is."""
    n, c, hh, ww = x.shape
    levels = _levels(x).view(n * c, hh * ww)
    hist = torch.zeros(n * c, 256, dtype=torch.long, device=x.device).scatter_add_(1, levels, torch.ones_like(levels))
    last = levels.amax(1, keepdim=True)
    step = (hist.sum(1, keepdim=True) - hist.gather(1, last)) // 255
    before = hist.cumsum(1) - hist
    lut = ((before + step // 2) // step.clamp_min(1)).clamp_(max=255)
    lut = torch.where(step > 0, lut, torch.arange(256, device=x.device).expand_as(lut))
    return (lut.gather(1, levels).to(x.dtype) / 255.0).view(n, c, hh, ww)


def _affine(x: torch.Tensor, matrix: torch.Tensor, fill: float) -> torch.Tensor:
    """Sample ``x`` at ``matrix @ (u, v, 1)`` for every output position ``(u, v)`` in normalised
    coordinates (−1…1, centre 0); outside the image is ``fill``."""
    grid = F.affine_grid(matrix.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x - fill, grid, mode="nearest", padding_mode="zeros", align_corners=False) + fill


def _matrices(v: torch.Tensor) -> torch.Tensor:
    m = torch.zeros(v.shape[0], 2, 3, device=v.device, dtype=torch.float32)
    m[:, 0, 0] = 1.0
    m[:, 1, 1] = 1.0
    return m


def _rotate(x: torch.Tensor, v: torch.Tensor, fill: float) -> torch.Tensor:
    h, w = x.shape[2:]
    rad = v.float() * (math.pi / 180.0)
    m = _matrices(v)
    # pixel-space rotation, conjugated into normalised coordinates (x scaled by 2/W, y by 2/H)
    m[:, 0, 0] = torch.cos(rad)
    m[:, 0, 1] = -torch.sin(rad) * h / w
    m[:, 1, 0] = torch.sin(rad) * w / h
    m[:, 1, 1] = torch.cos(rad)
    return _affine(x, m, fill)


def _shear_x(x: torch.Tensor, v: torch.Tensor, fill: float) -> torch.Tensor:
    h, w = x.shape[2:]
    m = _matrices(v)
    m[:, 0, 1] = v.float() * h / w
    return _affine(x, m, fill)


def _shear_y(x: torch.Tensor, v: torch.Tensor, fill: float) -> torch.Tensor:
    h, w = x.shape[2:]
    m = _matrices(v)
    m[:, 1, 0] = v.float() * w / h
    return _affine(x, m, fill)


def _translate_x(x: torch.Tensor, v: torch.Tensor, fill: float) -> torch.Tensor:
    m = _matrices(v)
    m[:, 0, 2] = 2.0 * v.float()  # a shift of v·W pixels is 2v in normalised units
    return _affine(x, m, fill)


def _translate_y(x: torch.Tensor, v: torch.Tensor, fill: float) -> torch.Tensor:
    m = _matrices(v)
    m[:, 1, 2] = 2.0 * v.float()
    return _affine(x, m, fill)


#: every operation: ``op(images in [0, 1], magnitudes (N,), fill) -> images``
OPERATIONS: dict[str, Op] = {
    "identity": _identity,
    "autocontrast": _autocontrast,
    "brightness": _brightness,
    "color": _color,
    "contrast": _contrast,
    "equalize": _equalize,
    "posterize": _posterize,
    "rotate": _rotate,
    "sharpness": _sharpness,
    "shear_x": _shear_x,
    "shear_y": _shear_y,
    "solarize": _solarize,
    "translate_x": _translate_x,
    "translate_y": _translate_y,
}


def cutout(x: torch.Tensor, center: torch.Tensor, size: torch.Tensor, fill: float = 0.5) -> torch.Tensor:
    """Set a square of side ``size[i]`` pixels to ``fill`` in image ``i``: rows
    ``y0 = max(0, ⌊cy − size/2⌋) … min(H, y0 + size)`` (columns alike), ``center[i] = (cy, cx)``
    in pixels (as the FixMatch reference implementations clip it)."""
    n, _, h, w = x.shape
    dev = x.device
    size = size.to(dev).view(n, 1)
    cy, cx = center.to(dev).unbind(1)
    y0 = (cy.view(n, 1) - size / 2).floor().clamp_min(0)
    x0 = (cx.view(n, 1) - size / 2).floor().clamp_min(0)
    rows = torch.arange(h, device=dev).view(1, h)
    cols = torch.arange(w, device=dev).view(1, w)
    in_rows = (rows >= y0) & (rows < (y0 + size).clamp_max(h))
    in_cols = (cols >= x0) & (cols < (x0 + size).clamp_max(w))
    mask = (in_rows[:, :, None] & in_cols[:, None, :])[:, None]
    return torch.where(mask, torch.full_like(x, fill), x)


@dataclass
class RandAugmentParams:
    """One batch's draws (CPU tensors): ``ops`` N×k indices into the operation list,
    ``magnitudes`` N×k in [0, 1) (mapped onto each operation's range), Cutout ``center``
    N×2 pixels and ``size`` N pixels."""

    ops: torch.Tensor
    magnitudes: torch.Tensor
    center: torch.Tensor
    size: torch.Tensor


class RandAugment:
    """FixMatch's RandAugment + Cutout on a batch (see the module docstring).

    Args:
        num_ops: operations per image (2 in FixMatch).
        ops: names from :data:`OPERATIONS` (default: FixMatch's list).
        cutout: largest Cutout side as a fraction of ``min(H, W)`` (0.5 in FixMatch; 0 = off).
        fill: grey level of Cutout and of the area geometric operations uncover.
    """

    def __init__(self, num_ops: int = 2, ops: Sequence[str] = FIXMATCH_OPS, cutout: float = 0.5,
                 fill: float = 0.5) -> None:
        if num_ops < 1:
            raise KdlensError(f"RandAugment num_ops must be ≥ 1, got {num_ops}")
        for name in ops:
            if name not in OPERATIONS:
                raise unknown_name("RandAugment operation", name, OPERATIONS)
        if not 0.0 <= cutout <= 1.0:
            raise KdlensError(f"cutout (largest side as a fraction of the image) must be in [0, 1], got {cutout}")
        self.num_ops = num_ops
        self.ops = tuple(ops)
        self.cutout = cutout
        self.fill = fill

    def __repr__(self) -> str:
        return f"RandAugment(num_ops={self.num_ops}, ops={len(self.ops)}, cutout={self.cutout}, fill={self.fill})"

    def sample(self, n: int, height: int, width: int, generator: torch.Generator | None = None) -> RandAugmentParams:
        ops = torch.randint(0, len(self.ops), (n, self.num_ops), generator=generator)
        magnitudes = torch.rand(n, self.num_ops, generator=generator)
        center = torch.rand(n, 2, generator=generator) * torch.tensor([float(height), float(width)])
        size = (torch.rand(n, generator=generator) * self.cutout * min(height, width)).floor()
        return RandAugmentParams(ops, magnitudes, center, size)

    def magnitude(self, name: str, u: torch.Tensor) -> torch.Tensor:
        """``u`` in [0, 1) mapped onto operation ``name``'s range."""
        lo, hi = MAGNITUDE_RANGES.get(name, (0.0, 1.0))
        return lo + u * (hi - lo)

    def apply(self, batch: torch.Tensor, params: RandAugmentParams) -> torch.Tensor:
        if batch.ndim != 4:
            raise KdlensError(f"RandAugment expects an N×C×H×W batch, got shape {tuple(batch.shape)}")
        x = to_float(batch)
        x = x.clone() if x is batch else x
        dev = x.device
        for slot in range(self.num_ops):
            chosen = params.ops[:, slot]
            for k, name in enumerate(self.ops):
                rows = (chosen == k).nonzero().flatten()  # CPU: no device sync
                if rows.numel() == 0 or name == "identity":
                    continue
                v = self.magnitude(name, params.magnitudes[rows, slot]).to(dev)
                rows = rows.to(dev)
                x[rows] = OPERATIONS[name](x[rows], v, self.fill)
        if self.cutout > 0:
            x = cutout(x, params.center, params.size, self.fill)
        return x

    def __call__(self, batch: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.apply(batch, self.sample(batch.shape[0], batch.shape[2], batch.shape[3], generator))
