"""Class-area ratio of a 2-D embedding (Lee & Wallraven 2021, §5.4, Figs. 7–8).

How much of the embedding a class occupies, relative to the whole data set: for each class c

1. fit a Gaussian kernel density estimate ``f_c`` to the class's 2-D points
   (``scipy.stats.gaussian_kde``, Scott's bandwidth unless ``bw_method`` is given);
2. evaluate it on a ``grid_size × grid_size`` grid of cell centres over the embedding's bounding
   box (all points, padded by ``pad`` × the range on every side so edge classes' tails fit) and
   normalise it to sum to 1 on the grid;
3. the class region is the **highest-density region** (HDR, Hyndman 1996) holding ``mass`` of
   the probability: the smallest set of cells whose density sum reaches ``mass`` (cells taken
   in decreasing density); its area is ``#cells × cell area``;
4. the same for the KDE of **all** points gives the reference area ``A_all``;

``ratio_c = A_c / A_all`` and the layer's value is the mean over classes. A class packed into a
tight cluster has a small ratio; a class spread over the whole map has a ratio near 1 (above 1
is possible when the class spreads over regions of low overall density). Lee & Wallraven find
the ratios smaller after distillation, i.e. more compact classes.

The ratio is a relative measure, for comparing layers and models embedded from the same data,
not the fraction of the map a class covers: with Scott's rule the bandwidth of the all-points
KDE is set by the spread of the whole embedding, so for well-separated clusters the all-points
region also fills the gaps between them and every class's ratio falls well below its share of
the points (four separated equal clusters: ≈ 0.03 each, not 0.25).

A class with fewer than 3 points, or whose points are collinear (singular covariance), has no
KDE: its ratio is NaN and it is left out of the mean.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from kdlens.errors import KdlensError

__all__ = ["ClassAreas", "ClassDensity", "class_area_ratio", "class_area_ratios", "class_density", "embedding_grid",
           "hdr_area", "hdr_mask"]


@dataclass(frozen=True)
class Grid:
    """Cell centres of a regular grid over a box: ``xs`` (g,), ``ys`` (g,), ``cell_area``."""

    xs: np.ndarray
    ys: np.ndarray
    cell_area: float

    @property
    def points(self) -> np.ndarray:
        """2 × g² array of cell centres (x varies fastest along rows of the image)."""
        gx, gy = np.meshgrid(self.xs, self.ys)
        return np.vstack([gx.ravel(), gy.ravel()])


@dataclass
class ClassAreas:
    """Per-class HDR areas and ratios of one embedding."""

    classes: np.ndarray
    ratios: np.ndarray
    areas: np.ndarray
    total_area: float
    mass: float

    @property
    def mean(self) -> float:
        """Mean ratio over the classes that have one (the layer's class-area ratio)."""
        valid = self.ratios[np.isfinite(self.ratios)]
        return float(valid.mean()) if valid.size else float("nan")


def _as_2d(embedding: Any) -> np.ndarray:
    if hasattr(embedding, "detach"):
        embedding = embedding.detach().cpu().numpy()
    y = np.asarray(embedding, dtype=np.float64)
    if y.ndim != 2 or y.shape[1] != 2:
        raise KdlensError(f"the class-area ratio needs a 2-D embedding (n × 2); got shape {y.shape}")
    if not np.isfinite(y).all():
        raise KdlensError("the embedding contains NaN or infinite values")
    return y


def embedding_grid(embedding: Any, grid_size: int = 128, pad: float = 0.1) -> Grid:
    """The evaluation grid: ``grid_size²`` cells over the bounding box of ``embedding``, padded."""
    y = _as_2d(embedding)
    if grid_size < 8:
        raise KdlensError(f"grid_size must be at least 8; got {grid_size}")
    lo, hi = y.min(0), y.max(0)
    span = np.where(hi > lo, hi - lo, 1.0)
    lo, hi = lo - pad * span, hi + pad * span
    step = (hi - lo) / grid_size
    xs = lo[0] + step[0] * (np.arange(grid_size) + 0.5)
    ys = lo[1] + step[1] * (np.arange(grid_size) + 0.5)
    return Grid(xs, ys, float(step[0] * step[1]))


def _density(points: np.ndarray, grid: Grid, bw_method: Any) -> np.ndarray | None:
    from scipy.stats import gaussian_kde

    if points.shape[0] < 3:
        return None
    try:
        kde = gaussian_kde(points.T, bw_method=bw_method)
        dens = kde(grid.points)
    except np.linalg.LinAlgError:
        return None
    total = dens.sum()
    if not np.isfinite(total) or total <= 0:
        return None
    return (dens / total).reshape(len(grid.ys), len(grid.xs))


def hdr_mask(density: np.ndarray, mass: float = 0.9) -> np.ndarray:
    """Boolean mask of the highest-density region of a grid density (summing to 1) holding ``mass``.

    Cells are taken in decreasing density until their sum reaches ``mass`` (Hyndman 1996).
    """
    if not 0 < mass < 1:
        raise KdlensError(f"mass must be in (0, 1); got {mass}")
    flat = density.ravel()
    order = np.argsort(flat)[::-1]
    cum = np.cumsum(flat[order])
    m = min(int(np.searchsorted(cum, mass * cum[-1])) + 1, flat.size)
    mask = np.zeros(flat.size, dtype=bool)
    mask[order[:m]] = True
    return mask.reshape(density.shape)


def hdr_area(points: Any, grid: Grid, mass: float = 0.9, bw_method: Any = None) -> float:
    """Area of the ``mass`` highest-density region of the Gaussian KDE of ``points`` (n × 2) on ``grid``.

    NaN when the KDE is undefined (fewer than 3 points or collinear points).
    """
    dens = _density(_as_2d(points), grid, bw_method)
    if dens is None:
        return float("nan")
    return float(hdr_mask(dens, mass).sum()) * grid.cell_area


def class_area_ratios(
    embedding: Any,
    labels: Any,
    mass: float = 0.9,
    grid_size: int = 128,
    pad: float = 0.1,
    bw_method: Any = None,
) -> ClassAreas:
    """Per-class ratio ``A_c / A_all`` of ``mass``-HDR areas (module docstring has the method)."""
    y = _as_2d(embedding)
    lab = np.asarray(labels.detach().cpu() if hasattr(labels, "detach") else labels)
    if lab.shape != (y.shape[0],):
        raise KdlensError(f"labels must have shape ({y.shape[0]},); got {lab.shape}")
    if not 0 < mass < 1:
        raise KdlensError(f"mass must be in (0, 1); got {mass}")
    grid = embedding_grid(y, grid_size, pad)
    total = hdr_area(y, grid, mass, bw_method)
    classes = np.unique(lab)
    areas = np.array([hdr_area(y[lab == c], grid, mass, bw_method) for c in classes])
    ratios = areas / total if total > 0 else np.full(len(classes), np.nan)
    return ClassAreas(classes=classes, ratios=ratios, areas=areas, total_area=total, mass=mass)


def class_area_ratio(embedding: Any, labels: Any, mass: float = 0.9, grid_size: int = 128,
                     pad: float = 0.1, bw_method: Any = None) -> float:
    """Mean class-area ratio of an embedding (Lee & Wallraven 2021, §5.4): see :func:`class_area_ratios`."""
    return class_area_ratios(embedding, labels, mass, grid_size, pad, bw_method).mean


@dataclass(frozen=True)
class ClassDensity:
    """One class's KDE on the grid and its ``mass`` HDR next to that of all points (Fig. 7).

    ``density`` (g × g, sums to 1), ``region`` / ``all_region`` boolean HDR masks on the cells
    ``xs`` × ``ys``; ``ratio`` = #region cells / #all_region cells (the class-area ratio).
    """

    cls: int
    mass: float
    xs: np.ndarray
    ys: np.ndarray
    density: np.ndarray
    region: np.ndarray
    all_region: np.ndarray
    ratio: float


def class_density(embedding: Any, labels: Any, cls: int, mass: float = 0.9, grid_size: int = 128,
                  pad: float = 0.1, bw_method: Any = None) -> ClassDensity:
    """The KDE and HDR of class ``cls`` and of all points of a 2-D embedding, for plotting (Fig. 7)."""
    y = _as_2d(embedding)
    lab = np.asarray(labels)
    if not (lab == cls).any():
        raise KdlensError(f"class {cls} has no points in this embedding")
    grid = embedding_grid(y, grid_size, pad)
    d_cls, d_all = _density(y[lab == cls], grid, bw_method), _density(y, grid, bw_method)
    if d_cls is None or d_all is None:
        raise KdlensError(f"class {cls} has too few (or collinear) points for a KDE")
    region, all_region = hdr_mask(d_cls, mass), hdr_mask(d_all, mass)
    ratio = float(region.sum() / max(all_region.sum(), 1))
    return ClassDensity(int(cls), mass, grid.xs, grid.ys, d_cls, region, all_region, ratio)
