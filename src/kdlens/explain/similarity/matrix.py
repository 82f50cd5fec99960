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
    blas_threads: int | None = None,
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

    Metrics whose pair value only needs A_jᵀA_i of per-layer operands (linear CKA on
    N > C layers, CCA/SVCCA/PWCCA bases) compute each layer's products with all later
    layers in one GEMM against a concatenated copy of the operands (about one extra copy
    of the prepared layers in memory), instead of one tiny GEMM per pair.

    ``blas_threads``: if given, BLAS is limited to that many threads for this call
    (threadpoolctl).  On CPUs shared with other busy processes, multi-threaded OpenBLAS
    spends most of its time waiting for descheduled threads: 54 layers at N=10,000 took
    28 s with 2 threads vs 1.9 s with ``blas_threads=1`` on the shared 2-core machine here.
    """
    if blas_threads is not None:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=int(blas_threads), user_api="blas"):
            return similarity_matrix(reps, metric, progress, None, **options)
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
    states, slices, Z = _concatenate_operands(m, states)

    def row_targets(i: int) -> list[int]:
        if m.symmetric:
            return list(range(i + 1 if m.unit_diagonal else i, L))
        return [j for j in range(L) if not (m.unit_diagonal and i == j)]

    total = sum(len(row_targets(i)) for i in range(L))
    done = 0
    for i in range(L):
        targets = row_targets(i)
        row = col0 = None
        batched = [j for j in targets if slices[j] is not None]
        if slices[i] is not None and batched:
            # one GEMM: A_iᵀ [A_j for all later batched layers j] (their columns are contiguous)
            col0 = slices[batched[0]].start
            col1 = slices[batched[-1]].stop
            row = Z[:, slices[i]].T @ Z[:, col0:col1]
        for j in targets:
            if row is not None and slices[j] is not None:
                sl = slices[j]
                v = m.pair_from_cross(states[i], states[j], row[:, sl.start - col0 : sl.stop - col0].T)
            else:
                v = m.pair(states[i], states[j])
            S[i, j] = v
            if m.symmetric:
                S[j, i] = v
            done += 1
            if progress is not None:
                progress(done, total)
    if m.unit_diagonal:
        np.fill_diagonal(S, 1.0)
    return S


def _concatenate_operands(
    m: PairwiseMetric, states: list[Any]
) -> tuple[list[Any], list[slice | None], np.ndarray | None]:
    """Copy every layer's cross operand (N×c_i) into one Fortran-ordered N×Σc matrix Z and
    rebind the states to column views of it, so a layer's cross products with all later
    layers are one GEMM.  Layers without an operand get ``None`` and use ``pair``."""
    ops = [m.cross_operand(st) for st in states]
    widths = [0 if op is None else op.shape[1] for op in ops]
    if sum(w > 0 for w in widths) < 2:
        return states, [None] * len(states), None
    n = next(op.shape[0] for op in ops if op is not None)
    Z = np.empty((n, sum(widths)), dtype=np.float64, order="F")
    slices: list[slice | None] = []
    out = []
    start = 0
    for st, op, w in zip(states, ops, widths, strict=True):
        if op is None:
            slices.append(None)
            out.append(st)
            continue
        sl = slice(start, start + w)
        Z[:, sl] = op
        slices.append(sl)
        out.append(m.with_operand(st, Z[:, sl]))
        start += w
    return out, slices, Z
