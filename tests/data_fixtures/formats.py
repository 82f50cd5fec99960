"""Write tiny MNIST-style IDX files and CIFAR-style pickled batches.

The layouts follow the original distributions (and torchvision's folders):
``ROOT/FashionMNIST/raw/train-images-idx3-ubyte[.gz]`` …, ``ROOT/cifar-10-batches-py/
data_batch_1..5, test_batch, batches.meta`` and ``ROOT/cifar-100-python/train, test,
meta``, with the real dictionary keys.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from kdlens.data.idx_format import write_idx

IDX_NAMES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def fake_images(n: int, shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)


def write_mnist_folder(
    folder: Path, n_train: int = 30, n_test: int = 20, gz: bool = True, size: int = 28, seed: int = 0
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """IDX files for both splits in ``folder``; returns {split: (images, labels)}."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = fake_images(n, (size, size), seed + (split == "test"))
        labels = (np.arange(n) % 10).astype(np.uint8)
        img_name, lab_name = IDX_NAMES[split]
        suffix = ".gz" if gz else ""
        write_idx(folder / (img_name + suffix), images)
        write_idx(folder / (lab_name + suffix), labels)
        out[split] = (images, labels)
    return out


def _dump(path: Path, obj: object) -> None:
    path.write_bytes(pickle.dumps(obj, protocol=2))


def write_cifar10(root: Path, per_batch: int = 6, n_test: int = 8, seed: int = 0) -> dict[str, tuple[np.ndarray, list[int]]]:
    """``root/cifar-10-batches-py`` with 5 training batches of ``per_batch`` images."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    _dump(folder / "batches.meta", {"label_names": names, "num_cases_per_batch": per_batch, "num_vis": 3072})
    train_data, train_labels = [], []
    for b in range(1, 6):
        data = fake_images(per_batch, (3072,), seed + b)
        labels = [int(v) for v in (np.arange(per_batch) + b) % 10]
        _dump(folder / f"data_batch_{b}", {
            "batch_label": f"training batch {b} of 5", "labels": labels, "data": data,
            "filenames": [f"img_{b}_{i}.png" for i in range(per_batch)],
        })  # fmt: skip
        train_data.append(data)
        train_labels += labels
    test = fake_images(n_test, (3072,), seed + 10)
    test_labels = [int(v) for v in np.arange(n_test) % 10]
    _dump(folder / "test_batch", {"batch_label": "testing batch 1 of 1", "labels": test_labels, "data": test,
                                  "filenames": [f"t_{i}.png" for i in range(n_test)]})  # fmt: skip
    return {"train": (np.concatenate(train_data), train_labels), "test": (test, test_labels)}


def write_cifar100(root: Path, n_train: int = 25, n_test: int = 10, seed: int = 0) -> dict[str, dict[str, object]]:
    """``root/cifar-100-python`` with ``train``, ``test`` and ``meta``."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    fine_names = [f"fine_{i}" for i in range(100)]
    coarse_names = [f"coarse_{i}" for i in range(20)]
    # the real meta file holds Python-2 str, i.e. bytes after a bytes-decoding load
    _dump(folder / "meta", {"fine_label_names": [n.encode() for n in fine_names],
                            "coarse_label_names": coarse_names})  # fmt: skip
    out = {"names": {"fine": fine_names, "coarse": coarse_names}}
    for split, n in (("train", n_train), ("test", n_test)):
        fine = [int(v) for v in (np.arange(n) * 7) % 100]
        coarse = [f // 5 for f in fine]
        data = fake_images(n, (3072,), seed + (split == "test"))
        _dump(folder / split, {"filenames": [f"{split}_{i}.png" for i in range(n)], "batch_label": split,
                               "fine_labels": fine, "coarse_labels": coarse, "data": data})  # fmt: skip
        out[split] = {"data": data, "fine": fine, "coarse": coarse}
    return out
