"""Confidence and similarity labels (Vats 2021, *Response-based knowledge distillation*,
§3.2, Tables 3.2 and 3.3).

A soft label ``p = softmax(z/T)`` of an example of class ``y`` splits into

* the **confidence label** ``p_y`` — the probability of the true class, and
* the **similarity labels** ``p_k, k ≠ y`` — the mass the teacher puts on the other
  classes, which carries the class-similarity information that the soft-label hypothesis
  credits for KD's benefit (label smoothing spreads it uniformly instead).

:func:`soft_label_table` lays chosen examples out like the thesis's tables (one row per
example and temperature, one column per class); :func:`label_variance` gives the variance of
each label across the examples of a class (how much the teacher's soft labels differ between
examples of one class — zero for label smoothing).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from kdlens.errors import KdlensError
from kdlens.explain.softlabels.entropy import _as_logits, check_temperatures, soft_label_entropy

__all__ = [
    "LabelVariance",
    "confidence_labels",
    "label_variance",
    "similarity_labels",
    "soft_label_table",
]


def _labels(labels: Any, n: int, k: int) -> np.ndarray:
    y = np.asarray(labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels).astype(np.int64)
    if y.shape != (n,):
        raise KdlensError(f"labels must have one entry per logit row ({n}), got shape {y.shape}")
    if n and (y.min() < 0 or y.max() >= k):
        raise KdlensError(f"labels must lie in 0..{k - 1}, got {int(y.min())}..{int(y.max())}")
    return y


def _probs(logits: Any, T: float) -> np.ndarray:
    check_temperatures([T])
    return torch.softmax(_as_logits(logits) / T, dim=1).numpy()


def confidence_labels(logits: Any, labels: Any, T: float = 1.0) -> np.ndarray:
    """``p_{i, y_i}`` at temperature ``T``: the true-class probability of every example."""
    p = _probs(logits, T)
    y = _labels(labels, *p.shape)
    return p[np.arange(len(y)), y]


def similarity_labels(logits: Any, labels: Any, T: float = 1.0) -> np.ndarray:
    """``N×K`` soft labels at ``T`` with the true-class entry set to NaN: the similarity labels,
    kept in their class columns. ``np.nansum(…, axis=1) = 1 − confidence``."""
    p = _probs(logits, T)
    y = _labels(labels, *p.shape)
    out = p.copy()
    out[np.arange(len(y)), y] = np.nan
    return out


def soft_label_table(
    logits: Any,
    labels: Any,
    indices: Sequence[int],
    temperatures: Sequence[float] = (1.0,),
    class_names: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Rows like Vats 2021 Tables 3.2/3.3: for every chosen example and temperature, its true
    class, confidence label, summed similarity mass, entropy and the probability of every class.

    Columns: ``index, true_class, T, confidence, similarity_mass, entropy`` then one column per
    class name (the true class's column holds the confidence label).
    """
    z = _as_logits(logits)
    n, k = z.shape
    y = _labels(labels, n, k)
    names = list(class_names) if class_names is not None else [str(c) for c in range(k)]
    if len(names) != k:
        raise KdlensError(f"{len(names)} class names for {k} classes")
    idx = [int(i) for i in indices]
    bad = [i for i in idx if not 0 <= i < n]
    if bad:
        raise KdlensError(f"example indices {bad} out of range 0..{n - 1}")
    rows = []
    for T in check_temperatures(temperatures):
        p = _probs(z[idx], T) if idx else np.zeros((0, k))
        h = soft_label_entropy(z[idx], T) if idx else np.zeros(0)
        for j, i in enumerate(idx):
            row: dict[str, Any] = {
                "index": i, "true_class": names[y[i]], "T": T, "confidence": float(p[j, y[i]]),
                "similarity_mass": float(1.0 - p[j, y[i]]), "entropy": float(h[j]),
            }
            row.update({names[c]: float(p[j, c]) for c in range(k)})
            rows.append(row)
    return rows


@dataclass
class LabelVariance:
    """Variance of soft labels across the examples of each class, at one temperature.

    ``variance[c, k]``: variance over the examples of class ``c`` of their probability for
    class ``k`` (the diagonal is the confidence label's variance, the rest the similarity
    labels'); ``mean[c, k]`` the corresponding mean (row ``c`` = the class's average soft
    label); ``confidence_variance`` = the diagonal; ``similarity_variance[c]`` = the mean of
    row ``c``'s off-diagonal variances. Rows of classes without examples are NaN.
    """

    T: float
    mean: np.ndarray
    variance: np.ndarray
    counts: np.ndarray

    @property
    def confidence_variance(self) -> np.ndarray:
        return np.diag(self.variance).copy()

    @property
    def similarity_variance(self) -> np.ndarray:
        k = self.variance.shape[0]
        off = ~np.eye(k, dtype=bool)
        return np.array([self.variance[c][off[c]].mean() for c in range(k)])

    def rows(self, class_names: Sequence[str] | None = None) -> list[dict[str, Any]]:
        k = self.variance.shape[0]
        names = list(class_names) if class_names is not None else [str(c) for c in range(k)]
        sim = self.similarity_variance
        return [
            {"T": self.T, "class": names[c], "n": int(self.counts[c]),
             "confidence_mean": float(self.mean[c, c]), "confidence_variance": float(self.variance[c, c]),
             "similarity_variance_mean": float(sim[c])}
            for c in range(k)
        ]


def label_variance(logits: Any, labels: Any, T: float = 1.0) -> LabelVariance:
    """Per-class mean and (population) variance of every soft-label entry at ``T``."""
    p = _probs(logits, T)
    n, k = p.shape
    y = _labels(labels, n, k)
    mean = np.full((k, k), np.nan)
    var = np.full((k, k), np.nan)
    counts = np.bincount(y, minlength=k)
    for c in range(k):
        rows = p[y == c]
        if len(rows):
            mean[c] = rows.mean(0)
            var[c] = rows.var(0)
    return LabelVariance(float(T), mean, var, counts)
