"""Activations at the extraction points A–E: shapes, pooling, batching, subsets, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from kdlens.data import load_dataset, normalize
from kdlens.errors import KdlensError
from kdlens.explain.embed import parse_points, point_activations, select_points
from kdlens.models import create_model, extract_features


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "test")


@pytest.fixture(scope="module")
def student(digits):
    torch.manual_seed(0)
    return create_model("thesis_student", num_classes=10, in_channels=1, input_size=8)


def test_parse_points():
    assert parse_points("A,B,E") == ["A", "B", "E"]
    assert parse_points("abe") == ["A", "B", "E"]
    assert parse_points(["D", "E", "D"]) == ["D", "E"]
    with pytest.raises(KdlensError, match="letters among A, B, C, D, E"):
        parse_points("A,F")


def test_flatten_and_pool_shapes(student, digits):
    flat = point_activations(student, digits, n=50, batch_size=16, reduce="flatten")
    assert list(flat.features) == ["A", "B", "C", "D", "E"]
    c, h, w = flat.shapes["A"]
    assert flat.features["A"].shape == (50, c * h * w)
    assert flat.features["E"].shape == (50, 10)
    pooled = point_activations(student, digits, n=50, reduce="mean")
    assert pooled.features["A"].shape == (50, c)
    np.testing.assert_allclose(pooled.features["A"], flat.features["A"].reshape(50, c, h * w).mean(2), rtol=1e-4, atol=1e-5)
    maxed = point_activations(student, digits, n=50, reduce="max")
    np.testing.assert_allclose(maxed.features["B"], flat.features["B"].reshape(50, flat.shapes["B"][0], -1).max(2), rtol=1e-5)


def test_batched_equals_one_pass_and_subset(student, digits):
    acts = point_activations(student, digits, points="C,E", n=40, batch_size=7, seed=3)
    assert len(np.unique(acts.indices)) == 40 and (np.diff(acts.indices) > 0).all()
    np.testing.assert_array_equal(acts.labels, digits.labels.numpy()[acts.indices])
    x = normalize(digits.images[torch.from_numpy(acts.indices)], digits.mean, digits.std)
    student.eval()
    with torch.no_grad():
        ref = extract_features(student, x, [acts.layers["C"], "logits"])
    np.testing.assert_allclose(acts.features["C"], ref[acts.layers["C"]].reshape(40, -1).numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(acts.features["E"], ref["logits"].numpy(), rtol=1e-4, atol=1e-5)
    assert point_activations(student, digits, n=None, points="E").features["E"].shape[0] == len(digits.labels)


def test_model_mode_restored_and_missing_points(student, digits):
    student.train()
    point_activations(student, digits, points="E", n=10)
    assert student.training
    base = create_model("baseline_student", num_classes=10, in_channels=1, input_size=8)
    with pytest.raises(KdlensError, match="has no extraction point"):
        select_points(base, "A,D")
    assert select_points(base, "D,E") == {"D": "penultimate", "E": "logits"}
    with pytest.raises(KdlensError, match="reduce"):
        point_activations(student, digits, reduce="sum")


def test_foreign_model_points(digits):
    class Foreign(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
            self.c2 = nn.Sequential(nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.ReLU())
            self.c3 = nn.Sequential(nn.Conv2d(6, 8, 3, stride=2, padding=1), nn.ReLU())
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(8, 10)

        def forward(self, x):
            return self.fc(self.pool(self.c3(self.c2(self.c1(x)))).flatten(1))

    acts = point_activations(Foreign(), digits, n=20)
    assert acts.layers == {"A": "c1", "B": "c2", "C": "c3", "D": "penultimate", "E": "logits"}
    assert acts.features["A"].shape == (20, 4 * 8 * 8) and acts.features["D"].shape == (20, 8)
