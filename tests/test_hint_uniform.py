"""algorithm="uniform": PURSUhInT's baseline of k equal consecutive groups and their centres."""

from __future__ import annotations

import numpy as np
import pytest

from kdlens.errors import KdlensError
from kdlens.explain.hints import cluster_layers, select_hint_points, uniform_groups


def _random_similarity(n: int, seed: int = 0) -> np.ndarray:
    a = np.random.default_rng(seed).uniform(0, 1, size=(n, n))
    s = (a + a.T) / 2
    np.fill_diagonal(s, 1.0)
    return s


def test_27_layers_k3_by_hand():
    # groups 0–8, 9–17, 18–26; floored means 4, 13, 22 → 1-based 5, 14, 23
    sel = select_hint_points(_random_similarity(27), 3, algorithm="uniform")
    assert sel.clusters == [list(range(0, 9)), list(range(9, 18)), list(range(18, 27))]
    assert sel.indices_1based == (5, 14, 23)
    assert sel.rule == "centroid" and sel.algorithm == "uniform"


def test_54_layers_k3_by_hand():
    # groups of 18: means 8.5, 26.5, 44.5 → floored 8, 26, 44 → 1-based 9, 27, 45
    sel = select_hint_points(_random_similarity(54), 3, algorithm="uniform")
    assert sel.indices_1based == (9, 27, 45)
    # "centre" (nearest the mean, ties → shallower) agrees on consecutive groups
    assert select_hint_points(_random_similarity(54), 3, algorithm="uniform", rule="centre").indices_1based == (9, 27, 45)
    assert select_hint_points(_random_similarity(54), 3, algorithm="uniform", rule="last").indices_1based == (18, 36, 54)


def test_uneven_split_10_layers_k3_by_hand():
    # sizes 4, 3, 3: layers 0–3, 4–6, 7–9; floored means 1, 5, 8
    sel = select_hint_points(_random_similarity(10), 3, algorithm="uniform")
    assert sel.clusters == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert sel.indices == (1, 5, 8)


@pytest.mark.parametrize("n_layers", [1, 2, 5, 7, 16, 27, 54, 101])
def test_groups_match_numpy_array_split(n_layers):
    for k in range(1, n_layers + 1):
        expected = np.concatenate([np.full(len(part), c) for c, part in enumerate(np.array_split(np.arange(n_layers), k))])
        assert np.array_equal(uniform_groups(n_layers, k), expected)


def test_ignores_the_similarity_values():
    a = cluster_layers(_random_similarity(20, seed=1), 4, algorithm="uniform")
    b = cluster_layers(_random_similarity(20, seed=2), 4, algorithm="uniform")
    assert np.array_equal(a, b)


def test_uniform_refuses_initial_centres_and_bad_k():
    S = _random_similarity(12)
    with pytest.raises(KdlensError, match="no initial"):
        cluster_layers(S, 3, algorithm="uniform", init=[0, 5, 11])
    with pytest.raises(KdlensError, match="cannot be chosen"):
        select_hint_points(S, 13, algorithm="uniform")


def test_find_hint_points_checks_the_algorithm_before_any_forward_pass():
    import torch

    from kdlens.explain.hint_search import check_search_options, find_hint_points

    check_search_options("cka", "centroid", "post", "uniform")
    with pytest.raises(KdlensError, match="clustering algorithm"):
        check_search_options("cka", "centroid", "post", "unifrom")

    class Exploding(torch.nn.Module):
        def forward(self, x):  # pragma: no cover - must not run
            raise AssertionError("forward ran before the options were checked")

    with pytest.raises(KdlensError, match="clustering algorithm"):
        find_hint_points(Exploding(), torch.zeros(4, 1, 4, 4), None, k=1, algorithm="unifrom", layers=["x"])
