"""Image folders and streamed batches, on small folders of real PNG/JPEG files written here."""

from __future__ import annotations

import gc
import multiprocessing
import os
import random
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kdlens.data import TensorBatches
from kdlens.data.folder import (
    IMAGE_SUFFIXES,
    ImageFolderDataset,
    decode_image_file,
    estimate_mean_std,
    folder_fingerprint,
    infer_channels_and_size,
    load_image_folder_in_memory,
    scan_image_folder,
)
from kdlens.data.streamed import LoaderBatches
from kdlens.errors import KdlensError

# torchvision ≥ 0.29 warns on every decode_image call (its decoders move to TorchCodec)
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")


def smooth_rgb(seed: int, h: int = 12, w: int = 16) -> np.ndarray:
    """A smooth colour gradient plus mild noise (JPEG-friendly), H×W×3 uint8."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    base = rng.uniform(30, 200, 3) + rng.uniform(-4, 4, 3) * xx[..., None] + rng.uniform(-4, 4, 3) * yy[..., None]
    return np.clip(base + rng.normal(0, 2, (h, w, 3)), 0, 255).astype(np.uint8)


def write_image(path: Path, arr: np.ndarray, **kw) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, **kw)


def make_folder(root: Path, classes=("cat", "dog", "emu"), n_train=5, n_test=2, test="val", suffix=".png"):
    seed = 0
    for split, n in (("train", n_train), (test, n_test)):
        for c in classes:
            for i in range(n):
                write_image(root / split / c / f"img{i:02d}{suffix}", smooth_rgb(seed))
                seed += 1
    return root


@pytest.fixture
def folder(tmp_path):
    return make_folder(tmp_path / "pets")


_CHILDREN_BEFORE: set[int] = set()


@pytest.fixture(autouse=True)
def _children_before():
    """Child processes that existed before the test (others' pools are not ours to count)."""
    _CHILDREN_BEFORE.clear()
    _CHILDREN_BEFORE.update(p.pid for p in multiprocessing.active_children())


def our_children():
    return [p for p in multiprocessing.active_children() if p.pid not in _CHILDREN_BEFORE]


def no_workers_left():
    for _ in range(50):
        if not our_children():
            return True
        time.sleep(0.1)
    return False


# --- scanning -----------------------------------------------------------------------------


def test_scan_finds_sorted_classes_and_samples(folder):
    (folder / "train" / "cat" / "notes.txt").write_text("not an image")
    (folder / "train" / "cat" / ".DS_Store").write_bytes(b"\0")
    write_image(folder / "train" / "dog" / "sub" / "deep.PNG", smooth_rgb(99))  # nested, upper-case suffix
    layout = scan_image_folder(folder)
    assert layout.root == folder and layout.test_name == "val"
    assert layout.classes == ["cat", "dog", "emu"]
    rel = [(p.relative_to(folder).as_posix(), y) for p, y in layout.train]
    assert rel[:5] == [(f"train/cat/img{i:02d}.png", 0) for i in range(5)]
    assert ("train/dog/sub/deep.PNG", 1) in rel and len(rel) == 16
    assert [y for _, y in layout.train] == sorted(y for _, y in layout.train)
    assert [y for _, y in layout.test] == [0, 0, 1, 1, 2, 2]
    assert layout.ignored_files == 1 and "notes.txt" in layout.note
    assert scan_image_folder(folder) == layout  # deterministic
    assert IMAGE_SUFFIXES == (".jpg", ".jpeg", ".png")


def test_val_is_preferred_over_test_and_test_classes_may_be_a_subset(tmp_path):
    root = make_folder(tmp_path / "r", test="test")
    assert scan_image_folder(root).test_name == "test"
    write_image(root / "val" / "emu" / "a.jpg", smooth_rgb(1))
    layout = scan_image_folder(root)
    assert layout.test_name == "val" and layout.note is None
    assert [(p.name, y) for p, y in layout.test] == [("a.jpg", 2)]  # label from the train classes


@pytest.mark.parametrize(
    "breakage, expected",
    [
        ("missing", ["does not exist", "DIR/train/<class>"]),
        ("no_train", ["has no train/ folder", "DIR/train/<class>"]),
        ("no_test", ["no val/ or test/", "DIR/val/<class>"]),
        ("flat_train", ["has no class sub-folders", "3 image(s) directly in it", "DIR/train/<class>"]),
        ("empty_class", ["class folder", "has no images", "readme.txt", ".jpg, .jpeg, .png"]),
        ("extra_test_class", ["lacks: yak", "subset of the training classes"]),
    ],
)
def test_scan_errors_name_the_path_and_the_layout(tmp_path, breakage, expected):
    root = tmp_path / "data"
    if breakage != "missing":
        make_folder(root, classes=("a", "b"), n_train=2, n_test=1)
    where = root
    if breakage == "no_train":
        os.rename(root / "train", root / "training")
    elif breakage == "no_test":
        os.rename(root / "val", root / "valid")
    elif breakage == "flat_train":
        import shutil
        shutil.rmtree(root / "train")
        for i in range(3):
            write_image(root / "train" / f"{i}.png", smooth_rgb(i))
        where = root / "train"
    elif breakage == "empty_class":
        (root / "train" / "c").mkdir()
        (root / "train" / "c" / "readme.txt").write_text("todo")
        where = root / "train" / "c"
    elif breakage == "extra_test_class":
        write_image(root / "val" / "yak" / "0.png", smooth_rgb(0))
        where = root / "val"
    with pytest.raises(KdlensError) as err:
        scan_image_folder(root)
    msg = str(err.value)
    assert str(where) in msg
    for text in expected:
        assert text in msg, msg


# --- fingerprint --------------------------------------------------------------------------


def test_fingerprint_tracks_touches_and_renames(folder):
    fp = folder_fingerprint(scan_image_folder(folder))
    assert len(fp) == 64
    assert folder_fingerprint(scan_image_folder(folder)) == fp  # nothing changed
    (folder / "train" / "cat" / "notes.txt").write_text("ignored files do not count")
    assert folder_fingerprint(scan_image_folder(folder)) == fp
    target = folder / "val" / "dog" / "img01.png"
    st = os.stat(target)
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    touched = folder_fingerprint(scan_image_folder(folder))
    assert touched != fp
    os.rename(target, target.with_name("img01b.png"))
    renamed = folder_fingerprint(scan_image_folder(folder))
    assert renamed not in (fp, touched)


# --- decoding -----------------------------------------------------------------------------


@pytest.mark.parametrize("decoder", ["torchvision", "pil"])
def test_decoded_pixels_equal_what_was_written(tmp_path, decoder):
    arr = smooth_rgb(3, 10, 14)
    write_image(tmp_path / "a.png", arr)
    write_image(tmp_path / "a.jpg", arr, quality=95)
    png = decode_image_file(tmp_path / "a.png", 3, decoder)
    assert png.dtype == torch.uint8 and png.shape == (3, 10, 14)
    assert torch.equal(png, torch.from_numpy(arr).permute(2, 0, 1))
    jpg = decode_image_file(tmp_path / "a.jpg", 3, decoder).int()
    diff = (jpg - torch.from_numpy(arr).permute(2, 0, 1).int()).abs().float()
    assert diff.mean() < 3 and diff.max() < 40


def test_both_decoders_agree_on_rgb(tmp_path):
    write_image(tmp_path / "a.jpg", smooth_rgb(4), quality=80)
    assert torch.equal(decode_image_file(tmp_path / "a.jpg", 3, "torchvision"), decode_image_file(tmp_path / "a.jpg", 3, "pil"))


def test_grey_and_rgb_channels(tmp_path):
    grey = smooth_rgb(5)[:, :, 0]
    rgb = smooth_rgb(6)
    write_image(tmp_path / "g.png", grey)
    write_image(tmp_path / "c.png", rgb)
    write_image(tmp_path / "rgba.png", np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)]))
    assert infer_channels_and_size([(tmp_path / "g.png", 0)]) == (1, (12, 16))
    assert infer_channels_and_size([(tmp_path / "c.png", 0)]) == (3, (12, 16))
    ds = ImageFolderDataset([(tmp_path / "g.png", 0)], ["x"], channels=None, size=None)
    assert ds.image_shape == (1, 12, 16)
    assert torch.equal(ds[0][0][0], torch.from_numpy(grey))
    # grey → RGB: three equal channels
    g3 = ImageFolderDataset([(tmp_path / "g.png", 0)], ["x"], channels=3, size=None)[0][0]
    assert g3.shape == (3, 12, 16) and all(torch.equal(g3[c], torch.from_numpy(grey)) for c in range(3))
    # RGB → grey: PIL's luma within a level or two; RGBA → RGB drops alpha
    c1 = ImageFolderDataset([(tmp_path / "c.png", 0)], ["x"], channels=1, size=None)[0][0]
    want = torch.from_numpy(np.array(Image.fromarray(rgb).convert("L")))
    assert c1.shape == (1, 12, 16) and (c1[0].int() - want.int()).abs().max() <= 2
    rgba = ImageFolderDataset([(tmp_path / "rgba.png", 0)], ["x"], channels=3, size=None)[0][0]
    assert torch.equal(rgba, torch.from_numpy(rgb).permute(2, 0, 1))


def test_sizes_must_match_unless_resized(tmp_path):
    write_image(tmp_path / "a.png", smooth_rgb(1, 12, 16))
    write_image(tmp_path / "b.png", smooth_rgb(2, 20, 24))
    samples = [(tmp_path / "a.png", 0), (tmp_path / "b.png", 1)]
    ds = ImageFolderDataset(samples, ["a", "b"], channels=3, size=None)
    assert ds.image_shape == (3, 12, 16)
    with pytest.raises(KdlensError) as err:
        ds[1]
    msg = str(err.value)
    assert "b.png" in msg and "20×24" in msg and "12×16" in msg and "data.image_size=" in msg
    resized = ImageFolderDataset(samples, ["a", "b"], channels=3, size=(8, 8))
    assert resized.image_shape == (3, 8, 8)
    assert resized[0][0].shape == resized[1][0].shape == (3, 8, 8)
    # antialiased bilinear: a constant image stays constant; close to PIL's (antialiased) bilinear
    write_image(tmp_path / "flat.png", np.full((30, 40, 3), 77, np.uint8))
    flat = ImageFolderDataset([(tmp_path / "flat.png", 0)], ["x"], channels=3, size=6)[0][0]
    assert flat.shape == (3, 6, 6) and bool((flat == 77).all())
    big = smooth_rgb(8, 40, 48)
    write_image(tmp_path / "big.png", big)
    small = ImageFolderDataset([(tmp_path / "big.png", 0)], ["x"], channels=3, size=(10, 12))[0][0]
    pil = torch.from_numpy(np.asarray(Image.fromarray(big).resize((12, 10), Image.BILINEAR))).permute(2, 0, 1)
    assert (small.int() - pil.int()).abs().float().mean() < 2


def bad_folder(tmp_path):
    root = make_folder(tmp_path / "bad", classes=("a", "b"), n_train=4, n_test=1)
    good = (root / "train" / "a" / "img01.png").read_bytes()
    (root / "train" / "a" / "img01.png").write_bytes(good[: len(good) // 2])  # truncated
    os.remove(root / "train" / "b" / "img02.png")
    (root / "train" / "b" / "img02.jpg").write_bytes(b"this is not a jpeg")
    return scan_image_folder(root)


def test_bad_images_error_or_skip(tmp_path):
    layout = bad_folder(tmp_path)
    ds = ImageFolderDataset(layout.train, layout.classes, channels=3, size=None)
    with pytest.raises(KdlensError) as err:
        ds[1]
    assert "img01.png" in str(err.value) and "data.on_bad_image=skip" in str(err.value)
    skipping = ImageFolderDataset(layout.train, layout.classes, channels=3, size=None, on_bad_image="skip")
    assert skipping[1] is None and skipping[0] is not None
    for workers in (0, 2):
        with LoaderBatches(skipping, 3, shuffle=False, num_workers=workers) as batches:
            seen = [i for _, _, idx in batches for i in idx.tolist()]
        assert batches.skipped == 2 and sorted(batches.skipped_indices) == [1, 6]
        assert seen == [0, 2, 3, 4, 5, 7]


def test_bad_image_error_through_workers_is_clean_and_leaves_no_workers(tmp_path):
    layout = bad_folder(tmp_path)
    ds = ImageFolderDataset(layout.train, layout.classes, channels=3, size=None)
    batches = LoaderBatches(ds, 2, shuffle=False, num_workers=2)
    with pytest.raises(KdlensError) as err:
        list(batches)
    msg = str(err.value)
    assert "img01.png" in msg and "data.on_bad_image=skip" in msg and "Traceback" not in msg
    assert no_workers_left()


def test_unsupported_options_are_named(folder):
    layout = scan_image_folder(folder)
    with pytest.raises(KdlensError, match="on_bad_image must be one of error, skip"):
        ImageFolderDataset(layout.train, layout.classes, channels=3, size=None, on_bad_image="ignore")
    with pytest.raises(KdlensError, match="channels must be 1"):
        ImageFolderDataset(layout.train, layout.classes, channels=4, size=None)
    with pytest.raises(KdlensError, match="image size must be"):
        ImageFolderDataset(layout.train, layout.classes, channels=3, size=(0, 4))


# --- streamed batches ---------------------------------------------------------------------


@pytest.fixture
def big_folder(tmp_path):
    return scan_image_folder(make_folder(tmp_path / "big", classes=("a", "b", "c"), n_train=13, n_test=2))


def collect(batches):
    return [(x.clone(), y.clone(), idx.clone()) for x, y, idx in batches]


def test_workers_give_the_same_batches_in_the_order_of_tensorbatches(big_folder):
    ds = ImageFolderDataset(big_folder.train, big_folder.classes, channels=3, size=None)
    n = len(ds)
    runs = {}
    for workers in (0, 2):
        with LoaderBatches(ds, 8, generator=torch.Generator().manual_seed(7), num_workers=workers) as b:
            runs[workers] = [collect(b), collect(b)]  # two epochs
    reference = TensorBatches(torch.zeros(n, 1), torch.zeros(n), 8, generator=torch.Generator().manual_seed(7))
    ref_epochs = [[idx for _, _, idx in reference] for _ in range(2)]
    for e in range(2):
        a, b = runs[0][e], runs[2][e]
        assert len(a) == len(b) == 5
        for (xa, ya, ia), (xb, yb, ib), ir in zip(a, b, ref_epochs[e], strict=True):
            assert torch.equal(xa, xb) and torch.equal(ya, yb) and torch.equal(ia, ib) and torch.equal(ia, ir)
            assert ia.dtype == ya.dtype == torch.int64 and xa.dtype == torch.uint8
            assert torch.equal(ya, ds.labels[ia])
            assert all(torch.equal(xa[k], ds[int(i)][0]) for k, i in enumerate(ia))
        assert sorted(torch.cat([i for _, _, i in a]).tolist()) == list(range(n))  # every index once
    assert not torch.equal(torch.cat([i for _, _, i in runs[0][0]]), torch.cat([i for _, _, i in runs[0][1]]))
    assert no_workers_left()


def test_generator_advances_exactly_as_with_tensorbatches(big_folder):
    ds = ImageFolderDataset(big_folder.train, big_folder.classes, channels=3, size=None)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    list(LoaderBatches(ds, 8, generator=g1))
    list(TensorBatches(torch.zeros(len(ds), 1), torch.zeros(len(ds)), 8, generator=g2))
    assert torch.equal(g1.get_state(), g2.get_state())


def test_indices_drop_last_and_in_order(big_folder):
    ds = ImageFolderDataset(big_folder.train, big_folder.classes, channels=3, size=None)
    subset = [3, 30, 1, 17, 22, 8, 9]
    b = LoaderBatches(ds, 3, drop_last=True, indices=subset, generator=torch.Generator().manual_seed(1))
    assert len(b) == 2 and b.num_samples == 7
    got = [idx for _, _, idx in b]
    ref = [idx for _, _, idx in TensorBatches(torch.zeros(len(ds), 1), torch.zeros(len(ds)), 3, drop_last=True,
                                               indices=subset, generator=torch.Generator().manual_seed(1))]
    assert len(got) == 2 and all(torch.equal(a, r) for a, r in zip(got, ref, strict=True))
    assert set(torch.cat(got).tolist()) <= set(subset)
    plain = LoaderBatches(ds, 16, shuffle=False)
    assert len(plain) == 3
    assert torch.equal(torch.cat([idx for _, _, idx in plain]), torch.arange(len(ds)))


class NoisyDataset(torch.utils.data.Dataset):
    """A user dataset with a random float transform (torch, numpy and random draws)."""

    def __len__(self):
        return 20

    def __getitem__(self, i):
        noise = torch.rand(1, 4, 4) + float(np.random.rand()) + random.random()
        return torch.full((1, 4, 4), float(i)) + noise, torch.tensor(i % 3)


def test_random_user_transforms_are_reproducible_across_workers():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    runs = {}
    for workers in (0, 2):
        with LoaderBatches(NoisyDataset(), 6, generator=torch.Generator().manual_seed(5), num_workers=workers) as b:
            runs[workers] = [collect(b), collect(b)]
    assert torch.equal(torch.get_rng_state(), before)  # the caller's global RNG is untouched
    for e in range(2):
        for (xa, ya, ia), (xb, yb, ib) in zip(runs[0][e], runs[2][e], strict=True):
            assert xa.dtype == torch.float32 and torch.equal(xa, xb) and torch.equal(ia, ib)
            assert torch.equal(ya, ia % 3)
    # a new epoch draws new noise
    assert not torch.equal(torch.cat([x for x, _, _ in runs[0][0]]).sort(0).values,
                           torch.cat([x for x, _, _ in runs[0][1]]).sort(0).values)


class PILDataset(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        return Image.new("RGB", (4, 4)), i


@pytest.mark.parametrize("workers", [0, 2])
def test_a_non_tensor_item_says_what_would_work(workers):
    with pytest.raises(KdlensError) as err:
        list(LoaderBatches(PILDataset(), 2, num_workers=workers))
    msg = str(err.value)
    assert "PIL.Image.Image" in msg and "ToTensor()" in msg and "Traceback" not in msg
    assert no_workers_left()


def test_workers_are_shut_down_on_close_and_collection(big_folder):
    ds = ImageFolderDataset(big_folder.train, big_folder.classes, channels=3, size=None)
    b = LoaderBatches(ds, 4, num_workers=2)
    next(iter(b))  # stopped early: workers stay for the next epoch
    assert len(our_children()) == 2
    assert sum(len(idx) for _, _, idx in b) == len(ds)  # the next epoch is complete
    b.close()
    assert no_workers_left()
    b2 = LoaderBatches(ds, 4, num_workers=2)
    list(b2)
    del b2
    gc.collect()
    assert no_workers_left()


def test_errors_for_bad_arguments(big_folder):
    ds = ImageFolderDataset(big_folder.train, big_folder.classes, channels=3, size=None)
    with pytest.raises(KdlensError, match="batch_size"):
        LoaderBatches(ds, 0)
    with pytest.raises(KdlensError, match="num_workers"):
        LoaderBatches(ds, 4, num_workers=-1)
    with pytest.raises(KdlensError, match="out of range"):
        LoaderBatches(ds, 4, indices=[len(ds)])
    with pytest.raises(KdlensError, match="map-style"):
        LoaderBatches(iter([]), 4)


# --- in memory, statistics ----------------------------------------------------------------


def test_in_memory_load_equals_streamed_items(big_folder):
    train = load_image_folder_in_memory(big_folder, "train", channels=3, size=None)
    ds = ImageFolderDataset(big_folder.train, big_folder.classes, channels=3, size=None)
    assert train.name == f"folder:{big_folder.root}" and train.split == "train"
    assert train.classes == ["a", "b", "c"] and train.image_shape == ds.image_shape
    streamed = torch.stack([ds[i][0] for i in range(len(ds))])
    assert torch.equal(train.images, streamed) and torch.equal(train.labels, ds.labels)
    exact = streamed.double().div(255)
    assert np.allclose(train.mean, exact.mean((0, 2, 3)).tolist())
    assert np.allclose(train.std, exact.permute(1, 0, 2, 3).reshape(3, -1).std(1, unbiased=False).tolist())
    est_mean, est_std = estimate_mean_std(ds, n=10_000)  # n ≥ len: the exact figures
    assert np.allclose(est_mean, train.mean) and np.allclose(est_std, train.std)
    test = load_image_folder_in_memory(big_folder, "val", 3, (6, 6), mean=train.mean, std=train.std)
    assert test.split == "test" and test.image_shape == (3, 6, 6) and len(test) == 6 and test.mean == train.mean


def test_in_memory_load_skips_bad_images(tmp_path):
    layout = bad_folder(tmp_path)
    data = load_image_folder_in_memory(layout, "train", 3, None, "skip", num_workers=2)
    assert len(data) == len(layout.train) - 2
    assert data.labels.tolist() == [y for k, (_, y) in enumerate(layout.train) if k not in (1, 6)]
    assert no_workers_left()


def test_main_threads_are_lowered_during_an_epoch_and_restored(big_folder):
    ds = ImageFolderDataset(big_folder.train, big_folder.classes, channels=3, size=None)
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        with LoaderBatches(ds, 8, num_workers=2, main_threads=1) as b:
            during = [torch.get_num_threads() for _ in b]
        assert set(during) == {1} and torch.get_num_threads() == 3
        with LoaderBatches(ds, 8, num_workers=2, main_threads=None) as b:
            assert {torch.get_num_threads() for _ in b} == {3}
        with LoaderBatches(ds, 8, num_workers=0) as b:  # no workers: nothing to share the cores with
            assert {torch.get_num_threads() for _ in b} == {3}
        with LoaderBatches(ds, 8, num_workers=2) as b:  # auto: cores − workers, at least 1
            next(iter(b))
            assert torch.get_num_threads() == 3  # the stopped epoch gave the threads back
        with pytest.raises(KdlensError, match="main_threads"):
            LoaderBatches(ds, 8, main_threads=0)
    finally:
        torch.set_num_threads(before)
    assert no_workers_left()
