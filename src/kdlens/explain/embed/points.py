"""Activations at the extraction points A–E of any model, streamed over a dataset in batches.

Lee & Wallraven (2021, Fig. 1) embed each network at five points from early to late. kdlens
takes them from :func:`kdlens.models.extraction_points`:

* A, B, C — the output of the last block of each of the last three stages (CIFAR ResNets and
  WRNs: after each of the three groups; the thesis CNNs: after each of their three stages;
  ImageNet ResNet-18/34: stages 2–4; MobileNetV2: its last three resolutions; a foreign model:
  its top-level children grouped by spatial size, from a dry run);
* D — ``penultimate``: the pooled feature vector fed to the classifier;
* E — ``logits``: the model output.

A model with fewer stages has fewer points (``baseline_student``: D and E only).

4-D activations (N × C × H × W) are either flattened (``reduce="flatten"``, C·H·W features,
as in the paper, e.g. 16 × 32 × 32 = 16,384 for a CIFAR ResNet's first group) or spatially
pooled (``"mean"`` or ``"max"`` over H × W → C features). The model runs in eval mode under
``torch.no_grad`` on the (normalised) images, ``batch_size`` at a time; the output arrays are
allocated once and filled batch by batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from kdlens.errors import KdlensError
from kdlens.models import extract_features, extraction_points

__all__ = ["REDUCTIONS", "PointActivations", "parse_points", "point_activations", "select_points", "subsample"]

REDUCTIONS = ("flatten", "mean", "max")
POINT_LETTERS = "ABCDE"


@dataclass
class PointActivations:
    """Activations per extraction point (letter → n × d float32), with the layer names,
    the labels and the dataset row indices they belong to."""

    features: dict[str, np.ndarray]
    layers: dict[str, str]
    labels: np.ndarray
    indices: np.ndarray
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    reduce: str = "flatten"


def parse_points(spec: str | Sequence[str]) -> list[str]:
    """``"A,B,E"`` / ``"ABE"`` / ``["A", "E"]`` → ``["A", "B", "E"]`` (validated, order kept)."""
    items = [p.strip().upper() for p in (spec.replace(",", " ").split() if isinstance(spec, str) else spec)]
    if isinstance(spec, str) and len(items) == 1 and len(items[0]) > 1:
        items = list(items[0])
    bad = [p for p in items if p not in POINT_LETTERS or len(p) != 1]
    if bad or not items:
        raise KdlensError(f"extraction points must be letters among A, B, C, D, E (e.g. 'A,B,C,D,E'); got {spec!r}")
    return list(dict.fromkeys(items))


def select_points(model: nn.Module, points: Sequence[str] | str | None = None,
                  example_input: torch.Tensor | None = None) -> dict[str, str]:
    """The requested extraction points of ``model`` as letter → layer name (all if ``None``).

    Raises a :class:`KdlensError` naming the points the model has when one is missing.
    """
    available = extraction_points(model, example_input)
    if points is None:
        return available
    wanted = parse_points(points)
    missing = [p for p in wanted if p not in available]
    if missing:
        have = ", ".join(f"{k}={v}" for k, v in available.items())
        raise KdlensError(f"{type(model).__name__} has no extraction point(s) {', '.join(missing)}; it has: {have}")
    return {p: available[p] for p in wanted}


def subsample(labels: Any, n: int | None, seed: int = 0) -> np.ndarray:
    """Sorted row indices of a seeded random subset of ``n`` rows (all rows if ``n`` is None or ≥ N)."""
    total = len(labels)
    if n is None or n >= total:
        return np.arange(total)
    if n < 1:
        raise KdlensError(f"n must be a positive number of points; got {n}")
    return np.sort(np.random.default_rng(seed).choice(total, size=int(n), replace=False))


def _reduce(t: torch.Tensor, how: str) -> torch.Tensor:
    if t.dim() <= 2:
        return t.reshape(t.shape[0], -1)
    if how == "flatten":
        return t.reshape(t.shape[0], -1)
    dims = tuple(range(2, t.dim()))
    return t.mean(dims) if how == "mean" else t.amax(dims)


def point_activations(
    model: nn.Module,
    data: Any,
    points: Sequence[str] | str | None = None,
    n: int | None = None,
    reduce: str = "flatten",
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    seed: int = 0,
    layers: dict[str, str] | None = None,
) -> PointActivations:
    """Activations of ``model`` at extraction points on ``data`` (a :class:`kdlens.data.Dataset`,
    normally the test split) — ``n`` seeded random rows, or all.

    ``layers``: letter → layer name to override the automatic points (any tap name works).
    ``reduce``: ``"flatten"`` | ``"mean"`` | ``"max"`` for 4-D activations.
    """
    from kdlens.data import normalize

    if reduce not in REDUCTIONS:
        raise KdlensError(f"reduce must be one of {', '.join(REDUCTIONS)}; got {reduce!r}")
    if batch_size < 1:
        raise KdlensError(f"batch_size must be positive; got {batch_size}")
    images, labels = data.images, data.labels
    idx = subsample(labels, n, seed)
    example = normalize(images[:1], data.mean, data.std)
    chosen = dict(layers) if layers is not None else select_points(model, points, example)
    names = list(dict.fromkeys(chosen.values()))
    was_training = model.training
    model.eval()
    model.to(device)
    feats: dict[str, np.ndarray] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    idx_t = torch.from_numpy(idx)
    try:
        with torch.no_grad():
            for start in range(0, len(idx), batch_size):
                rows = idx_t[start : start + batch_size]
                x = normalize(images.index_select(0, rows), data.mean, data.std).to(device)
                out = extract_features(model, x, names)
                for name in names:
                    t = out[name]
                    if name not in feats:
                        shapes[name] = tuple(t.shape[1:])
                        width = _reduce(t[:1], reduce).shape[1]
                        feats[name] = np.empty((len(idx), width), dtype=np.float32)
                    feats[name][start : start + len(rows)] = _reduce(t, reduce).float().cpu().numpy()
    finally:
        model.train(was_training)
    lab = labels.numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    return PointActivations(
        features={p: feats[name] for p, name in chosen.items()},
        layers=chosen,
        labels=lab[idx],
        indices=idx,
        shapes={p: shapes[name] for p, name in chosen.items()},
        reduce=reduce,
    )
