"""All-pairs layer similarity: each layer prepared once, each pair one small product."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from kdlens.errors import KdlensError
from kdlens.explain.similarity._base import SIMILARITY_METRICS, PairwiseMetric
from kdlens.explain.similarity._input import check_same_examples

__all__ = ["similarity_matrix", "metric_names"]

Progress = Callable[[int, int], Any]


def metric_names() -> list[str]:
    """Names accepted by ``similarity_matrix(metric=…)``."""
    return SIMILARITY_METRICS.names()


def similarity_matrix(
    reps: Mapping[str, Any] | Sequence[Any],
    metric: str = "cka",
    progress: Progress | None = None,
    **options: Any,
) -> np.ndarray:
    """L×L similarity between every pair of layer representations.

    ``reps``: a dict name → N×C array/tensor (in layer order) or a list of them; all on
    the same N examples.  ``metric``: a name from :func:`metric_names` — "cka" /
    "linear_cka", "cka_unbiased", "rbf_cka", "cca" / "cca_r2", "svcca", "pwcca";
    ``options`` go to the metric (e.g. ``eps=1e-3`` for "cca", ``sigma_frac=0.4`` for
    "rbf_cka", ``keep=0.95`` for "svcca").  ``progress(done, total)`` is called after each
    evaluated pair.

    Each layer's per-layer work is done once (linear CKA: float64 centring and ‖XᵀX‖_F;
    CCA: the orthonormal basis Q; SVCCA: the truncated SVD), after which a pair costs one
    small C_i×C_j product, so the whole matrix costs about as much as L(L−1)/2 products
    of N×C_i by N×C_j — no N×N matrices for linear CKA/CCA when N > C.

    Entry [i, j] = metric(reps[i], reps[j]).  Symmetric metrics evaluate i < j only and
    mirror; metrics with s(X, X) = 1 (all but regularised CCA) get an exact unit diagonal.
    PWCCA is asymmetric (weights from the row layer), so all ordered pairs are evaluated.
    """
    factory = SIMILARITY_METRICS.get(metric)
    try:
        m: PairwiseMetric = factory(**options)
    except TypeError as err:
        raise KdlensError(f"bad options {sorted(options)} for similarity metric {metric!r}: {err}") from None

    if isinstance(reps, Mapping):
        names = [str(k) for k in reps]
        arrays = list(reps.values())
    else:
        arrays = list(reps)
        names = [f"layer {i}" for i in range(len(arrays))]
    if not arrays:
        raise KdlensError("similarity_matrix needs at least one layer representation; got none.")

    budget = getattr(m, "check_budget", None)
    if budget is not None:
        n0 = len(arrays[0]) if hasattr(arrays[0], "__len__") else 0
        budget(n0, len(arrays))

    states = []
    for name, arr in zip(names, arrays, strict=True):
        st = m.prepare(arr, name)
        if states:
            check_same_examples(states[0].n, st.n, names[0], name)
        states.append(st)

    L = len(states)
    S = np.empty((L, L), dtype=np.float64)
    if m.symmetric:
        pairs = [(i, j) for i in range(L) for j in range(i if not m.unit_diagonal else i + 1, L)]
    else:
        pairs = [(i, j) for i in range(L) for j in range(L) if not (m.unit_diagonal and i == j)]
    total = len(pairs)
    for done, (i, j) in enumerate(pairs, start=1):
        v = m.pair(states[i], states[j])
        S[i, j] = v
        if m.symmetric:
            S[j, i] = v
        if progress is not None:
            progress(done, total)
    if m.unit_diagonal:
        np.fill_diagonal(S, 1.0)
    return S
