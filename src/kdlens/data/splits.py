"""Index selections over a label vector: budgets, folds, missing classes, ranked subsets.

Every function takes the labels of a split (numpy array, list or tensor of ints) and
returns **sorted numpy int64 index arrays** into it, so they can be saved with a run
(``np.save``/JSON) and applied with ``Dataset.subset``.  Randomness comes only from
the ``seed`` argument (``numpy.random.default_rng(seed)``, classes visited in ascending
order), so the same call gives the same indices on every machine.

Impossible requests raise :class:`~kdlens.errors.KdlensError` naming the argument and
what would be allowed.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from kdlens.errors import KdlensError

IndexArray = np.ndarray


def as_label_array(labels: object) -> np.ndarray:
    """``labels`` as a 1-D numpy int64 array (accepts tensors on any device)."""
    if hasattr(labels, "detach"):  # torch.Tensor without importing torch here
        labels = labels.detach().cpu().numpy()  # type: ignore[union-attr]
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise KdlensError(f"labels must be 1-D, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise KdlensError(f"labels must be integers, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def _class_members(labels: np.ndarray) -> dict[int, np.ndarray]:
    """Ascending class id -> ascending indices of its samples."""
    order = np.argsort(labels, kind="stable")
    classes, starts = np.unique(labels[order], return_index=True)
    bounds = [*starts[1:], len(labels)]
    return {int(c): order[s:e] for c, s, e in zip(classes, starts, bounds, strict=True)}


def _sorted(parts: Iterable[np.ndarray]) -> IndexArray:
    parts = list(parts)
    if not parts:
        return np.empty(0, dtype=np.int64)
    return np.sort(np.concatenate(parts)).astype(np.int64)


def _positive_int(name: str, value: object) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise KdlensError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def balanced_budget(
    labels: object,
    budget: int,
    n_folds: int = 1,
    fold: int = 0,
    seed: int = 0,
    *,
    per_class: bool = False,
) -> IndexArray:
    """A class-balanced labeled set of ``budget`` samples (fold ``fold`` of ``n_folds``).

    ``budget`` is the **total** number of labels (it must be divisible by the number of
    classes present, each class gets ``budget / num_classes``), or the number per class
    when ``per_class=True``.  Each class's samples are permuted once with ``seed``; fold
    ``k`` takes positions ``k·b … (k+1)·b - 1`` of that permutation (``b`` per class),
    so the ``n_folds`` folds are disjoint and fold ``k`` is the same whatever
    ``n_folds`` is (``n_folds`` only checks that all folds fit).
    """
    y = as_label_array(labels)
    budget = _positive_int("budget", budget)
    n_folds = _positive_int("n_folds", n_folds)
    if not isinstance(fold, (int, np.integer)) or not 0 <= fold < n_folds:
        raise KdlensError(f"fold must be an integer in 0..{n_folds - 1} (n_folds={n_folds}), got {fold!r}")
    members = _class_members(y)
    if not members:
        raise KdlensError("labels are empty: nothing to select a budget from")
    num_classes = len(members)
    if per_class:
        k = budget
    else:
        if budget % num_classes:
            lower = budget - budget % num_classes
            raise KdlensError(
                f"budget={budget} is not divisible by the {num_classes} classes present; "
                f"use a multiple of {num_classes} (e.g. {lower or num_classes} or {lower + num_classes}), "
                "or per_class=True"
            )
        k = budget // num_classes
    smallest_class, smallest = min(((c, len(m)) for c, m in members.items()), key=lambda t: t[1])
    if k * n_folds > smallest:
        need = f"{k} × n_folds={n_folds} = {k * n_folds}" if n_folds > 1 else f"{k}"
        allowed = smallest // n_folds
        raise KdlensError(
            f"budget={budget} needs {need} samples per class, but class {smallest_class} has only {smallest}; "
            f"allowed: at most {allowed} per class"
            + ("" if per_class else f" (budget <= {allowed * num_classes})")
            + (f" with n_folds={n_folds}" if n_folds > 1 else "")
        )
    rng = np.random.default_rng(seed)
    chosen = []
    for _, idx in sorted(members.items()):
        perm = idx[rng.permutation(len(idx))]
        chosen.append(perm[fold * k : (fold + 1) * k])
    return _sorted(chosen)


def complement(indices: np.ndarray, size: int) -> IndexArray:
    """Sorted indices in ``range(size)`` that are not in ``indices``."""
    mask = np.ones(size, dtype=bool)
    mask[np.asarray(indices, dtype=np.int64)] = False
    return np.flatnonzero(mask).astype(np.int64)


def labeled_unlabeled(
    labels: object,
    budget: int,
    fold: int = 0,
    seed: int = 0,
    *,
    n_folds: int | None = None,
    per_class: bool = False,
) -> tuple[IndexArray, IndexArray]:
    """``(labeled_idx, unlabeled_idx)``: a :func:`balanced_budget` fold and the rest.

    The semi-supervised setting of Lee & Wallraven 2021: a small class-balanced labeled
    set, everything else of the training split used without labels.  ``n_folds``
    defaults to ``fold + 1``; the fold's indices do not depend on it.
    """
    y = as_label_array(labels)
    labeled = balanced_budget(
        y, budget, n_folds=fold + 1 if n_folds is None else n_folds, fold=fold, seed=seed, per_class=per_class
    )
    return labeled, complement(labeled, len(y))


def remove_classes(labels: object, classes: int | Iterable[int]) -> IndexArray:
    """Indices of the samples whose label is **not** in ``classes`` (missing-class test)."""
    y = as_label_array(labels)
    drop = np.atleast_1d(np.asarray(list(classes) if not isinstance(classes, (int, np.integer)) else classes))
    if drop.size and not np.issubdtype(drop.dtype, np.integer):
        raise KdlensError(f"classes must be integer class ids, got {drop.tolist()!r}")
    present = np.unique(y)
    unknown = sorted(set(drop.tolist()) - set(present.tolist()))
    if unknown:
        raise KdlensError(
            f"classes: unknown class id(s) {unknown}; the labels contain {present.tolist()}"
        )
    if drop.size and len(np.unique(drop)) == len(present):
        raise KdlensError("classes: removing every class leaves no samples")
    return np.flatnonzero(~np.isin(y, drop)).astype(np.int64)


def _n_per_class_check(members: dict[int, np.ndarray], n: int) -> None:
    smallest_class, smallest = min(((c, len(m)) for c, m in members.items()), key=lambda t: t[1])
    if n > smallest:
        raise KdlensError(f"n={n} per class, but class {smallest_class} has only {smallest}; allowed: n <= {smallest}")


def top_n_per_class(labels: object, scores: object, n: int, largest: bool = True) -> IndexArray:
    """The ``n`` highest- (``largest=True``) or lowest-scoring samples of each class.

    For Vats 2021's entropy-ranked transfer sets: ``scores`` = per-sample entropy of the
    teacher's soft labels.  Ties keep the lower index first.
    """
    y = as_label_array(labels)
    if hasattr(scores, "detach"):
        scores = scores.detach().cpu().numpy()  # type: ignore[union-attr]
    s = np.asarray(scores, dtype=np.float64)
    if s.shape != y.shape:
        raise KdlensError(f"scores must have one value per label: shape {s.shape} vs labels {y.shape}")
    if np.isnan(s).any():
        raise KdlensError(f"scores contain {int(np.isnan(s).sum())} NaN value(s); rank finite scores only")
    n = _positive_int("n", n)
    members = _class_members(y)
    if not members:
        raise KdlensError("labels are empty: nothing to rank")
    _n_per_class_check(members, n)
    chosen = []
    for _, idx in sorted(members.items()):
        key = -s[idx] if largest else s[idx]
        chosen.append(idx[np.argsort(key, kind="stable")[:n]])
    return _sorted(chosen)


def random_n_per_class(labels: object, n: int, seed: int = 0) -> IndexArray:
    """``n`` random samples of each class (same as ``balanced_budget(per_class=True)``)."""
    y = as_label_array(labels)
    n = _positive_int("n", n)
    members = _class_members(y)
    if not members:
        raise KdlensError("labels are empty: nothing to sample")
    _n_per_class_check(members, n)
    return balanced_budget(y, n, seed=seed, per_class=True)


def validation_split(labels: object, fraction: float = 0.1, seed: int = 0) -> tuple[IndexArray, IndexArray]:
    """Stratified ``(train_idx, val_idx)``: each class gives ``round(fraction · count)``
    samples to validation (chosen with ``seed``); the two are disjoint and cover all."""
    y = as_label_array(labels)
    if not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
        raise KdlensError(f"fraction must lie strictly between 0 and 1, got {fraction!r}")
    members = _class_members(y)
    rng = np.random.default_rng(seed)
    val = []
    for _, idx in sorted(members.items()):
        take = int(round(fraction * len(idx)))
        val.append(idx[rng.permutation(len(idx))[:take]])
    val_idx = _sorted(val)
    if len(val_idx) == 0 or len(val_idx) == len(y):
        raise KdlensError(
            f"fraction={fraction} of {len(y)} samples leaves an empty "
            f"{'validation' if len(val_idx) == 0 else 'training'} set; choose a fraction that keeps both non-empty"
        )
    return complement(val_idx, len(y)), val_idx
