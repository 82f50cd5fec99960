"""CIFAR-10 and CIFAR-100 from the "python version" files (torchvision's layout).

``ROOT/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}`` and
``ROOT/cifar-100-python/{train, test, meta}``, where ``ROOT`` is ``root`` or
:func:`~kdlens.data.catalog.default_data_root`.  ``download=True`` fetches and unpacks
the official archive with ``torchvision.datasets.utils.download_and_extract_archive``
(URL and MD5 from ``torchvision.datasets.CIFAR10`` / ``CIFAR100``), then the files are
read here with the restricted unpickler of :mod:`kdlens.data.cifar_format`.

50,000 train / 10,000 test RGB 32×32 images.  CIFAR-100 also carries its 20 coarse
labels (superclasses) and their names from ``meta``.

Normalisation (training split, pixels / 255, per channel R, G, B; the standard
deviation is over all pixels of the split, not an average of per-image values):
CIFAR-10 mean (0.4914, 0.4822, 0.4465), std (0.2470, 0.2435, 0.2616) (as computed in
Stevens, Antiga & Viehmann, *Deep Learning with PyTorch*, 2020, ch. 7);
CIFAR-100 mean (0.5071, 0.4865, 0.4409), std (0.2673, 0.2564, 0.2762) (the same
computation on CIFAR-100's training split).  KD code bases often use the rounded
variants (0.5071, 0.4867, 0.4408) / (0.2675, 0.2565, 0.2761) for CIFAR-100 (e.g.
Tian et al.'s RepDistiller); the difference is < 0.001.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from kdlens.data.catalog import Loader, default_data_root, register_dataset
from kdlens.data.cifar_format import CifarFormatError, read_cifar_batch, read_label_names
from kdlens.data.dataset import Dataset
from kdlens.data.sources.files import not_found, search_roots


@dataclass(frozen=True)
class CifarSpec:
    """What differs between CIFAR-10 and CIFAR-100."""

    name: str
    description: str  # one line for ``kdlens data list``
    folder: str
    torchvision_class: str
    files: dict[str, tuple[str, ...]]
    meta_file: str
    label_key: str
    names_key: str
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    coarse_key: str | None = None
    coarse_names_key: str | None = None
    num_coarse: int | None = None


CIFAR10 = CifarSpec(
    name="cifar10",
    description="CIFAR-10: 50,000/10,000 RGB 32×32 images, 10 classes (python pickles)",
    folder="cifar-10-batches-py",
    torchvision_class="CIFAR10",
    files={"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)},
    meta_file="batches.meta",
    label_key="labels",
    names_key="label_names",
    num_classes=10,
    mean=(0.4914, 0.4822, 0.4465),
    std=(0.2470, 0.2435, 0.2616),
)
CIFAR100 = CifarSpec(
    name="cifar100",
    description="CIFAR-100: 50,000/10,000 RGB 32×32 images, 100 classes in 20 superclasses",
    folder="cifar-100-python",
    torchvision_class="CIFAR100",
    files={"train": ("train",), "test": ("test",)},
    meta_file="meta",
    label_key="fine_labels",
    names_key="fine_label_names",
    num_classes=100,
    mean=(0.5071, 0.4865, 0.4409),
    std=(0.2673, 0.2564, 0.2762),
    coarse_key="coarse_labels",
    coarse_names_key="coarse_label_names",
    num_coarse=20,
)


def _find_folder(spec: CifarSpec, split: str, root: Path | None) -> tuple[Path | None, list[Path]]:
    searched = [base / spec.folder for base in search_roots(root)]
    for folder in searched:
        if all((folder / f).is_file() for f in (*spec.files[split], spec.meta_file)):
            return folder, searched
    return None, searched


def _download(spec: CifarSpec, root: Path) -> None:
    import torchvision.datasets  # noqa: PLC0415 - heavy, only when downloading
    from torchvision.datasets.utils import download_and_extract_archive  # noqa: PLC0415

    cls = getattr(torchvision.datasets, spec.torchvision_class)
    try:
        download_and_extract_archive(cls.url, str(root), filename=cls.filename, md5=cls.tgz_md5)
    except Exception as exc:  # network errors come in many types
        raise not_found(
            spec.name,
            [spec.folder],
            [root],
            [f"download through torchvision failed ({type(exc).__name__}: {exc}); check the network"],
        ) from exc


def _ways(spec: CifarSpec, split: str) -> list[str]:
    files = ", ".join((*spec.files[split], spec.meta_file))
    return [
        f"load_dataset({spec.name!r}, download=True) (CLI: --download) to fetch the python version "
        f"through torchvision into ROOT/{spec.folder}/ (ROOT = root, default {default_data_root()}; "
        "needs internet)",
        f"root=PATH where PATH/{spec.folder}/ holds {files} "
        "(unpack https://www.cs.toronto.edu/~kriz/cifar.html's python archive into PATH)",
    ]


def _check_range(values: np.ndarray, count: int, what: str, path: Path) -> None:
    if values.size and (values.min() < 0 or values.max() >= count):
        raise CifarFormatError(f"{path}: {what} must lie in 0..{count - 1}, got {values.min()}..{values.max()}")


def load_cifar_split(spec: CifarSpec, split: str, root: Path | None, download: bool) -> Dataset:
    """Find (or download), read and validate one CIFAR split."""
    folder, searched = _find_folder(spec, split, root)
    if folder is None and download:
        target = root if root is not None else default_data_root()
        _download(spec, target)
        folder, searched = _find_folder(spec, split, target)
    if folder is None:
        missing = [f"{spec.folder}/{f}" for f in (*spec.files[split], spec.meta_file)]
        raise not_found(spec.name, missing, searched, _ways(spec, split))

    label_keys = (spec.label_key,) + ((spec.coarse_key,) if spec.coarse_key else ())
    parts = [read_cifar_batch(folder / f, label_keys) for f in spec.files[split]]
    images = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
    labels = {k: np.concatenate([p[1][k] for p in parts]) for k in label_keys}
    meta = folder / spec.meta_file
    classes = read_label_names(meta, spec.names_key)
    if len(classes) != spec.num_classes:
        raise CifarFormatError(f"{meta}: {spec.names_key!r} has {len(classes)} names, expected {spec.num_classes}")
    _check_range(labels[spec.label_key], spec.num_classes, spec.label_key, folder)

    coarse_labels = coarse_classes = None
    if spec.coarse_key and spec.coarse_names_key:
        coarse_classes = read_label_names(meta, spec.coarse_names_key)
        if len(coarse_classes) != spec.num_coarse:
            raise CifarFormatError(
                f"{meta}: {spec.coarse_names_key!r} has {len(coarse_classes)} names, expected {spec.num_coarse}"
            )
        _check_range(labels[spec.coarse_key], len(coarse_classes), spec.coarse_key, folder)
        coarse_labels = torch.from_numpy(labels[spec.coarse_key])

    return Dataset(
        name=spec.name,
        images=torch.from_numpy(np.ascontiguousarray(images)),
        labels=torch.from_numpy(labels[spec.label_key]),
        classes=classes,
        coarse_labels=coarse_labels,
        coarse_classes=coarse_classes,
        mean=spec.mean,
        std=spec.std,
        split=split,
    )


def _register(spec: CifarSpec) -> Loader:
    """Registers ``spec`` as a dataset read by :func:`load_cifar_split`; returns its loader."""

    def load(split: str, root: Path | None, download: bool) -> Dataset:
        return load_cifar_split(spec, split, root, download)

    return register_dataset(spec.name, mean=spec.mean, std=spec.std, description=spec.description,
                            needs_files=True)(load)


load_cifar10 = _register(CIFAR10)
load_cifar100 = _register(CIFAR100)
