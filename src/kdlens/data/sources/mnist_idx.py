"""MNIST and Fashion-MNIST from IDX files.

Where the files are looked for, in order:

* ``root=None``, Fashion-MNIST only: the Debian package ``dataset-fashion-mnist``
  (:data:`DEBIAN_FASHION_MNIST_DIR`, ``train-images-idx3-ubyte.gz`` … gz files);
* torchvision's layout ``ROOT/FashionMNIST/raw/`` or ``ROOT/MNIST/raw/`` (plain or
  ``.gz``), and ``ROOT`` itself holding the IDX files, where ``ROOT`` is ``root`` or
  (``root=None``) :func:`~kdlens.data.catalog.default_data_root`;
* ``download=True``: ``torchvision.datasets.FashionMNIST(ROOT, download=True)``
  (resp. ``MNIST``) fetches them into ``ROOT/<Name>/raw/``, then they are read here.

Sizes: 60,000 train / 10,000 test grey 28×28 images, 10 classes.  Class names:
Fashion-MNIST's README (Xiao, Rasul & Vollgraf 2017, https://github.com/zalandoresearch/fashion-mnist);
MNIST digits ``"0"``…``"9"``.

Normalisation (training split, pixels / 255): Fashion-MNIST mean 0.2860, std 0.3530
(computed here from the Debian files: 0.28604, 0.35302); MNIST mean 0.1307,
std 0.3081 (the values used in PyTorch's ``examples/mnist``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from kdlens.data.catalog import Loader, default_data_root, register_dataset
from kdlens.data.dataset import Dataset
from kdlens.data.idx_format import IdxFormatError, read_idx
from kdlens.data.sources.files import first_existing, not_found, search_roots

#: Where ``apt-get install dataset-fashion-mnist`` puts the gzipped IDX files.
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
MNIST_CLASSES = [str(d) for d in range(10)]

_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclass(frozen=True)
class IdxDatasetSpec:
    """What differs between the IDX datasets."""

    name: str
    description: str  # one line for ``kdlens data list``
    torchvision_class: str  # also the folder name torchvision uses under root
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    apt_package: str | None = None


def _candidate_dirs(spec: IdxDatasetSpec, root: Path | None, system_dirs: tuple[Path, ...]) -> list[Path]:
    dirs: list[Path] = list(system_dirs) if root is None else []
    for base in search_roots(root):
        dirs += [base / spec.torchvision_class / "raw", base]
    return dirs


def _find_split_files(split: str, dirs: list[Path]) -> tuple[Path, Path] | None:
    """(images, labels) paths from the first folder that has both, else None."""
    for folder in dirs:
        images, labels = (first_existing(folder, (name, name + ".gz")) for name in _FILES[split])
        if images is not None and labels is not None:
            return images, labels
    return None


def _download(spec: IdxDatasetSpec, root: Path, split: str) -> None:
    import torchvision.datasets  # noqa: PLC0415 - heavy, only when downloading

    cls = getattr(torchvision.datasets, spec.torchvision_class)
    try:
        cls(str(root), train=(split == "train"), download=True)
    except Exception as exc:  # network errors come in many types
        raise not_found(
            spec.name,
            list(_FILES[split]),
            [root / spec.torchvision_class / "raw"],
            [
                f"download through torchvision failed ({type(exc).__name__}: {exc}); "
                "check the network, or put the files there by hand"
            ],
        ) from exc


def load_idx_split(
    spec: IdxDatasetSpec,
    split: str,
    root: Path | None,
    download: bool,
    system_dirs: tuple[Path, ...] = (),
) -> Dataset:
    """Find (or download), read and validate one split's two IDX files."""
    dirs = _candidate_dirs(spec, root, system_dirs)
    paths = _find_split_files(split, dirs)
    if paths is None and download:
        target = root if root is not None else default_data_root()
        _download(spec, target, split)
        paths = _find_split_files(split, [target / spec.torchvision_class / "raw"])
    if paths is None:
        missing = [n + "[.gz]" for n in _FILES[split]]
        raise not_found(spec.name, missing, dirs, _ways(spec, system_dirs))
    image_path, label_path = paths
    images = read_idx(image_path)
    labels = read_idx(label_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise IdxFormatError(f"{image_path}: expected uint8 images N×H×W, got {images.dtype} {images.shape}")
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise IdxFormatError(f"{label_path}: expected uint8 labels N, got {labels.dtype} {labels.shape}")
    if labels.shape[0] != images.shape[0]:
        raise IdxFormatError(
            f"{label_path}: {labels.shape[0]} labels but {image_path.name} has {images.shape[0]} images"
        )
    if labels.size and int(labels.max()) >= len(spec.classes):
        raise IdxFormatError(f"{label_path}: label {int(labels.max())} outside 0..{len(spec.classes) - 1}")
    return Dataset(
        name=spec.name,
        images=torch.from_numpy(images).unsqueeze(1),
        labels=torch.from_numpy(labels.astype(np.int64)),
        classes=list(spec.classes),
        mean=spec.mean,
        std=spec.std,
        split=split,
    )


def _ways(spec: IdxDatasetSpec, system_dirs: tuple[Path, ...]) -> list[str]:
    tv = spec.torchvision_class
    ways = []
    if spec.apt_package:
        where = ", ".join(str(d) for d in system_dirs)
        ways.append(f"sudo apt-get install {spec.apt_package}   (installs the .gz files into {where})")
    ways += [
        f"load_dataset({spec.name!r}, download=True) (CLI: --download) to fetch them through "
        f"torchvision into ROOT/{tv}/raw/ (ROOT = root, default {default_data_root()}; needs internet)",
        f"root=PATH where PATH/{tv}/raw/ (or PATH itself) holds train-images-idx3-ubyte, "
        "train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (plain or .gz)",
    ]
    return ways


FASHION_MNIST = IdxDatasetSpec(
    name="fashion-mnist",
    description="Fashion-MNIST: 60,000/10,000 grey 28×28 clothing images, 10 classes (IDX files)",
    torchvision_class="FashionMNIST",
    classes=FASHION_MNIST_CLASSES,
    mean=(0.2860,),
    std=(0.3530,),
    apt_package="dataset-fashion-mnist",
)
MNIST = IdxDatasetSpec(name="mnist", torchvision_class="MNIST", classes=MNIST_CLASSES, mean=(0.1307,), std=(0.3081,),
                       description="MNIST: 60,000/10,000 grey 28×28 handwritten digits (IDX files via torchvision)")


def _register(spec: IdxDatasetSpec) -> Loader:
    """Registers ``spec`` as a dataset read by :func:`load_idx_split`; returns its loader."""

    def load(split: str, root: Path | None, download: bool) -> Dataset:
        # the Debian folder is read at call time so it can be redirected (tests)
        system_dirs = (DEBIAN_FASHION_MNIST_DIR,) if spec is FASHION_MNIST else ()
        return load_idx_split(spec, split, root, download, system_dirs=system_dirs)

    return register_dataset(spec.name, mean=spec.mean, std=spec.std, description=spec.description,
                            needs_files=True)(load)


load_fashion_mnist = _register(FASHION_MNIST)
load_mnist = _register(MNIST)
