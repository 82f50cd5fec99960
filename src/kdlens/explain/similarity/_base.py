"""The small interface every similarity metric implements, and the metric registry.

A metric splits its work into a per-layer part (``prepare``: centring, normalisation,
an orthonormal basis …) and a per-pair part (``pair``).  The pairwise functions
(``linear_cka(x, y)`` …) call ``prepare`` twice and ``pair`` once; ``similarity_matrix``
calls ``prepare`` once per layer and ``pair`` once per layer pair, so the two always agree
and the matrix costs L preparations plus L(L−1)/2 cheap pair evaluations.

Metrics are found by name in :data:`SIMILARITY_METRICS` (a
:class:`kdlens.registry.Registry` of factories), never through an if/elif chain.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from kdlens.registry import Registry

__all__ = ["PairwiseMetric", "SIMILARITY_METRICS", "register_metric"]


class PairwiseMetric(ABC):
    """A representation similarity split into per-layer preparation and per-pair scoring."""

    #: s(x, y) == s(y, x); ``similarity_matrix`` then evaluates only i < j.
    symmetric: bool = True
    #: s(x, x) == 1 exactly in exact arithmetic; ``similarity_matrix`` writes 1.0.
    unit_diagonal: bool = True

    @abstractmethod
    def prepare(self, x: Any, name: str = "x") -> Any:
        """Per-layer state (validated, float64). Raises KdlensError for bad input."""

    @abstractmethod
    def pair(self, a: Any, b: Any) -> float:
        """Similarity of two prepared layers (same examples)."""

    @staticmethod
    def n_examples(state: Any) -> int:
        return int(state.n)


#: name → factory(**options) returning a :class:`PairwiseMetric`.
SIMILARITY_METRICS: Registry[Callable[..., PairwiseMetric]] = Registry("similarity metric")


def register_metric(*names: str) -> Callable[[Callable[..., PairwiseMetric]], Callable[..., PairwiseMetric]]:
    """Register one metric factory under one or more names (aliases)."""

    def decorate(factory: Callable[..., PairwiseMetric]) -> Callable[..., PairwiseMetric]:
        for name in names:
            SIMILARITY_METRICS.register(name)(factory)
        return factory

    return decorate
