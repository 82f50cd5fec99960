"""PURSUhInT hint-point selection on hand-made layer-similarity matrices."""

from __future__ import annotations

import numpy as np
import pytest

from kdlens.errors import KdlensError
from kdlens.explain.hints import (
    HintSelection,
    cluster_layers,
    conventional_hint_indices,
    select_hint_points,
)

ALGORITHMS = ["kmeans", "kmedoids"]


def block_similarity(sizes, within=0.9, across=0.1):
    L = sum(sizes)
    S = np.full((L, L), across)
    start = 0
    for b in sizes:
        S[start : start + b, start : start + b] = within
        start += b
    np.fill_diagonal(S, 1.0)
    return S


def banded_similarity(L, width):
    i = np.arange(L)
    return np.exp(-np.abs(i[:, None] - i[None, :]) / width)


def is_contiguous(labels):
    labels = np.asarray(labels)
    changes = np.count_nonzero(labels[1:] != labels[:-1])
    return changes == len(np.unique(labels)) - 1


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_block_diagonal_gives_the_blocks_and_their_centres(algorithm):
    S = block_similarity([4, 6, 5])
    labels = cluster_layers(S, 3, algorithm=algorithm)
    assert labels.tolist() == [0] * 4 + [1] * 6 + [2] * 5
    sel = select_hint_points(S, 3, rule="centre", algorithm=algorithm)
    # block 0..3 mean 1.5 → 1 (tie → shallower); 4..9 mean 6.5 → 6; 10..14 mean 12 → 12
    assert sel.indices == (1, 6, 12)
    assert sel.indices_1based == (2, 7, 13)
    assert select_hint_points(S, 3, rule="last", algorithm=algorithm).indices == (3, 9, 14)
    # all members of a uniform block are equally representative → medoid falls back to centre
    assert select_hint_points(S, 3, rule="medoid", algorithm=algorithm).indices == (1, 6, 12)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_resnet110_like_three_stages(algorithm):
    S = block_similarity([18, 18, 18], within=0.8, across=0.3)
    sel = select_hint_points(S, 3, algorithm=algorithm, metric="cka")
    assert sel.clusters == [list(range(0, 18)), list(range(18, 36)), list(range(36, 54))]
    assert sel.indices_1based == (9, 27, 45)
    assert sel.metric == "cka"
    assert conventional_hint_indices([18, 18, 18], one_based=True) == [18, 36, 54]
    assert conventional_hint_indices([18, 18, 18]) == [17, 35, 53]


def test_medoid_differs_from_centre():
    # one cluster (k=1) where the deepest layer is the one most similar to all others
    L = 5
    S = np.full((L, L), 0.5)
    S[4, :] = S[:, 4] = 0.95
    np.fill_diagonal(S, 1.0)
    assert select_hint_points(S, 1, rule="centre").indices == (2,)
    assert select_hint_points(S, 1, rule="medoid").indices == (4,)
    assert select_hint_points(S, 1, rule="last").indices == (4,)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("k", [2, 3, 4, 6])
def test_banded_matrix_gives_contiguous_clusters(algorithm, k):
    S = banded_similarity(30, width=5.0)
    sel = select_hint_points(S, k, algorithm=algorithm)
    assert is_contiguous(sel.labels)
    assert sorted(set(sel.labels)) == list(range(k))
    assert list(sel.indices) == sorted(sel.indices)  # clusters numbered shallow → deep
    for c, members in enumerate(sel.clusters):
        assert sel.indices[c] in members


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_deterministic_and_noise_robust(algorithm):
    rng = np.random.default_rng(0)
    S = block_similarity([7, 9, 8], within=0.7, across=0.3)
    noise = rng.normal(scale=0.05, size=S.shape)
    Sn = np.clip(S + (noise + noise.T) / 2, 0, 1)
    np.fill_diagonal(Sn, 1.0)
    a = select_hint_points(Sn, 3, algorithm=algorithm)
    b = select_hint_points(Sn.copy(), 3, algorithm=algorithm)
    assert a == b
    assert a.clusters == [list(range(0, 7)), list(range(7, 16)), list(range(16, 24))]


def test_even_initialisation_and_explicit_init():
    S = banded_similarity(12, 3.0)
    assert cluster_layers(S, 1).tolist() == [0] * 12
    labels = cluster_layers(S, 12)
    assert labels.tolist() == list(range(12))  # k = L: every layer its own cluster
    explicit = cluster_layers(S, 3, init=[0, 5, 11])
    assert is_contiguous(explicit)
    with pytest.raises(KdlensError, match="distinct"):
        cluster_layers(S, 3, init=[0, 0, 11])
    with pytest.raises(KdlensError, match="cluster initialisation"):
        cluster_layers(S, 3, init="random")


def test_asymmetric_similarity_is_symmetrised():
    S = block_similarity([3, 4])
    A = S.copy()
    A[0, 5] = 0.3  # e.g. PWCCA is asymmetric
    assert select_hint_points(A, 2).labels == select_hint_points((A + A.T) / 2, 2).labels


def test_names_and_json_round_trip():
    S = block_similarity([3, 3, 3])
    names = [f"layer{i}.out" for i in range(9)]
    sel = select_hint_points(S, 3, names=names, metric="cca")
    assert sel.names == ("layer1.out", "layer4.out", "layer7.out")
    assert sel.layer_names == tuple(names)
    text = sel.to_json()
    assert '"indices_1based": [\n    2,' in text or '"indices_1based": [2, 5, 8]' in text
    back = HintSelection.from_json(text)
    assert back == sel
    assert back.indices_1based == (2, 5, 8) and back.k == 3 and back.metric == "cca"


def test_from_json_errors():
    with pytest.raises(KdlensError, match="not a valid hint-selection JSON"):
        HintSelection.from_json("{not json")
    with pytest.raises(KdlensError, match="not a valid hint-selection JSON"):
        HintSelection.from_json('{"labels": [0, 0]}')
    with pytest.raises(KdlensError, match="inconsistent"):
        HintSelection.from_json('{"labels": [0, 0], "indices": [1], "indices_1based": [1], "rule": "centre"}')


@pytest.mark.parametrize("k", [0, -1, 6, 2.5, True])
def test_bad_k(k):
    with pytest.raises(KdlensError, match="k"):
        select_hint_points(block_similarity([2, 3]), k)


def test_other_errors():
    S = block_similarity([2, 3])
    with pytest.raises(KdlensError, match="square"):
        cluster_layers(np.ones((3, 4)), 2)
    bad = S.copy()
    bad[0, 1] = np.nan
    with pytest.raises(KdlensError, match="NaN"):
        cluster_layers(bad, 2)
    with pytest.raises(KdlensError, match="Did you mean"):
        select_hint_points(S, 2, rule="centr")
    with pytest.raises(KdlensError, match="clustering algorithm"):
        cluster_layers(S, 2, algorithm="dbscan")
    with pytest.raises(KdlensError, match="names has 2 entries"):
        select_hint_points(S, 2, names=["a", "b"])
    for counts in ([], [18, 0], [1.5], "18"):
        with pytest.raises(KdlensError, match="stage_block_counts"):
            conventional_hint_indices(counts)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_identical_layers_still_give_k_nonempty_clusters(algorithm):
    S = np.ones((4, 4))  # four indistinguishable layers
    labels = cluster_layers(S, 2, algorithm=algorithm)
    assert sorted(set(labels.tolist())) == [0, 1]
    assert np.array_equal(labels, cluster_layers(S, 2, algorithm=algorithm))


def test_pursuhint_layer_centroids_hand_worked():
    """The authors' procedure on 7 layers, worked by hand.

    Start: first / floor-middle / last = layers 0, 3, 6.  D = 1 − S with S_ij = 1 − |i − j|/10
    except that layers 4 and 5 are closest to 6.  Assignment by smallest D to a centre layer:
    0,1 → 0 (1 is at 0.1 from 0, 0.2 from 3); 2,3 → 3; 4,5,6 → 6.  Move: floor(mean{0,1}) = 0
    → 0; floor(mean{2,3}) = 2 → 2; floor(mean{4,5,6}) = 5 → 5.  Reassign to 0, 2, 5: 0,1 → 0
    (1 is 0.1 from 0 and from 2: tie → lower cluster); 2,3 → 2; 4,5,6 → 5.  Move: 0; 2; 5 →
    stable.  Hint points (centroid rule) 0, 2, 5; profiles k-means need not agree."""
    L = 7
    idx = np.arange(L)
    S = 1 - np.abs(idx[:, None] - idx[None, :]) / 10
    for i in (4, 5):
        S[i, 6] = S[6, i] = 0.99
    labels = cluster_layers(S, 3)
    assert labels.tolist() == [0, 0, 1, 1, 2, 2, 2]
    sel = select_hint_points(S, 3)
    assert sel.rule == "centroid" and sel.algorithm == "pursuhint" and sel.indices == (0, 2, 5)
    assert select_hint_points(S, 3, rule="centre").indices == (0, 2, 5)  # mean 5 is a member
    assert select_hint_points(S, 3, algorithm="profiles").algorithm == "profiles"
