"""Making student and teacher features comparable: spatial matching and regressors.

Which adapter a method uses, and why, is documented on the method; these are the
building blocks.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from kdlens.errors import KdlensError

Shape = tuple[int, ...]


def match_spatial(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Resize maps ``x`` (B, C, H, W) to ``size``: adaptive average pooling when
    shrinking (no dimension grows), bilinear interpolation otherwise."""
    size = (int(size[0]), int(size[1]))
    h, w = x.shape[-2:]
    if (h, w) == size:
        return x
    if h >= size[0] and w >= size[1]:
        return F.adaptive_avg_pool2d(x, size)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def pool_to_smaller(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Average-pool whichever of two map batches is spatially larger to the other's
    H×W (the usual way AT / NST / VID code compares layers of different resolution)."""
    ha, wa = a.shape[-2:]
    hb, wb = b.shape[-2:]
    size = (min(ha, hb), min(wa, wb))
    return match_spatial(a, size), match_spatial(b, size)


def flat(x: Tensor) -> Tensor:
    """(B, ...) -> (B, D)."""
    return x.reshape(x.shape[0], -1)


def numel(shape: Shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def hint_regressor(student_shape: Shape, teacher_shape: Shape, relu: bool = False, batch_norm: bool = False) -> nn.Module:
    """FitNet's regressor r(·) from a student layer to a teacher layer's shape.

    Romero et al. 2015, §2.2: a convolutional regressor whose kernel makes the
    output size equal the hint's, k = N_g − N_h + 1 per spatial dimension (a
    "valid" convolution, no padding).  When the student map is *smaller* than the
    teacher's (not covered by the paper) kdlens uses the transposed convolution
    with the same kernel rule, which grows N_g to N_h.  Vector features use a
    linear layer; a student map against a teacher vector is flattened first.

    ``batch_norm=True`` puts batch norm after the convolution (or linear layer), then
    ``relu`` — the regressor RepDistiller's FitNet runs use (Tian et al. 2020: conv → BN →
    ReLU), for which its β = 100 was chosen.
    """
    act: list[nn.Module] = []
    if batch_norm:
        norm = nn.BatchNorm1d if len(teacher_shape) == 1 else nn.BatchNorm2d
        act.append(norm(teacher_shape[0]))
    if relu:
        act.append(nn.ReLU())
    if len(teacher_shape) == 1:
        if len(student_shape) == 1:
            return nn.Sequential(nn.Linear(student_shape[0], teacher_shape[0]), *act)
        return nn.Sequential(nn.Flatten(), nn.Linear(numel(student_shape), teacher_shape[0]), *act)
    if len(student_shape) != 3:
        raise KdlensError(
            f"cannot regress a vector student feature {student_shape} onto a teacher feature map {teacher_shape}"
        )
    (cs, hs, ws), (ct, ht, wt) = student_shape, teacher_shape
    if hs >= ht and ws >= wt:
        conv: nn.Module = nn.Conv2d(cs, ct, kernel_size=(hs - ht + 1, ws - wt + 1))
    elif hs <= ht and ws <= wt:
        conv = nn.ConvTranspose2d(cs, ct, kernel_size=(ht - hs + 1, wt - ws + 1))
    else:
        raise KdlensError(
            f"cannot regress student map {student_shape} onto teacher map {teacher_shape}: "
            "one spatial dimension is larger and the other smaller"
        )
    return nn.Sequential(conv, *act)
