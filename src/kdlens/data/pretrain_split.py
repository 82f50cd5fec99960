"""A pre-training reserve disjoint from every label-budget fold and unlabeled pool.

Lee & Wallraven 2021 fine-tune an ImageNet-pre-trained teacher on each label budget: the
teacher knows labeled images the student never sees.  Offline, kdlens stands in for that
outside knowledge with a stratified part of the training split (all its labels) that is
set aside *before* any budget is drawn.  The reserve is exactly the held-out part of a
:class:`~kdlens.config.DataConfig` with ``val_fraction=fraction, split_seed=seed`` (both
call :func:`~kdlens.data.splits.validation_split`), so runs configured that way draw every
fold of every budget, and their unlabeled pool, from the rest: nothing overlaps.
"""

from __future__ import annotations

import numpy as np

from kdlens.data.splits import IndexArray, as_label_array, validation_split
from kdlens.errors import KdlensError


def pretrain_reserve(labels: object, fraction: float, seed: int = 0) -> tuple[IndexArray, IndexArray]:
    """``(reserve, rest)``: each class gives ``round(fraction · count)`` samples to the
    reserve (chosen with ``seed``); both sorted, disjoint, covering every index."""
    y = as_label_array(labels)
    if not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
        raise KdlensError(f"pre-training fraction must lie strictly between 0 and 1, got {fraction!r}")
    rest, reserve = validation_split(y, fraction, seed=seed)
    if len(reserve) == 0:
        raise KdlensError(f"pre-training fraction {fraction} of {len(y)} examples reserves none; use a larger fraction")
    return reserve, rest


def check_disjoint(reserve: np.ndarray, **sets: np.ndarray | None) -> None:
    """Raise :class:`KdlensError` if the reserve shares an index with any named set
    (``labeled=…, unlabeled=…``); ``None`` sets are skipped."""
    reserve = np.asarray(reserve, dtype=np.int64)
    for name, idx in sets.items():
        if idx is None:
            continue
        shared = np.intersect1d(reserve, np.asarray(idx, dtype=np.int64))
        if shared.size:
            raise KdlensError(f"the teacher's pre-training reserve shares {shared.size} example(s) with the {name} "
                              f"set (e.g. index {int(shared[0])}); the split is not disjoint")
