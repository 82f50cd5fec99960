"""Hint search step 1: inference mode keeps fp32 values bit-identical; bf16 is checked first."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdlens.data import load_dataset
from kdlens.errors import KdlensError
from kdlens.explain.hint_search import find_hint_points, find_saved_search, sample_indices
from kdlens.explain.representations import candidate_layers, layer_representations
from kdlens.explain.similarity import similarity_matrix
from kdlens.models import create_model


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = create_model("resnet8", 10, in_channels=3).eval()
    ds = load_dataset("synthetic", n=200, channels=3, size=16, num_classes=10)
    return model, ds


def test_fp32_search_is_bit_identical_to_a_plain_no_grad_forward(setup):
    model, ds = setup
    res = find_hint_points(model, ds.images, None, k=2, n=150, seed=1, batch_size=64)
    rows = sample_indices(len(ds.images), 150, seed=1)
    with torch.no_grad():
        reps = layer_representations(model, ds.images, None, layers=candidate_layers(model), indices=rows,
                                     batch_size=64)
    assert np.array_equal(res.similarity, similarity_matrix(reps, "cka", blas_threads=1))
    assert "precision" not in res.extra and "step1_bf16_check" not in res.timings


def test_bf16_records_the_measured_change_and_refuses_a_tight_tolerance(setup):
    model, ds = setup
    res = find_hint_points(model, ds.images, None, k=2, n=150, seed=1, batch_size=64, precision="bf16",
                           bf16_tolerance=1.0, bf16_check_n=100)
    check = res.extra["bf16_check"]
    assert res.extra["precision"] == "bf16" and check["n"] == 100 and check["tolerance"] == 1.0
    # independent recomputation: fp32 vs bf16 representations of the same 100 check rows
    rows = sample_indices(sample_indices(len(ds.images), 150, seed=1), 100, seed=1)
    layers = candidate_layers(model)
    with torch.no_grad():
        s32 = similarity_matrix(layer_representations(model, ds.images, None, layers=layers, indices=rows), "cka")
        s16 = similarity_matrix(layer_representations(model, ds.images, None, layers=layers, indices=rows,
                                                      bf16=True), "cka")
    expected = float(np.max(np.abs(s16 - s32)))
    assert expected > 0 and check["max_abs_change"] == pytest.approx(expected, rel=1e-12, abs=1e-15)
    with pytest.raises(KdlensError, match=r"bf16 forward pass moves the cka layer similarity by up to"):
        find_hint_points(model, ds.images, None, k=2, n=150, seed=1, precision="bf16", bf16_tolerance=1e-12,
                         bf16_check_n=100)


def test_bad_precision_options_fail_before_any_forward_pass(setup):
    _, ds = setup

    class Exploding(torch.nn.Module):
        def forward(self, x):  # pragma: no cover - must not run
            raise AssertionError("forward ran")

    with pytest.raises(KdlensError, match="step-1 precision"):
        find_hint_points(Exploding(), ds.images, None, k=1, layers=["x"], precision="fp16")
    with pytest.raises(KdlensError, match="bf16_tolerance"):
        find_hint_points(Exploding(), ds.images, None, k=1, layers=["x"], precision="bf16", bf16_tolerance=0)
    with pytest.raises(KdlensError, match="bf16_check_n"):
        find_hint_points(Exploding(), ds.images, None, k=1, layers=["x"], precision="bf16", bf16_check_n=1)


def test_auto_reuses_only_fp32_searches(setup, tmp_path):
    model, ds = setup
    res = find_hint_points(model, ds.images, None, k=2, n=100, precision="bf16", bf16_tolerance=1.0,
                           bf16_check_n=50, data_key={"dataset": "synthetic"})
    path = tmp_path / "bf16.json"
    path.write_text(res.to_json())
    args = (res.weights_sha256, "synthetic", 2, "cka", res.rule, "post")
    assert find_saved_search([path], *args) is None
    fp32 = find_hint_points(model, ds.images, None, k=2, n=100, data_key={"dataset": "synthetic"})
    (tmp_path / "fp32.json").write_text(fp32.to_json())
    found = find_saved_search([tmp_path], *args)
    assert found is not None and found[1].name == "fp32.json"


def test_batch_parallel_workers_give_the_sequential_values_and_share_its_cache(setup, tmp_path):
    from kdlens.explain.parallel_representations import layer_representations_parallel

    model, ds = setup
    layers = candidate_layers(model)
    rows = sample_indices(len(ds.images), 170, seed=2)
    with torch.no_grad():
        ref = layer_representations(model, ds.images, None, layers=layers, indices=rows, batch_size=32)
    torch.set_num_threads(2)
    try:
        for workers in (1, 2, 3):
            got = layer_representations_parallel(model, ds.images, None, layers=layers, indices=rows,
                                                 batch_size=32, workers=workers)
            assert list(got) == layers and all(np.array_equal(got[n], ref[n]) for n in layers)
        assert torch.get_num_threads() == 2  # restored
        info: dict = {}
        layer_representations_parallel(model, ds.images, None, layers=layers, indices=rows, batch_size=32,
                                       cache_dir=tmp_path, info=info)
        assert info["cache"] == "miss"
        info2: dict = {}
        cached = layer_representations(model, ds.images, None, layers=layers, indices=rows, batch_size=32,
                                       cache_dir=tmp_path, info=info2)
        assert info2["cache"] == "hit" and all(np.array_equal(cached[n], ref[n]) for n in layers)
    finally:
        torch.set_num_threads(1)
    assert model.training is False


def test_search_values_do_not_depend_on_the_step1_parallelism(setup):
    model, ds = setup
    torch.set_num_threads(2)
    try:
        a = find_hint_points(model, ds.images, None, k=2, n=150, seed=1, batch_size=40)
        b = find_hint_points(model, ds.images, None, k=2, n=150, seed=1, batch_size=40, parallel="intra-op")
    finally:
        torch.set_num_threads(1)
    assert np.array_equal(a.similarity, b.similarity) and a.selection == b.selection
    with pytest.raises(KdlensError, match="step-1 parallelism"):
        find_hint_points(model, ds.images, None, k=2, n=150, parallel="threads")
    from kdlens.explain.parallel_representations import layer_representations_parallel

    with pytest.raises(KdlensError, match="workers"):
        layer_representations_parallel(model, ds.images, None, layers=candidate_layers(model), indices=[0, 1],
                                       workers=0)
