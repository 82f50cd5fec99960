"""Splits: budgets, folds, labeled/unlabeled, missing classes, ranked and random subsets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdlens.data.splits import (
    balanced_budget,
    complement,
    labeled_unlabeled,
    random_n_per_class,
    remove_classes,
    top_n_per_class,
    validation_split,
)
from kdlens.errors import KdlensError

# 4 classes with 30, 25, 40, 20 samples, interleaved
LABELS = np.random.default_rng(0).permutation(np.repeat(np.arange(4), [30, 25, 40, 20]))


def _is_sorted_int64(idx):
    return idx.dtype == np.int64 and np.all(np.diff(idx) > 0)


def test_balanced_budget_counts_and_determinism():
    idx = balanced_budget(LABELS, 40, seed=1)
    assert _is_sorted_int64(idx) and len(idx) == 40
    assert np.bincount(LABELS[idx]).tolist() == [10, 10, 10, 10]
    assert np.array_equal(idx, balanced_budget(LABELS, 40, seed=1))
    assert not np.array_equal(idx, balanced_budget(LABELS, 40, seed=2))
    per_class = balanced_budget(LABELS, 10, seed=1, per_class=True)
    assert np.array_equal(per_class, idx)
    # works on tensors and lists too
    assert np.array_equal(balanced_budget(torch.from_numpy(LABELS), 40, seed=1), idx)
    assert np.array_equal(balanced_budget(LABELS.tolist(), 40, seed=1), idx)


def test_folds_are_disjoint_and_independent_of_n_folds():
    folds = [balanced_budget(LABELS, 20, n_folds=4, fold=k, seed=7) for k in range(4)]
    union = np.concatenate(folds)
    assert len(np.unique(union)) == 80
    for f in folds:
        assert np.bincount(LABELS[f]).tolist() == [5] * 4
    assert np.array_equal(folds[2], balanced_budget(LABELS, 20, n_folds=3, fold=2, seed=7))


def test_budget_errors_name_the_argument():
    with pytest.raises(KdlensError, match=r"budget=42 is not divisible by the 4 classes.*40 or 44"):
        balanced_budget(LABELS, 42)
    with pytest.raises(KdlensError, match=r"budget=84 needs 21 samples per class, but class 3 has only 20.*budget <= 80"):
        balanced_budget(LABELS, 84)
    with pytest.raises(KdlensError, match=r"needs 5 × n_folds=5 = 25 samples per class, but class 3 has only 20.*at most 4 per class"):
        balanced_budget(LABELS, 20, n_folds=5)
    with pytest.raises(KdlensError, match=r"fold must be an integer in 0..2"):
        balanced_budget(LABELS, 20, n_folds=3, fold=3)
    with pytest.raises(KdlensError, match="budget must be a positive integer"):
        balanced_budget(LABELS, 0)
    with pytest.raises(KdlensError, match="labels must be integers"):
        balanced_budget(np.array([0.5, 1.0]), 2)
    with pytest.raises(KdlensError, match="labels must be 1-D"):
        balanced_budget(np.zeros((2, 2), dtype=int), 2)


def test_labeled_unlabeled_partition():
    labeled, unlabeled = labeled_unlabeled(LABELS, 40, fold=1, seed=3)
    assert _is_sorted_int64(labeled) and _is_sorted_int64(unlabeled)
    assert len(labeled) + len(unlabeled) == len(LABELS)
    assert not np.intersect1d(labeled, unlabeled).size
    assert np.array_equal(labeled, balanced_budget(LABELS, 40, n_folds=2, fold=1, seed=3))
    assert np.array_equal(complement(labeled, len(LABELS)), unlabeled)
    with pytest.raises(KdlensError, match="n_folds=2"):
        labeled_unlabeled(LABELS, 44, fold=1, seed=3)


def test_remove_classes():
    idx = remove_classes(LABELS, [1, 3])
    assert _is_sorted_int64(idx) and set(LABELS[idx].tolist()) == {0, 2} and len(idx) == 70
    assert np.array_equal(remove_classes(LABELS, 1), remove_classes(LABELS, [1]))
    with pytest.raises(KdlensError, match=r"unknown class id\(s\) \[7\]; the labels contain \[0, 1, 2, 3\]"):
        remove_classes(LABELS, [7])
    with pytest.raises(KdlensError, match="removing every class"):
        remove_classes(LABELS, [0, 1, 2, 3])


def test_top_n_per_class_against_brute_force():
    scores = np.random.default_rng(1).random(len(LABELS))
    for largest in (True, False):
        idx = top_n_per_class(LABELS, scores, 5, largest=largest)
        assert _is_sorted_int64(idx) and len(idx) == 20
        for c in range(4):
            members = np.flatnonzero(LABELS == c)
            ranked = members[np.argsort(scores[members])]
            want = ranked[-5:] if largest else ranked[:5]
            assert set(idx[LABELS[idx] == c]) == set(want)
    # ties keep the lower index
    ties = top_n_per_class(np.zeros(6, dtype=int), np.ones(6), 2)
    assert ties.tolist() == [0, 1]
    with pytest.raises(KdlensError, match=r"n=21 per class, but class 3 has only 20"):
        top_n_per_class(LABELS, scores, 21)
    with pytest.raises(KdlensError, match="one value per label"):
        top_n_per_class(LABELS, scores[:-1], 2)
    with pytest.raises(KdlensError, match="NaN"):
        top_n_per_class(LABELS, np.full(len(LABELS), np.nan), 2)


def test_random_n_per_class():
    idx = random_n_per_class(LABELS, 6, seed=5)
    assert np.bincount(LABELS[idx]).tolist() == [6] * 4
    assert np.array_equal(idx, random_n_per_class(LABELS, 6, seed=5))
    with pytest.raises(KdlensError, match="n <= 20"):
        random_n_per_class(LABELS, 25)


def test_validation_split_is_stratified():
    train, val = validation_split(LABELS, fraction=0.2, seed=0)
    assert _is_sorted_int64(train) and _is_sorted_int64(val)
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(len(LABELS)))
    assert np.bincount(LABELS[val]).tolist() == [6, 5, 8, 4]
    assert np.array_equal(val, validation_split(LABELS, fraction=0.2, seed=0)[1])
    assert not np.array_equal(val, validation_split(LABELS, fraction=0.2, seed=1)[1])
    for bad in (0, 1, -0.1, 1.5):
        with pytest.raises(KdlensError, match="fraction must lie strictly between 0 and 1"):
            validation_split(LABELS, fraction=bad)
    with pytest.raises(KdlensError, match="empty validation set"):
        validation_split(np.arange(3), fraction=0.1)
