"""Quality metrics against independent references; class-area ratio; superclass correlation."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.manifold import trustworthiness as sk_trustworthiness

from kdlens.data.dataset import Dataset
from kdlens.errors import KdlensError
from kdlens.explain.embed import (
    FASHION_MNIST_GROUPS,
    class_area_ratio,
    class_area_ratios,
    continuity,
    distance_spearman,
    embedding_quality,
    knn_classifier_accuracy,
    knn_preservation,
    output_correlation,
    superclass_correlation,
    superclass_groups,
    trustworthiness,
)


def pair(n=150, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 10)).astype(np.float32)
    y = (x[:, :2] + 0.4 * rng.normal(size=(n, 2))).astype(np.float32)
    return x, y


@pytest.mark.parametrize("k", [1, 5, 12])
def test_trustworthiness_matches_sklearn(k):
    x, y = pair()
    assert trustworthiness(x, y, k) == pytest.approx(sk_trustworthiness(x, y, n_neighbors=k), abs=1e-12)


@pytest.mark.parametrize("k", [3, 7])
def test_continuity_is_trustworthiness_swapped(k):
    x, y = pair(seed=1)
    assert continuity(x, y, k) == pytest.approx(sk_trustworthiness(y, x, n_neighbors=k), abs=1e-12)


def test_continuity_and_preservation_by_hand():
    # five points on a line (no distance ties); the embedding swaps the two end points
    x = np.array([[0.0], [1], [3], [7], [12]], np.float32)
    y = np.array([[12.0], [1], [3], [7], [0]], np.float32)
    # k = 1. Nearest neighbours in X: 0→1, 1→0, 2→1, 3→2, 4→3; in Y: 0→3, 1→4, 2→1, 3→2, 4→1.
    # Continuity penalties r_Y(i, j) − k for the lost true neighbour: point 0 (its neighbour 1 is
    # 3rd closest in Y) 2, point 1 (0 is 4th) 3, point 4 (3 is 3rd) 2 → 7.
    # C = 1 − 2 / (n k (2n − 3k − 1)) · 7 = 1 − 2/30 · 7.
    assert continuity(x, y, 1) == pytest.approx(1 - 14 / 30)
    # trustworthiness by hand: false neighbours 0→3 (rank 3 in X), 1→4 (rank 4), 4→1 (rank 3)
    assert trustworthiness(x, y, 1) == pytest.approx(1 - 2 / 30 * (2 + 3 + 2))
    assert knn_preservation(x, y, 1) == pytest.approx(2 / 5)  # points 2 and 3 keep theirs
    assert continuity(x, x * 2 + 5, 2) == 1.0 and knn_preservation(x, -x, 2) == 1.0


def test_preservation_tiny_exact_case():
    # 4 points; embedding reverses the order of a line: neighbour sets are symmetric and kept
    x = np.array([[0.0], [1.0], [3.0], [6.0]], np.float32)
    assert knn_preservation(x, -x, 1) == 1.0
    # an embedding that swaps points 0 and 3 only
    y = np.array([[6.0], [1.0], [3.0], [0.0]], np.float32)
    # X neighbours: 0→1, 1→0, 2→1, 3→2 ; Y neighbours: 0→2, 1→3, 2→1, 3→1
    assert knn_preservation(x, y, 1) == pytest.approx(1 / 4)
    assert knn_preservation(np.vstack([x, x + 100]), np.vstack([y, y + 100]), 1) == pytest.approx(1 / 4)


def test_knn_classifier_accuracy_leave_one_out():
    from sklearn.neighbors import KNeighborsClassifier

    x, y = pair(n=120, seed=2)
    labels = (x[:, 0] > 0).astype(int) + 2 * (x[:, 1] > 0)
    ours = knn_classifier_accuracy(y, labels, k=5)
    # reference: leave-one-out with sklearn (6 neighbours, drop self)
    clf = KNeighborsClassifier(n_neighbors=5)
    hits = 0
    for i in range(len(y)):
        mask = np.arange(len(y)) != i
        hits += clf.fit(y[mask], labels[mask]).predict(y[i : i + 1])[0] == labels[i]
    assert abs(ours - hits / len(y)) <= 3 / len(y)  # tie-breaking may differ on a few points
    # two labelled clusters far apart: perfect
    blobs = np.vstack([np.zeros((10, 2)), np.ones((10, 2)) * 50]) + np.random.default_rng(0).normal(size=(20, 2))
    assert knn_classifier_accuracy(blobs, np.repeat([0, 1], 10), k=3) == 1.0


def test_distance_spearman_matches_scipy():
    from scipy.spatial.distance import pdist
    from scipy.stats import spearmanr

    x, y = pair(n=80)
    assert distance_spearman(x, y, sample=80) == pytest.approx(spearmanr(pdist(x), pdist(y)).statistic, abs=1e-6)
    assert distance_spearman(x, 3 * x + 1, sample=50) == pytest.approx(1.0)


def test_embedding_quality_many_equals_single():
    x, y = pair()
    both = embedding_quality(x, {"a": y, "b": x[:, :2]}, labels=(x[:, 0] > 0).astype(int), k=5)
    single = embedding_quality(x, y, labels=(x[:, 0] > 0).astype(int), k=5)
    assert both["a"] == single
    assert set(single) == {"trustworthiness", "continuity", "knn_preservation", "knn_accuracy", "distance_spearman"}
    assert single["trustworthiness"] == pytest.approx(trustworthiness(x, y, 5))
    with pytest.raises(KdlensError, match="rows"):
        embedding_quality(x, y[:10])
    with pytest.raises(KdlensError, match="too large"):
        trustworthiness(x[:10], y[:10], 5)


# ---------------------------------------------------------------- class-area ratio
def gaussian_classes(scales, n=300, seed=0):
    rng = np.random.default_rng(seed)
    pts = np.vstack([rng.normal(scale=s, size=(n, 2)) for s in scales])
    return pts, np.repeat(np.arange(len(scales)), n)


def test_identical_distributions_ratio_near_one():
    pts, lab = gaussian_classes([1.0, 1.0, 1.0])
    res = class_area_ratios(pts, lab)
    assert res.ratios == pytest.approx([1.0, 1.0, 1.0], abs=0.2)
    # more points per class → bandwidths closer to the pooled one → closer to 1
    assert res.mean == pytest.approx(1.0, abs=0.15)


def test_tight_class_has_small_ratio():
    pts, lab = gaussian_classes([0.1, 1.0, 1.0])
    res = class_area_ratios(pts, lab)
    assert res.ratios[0] < 0.1 < 0.5 < res.ratios[1]
    # area scales with the square of the spread: 0.3 vs 1.0 → ≈ 0.09 of the wide class's area
    pts, lab = gaussian_classes([0.3, 1.0])
    r = class_area_ratios(pts, lab)
    assert r.areas[0] / r.areas[1] == pytest.approx(0.09, rel=0.35)


def test_separated_classes_each_small():
    rng = np.random.default_rng(0)
    centers = np.array([[0, 0], [10, 0], [0, 10], [10, 10]])
    pts = np.vstack([c + rng.normal(scale=0.5, size=(200, 2)) for c in centers])
    lab = np.repeat(np.arange(4), 200)
    res = class_area_ratios(pts, lab)
    # each class holds a quarter of the points but far less than a quarter of the all-points
    # region: Scott's bandwidth for all points is set by the spread of the four centres, so
    # the all-points KDE fills the gaps between clusters (documented behaviour)
    assert res.mean < 0.25
    assert res.ratios.max() / res.ratios.min() < 1.3  # same shapes, about the same ratio
    tighter = np.vstack([c + rng.normal(scale=0.25, size=(200, 2)) for c in centers])
    assert class_area_ratio(tighter, lab) < res.mean


def test_class_area_errors_and_degenerate_class():
    pts, lab = gaussian_classes([1.0, 1.0], n=50)
    lab = lab.copy()
    lab[:2] = 7  # a class of two points: no KDE
    res = class_area_ratios(pts, lab)
    assert np.isnan(res.ratios[list(res.classes).index(7)])
    assert np.isfinite(res.mean)
    with pytest.raises(KdlensError, match="2-D embedding"):
        class_area_ratio(np.zeros((10, 3)), np.zeros(10))
    with pytest.raises(KdlensError, match="mass"):
        class_area_ratio(pts, lab, mass=1.0)


# ---------------------------------------------------------------- superclass correlation
def test_output_correlation_reference():
    logits = np.random.default_rng(0).normal(size=(200, 5))
    np.testing.assert_allclose(output_correlation(logits, "logits"), np.corrcoef(logits.T), atol=1e-12)
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    np.testing.assert_allclose(output_correlation(logits), np.corrcoef(p.T), atol=1e-12)


def test_superclass_correlation_by_construction():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 500))
    noise = 0.1 * rng.normal(size=(500, 4))
    logits = np.stack([a, a, b, b], 1) + noise  # classes 0,1 move together, as do 2,3
    res = superclass_correlation(logits, {"g1": (0, 1), "g2": (2, 3)}, kind="logits")
    r = np.corrcoef(logits.T) ** 2
    assert res.within == pytest.approx((r[0, 1] + r[2, 3]) / 2)
    assert res.between == pytest.approx(np.mean([r[0, 2], r[0, 3], r[1, 2], r[1, 3]]))
    assert res.within > 0.95 > 0.2 > res.between
    assert set(res.per_group) == {"g1", "g2"}
    with pytest.raises(KdlensError, match="two superclasses"):
        superclass_correlation(logits, {"x": (0, 1), "y": (1, 2)})


def test_superclass_groups():
    import torch

    fm = Dataset("fashion-mnist", torch.zeros(3, 1, 2, 2, dtype=torch.uint8), torch.tensor([0, 1, 2]), [str(i) for i in range(10)])
    groups = superclass_groups(fm)
    assert groups == FASHION_MNIST_GROUPS
    assert sorted(c for g in groups.values() for c in g) == list(range(10))
    c100 = Dataset("cifar100", torch.zeros(4, 3, 2, 2, dtype=torch.uint8), torch.tensor([0, 5, 3, 0]), [str(i) for i in range(6)],
                   coarse_labels=torch.tensor([1, 0, 1, 1]), coarse_classes=["fish", "trees"])
    assert superclass_groups(c100) == {"fish": (5,), "trees": (0, 3)}
    digits = Dataset("digits", torch.zeros(1, 1, 2, 2, dtype=torch.uint8), torch.tensor([0]), ["0"])
    with pytest.raises(KdlensError, match="no superclasses"):
        superclass_groups(digits)


def test_superclass_owner_maps_classes_and_rejects_overlaps():
    from kdlens.explain.embed import superclass_owner

    assert superclass_owner({"a": [0, 2], "b": [1]}, 4).tolist() == [0, 1, 0, -1]
    with pytest.raises(KdlensError, match="class 0 is in two superclasses"):
        superclass_owner({"a": [0, 2], "b": [1, 0]}, 4)
    with pytest.raises(KdlensError, match="not a class index"):
        superclass_owner({"a": [5]}, 4)
