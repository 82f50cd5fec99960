"""Entropy of soft labels over temperature and label smoothing: the "entropy form" of the
soft-label hypothesis (Vats 2021, *Response-based knowledge distillation*, §3.3 and
Fig. 5.2–5.4, 5.15).

A teacher's soft label for example ``i`` at temperature ``T`` is ``p_i = softmax(z_i / T)``
(Hinton et al. 2015, eq. 1); its Shannon entropy ``H(p_i) = −Σ_k p_ik log p_ik`` (nats by
default) measures how much probability mass — "similarity information" — sits outside the
arg-max. ``H`` grows with ``T`` from the near one-hot ``T → 0`` limit to ``log K`` as
``T → ∞`` (uniform). Label smoothing (Szegedy et al. 2016) gives every example the same
soft label ``q = (1−α)·onehot + α/K``, whose entropy has the closed form
``H(q) = −(1−α+α/K)·log(1−α+α/K) − (K−1)·(α/K)·log(α/K)`` (:func:`label_smoothing_entropy`):
entropy without any class similarity.

All computations run in float64 (``log_softmax`` for stability); results are numpy arrays.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from kdlens.errors import KdlensError

__all__ = [
    "DEFAULT_LS_ALPHAS",
    "DEFAULT_TEMPERATURES",
    "THESIS_TEMPERATURES",
    "EntropyTable",
    "check_temperatures",
    "entropy_by_temperature",
    "label_smoothing_entropy",
    "label_smoothing_entropy_curve",
    "soft_label_entropy",
    "soft_labels",
]

#: The temperatures of Vats 2021's experiments (missing-class test, transfer sets).
THESIS_TEMPERATURES: tuple[float, ...] = (3.0, 6.0, 9.0, 12.0, 15.0, 18.0, 20.0)
#: Default temperature grid of the entropy curves: 1…20 together with the thesis's values.
DEFAULT_TEMPERATURES: tuple[float, ...] = tuple(sorted({float(t) for t in range(1, 21)} | set(THESIS_TEMPERATURES)))
#: Default α_LS grid of the label-smoothing curve (kdlens's choice; 0.1 is Szegedy et al.'s value).
DEFAULT_LS_ALPHAS: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def _as_logits(logits: Any) -> torch.Tensor:
    t = logits.detach().cpu() if isinstance(logits, torch.Tensor) else torch.as_tensor(np.asarray(logits))
    if t.dim() != 2:
        raise KdlensError(f"logits must be an N×K matrix, got shape {tuple(t.shape)}")
    if t.shape[1] < 2:
        raise KdlensError(f"logits need at least 2 classes, got {t.shape[1]}")
    return t.to(torch.float64)


def check_temperatures(temperatures: Iterable[float]) -> tuple[float, ...]:
    """The temperatures as floats; a :class:`KdlensError` if empty or any ``T ≤ 0``."""
    ts = tuple(float(t) for t in temperatures)
    if not ts:
        raise KdlensError("give at least one temperature")
    bad = [t for t in ts if not (t > 0 and math.isfinite(t))]
    if bad:
        raise KdlensError(f"temperatures must be finite and > 0, got {bad}")
    return ts


def _base_log(base: float | None) -> float:
    if base is None:
        return 1.0
    if not base > 1:
        raise KdlensError(f"entropy base must be > 1 (or None for nats), got {base}")
    return math.log(base)


def soft_labels(logits: Any, T: float = 1.0) -> np.ndarray:
    """``softmax(z / T)`` per row (float64), Hinton et al. 2015, eq. 1."""
    check_temperatures([T])
    return torch.softmax(_as_logits(logits) / T, dim=1).numpy()


def soft_label_entropy(logits: Any, T: float = 1.0, base: float | None = None) -> np.ndarray:
    """Shannon entropy ``H(softmax(z_i/T)) = −Σ_k p_ik log p_ik`` of every row (length N).

    Nats by default (``base=None``); ``base=2`` gives bits. Computed in float64 as
    ``−Σ p·log_softmax(z/T)``, so saturated rows give exactly 0, never NaN.
    """
    check_temperatures([T])
    log_p = torch.log_softmax(_as_logits(logits) / T, dim=1)
    h = -(log_p.exp() * log_p).sum(1)
    return (h / _base_log(base)).clamp_min(0.0).numpy()


@dataclass
class EntropyTable:
    """Soft-label entropy of one teacher over a list of temperatures.

    ``per_example``: ``len(T)×N``; ``per_class``: ``len(T)×K`` mean over each class's
    examples (NaN for a class without examples); ``mean``: ``len(T)`` mean over all examples.
    ``max_entropy`` = log K (in the same base): the ``T → ∞`` limit.
    """

    temperatures: tuple[float, ...]
    per_example: np.ndarray
    per_class: np.ndarray
    mean: np.ndarray
    max_entropy: float
    class_names: list[str] | None = None

    def rows(self, teacher: str | None = None) -> list[dict[str, Any]]:
        """Tidy rows: one per (T, class) plus one per T with ``class = "all"``."""
        out = []
        names = self.class_names or [str(k) for k in range(self.per_class.shape[1])]
        for i, T in enumerate(self.temperatures):
            base = {"teacher": teacher} if teacher is not None else {}
            out.append({**base, "T": T, "class": "all", "class_id": -1, "mean_entropy": float(self.mean[i])})
            for k, name in enumerate(names):
                out.append({**base, "T": T, "class": name, "class_id": k, "mean_entropy": float(self.per_class[i, k])})
        return out


def entropy_by_temperature(
    logits: Any,
    labels: Any,
    temperatures: Sequence[float] = DEFAULT_TEMPERATURES,
    base: float | None = None,
    class_names: Sequence[str] | None = None,
) -> EntropyTable:
    """Soft-label entropy per example, per class and on average at every temperature.

    ``labels`` (length N) group the examples by their true class; the class count K is the
    logits' width.
    """
    z = _as_logits(logits)
    ts = check_temperatures(temperatures)
    y = torch.as_tensor(np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels), dtype=torch.long)
    if y.shape != (z.shape[0],):
        raise KdlensError(f"labels must have one entry per logit row ({z.shape[0]}), got shape {tuple(y.shape)}")
    k = z.shape[1]
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= k):
        raise KdlensError(f"labels must lie in 0..{k - 1}")
    if class_names is not None and len(class_names) != k:
        raise KdlensError(f"{len(class_names)} class names for {k} classes")
    per_example = np.stack([soft_label_entropy(z, T, base) for T in ts])
    counts = np.bincount(y.numpy(), minlength=k).astype(np.float64)
    sums = np.zeros((len(ts), k))
    np.add.at(sums, (slice(None), y.numpy()), per_example)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return EntropyTable(ts, per_example, per_class, per_example.mean(1), math.log(k) / _base_log(base),
                        None if class_names is None else list(class_names))


def label_smoothing_entropy(alpha_ls: float, num_classes: int, base: float | None = None) -> float:
    """Entropy of the label-smoothed target ``(1−α)·onehot + α/K`` (closed form, see module)."""
    if not 0.0 <= alpha_ls <= 1.0:
        raise KdlensError(f"alpha_ls must be in [0, 1], got {alpha_ls}")
    if num_classes < 2:
        raise KdlensError(f"num_classes must be >= 2, got {num_classes}")
    k = num_classes
    top, other = 1.0 - alpha_ls + alpha_ls / k, alpha_ls / k
    xlogx = lambda v: 0.0 if v == 0 else v * math.log(v)  # noqa: E731
    return -(xlogx(top) + (k - 1) * xlogx(other)) / _base_log(base)


def label_smoothing_entropy_curve(
    alphas: Sequence[float] = DEFAULT_LS_ALPHAS, num_classes: int = 10, base: float | None = None
) -> np.ndarray:
    """:func:`label_smoothing_entropy` for every α_LS in ``alphas``."""
    return np.array([label_smoothing_entropy(a, num_classes, base) for a in alphas])
