"""Soft-label diagnostics (kdlens.explain.softlabels): entropy, labels, projection, experiments."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdlens.data import Dataset
from kdlens.errors import KdlensError
from kdlens.explain.softlabels import (
    DEFAULT_TEMPERATURES,
    SweepSettings,
    TemplateProjection,
    confidence_labels,
    entropy_by_temperature,
    entropy_ranked_transfer_sets,
    label_smoothing_entropy,
    label_variance,
    missing_class_test,
    similarity_labels,
    soft_label_entropy,
    soft_label_noise,
    soft_label_table,
    teacher_pretraining_sweep,
    top_entropy_examples,
)
from kdlens.figures.softlabels import (
    plot_missing_class_heatmaps,
    plot_noise_curves,
    plot_pretraining_sweep,
    plot_transfer_set_curves,
)


def _np_entropy(z: np.ndarray, T: float) -> np.ndarray:
    """float64 numpy reference: H(softmax(z/T))."""
    a = z.astype(np.float64) / T
    a = a - a.max(1, keepdims=True)
    p = np.exp(a) / np.exp(a).sum(1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.where(p > 0, p * np.log(p), 0.0).sum(1)


def test_default_temperatures_are_one_to_twenty_with_the_thesis_values():
    assert DEFAULT_TEMPERATURES == tuple(float(t) for t in range(1, 21))
    assert {3.0, 6.0, 9.0, 12.0, 15.0, 18.0, 20.0} <= set(DEFAULT_TEMPERATURES)


def test_entropy_matches_float64_reference_and_limits():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 5, size=(50, 7)).astype(np.float32)
    for T in (0.5, 1.0, 3.0, 20.0):
        np.testing.assert_allclose(soft_label_entropy(z, T), _np_entropy(z, T), rtol=1e-10, atol=1e-12)
    # T → ∞: uniform, entropy → log K; T → 0: one-hot, entropy → 0
    np.testing.assert_allclose(soft_label_entropy(z, 1e6), math.log(7), rtol=1e-6)
    assert soft_label_entropy(z, 1e-4).max() < 1e-6
    # bits
    np.testing.assert_allclose(soft_label_entropy(z, 2.0, base=2), _np_entropy(z, 2.0) / math.log(2))
    # saturated rows give 0, not NaN
    assert soft_label_entropy(np.array([[1e4, 0.0, 0.0]]), 1.0)[0] == 0.0


def test_entropy_table_per_class_and_mean():
    z = np.array([[4.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 3.0, 1.0], [0.0, 1.0, 3.0]])
    y = np.array([0, 0, 1, 2])
    table = entropy_by_temperature(z, y, [1.0, 2.0])
    ref = np.stack([_np_entropy(z, 1.0), _np_entropy(z, 2.0)])
    np.testing.assert_allclose(table.per_example, ref)
    np.testing.assert_allclose(table.mean, ref.mean(1))
    np.testing.assert_allclose(table.per_class[:, 0], ref[:, :2].mean(1))
    np.testing.assert_allclose(table.per_class[:, 2], ref[:, 3])
    assert table.max_entropy == pytest.approx(math.log(3))
    assert all(np.isfinite(r["mean_entropy"]) for r in table.rows("t"))
    assert np.all(np.diff(table.mean) > 0)  # entropy grows with T


def test_label_smoothing_entropy_closed_form():
    k = 10
    for a in (0.0, 0.1, 0.5, 0.9, 1.0):
        q = (1 - a) * np.eye(k)[0] + a / k
        ref = -sum(v * math.log(v) for v in q if v > 0)
        assert label_smoothing_entropy(a, k) == pytest.approx(ref, abs=1e-12)
    assert label_smoothing_entropy(0.0, k) == 0.0
    assert label_smoothing_entropy(1.0, k) == pytest.approx(math.log(k))


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan")])
def test_non_positive_temperature_is_a_user_error(bad):
    with pytest.raises(KdlensError, match="> 0"):
        soft_label_entropy(np.zeros((2, 3)), bad)


def test_confidence_and_similarity_labels_on_a_hand_made_table():
    # softmax([ln 6, ln 3, ln 1]) = [0.6, 0.3, 0.1]
    z = np.log(np.array([[6.0, 3.0, 1.0], [1.0, 8.0, 1.0]]))
    y = np.array([0, 2])
    np.testing.assert_allclose(confidence_labels(z, y), [0.6, 0.1])
    sim = similarity_labels(z, y)
    assert np.isnan(sim[0, 0]) and np.isnan(sim[1, 2])
    np.testing.assert_allclose(sim[0, 1:], [0.3, 0.1])
    np.testing.assert_allclose(sim[1, :2], [0.1, 0.8])
    np.testing.assert_allclose(np.nansum(sim, 1), 1 - confidence_labels(z, y))
    # T = 2 flattens: softmax(z/2) ∝ sqrt([6, 3, 1])
    p2 = np.sqrt([6.0, 3.0, 1.0]) / np.sqrt([6.0, 3.0, 1.0]).sum()
    rows = soft_label_table(z, y, [0], temperatures=[1.0, 2.0], class_names=["a", "b", "c"])
    assert [r["T"] for r in rows] == [1.0, 2.0]
    assert rows[0]["true_class"] == "a" and rows[0]["confidence"] == pytest.approx(0.6)
    assert rows[0]["similarity_mass"] == pytest.approx(0.4) and rows[0]["b"] == pytest.approx(0.3)
    np.testing.assert_allclose([rows[1][c] for c in "abc"], p2)
    with pytest.raises(KdlensError, match="out of range"):
        soft_label_table(z, y, [5])


def test_label_variance_within_a_class():
    z = np.log(np.array([[6.0, 3.0, 1.0], [8.0, 1.0, 1.0], [1.0, 1.0, 8.0]]))
    y = np.array([0, 0, 2])
    v = label_variance(z, y)
    conf = np.array([0.6, 0.8])
    assert v.variance[0, 0] == pytest.approx(conf.var())
    assert v.variance[0, 1] == pytest.approx(np.var([0.3, 0.1]))
    assert v.mean[0, 0] == pytest.approx(0.7) and v.counts.tolist() == [2, 0, 1]
    assert np.isnan(v.variance[1]).all() and v.variance[2, 2] == 0.0
    # label smoothing has no within-class variance at all
    ls = np.log(0.9 * np.eye(3)[[0, 0, 1]] + 0.1 / 3)
    assert np.nanmax(label_variance(ls, [0, 0, 1]).variance) == pytest.approx(0.0, abs=1e-15)


def test_projection_templates_map_to_their_positions_and_basis_is_orthonormal():
    rng = np.random.default_rng(1)
    w = rng.normal(size=(5, 16))
    proj = TemplateProjection([3, 0, 4]).fit(w)
    np.testing.assert_allclose(proj.basis_ @ proj.basis_.T, np.eye(2), atol=1e-12)
    np.testing.assert_allclose(proj.transform(w[[3, 0, 4]]), proj.template_coords_, atol=1e-12)
    np.testing.assert_allclose(proj.template_coords_.mean(0), 0, atol=1e-12)  # origin = centroid
    # pairwise template distances are kept (the three points lie in the plane)
    d3 = np.linalg.norm(w[3] - w[0])
    assert np.linalg.norm(proj.template_coords_[0] - proj.template_coords_[1]) == pytest.approx(d3)
    # a component orthogonal to the plane does not move a point
    normal = rng.normal(size=16)
    normal -= proj.basis_.T @ (proj.basis_ @ normal)
    np.testing.assert_allclose(proj.transform(w[[0]] + normal), proj.template_coords_[[1]], atol=1e-10)
    # from a model: the classifier `fc`, with the bias folded in
    lin = nn.Linear(16, 5)
    model = nn.Sequential()
    model.add_module("body", nn.Identity())
    model.add_module("fc", lin)
    pb = TemplateProjection([0, 1, 2], include_bias=True).fit(model)
    x = torch.cat([lin.weight[:3].detach(), torch.zeros(0, 16)])
    assert pb.transform(x.numpy()).shape == (3, 2)
    with pytest.raises(KdlensError, match="unknown class"):
        TemplateProjection([0, 1, 9]).fit(w)
    with pytest.raises(KdlensError, match="collinear"):
        TemplateProjection([0, 1, 2]).fit(np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]]))
    with pytest.raises(KdlensError, match="three distinct"):
        TemplateProjection([0, 0, 1])


def _tiny_data(n_per_class=30, k=4, size=8, seed=0):
    """Synthetic images whose class is a bright quadrant, plus test copies."""
    g = torch.Generator().manual_seed(seed)

    def make(n):
        labels = torch.arange(k).repeat_interleave(n)
        images = torch.randint(0, 60, (k * n, 1, size, size), generator=g, dtype=torch.uint8)
        h = size // 2
        for c in range(k):
            r, col = divmod(c, 2)
            images[labels == c, :, r * h:(r + 1) * h, col * h:(col + 1) * h] += 150
        return Dataset("tiny", images, labels, [f"c{c}" for c in range(k)], mean=(0.3,), std=(0.3,))

    return make(n_per_class), make(10)


def _logits_for(data: Dataset) -> torch.Tensor:
    """A 'teacher' that knows the classes and has some similarity structure."""
    k = data.num_classes
    sim = torch.tensor([[0, 2, 1, 0], [2, 0, 0, 1], [1, 0, 0, 2], [0, 1, 2, 0]], dtype=torch.float32)[:k, :k]
    return 6 * F.one_hot(data.labels, k).float() + sim[data.labels]


QUICK = SweepSettings(epochs=1, batch_size=32)


def test_missing_class_experiment_returns_a_class_by_temperature_matrix():
    train, test = _tiny_data()
    z = _logits_for(train)
    r = missing_class_test("baseline_student", train, test, {"a": z, "b": z * 0.5}, classes=[0, 2],
                           temperatures=[3.0, 9.0, 20.0], ls_alphas=[0.1], settings=QUICK)
    assert r.missing_class_accuracy["a"].shape == (2, 3) and r.ls_missing_class_accuracy.shape == (2, 1)
    assert set(r.test_accuracy) == {"a", "b"}
    rows = r.rows()
    assert len(rows) == 2 * 3 * 2 + 2
    assert {row["source"] for row in rows} == {"teacher", "ls"}
    assert all(0.0 <= row["missing_class_acc"] <= 100.0 for row in rows)
    assert r.to_dict()["missing_class_accuracy"]["a"][0][0] == rows[0]["missing_class_acc"]
    assert plot_missing_class_heatmaps(r) is not None
    own = missing_class_test("baseline_student", train, test, z, classes=[1], temperatures=[4.0],
                             settings=SweepSettings(epochs=1, batch_size=32, batches="own"))
    assert own.missing_class_accuracy["teacher"].shape == (1, 1) and own.rows()[0]["steps"] == 3  # 90 examples / 32
    with pytest.raises(KdlensError, match="unknown class"):
        missing_class_test("baseline_student", train, test, z, classes=[7], settings=QUICK)
    with pytest.raises(KdlensError, match="> 0"):
        missing_class_test("baseline_student", train, test, z, temperatures=[0.0], settings=QUICK)


def test_transfer_sets_noise_and_pretraining_sweeps_run():
    train, test = _tiny_data()
    z = _logits_for(train)
    top = top_entropy_examples(z, train.labels, T=9.0, k=3)
    h = soft_label_entropy(z, 9.0)
    assert top.shape == (4, 3) and all((train.labels[top[c]] == c).all() for c in range(4))
    assert h[top[0, 0]] == h[train.labels.numpy() == 0].max()
    ts = entropy_ranked_transfer_sets("baseline_student", train, test, {"a": z}, ns=[2, 10], T=9.0,
                                      random_seeds=[0, 1], min_steps=2, settings=QUICK)
    assert set(ts.curves) == {("a", "entropy"), ("a", "random")} and ts.curves[("a", "random")].shape == (2,)
    assert all(row["steps"] >= 2 for row in ts.rows())
    with pytest.raises(KdlensError, match="smallest class"):
        entropy_ranked_transfer_sets("baseline_student", train, test, z, ns=[31], settings=QUICK)
    noise = soft_label_noise("baseline_student", train, test, z, scales=[0.0, 0.2], noises=["uniform", "normal"],
                             ls_alpha=0.1, settings=QUICK)
    assert noise.accuracy[("teacher", "normal")].shape == (2,) and len(noise.rows()) == 8
    pre = teacher_pretraining_sweep("baseline_student", train, test, {"bs16": z, "bs512": z * 0.3},
                                    temperatures=[1.0, 4.0], configs={"bs16": {"batch_size": 16}}, settings=QUICK)
    assert pre.entropy["bs512"][0] > pre.entropy["bs16"][0]  # softer logits, higher entropy
    assert pre.rows()[0]["batch_size"] == 16
    for fig in (plot_transfer_set_curves(ts), plot_noise_curves(noise), plot_pretraining_sweep(pre)):
        assert fig.axes

