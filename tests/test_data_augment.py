"""BatchAugment / normalize (against hand-made examples and numpy) and TensorBatches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdlens.data import BatchAugment, TensorBatches, load_dataset, normalize
from kdlens.errors import KdlensError


def _batch(n=16, c=3, h=6, w=5, seed=0):
    return torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- normalize


def test_normalize_matches_numpy():
    x = _batch()
    mean, std = (0.1, 0.5, 0.9), (0.2, 0.3, 0.4)
    ref = (x.numpy().astype(np.float64) / 255 - np.array(mean)[None, :, None, None]) / np.array(std)[None, :, None, None]
    out = normalize(x, mean, std)
    assert out.dtype == torch.float32 and out.shape == x.shape
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-5, atol=1e-5)


def test_normalize_float_input_is_not_rescaled_nor_modified():
    x = torch.rand(4, 1, 1, 40)
    before = x.clone()
    out = normalize(x, (0.5,), (0.25,))
    torch.testing.assert_close(out, (before - 0.5) / 0.25)
    assert torch.equal(x, before)
    torch.testing.assert_close(normalize(x), x)  # no constants: identity on floats
    torch.testing.assert_close(normalize(torch.full((1, 1, 1, 1), 255, dtype=torch.uint8)), torch.ones(1, 1, 1, 1))


def test_normalize_errors():
    with pytest.raises(KdlensError, match="mean has 2 values for a batch with 3 channels"):
        normalize(_batch(), (0.1, 0.2), (1, 1, 1))
    with pytest.raises(KdlensError, match="std must be positive"):
        normalize(_batch(c=1), (0.1,), (0.0,))
    with pytest.raises(KdlensError, match="N×C×H×W"):
        normalize(torch.zeros(3, 4, dtype=torch.uint8))
    with pytest.raises(KdlensError, match="uint8 or floating"):
        normalize(torch.zeros(1, 1, 2, 2, dtype=torch.int32))


# ---------------------------------------------------------------- crop and flip by hand

IMAGE = torch.tensor([[1, 2, 3], [4, 5, 6], [7, 8, 9]], dtype=torch.uint8).view(1, 1, 3, 3)


def _raw(aug, x, dy, dx, flip):
    """apply() without scaling: multiply back to pixel values."""
    return (aug.apply(x, torch.tensor(dy), torch.tensor(dx), torch.tensor(flip)) * 255).round().to(torch.uint8)


def test_crop_by_hand():
    aug = BatchAugment(crop=1)
    # offset (0, 0) of the zero-padded 5×5 image: content moves down-right by one pixel
    assert _raw(aug, IMAGE, [0], [0], [False])[0, 0].tolist() == [[0, 0, 0], [0, 1, 2], [0, 4, 5]]
    # offset (1, 1) = the original
    assert _raw(aug, IMAGE, [1], [1], [False])[0, 0].tolist() == IMAGE[0, 0].tolist()
    # offset (2, 0): content moves up one, right one
    assert _raw(aug, IMAGE, [2], [0], [False])[0, 0].tolist() == [[0, 4, 5], [0, 7, 8], [0, 0, 0]]


def test_flip_by_hand_and_combined():
    assert _raw(BatchAugment(hflip=True), IMAGE, [0], [0], [True])[0, 0].tolist() == [[3, 2, 1], [6, 5, 4], [9, 8, 7]]
    # crop at (0, 0) then flip the crop
    assert _raw(BatchAugment(crop=1, hflip=True), IMAGE, [0], [0], [True])[0, 0].tolist() == [
        [0, 0, 0], [2, 1, 0], [5, 4, 0],
    ]  # fmt: skip


def _reference(x: np.ndarray, p: int, dy, dx, flip) -> np.ndarray:
    """Per-image numpy loop: pad, crop, flip."""
    n, c, h, w = x.shape
    padded = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    out = np.empty_like(x)
    for i in range(n):
        crop = padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w]
        out[i] = crop[:, :, ::-1] if flip[i] else crop
    return out


def test_random_crop_flip_matches_per_image_reference():
    x = _batch(n=64)
    aug = BatchAugment(crop=2, hflip=True, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    gen = torch.Generator().manual_seed(11)
    dy, dx, flip = aug.sample(len(x), gen)
    assert int(dy.min()) >= 0 and int(dy.max()) <= 4 and 0 < int(flip.sum()) < 64
    expected = normalize(torch.from_numpy(_reference(x.numpy(), 2, dy.numpy(), dx.numpy(), flip.numpy())),
                         aug.mean, aug.std)  # fmt: skip
    torch.testing.assert_close(aug.apply(x, dy, dx, flip), expected)
    # __call__ with the same seed draws the same parameters
    torch.testing.assert_close(aug(x, torch.Generator().manual_seed(11)), expected)


def test_same_seed_same_output_and_defaults():
    x = _batch(n=32)
    a = BatchAugment(crop=1, hflip=True, generator=torch.Generator().manual_seed(3))
    b = BatchAugment(crop=1, hflip=True, generator=torch.Generator().manual_seed(3))
    first_a, first_b = a(x), b(x)
    assert torch.equal(first_a, first_b)
    assert not torch.equal(a(x), first_a)  # the generator advances between calls
    plain = BatchAugment()
    torch.testing.assert_close(plain(x), x.float() / 255)
    assert x.dtype == torch.uint8  # input untouched
    with pytest.raises(KdlensError, match="crop"):
        BatchAugment(crop=-1)


def test_float_batches_and_single_channel_dataset():
    ds = load_dataset("synthetic", n=20, size=8)
    aug = BatchAugment(crop=2, hflip=True, mean=ds.mean, std=ds.std, generator=torch.Generator().manual_seed(0))
    out = aug(ds.images)
    assert out.shape == (20, 1, 8, 8) and out.dtype == torch.float32
    as_float = BatchAugment(crop=2, hflip=True, mean=ds.mean, std=ds.std, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(as_float(ds.images.float() / 255), out)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_matches_cpu():
    x = _batch(n=128)
    aug = BatchAugment(crop=4, hflip=True, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    cpu = aug(x, torch.Generator().manual_seed(5))
    gpu = aug(x.cuda(), torch.Generator().manual_seed(5))
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu)


# ---------------------------------------------------------------- TensorBatches


def _data(n=23):
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()
    return images, torch.arange(n) % 3


def test_batches_cover_every_index_once():
    images, labels = _data()
    batches = TensorBatches(images, labels, batch_size=5, generator=torch.Generator().manual_seed(0))
    assert len(batches) == 5
    seen = []
    for x, y, idx in batches:
        assert x.dtype == torch.uint8 and idx.dtype == torch.int64
        assert torch.equal(x[:, 0, 0, 0].long(), idx) and torch.equal(y, labels[idx])
        seen += idx.tolist()
    assert sorted(seen) == list(range(23)) and seen != list(range(23))
    assert [len(b[2]) for b in batches] == [5, 5, 5, 5, 3]


def test_batches_deterministic_given_generator_and_new_order_each_epoch():
    images, labels = _data()

    def epochs(seed):
        batches = TensorBatches(images, labels, 4, generator=torch.Generator().manual_seed(seed))
        return [torch.cat([idx for _, _, idx in batches]).tolist() for _ in range(2)]

    a, b = epochs(1), epochs(1)
    assert a == b and a[0] != a[1] and epochs(2) != a


def test_batches_drop_last_no_shuffle_and_indices():
    images, labels = _data()
    batches = TensorBatches(images, labels, 5, shuffle=False, drop_last=True)
    assert len(batches) == 4
    order = torch.cat([idx for _, _, idx in batches]).tolist()
    assert order == list(range(20))
    x, _, _ = next(iter(batches))
    assert x.data_ptr() == images.data_ptr()  # in-order batches are views
    subset = np.array([3, 7, 11, 19, 20])
    sub = TensorBatches(images, labels, 2, shuffle=False, indices=subset)
    assert len(sub) == 3 and torch.cat([idx for _, _, idx in sub]).tolist() == subset.tolist()
    shuffled = TensorBatches(images, labels, 2, indices=subset, generator=torch.Generator().manual_seed(0))
    got = [(x[:, 0, 0, 0].long(), idx) for x, _, idx in shuffled]
    assert sorted(torch.cat([i for _, i in got]).tolist()) == subset.tolist()
    assert all(torch.equal(v, i) for v, i in got)
    assert len(TensorBatches(images, labels, 100, drop_last=True)) == 0


def test_batches_from_dataset_and_errors():
    ds = load_dataset("synthetic", n=10, size=4)
    batches = TensorBatches.from_dataset(ds, 4, shuffle=False)
    assert len(batches) == 3 and batches.num_samples == 10
    with pytest.raises(KdlensError, match="batch_size must be a positive integer"):
        TensorBatches(ds.images, ds.labels, 0)
    with pytest.raises(KdlensError, match="10 images but 9 labels"):
        TensorBatches(ds.images, ds.labels[:9], 2)
    with pytest.raises(KdlensError, match="out of range"):
        TensorBatches(ds.images, ds.labels, 2, indices=[10])
