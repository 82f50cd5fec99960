"""load_dataset: the registry, every source, "how to get it" errors, the real Fashion-MNIST."""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from data_fixtures.formats import write_cifar10, write_cifar100, write_mnist_folder  # noqa: E402

import kdlens.data.sources.mnist_idx as mnist_idx  # noqa: E402
from kdlens.data import (  # noqa: E402
    Dataset,
    dataset_normalization,
    dataset_source,
    list_datasets,
    load_dataset,
)
from kdlens.data.catalog import DATA_ROOT_ENV  # noqa: E402
from kdlens.errors import DatasetNotFoundError, KdlensError  # noqa: E402

REAL_FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture
def no_system_data(tmp_path, monkeypatch):
    """No Debian files and an empty default root."""
    monkeypatch.setattr(mnist_idx, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "no-debian")
    monkeypatch.setenv(DATA_ROOT_ENV, str(tmp_path / "default-root"))
    return tmp_path


# ---------------------------------------------------------------- registry & Dataset


def test_list_datasets():
    assert list_datasets() == ["cifar10", "cifar100", "digits", "fashion-mnist", "mnist", "mnist1d", "synthetic"]


def test_unknown_name_split_and_option():
    with pytest.raises(KdlensError, match="unknown dataset 'fashion_mnist'. Did you mean: fashion-mnist"):
        load_dataset("fashion_mnist")
    with pytest.raises(KdlensError, match="unknown split 'val'.*train, test"):
        load_dataset("digits", split="val")
    with pytest.raises(KdlensError, match="'digits' does not take option.*size.*it takes none"):
        load_dataset("digits", size=3)
    with pytest.raises(KdlensError, match="does not take option.*colour.*allowed: n, n_test, num_classes"):
        load_dataset("synthetic", colour=3)


def test_normalisation_constants():
    assert dataset_normalization("fashion-mnist") == ((0.2860,), (0.3530,))
    assert dataset_normalization("mnist") == ((0.1307,), (0.3081,))
    assert dataset_normalization("cifar10") == ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
    assert len(dataset_normalization("cifar100")[0]) == 3
    with pytest.raises(KdlensError, match="no fixed normalisation"):
        dataset_normalization("synthetic")
    assert dataset_source("fashion-mnist").needs_files and not dataset_source("digits").needs_files


def test_dataset_validation_and_subset():
    images = torch.arange(5 * 4, dtype=torch.uint8).reshape(5, 1, 2, 2)
    ds = Dataset("toy", images, torch.tensor([0, 1, 2, 1, 0]), ["a", "b", "c"])
    assert len(ds) == 5 and ds.num_classes == 3 and ds.image_shape == (1, 2, 2)
    sub = ds.subset(np.array([4, 1]))
    assert sub.labels.tolist() == [0, 1] and torch.equal(sub.images[0], images[4])
    assert ds.class_counts().tolist() == [2, 2, 1]
    assert "n=5" in repr(ds)
    with pytest.raises(KdlensError, match="out of range: allowed 0..4"):
        ds.subset([5])
    with pytest.raises(KdlensError, match="must be integers"):
        ds.subset(np.array([0.5]))
    with pytest.raises(KdlensError, match=r"labels must lie in 0..1"):
        Dataset("toy", images, torch.tensor([0, 1, 2, 1, 0]), ["a", "b"])
    with pytest.raises(KdlensError, match="N×C×H×W"):
        Dataset("toy", images[:, 0], torch.zeros(5, dtype=torch.int64), ["a"])
    with pytest.raises(KdlensError, match="5 images but 4 labels"):
        Dataset("toy", images, torch.zeros(4, dtype=torch.int64), ["a"])
    with pytest.raises(KdlensError, match="mean has 3 entries for 1 channels"):
        Dataset("toy", images, torch.zeros(5, dtype=torch.int64), ["a"], mean=(0.1, 0.2, 0.3))
    with pytest.raises(KdlensError, match="both coarse_labels and coarse_classes"):
        Dataset("toy", images, torch.zeros(5, dtype=torch.int64), ["a"], coarse_labels=torch.zeros(5, dtype=torch.int64))


# ---------------------------------------------------------------- digits, synthetic, mnist1d


def test_digits_split():
    train, test = load_dataset("digits"), load_dataset("digits", split="test")
    assert (len(train), len(test)) == (1437, 360)
    assert train.images.shape[1:] == (1, 8, 8) and train.images.dtype == torch.uint8
    assert int(train.images.max()) == 255 and int(train.images.min()) == 0
    # stratified: every class keeps ~20% in test
    counts = test.class_counts()
    assert counts.sum() == 360 and int(counts.min()) >= 35 and int(counts.max()) <= 37
    # deterministic and matches sklearn's data
    from sklearn.datasets import load_digits

    bunch = load_digits()
    all_images = np.round(bunch.images * 255 / 16).astype(np.uint8)
    train_set = {a.tobytes() for a in train.images[:, 0].numpy()}
    assert sum(a.tobytes() in train_set for a in all_images) >= 1437
    again = load_dataset("digits")
    assert torch.equal(again.images, train.images) and torch.equal(again.labels, train.labels)
    # the published constants are the training split's statistics
    pixels = train.images.double() / 255
    assert abs(pixels.mean().item() - train.mean[0]) < 5e-4
    assert abs(pixels.std(correction=0).item() - train.std[0]) < 5e-4


def test_synthetic_is_deterministic_and_learnable():
    a = load_dataset("synthetic", n=400, num_classes=4, channels=3, size=12, seed=3)
    b = load_dataset("synthetic", n=400, num_classes=4, channels=3, size=12, seed=3)
    c = load_dataset("synthetic", n=400, num_classes=4, channels=3, size=12, seed=4)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, c.images)
    assert a.images.shape == (400, 3, 12, 12) and a.class_counts().tolist() == [100] * 4
    test = load_dataset("synthetic", split="test", n=400, n_test=200, num_classes=4, channels=3, size=12, seed=3)
    assert len(test) == 200
    assert not torch.equal(test.images[:10], a.images[:10]) and test.mean == a.mean
    # nearest class mean from train classifies test well: the classes are distinguishable
    x_train, x_test = a.images.flatten(1).float(), test.images.flatten(1).float()
    centroids = torch.stack([x_train[a.labels == k].mean(0) for k in range(4)])
    pred = torch.cdist(x_test, centroids).argmin(1)
    assert (pred == test.labels).float().mean() > 0.95
    pixels = a.images.transpose(0, 1).reshape(3, -1).double() / 255
    np.testing.assert_allclose(a.mean, pixels.mean(1).numpy(), atol=1e-5)


def test_synthetic_coarse_labels_and_bad_options():
    ds = load_dataset("synthetic", n=60, num_classes=6, num_coarse=2)
    assert ds.coarse_labels.tolist() == (ds.labels // 3).tolist() and ds.coarse_classes == ["group_0", "group_1"]
    with pytest.raises(KdlensError, match="num_classes must be an integer in 2.."):
        load_dataset("synthetic", num_classes=1)
    with pytest.raises(KdlensError, match="size must be an integer"):
        load_dataset("synthetic", size=2.5)


def test_mnist1d_generated_offline_without_touching_global_rng():
    pytest.importorskip("mnist1d")
    random.seed(123)
    np.random.seed(123)
    expected_py, expected_np = random.random(), np.random.random()
    random.seed(123)
    np.random.seed(123)
    train = load_dataset("mnist1d")
    assert (random.random(), np.random.random()) == (expected_py, expected_np)
    test = load_dataset("mnist1d", split="test")
    assert (len(train), len(test)) == (4000, 1000)
    assert train.images.shape == (4000, 1, 1, 40) and train.images.dtype == torch.float32
    assert train.labels.dtype == torch.int64 and set(train.labels.tolist()) == set(range(10))
    both = torch.cat([train.images, test.images]).double()
    assert abs(both.mean().item()) < 1e-5 and abs(both.std(correction=0).item() - 1) < 1e-5
    assert train.mean == (0.0,) and train.std == (1.0,)


# ---------------------------------------------------------------- missing files, download


def test_missing_fashion_mnist_says_how_to_get_it(no_system_data):
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("fashion-mnist")
    msg = str(info.value)
    assert "apt-get install dataset-fashion-mnist" in msg
    assert "download=True" in msg and "root=PATH" in msg
    assert str(no_system_data / "no-debian") in msg
    assert str(no_system_data / "default-root" / "FashionMNIST" / "raw") in msg
    assert "train-images-idx3-ubyte[.gz]" in msg
    assert isinstance(info.value, KdlensError)


def test_missing_with_explicit_root(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=str(tmp_path / "MNIST" / "raw")) as info:
        load_dataset("mnist", split="test", root=tmp_path)
    assert "t10k-images-idx3-ubyte" in str(info.value) and "apt-get" not in str(info.value)
    with pytest.raises(DatasetNotFoundError, match="cifar-100-python/meta") as info:
        load_dataset("cifar100", root=tmp_path)
    assert "download=True" in str(info.value) and str(tmp_path / "cifar-100-python") in str(info.value)


def test_only_one_of_the_two_idx_files(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    write_mnist_folder(raw)
    (raw / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetNotFoundError, match="train-labels-idx1-ubyte"):
        load_dataset("fashion-mnist", root=tmp_path)


def test_default_root_from_environment(no_system_data):
    write_mnist_folder(no_system_data / "default-root" / "FashionMNIST" / "raw", n_train=5, n_test=3)
    assert len(load_dataset("fashion-mnist", split="test")) == 3


def test_debian_location_is_searched_first(no_system_data, monkeypatch):
    debian = no_system_data / "debian"
    write_mnist_folder(debian, n_train=9, n_test=4)
    monkeypatch.setattr(mnist_idx, "DEBIAN_FASHION_MNIST_DIR", debian)
    assert len(load_dataset("fashion-mnist")) == 9


def test_download_goes_through_torchvision(tmp_path, monkeypatch):
    import torchvision.datasets

    calls = []

    class FakeFashionMNIST:
        def __init__(self, root, train=True, download=False):
            calls.append((root, train, download))
            write_mnist_folder(Path(root) / "FashionMNIST" / "raw", n_train=7, n_test=3, gz=False)

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", FakeFashionMNIST)
    monkeypatch.setattr(mnist_idx, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "no-debian")
    ds = load_dataset("fashion-mnist", split="test", root=tmp_path / "r", download=True)
    assert len(ds) == 3 and calls == [(str(tmp_path / "r"), False, True)]
    load_dataset("fashion-mnist", split="test", root=tmp_path / "r", download=True)
    assert len(calls) == 1  # present now: no second download


def test_failed_download_is_dataset_not_found(tmp_path, monkeypatch):
    import torchvision.datasets

    class Offline:
        def __init__(self, root, train=True, download=False):
            raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setattr(torchvision.datasets, "MNIST", Offline)
    with pytest.raises(DatasetNotFoundError, match="download through torchvision failed.*RuntimeError"):
        load_dataset("mnist", root=tmp_path, download=True)


def test_cifar_download_uses_torchvision_archive(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tv_utils

    calls = []

    def fake_download(url, download_root, filename=None, md5=None, **kwargs):
        calls.append((url, filename, md5))
        write_cifar100(Path(download_root))

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", fake_download)
    ds = load_dataset("cifar100", split="test", root=tmp_path, download=True)
    assert len(ds) == 10 and calls[0][0].endswith("cifar-100-python.tar.gz") and calls[0][2]


def test_cifar10_root_layout(tmp_path):
    write_cifar10(tmp_path / "data")
    assert len(load_dataset("cifar10", root=str(tmp_path / "data"))) == 30


# ---------------------------------------------------------------- the real Fashion-MNIST


@pytest.mark.realdata
def test_real_debian_fashion_mnist():
    files = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]  # fmt: skip
    missing = [f for f in files if not (REAL_FASHION / f).is_file()]
    if missing:
        reason = f"Debian Fashion-MNIST absent ({', '.join(missing)} not in {REAL_FASHION}); apt-get install dataset-fashion-mnist"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI=true but " + reason)
        pytest.skip(reason)
    train = load_dataset("fashion-mnist")
    test = load_dataset("fashion-mnist", split="test")
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert train.class_counts().tolist() == [6000] * 10 and test.class_counts().tolist() == [1000] * 10
    pixels = train.images.double() / 255
    assert abs(pixels.mean().item() - train.mean[0]) < 1e-4
    assert abs(pixels.std(correction=0).item() - train.std[0]) < 1e-4
    # the documented first labels of the original files: 9 (Ankle boot), 0, 0, 3, 0 / test 9, 2, 1, 1, 6
    assert train.labels[:5].tolist() == [9, 0, 0, 3, 0] and test.labels[:5].tolist() == [9, 2, 1, 1, 6]


def test_subset_of_channels_last_images_and_to():
    ds = load_dataset("synthetic", n=12, channels=3, size=4)
    cl = Dataset(ds.name, ds.images.contiguous(memory_format=torch.channels_last), ds.labels, ds.classes)
    assert torch.equal(cl.subset([5, 2]).images, ds.images[[5, 2]])
    assert ds.to("cpu").images.device.type == "cpu"


def test_importing_the_data_layer_stays_light():
    import subprocess

    code = (
        "import sys, kdlens.data; "
        "heavy = [m for m in ('sklearn', 'torchvision', 'mnist1d') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
