"""The small interface every similarity metric implements, and the metric registry.

A metric splits its work into a per-layer part (``prepare``: centring, normalisation,
an orthonormal basis …) and a per-pair part (``pair``).  The pairwise functions
(``linear_cka(x, y)`` …) call ``between``: ``prepare`` twice and ``pair`` once; ``similarity_matrix``
calls ``prepare`` once per layer and then, per layer pair, ``pair`` — or, for metrics that
expose a cross operand, ``pair_from_cross`` on a block of one batched product — so both
run the same formula code and the matrix costs L preparations plus L(L−1)/2 cheap pair
evaluations.

Metrics are found by name in :data:`SIMILARITY_METRICS` (a
:class:`kdlens.registry.Registry` of factories), never through an if/elif chain.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from kdlens.explain.similarity._input import check_same_examples
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

    def between(self, x: Any, y: Any) -> float:
        """Similarity of two raw representations of the same examples: ``pair`` of both ``prepare``s."""
        a = self.prepare(x, "x")
        b = self.prepare(y, "y")
        check_same_examples(a.n, b.n)
        return self.pair(a, b)

    # -- optional batched path -------------------------------------------------------
    # Metrics whose pair value depends on the data only through a cross product
    # A_bᵀ A_a of per-layer N×c operands (plus per-layer terms) expose the operand, so
    # ``similarity_matrix`` can compute all of a layer's cross products in one GEMM
    # against the concatenation of the later layers' operands instead of one tiny GEMM
    # per pair (fewer BLAS calls; much less thread-synchronisation overhead).

    def cross_operand(self, state: Any) -> Any:
        """The N×c operand A of a prepared layer, or None if this layer has none."""
        return None

    def with_operand(self, state: Any, operand: Any) -> Any:
        """The same state with its operand storage replaced by ``operand`` (a view)."""
        return state

    def pair_from_cross(self, a: Any, b: Any, cross: Any) -> float:
        """``pair(a, b)`` given ``cross`` = A_bᵀ A_a (c_b × c_a)."""
        raise NotImplementedError


#: name → factory(**options) returning a :class:`PairwiseMetric`.
SIMILARITY_METRICS: Registry[Callable[..., PairwiseMetric]] = Registry("similarity metric")


def register_metric(*names: str) -> Callable[[Callable[..., PairwiseMetric]], Callable[..., PairwiseMetric]]:
    """Register one metric factory under one or more names (aliases)."""

    def decorate(factory: Callable[..., PairwiseMetric]) -> Callable[..., PairwiseMetric]:
        for name in names:
            SIMILARITY_METRICS.register(name)(factory)
        return factory

    return decorate
