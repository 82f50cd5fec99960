"""IDX and CIFAR file formats: reading, validation, and the restricted unpickler."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from data_fixtures.formats import write_cifar10, write_cifar100, write_mnist_folder  # noqa: E402

from kdlens.data import load_dataset  # noqa: E402
from kdlens.data.cifar_format import UnsafePickleError, load_restricted_pickle  # noqa: E402
from kdlens.data.idx_format import IdxFormatError, encode_idx, parse_idx, read_idx, write_idx  # noqa: E402
from kdlens.errors import KdlensError  # noqa: E402

# ---------------------------------------------------------------- IDX


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_roundtrip(tmp_path, dtype, suffix):
    arr = (np.arange(2 * 3 * 4) - 5).astype(dtype).reshape(2, 3, 4)
    path = write_idx(tmp_path / f"x-idx3-ubyte{suffix}", arr)
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.shape == (2, 3, 4)
    np.testing.assert_array_equal(back, arr)
    assert back.flags.writeable


def test_idx_header_matches_published_magic_numbers():
    # LeCun's page: image files start with 2051 (0x00000803), label files with 2049 (0x00000801)
    images = encode_idx(np.zeros((2, 28, 28), np.uint8))
    labels = encode_idx(np.zeros(2, np.uint8))
    assert struct.unpack(">IIII", images[:16]) == (2051, 2, 28, 28)
    assert struct.unpack(">II", labels[:8]) == (2049, 2)


def test_idx_multibyte_is_big_endian():
    data = encode_idx(np.array([1, 256], dtype=np.int32))
    assert data[8:] == b"\x00\x00\x00\x01\x00\x00\x01\x00"


@pytest.mark.parametrize(
    "data, message",
    [
        (b"\x00\x00", "only 2 bytes"),
        (b"\x12\x34\x08\x01\x00\x00\x00\x01\x00", "magic number"),
        (b"\x00\x00\x07\x01\x00\x00\x00\x01\x00", "magic number"),  # unknown type code
        (b"\x00\x00\x08\x00", "magic number"),  # zero dimensions
        (b"\x00\x00\x08\x03\x00\x00\x00\x02", "truncated IDX header"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x03\x01\x02", "truncated"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x01\x01\x02", "trailing bytes"),
    ],
)
def test_idx_corrupt_bytes_are_kdlens_errors(data, message):
    with pytest.raises(IdxFormatError, match=message):
        parse_idx(data, source="fake-file")


def test_truncated_gz_file_names_the_file(tmp_path):
    good = gzip.compress(encode_idx(np.ones((50, 28, 28), np.uint8)))
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(KdlensError, match="train-images-idx3-ubyte.gz.*(gzip|truncated)"):
        read_idx(path)


def test_gz_of_truncated_idx_names_the_file(tmp_path):
    raw = encode_idx(np.ones((50, 28, 28), np.uint8))
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(raw[:-100]))
    with pytest.raises(IdxFormatError, match=r"t10k-images-idx3-ubyte.gz: truncated: .*39200 data bytes, file has 39100"):
        read_idx(path)


def test_garbage_file_and_missing_file(tmp_path):
    path = tmp_path / "junk"
    path.write_bytes(b"\x1f\x8bnot really gzip at all")
    with pytest.raises(IdxFormatError, match="junk"):
        read_idx(path)
    with pytest.raises(IdxFormatError, match="cannot read"):
        read_idx(tmp_path / "absent")


def test_idx_rejects_unstorable_dtype():
    with pytest.raises(KdlensError, match="dtype"):
        encode_idx(np.zeros(3, np.int64))


# ---------------------------------------------------------------- IDX datasets


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_from_torchvision_root(tmp_path, gz):
    written = write_mnist_folder(tmp_path / "FashionMNIST" / "raw", gz=gz)
    for split in ("train", "test"):
        ds = load_dataset("fashion-mnist", split=split, root=tmp_path)
        images, labels = written[split]
        assert ds.images.dtype == torch.uint8 and ds.images.shape == (len(images), 1, 28, 28)
        np.testing.assert_array_equal(ds.images[:, 0].numpy(), images)
        np.testing.assert_array_equal(ds.labels.numpy(), labels)
        assert ds.labels.dtype == torch.int64
        assert ds.classes[0] == "T-shirt/top" and ds.classes[9] == "Ankle boot"
        assert ds.split == split and ds.mean == (0.2860,)


def test_mnist_from_flat_folder(tmp_path):
    written = write_mnist_folder(tmp_path, n_train=12, n_test=7, gz=False)
    ds = load_dataset("mnist", split="test", root=tmp_path)
    assert len(ds) == 7 and ds.classes == [str(d) for d in range(10)]
    np.testing.assert_array_equal(ds.images[:, 0].numpy(), written["test"][0])


def test_mismatched_image_and_label_counts(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    write_mnist_folder(raw, n_train=12)
    write_idx(raw / "train-labels-idx1-ubyte.gz", np.zeros(11, np.uint8))
    with pytest.raises(IdxFormatError, match="11 labels but train-images-idx3-ubyte.gz has 12 images"):
        load_dataset("mnist", root=tmp_path)


def test_labels_out_of_range(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    write_mnist_folder(raw, n_train=12)
    write_idx(raw / "train-labels-idx1-ubyte.gz", np.full(12, 10, np.uint8))
    with pytest.raises(IdxFormatError, match="label 10 outside 0..9"):
        load_dataset("mnist", root=tmp_path)


def test_corrupt_dataset_file_is_kdlens_error(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    write_mnist_folder(raw)
    path = raw / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(KdlensError, match=str(path)):
        load_dataset("fashion-mnist", root=tmp_path)


# ---------------------------------------------------------------- CIFAR


def test_cifar10_from_root(tmp_path):
    written = write_cifar10(tmp_path)
    train = load_dataset("cifar10", root=tmp_path)
    assert train.images.shape == (30, 3, 32, 32) and train.images.dtype == torch.uint8
    data, labels = written["train"]
    np.testing.assert_array_equal(train.images.reshape(30, -1).numpy(), data)
    # channel planes: the first 1024 values are red, row-major
    np.testing.assert_array_equal(train.images[3, 0, 1].numpy(), data[3, 32:64])
    np.testing.assert_array_equal(train.images[3, 2, 0].numpy(), data[3, 2048:2080])
    assert train.labels.tolist() == labels and train.classes[1] == "automobile"
    assert train.coarse_labels is None and train.mean == (0.4914, 0.4822, 0.4465)
    test = load_dataset("cifar10", split="test", root=tmp_path)
    assert len(test) == 8 and test.labels.tolist() == written["test"][1]


def test_cifar100_fine_and_coarse(tmp_path):
    written = write_cifar100(tmp_path)
    for split in ("train", "test"):
        ds = load_dataset("cifar100", split=split, root=tmp_path)
        assert ds.labels.tolist() == written[split]["fine"]
        assert ds.coarse_labels.tolist() == written[split]["coarse"]
        assert ds.num_classes == 100 and ds.num_coarse_classes == 20
        assert ds.classes[7] == "fine_7" and ds.coarse_classes[3] == "coarse_3"
        np.testing.assert_array_equal(ds.images.reshape(len(ds), -1).numpy(), written[split]["data"])
    sub = ds.subset([1, 0])
    assert sub.coarse_labels.tolist() == written["test"]["coarse"][1::-1]


def test_cifar_bytes_keys_as_in_python2_pickles(tmp_path):
    write_cifar10(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "test_batch"
    labels = [i % 10 for i in range(4)]
    data = np.zeros((4, 3072), np.uint8)
    batch.write_bytes(pickle.dumps({b"data": data, b"labels": labels}, protocol=2))
    ds = load_dataset("cifar10", split="test", root=tmp_path)
    assert ds.labels.tolist() == labels


def test_cifar_wrong_shapes_and_keys(tmp_path):
    write_cifar10(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "test_batch"
    batch.write_bytes(pickle.dumps({"data": np.zeros((4, 100), np.uint8), "labels": [0] * 4}, protocol=2))
    with pytest.raises(KdlensError, match=r"test_batch: 'data' must be uint8 N×3072"):
        load_dataset("cifar10", split="test", root=tmp_path)
    batch.write_bytes(pickle.dumps({"data": np.zeros((4, 3072), np.uint8), "fine_labels": [0] * 4}, protocol=2))
    with pytest.raises(KdlensError, match=r"missing key 'labels' \(found keys: data, fine_labels\)"):
        load_dataset("cifar10", split="test", root=tmp_path)
    batch.write_bytes(pickle.dumps({"data": np.zeros((4, 3072), np.uint8), "labels": [0, 1, 2]}, protocol=2))
    with pytest.raises(KdlensError, match="'labels' must hold 4 integers"):
        load_dataset("cifar10", split="test", root=tmp_path)
    batch.write_bytes(pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 12]}, protocol=2))
    with pytest.raises(KdlensError, match=r"labels must lie in 0..9"):
        load_dataset("cifar10", split="test", root=tmp_path)
    batch.write_bytes(b"\x80\x02garbage")
    with pytest.raises(KdlensError, match="test_batch: not a readable pickle"):
        load_dataset("cifar10", split="test", root=tmp_path)


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_malicious_pickle_is_refused(tmp_path, protocol):
    marker = tmp_path / "pwned"
    write_cifar10(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    payload = {"data": np.zeros((1, 3072), np.uint8), "labels": [0], "x": _Exploit(marker)}
    batch.write_bytes(pickle.dumps(payload, protocol=protocol))
    with pytest.raises(UnsafePickleError, match=r"data_batch_1: refusing to load global (posix|os|nt)\.system"):
        load_dataset("cifar10", root=tmp_path)
    assert not marker.exists()


def test_restricted_unpickler_refuses_builtins_eval_and_odd_codecs(tmp_path):
    path = tmp_path / "evil"
    # GLOBAL builtins.eval, then call it: "cbuiltins\neval\n(S'1+1'\ntR."
    path.write_bytes(b"cbuiltins\neval\n(S'1+1'\ntR.")
    with pytest.raises(UnsafePickleError, match="builtins.eval"):
        load_restricted_pickle(path)
    # _codecs.encode is allowed only for the text codecs pickle itself uses
    path.write_bytes(b"c_codecs\nencode\n(X\x02\x00\x00\x00abX\x0a\x00\x00\x00zlib_codecq\x00tR.")
    with pytest.raises(KdlensError, match="codec"):
        load_restricted_pickle(path)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_restricted_unpickler_loads_numpy_pickles(tmp_path, protocol):
    obj = {"a": np.arange(12, dtype=np.uint8).reshape(3, 4), "b": np.float32(2.5), "c": [1, "x", b"y"],
           "d": np.array([1.5, -2.0], dtype=">f8")}  # fmt: skip
    path = tmp_path / "ok"
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    back = load_restricted_pickle(path)
    np.testing.assert_array_equal(back["a"], obj["a"])
    np.testing.assert_array_equal(back["d"], obj["d"])
    assert back["b"] == 2.5 and back["c"] == [1, "x", b"y"]


def test_python2_style_numpy_global_is_accepted(tmp_path):
    # Python-2 era CIFAR files name numpy.core.multiarray._reconstruct
    data = pickle.dumps(np.arange(3, dtype=np.uint8), protocol=2)
    data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    path = tmp_path / "old"
    path.write_bytes(data)
    np.testing.assert_array_equal(load_restricted_pickle(path), np.arange(3))
