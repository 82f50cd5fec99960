"""Layer representations (spatial mean → N×C), streaming and the disk cache."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from kdlens.errors import KdlensError
from kdlens.explain.representations import candidate_layers, layer_representations
from kdlens.models import create_model, extract_features


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models on a shared CPU: one intra-op thread avoids waiting for descheduled threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = create_model("resnet8", 10, in_channels=3)
    # non-trivial BN statistics so that eval mode differs from train mode
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 1.5)
    return m


@pytest.fixture(scope="module")
def images():
    return torch.randint(0, 256, (37, 3, 12, 12), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))


def prepare(x):
    return x.float().div(255.0).sub(0.5)


def manual_means(model, images, names):
    model.eval()
    with torch.no_grad():
        feats = extract_features(model, prepare(images), names)
    return {n: f.mean(dim=(2, 3)).numpy() for n, f in feats.items()}


def test_streamed_batches_equal_one_shot_spatial_mean(model, images):
    names = candidate_layers(model, "post")
    assert names == ["layer1.0", "layer2.0", "layer3.0"]
    model.train()  # the function must switch to eval and restore the mode
    reps = layer_representations(model, images, prepare, batch_size=5)
    assert model.training
    ref = manual_means(model, images, names)
    assert list(reps) == names
    for n in names:
        assert reps[n].dtype == np.float32 and reps[n].shape == (37, ref[n].shape[1])
        np.testing.assert_allclose(reps[n], ref[n], rtol=1e-5, atol=1e-6)
    one = layer_representations(model, images, prepare, batch_size=1000, dtype="float64")
    for n in names:
        assert one[n].dtype == np.float64
        np.testing.assert_allclose(one[n], reps[n], rtol=1e-5, atol=1e-6)


def test_indices_select_rows_in_order(model, images):
    idx = [30, 2, 7]
    reps = layer_representations(model, images, prepare, indices=idx, batch_size=2)
    full = layer_representations(model, images, prepare)
    for n in reps:
        np.testing.assert_allclose(reps[n], full[n][idx], rtol=1e-5, atol=1e-6)


def test_pre_and_post_forms(model, images):
    pre = layer_representations(model, images, prepare, form="pre")
    post = layer_representations(model, images, prepare, form="post")
    assert list(pre) == [f"{b}.preact" for b in post]
    for (np_, p), q in zip(pre.items(), post.values(), strict=True):
        assert (q >= 0).all()  # mean of a ReLU output
        assert (p < 0).any(), np_  # the residual sum before the ReLU goes negative
        assert not np.allclose(p, q)
    # WRN blocks end without a ReLU: the pre-activation tap is the block output
    torch.manual_seed(0)
    wrn = create_model("wrn_16_1", 10)
    a = layer_representations(wrn, images, prepare, form="pre")
    b = layer_representations(wrn, images, prepare, form="post")
    for p, q in zip(a.values(), b.values(), strict=True):
        np.testing.assert_array_equal(p, q)


def test_cache_hit_corruption_and_changed_weights(model, images, tmp_path):
    info = {}
    first = layer_representations(model, images, prepare, cache_dir=tmp_path, info=info)
    assert info["cache"] == "miss"
    folder = tmp_path / next(p.name for p in tmp_path.iterdir())
    assert {p.name for p in folder.iterdir()} == {"reps.npz", "meta.json"}
    assert json.loads((folder / "meta.json").read_text())["key"]["layers"] == list(first)

    again = layer_representations(model, images, prepare, cache_dir=tmp_path, info=info)
    assert info["cache"] == "hit"
    for n in first:
        np.testing.assert_array_equal(again[n], first[n])

    # truncated file: detected by its SHA-256, recomputed and rewritten
    raw = (folder / "reps.npz").read_bytes()
    (folder / "reps.npz").write_bytes(raw[: len(raw) // 2])
    fixed = layer_representations(model, images, prepare, cache_dir=tmp_path, info=info)
    assert info["cache"] == "miss"
    for n in first:
        np.testing.assert_array_equal(fixed[n], first[n])
    assert (folder / "reps.npz").read_bytes() == raw
    # a missing completion marker (killed between the two writes) is a miss too
    (folder / "meta.json").unlink()
    layer_representations(model, images, prepare, cache_dir=tmp_path, info=info)
    assert info["cache"] == "miss"

    # other data (a different sample) or another form: another key
    layer_representations(model, images, prepare, indices=range(30), cache_dir=tmp_path, info=info)
    assert info["cache"] == "miss"

    # different weights miss the cache
    other = create_model("resnet8", 10, in_channels=3)
    other.load_state_dict(model.state_dict())
    with torch.no_grad():
        other.fc.weight.add_(1.0)
    layer_representations(other, images, prepare, cache_dir=tmp_path, info=info)
    assert info["cache"] == "miss"
    layer_representations(model, images, prepare, cache_dir=tmp_path, info=info)
    assert info["cache"] == "hit"


def test_bad_input_is_a_user_error(model, images):
    with pytest.raises(KdlensError, match="unknown tap form"):
        layer_representations(model, images, prepare, form="middle")
    with pytest.raises(KdlensError, match="unknown layer"):
        layer_representations(model, images, prepare, layers=["layer9.0"])
    with pytest.raises(KdlensError, match="out of range"):
        layer_representations(model, images, prepare, indices=[0, 99])
    assert not any(m._forward_hooks for m in model.modules())
