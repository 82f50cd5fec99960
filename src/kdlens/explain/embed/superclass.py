"""Output correlation within superclasses (Lee & Wallraven 2021, §5.2, Fig. 5).

Does a model's output for one class move together with the outputs for related classes?
For a model's outputs on a data set (n × C), take the Pearson correlation across the n
samples between the output columns of every pair of classes (i, j) and square it:

``r²_ij = corr(o_{·i}, o_{·j})²``

The **within-superclass** value is the mean of r²_ij over all unordered pairs i ≠ j that lie
in the same superclass (pooled over superclasses); the **between** value is the same mean over
pairs in different superclasses, a baseline. Lee & Wallraven report higher within-superclass
correlation for distilled students (the teacher's "dark knowledge" about class similarity).

Outputs: ``kind="softmax"`` (default: the class probabilities at temperature 1, what a user
of the model sees and what the distillation loss matches) or ``"logits"`` (the raw scores,
which are not tied together by the softmax normalisation).

Superclasses: CIFAR-100's 20 coarse classes (from the dataset's ``coarse_labels``); for
Fashion-MNIST the documented groups :data:`FASHION_MNIST_GROUPS` — *tops* (T-shirt/top,
Pullover, Coat, Shirt: upper-body garments), *footwear* (Sandal, Sneaker, Ankle boot) and
*other* (Trouser, Dress, Bag).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from kdlens.errors import KdlensError

__all__ = [
    "FASHION_MNIST_GROUPS",
    "SuperclassCorrelation",
    "output_correlation",
    "superclass_correlation",
    "superclass_groups",
]

# Fashion-MNIST labels: 0 T-shirt/top, 1 Trouser, 2 Pullover, 3 Dress, 4 Coat, 5 Sandal,
# 6 Shirt, 7 Sneaker, 8 Bag, 9 Ankle boot
FASHION_MNIST_GROUPS: dict[str, tuple[int, ...]] = {
    "tops": (0, 2, 4, 6),
    "footwear": (5, 7, 9),
    "other": (1, 3, 8),
}
OUTPUT_KINDS = ("softmax", "logits")


@dataclass
class SuperclassCorrelation:
    """``within`` / ``between``: mean r² over same- / different-superclass class pairs;
    ``per_group``: superclass → mean within-group r²; ``r2``: the C × C matrix."""

    within: float
    between: float
    per_group: dict[str, float]
    r2: np.ndarray


def _as_outputs(outputs: Any) -> np.ndarray:
    if hasattr(outputs, "detach"):
        outputs = outputs.detach().cpu().numpy()
    o = np.asarray(outputs, dtype=np.float64)
    if o.ndim != 2 or o.shape[0] < 3 or o.shape[1] < 2:
        raise KdlensError(f"outputs must be an n × C matrix with n ≥ 3 samples and C ≥ 2 classes; got shape {o.shape}")
    if not np.isfinite(o).all():
        raise KdlensError("outputs contain NaN or infinite values")
    return o


def output_correlation(outputs: Any, kind: str = "softmax") -> np.ndarray:
    """C × C Pearson correlation between the output columns (NaN for a constant column)."""
    if kind not in OUTPUT_KINDS:
        raise KdlensError(f"kind must be one of {', '.join(OUTPUT_KINDS)}; got {kind!r}")
    o = _as_outputs(outputs)
    if kind == "softmax":
        o = np.exp(o - o.max(1, keepdims=True))
        o /= o.sum(1, keepdims=True)
    oc = o - o.mean(0)
    norm = np.sqrt((oc**2).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (oc.T @ oc) / np.outer(norm, norm)
    r[:, norm == 0] = np.nan
    r[norm == 0, :] = np.nan
    return np.clip(r, -1.0, 1.0)


def superclass_groups(data: Any) -> dict[str, tuple[int, ...]]:
    """Superclass → fine class indices for a :class:`kdlens.data.Dataset`.

    Uses the dataset's ``coarse_labels`` (CIFAR-100) when present, the documented Fashion-MNIST
    groups for ``fashion-mnist``; otherwise raises a :class:`KdlensError` (pass groups yourself).
    """
    coarse = getattr(data, "coarse_labels", None)
    if coarse is not None:
        fine = np.asarray(data.labels)
        coarse = np.asarray(coarse)
        names = getattr(data, "coarse_classes", None)
        groups: dict[str, tuple[int, ...]] = {}
        for c in np.unique(coarse):
            name = names[int(c)] if names is not None else str(int(c))
            groups[name] = tuple(int(v) for v in np.unique(fine[coarse == c]))
        return groups
    if getattr(data, "name", None) == "fashion-mnist":
        return dict(FASHION_MNIST_GROUPS)
    raise KdlensError(
        f"dataset {getattr(data, 'name', '?')!r} has no superclasses (no coarse labels); "
        "pass groups={'name': (class, …), …} yourself"
    )


def superclass_owner(groups: Mapping[str, Sequence[int]], n_classes: int) -> np.ndarray:
    """Index of each class's superclass in ``groups`` (−1: in none); checks that every member is a
    class index and that no class is in two groups (call it before long work)."""
    owner = np.full(n_classes, -1)
    for g, members in enumerate(groups.values()):
        for c in members:
            if not 0 <= int(c) < n_classes:
                raise KdlensError(f"superclass member {c} is not a class index (0..{n_classes - 1})")
            if owner[int(c)] >= 0:
                raise KdlensError(f"class {c} is in two superclasses; give each class at most one group")
            owner[int(c)] = g
    return owner


def superclass_correlation(
    outputs: Any, groups: Mapping[str, Sequence[int]], kind: str = "softmax"
) -> SuperclassCorrelation:
    """Mean r² between the outputs of classes in the same superclass (Lee & Wallraven §5.2).

    ``outputs``: n × C logits of one model on a data set; ``groups``: superclass → class indices
    (each class in at most one group; classes in no group are ignored).
    """
    r = output_correlation(outputs, kind)
    n_cls = r.shape[0]
    owner = superclass_owner(groups, n_cls)
    r2 = r**2
    iu = np.triu_indices(n_cls, 1)
    same = (owner[iu[0]] == owner[iu[1]]) & (owner[iu[0]] >= 0)
    diff = (owner[iu[0]] != owner[iu[1]]) & (owner[iu[0]] >= 0) & (owner[iu[1]] >= 0)
    vals = r2[iu]

    def _mean(v: np.ndarray) -> float:
        v = v[np.isfinite(v)]
        return float(v.mean()) if v.size else float("nan")

    per_group = {}
    for g, (name, members) in enumerate(groups.items()):
        in_g = same & (owner[iu[0]] == g)
        per_group[name] = _mean(vals[in_g])
    return SuperclassCorrelation(within=_mean(vals[same]), between=_mean(vals[diff]), per_group=per_group, r2=r2)
