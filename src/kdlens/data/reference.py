"""Dataset references: the user's own data by name, resolved to a train/test pair.

================================  =========================================================
``digits``, ``fashion-mnist``, …  a catalog dataset (:func:`kdlens.data.list_datasets`), in memory
``folder:DIR``                    an image folder: ``DIR/train/<class>/*.jpg|png`` and
                                  ``DIR/val/…`` or ``DIR/test/…``
``python:pkg.module:make``        ``make()`` returns ``(train, test)`` torch Datasets (or
                                  DataLoaders), items ``(image tensor, class index)``
================================  =========================================================

Two sources behind one interface: an in-memory :class:`~kdlens.data.dataset.Dataset`
(catalog data, and image folders whose decoded images fit in ``memory_limit_mb``) or a
:class:`~kdlens.data.torch_dataset.StreamedDataset` (larger folders, decoded lazily in
DataLoader workers; and every user Dataset, whose own transforms are honoured).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from kdlens.data.catalog import load_dataset
from kdlens.data.dataset import Dataset
from kdlens.data.torch_dataset import StreamedDataset, wrap_torch_dataset
from kdlens.errors import KdlensError
from kdlens.imports import import_object

MIB = 1 << 20


@dataclass
class DataPair:
    """A resolved reference: both splits, which path serves them, and a fingerprint of the
    data for run identity (``None`` for catalog data, which its name identifies)."""

    train: Dataset | StreamedDataset
    test: Dataset | StreamedDataset
    path: str  # "in-memory" or "streamed"
    fingerprint: str | None = None
    reason: str = ""

    def describe(self) -> str:
        return f"data {self.train.name!r}: {self.path} ({len(self.train)} train / {len(self.test)} test; {self.reason})"


def split_dataset_reference(ref: str) -> tuple[str, str]:
    """``"folder:DIR"`` → ``("folder", DIR)``; ``"python:pkg.mod:make"`` → ``("python", "pkg.mod:make")``;
    anything else is a catalog name."""
    for kind in ("folder", "python"):
        if ref.startswith(kind + ":"):
            return kind, ref[len(kind) + 1:]
    return "catalog", ref


def as_streamed(obj: Any, name: str, split: str) -> StreamedDataset:
    """A user's Dataset (or the dataset of a DataLoader) as a :class:`StreamedDataset`."""
    from torch.utils.data import DataLoader

    if isinstance(obj, StreamedDataset):
        return obj
    if isinstance(obj, DataLoader):
        obj = obj.dataset
    return wrap_torch_dataset(obj, name=name, split=split)


def fill_raw_normalisation(train: StreamedDataset, test: StreamedDataset) -> tuple[StreamedDataset, StreamedDataset]:
    """uint8 items: per-channel mean/std estimated on the training split, used for both."""
    if not train.raw or train.mean is not None:
        return train, replace(test, mean=train.mean, std=train.std) if test.raw else test
    from kdlens.data.folder import estimate_mean_std

    mean, std = estimate_mean_std(train.source)
    return replace(train, mean=tuple(mean), std=tuple(std)), replace(test, mean=tuple(mean), std=tuple(std))


def resolve_data(
    ref: str,
    *,
    root: str | os.PathLike[str] | None = None,
    download: bool = False,
    stream: str = "auto",
    memory_limit_mb: float = 1024.0,
    image_size: int | None = None,
    on_bad_image: str = "error",
) -> DataPair:
    """Both splits of the dataset ``ref`` (see the module docstring)."""
    kind, value = split_dataset_reference(ref)
    if kind == "catalog":
        if stream == "on":
            raise KdlensError(f"data.stream=on is for folder: and python: datasets; {ref!r} is held in memory")
        train = load_dataset(value, "train", root=root, download=download)
        return DataPair(train, load_dataset(value, "test", root=root, download=download), "in-memory",
                        reason="catalog dataset")
    if kind == "folder":
        return _folder_pair(ref, value, stream, memory_limit_mb, image_size, on_bad_image)
    return _python_pair(ref, value)


def _folder_pair(ref: str, directory: str, stream: str, limit_mb: float, image_size: int | None,
                 on_bad_image: str) -> DataPair:
    from kdlens.data.folder import (
        ImageFolderDataset,
        folder_fingerprint,
        infer_channels_and_size,
        load_image_folder_in_memory,
        scan_image_folder,
    )

    layout = scan_image_folder(Path(directory).expanduser())
    channels, size = infer_channels_and_size(layout.train)
    if image_size is not None:
        size = (image_size, image_size)
    fingerprint = folder_fingerprint(layout)
    n = len(layout.train) + len(layout.test)
    mib = n * channels * size[0] * size[1] / MIB
    in_memory = stream == "off" or (stream == "auto" and mib <= limit_mb)
    reason = (f"{n} images of {channels}×{size[0]}×{size[1]} = {mib:,.0f} MiB decoded, "
              + ("stream=off" if stream == "off" else f"{'≤' if in_memory else '>'} memory_limit_mb={limit_mb:g}"
                 if stream == "auto" else "stream=on"))
    fixed = None if image_size is None else size
    if in_memory:
        train = load_image_folder_in_memory(layout, "train", channels, fixed, on_bad_image)
        test = load_image_folder_in_memory(layout, "test", channels, fixed, on_bad_image)
        train, test = replace(train, name=ref), replace(test, name=ref, mean=train.mean, std=train.std)
        return DataPair(train, test, "in-memory", fingerprint, reason)
    streamed = []
    for split, samples in (("train", layout.train), ("test", layout.test)):
        ds = ImageFolderDataset(samples, layout.classes, channels=channels, size=fixed, on_bad_image=on_bad_image)
        streamed.append(StreamedDataset(
            name=ref, source=ds, labels=ds.labels, classes=list(layout.classes), image_shape=(channels, *size),
            raw=True, fingerprint=fingerprint, split=split,
        ))
    train, test = fill_raw_normalisation(streamed[0], streamed[1])
    return DataPair(train, test, "streamed", fingerprint, reason)


def _python_pair(ref: str, path: str) -> DataPair:
    make = import_object(path, what="dataset")
    if not callable(make):
        raise KdlensError(f"dataset reference {ref!r}: {path!r} is not a function returning (train, test)")
    result = make()
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise KdlensError(
            f"dataset reference {ref!r}: {path}() must return (train, test) torch Datasets; "
            f"got {type(result).__name__}"
        )
    train, test = fill_raw_normalisation(as_streamed(result[0], ref, "train"), as_streamed(result[1], ref, "test"))
    if test.classes != train.classes and test.num_classes > train.num_classes:
        raise KdlensError(f"dataset reference {ref!r}: the test split has {test.num_classes} classes, the training split {train.num_classes}")
    fingerprint = hashlib.sha256(f"{train.fingerprint}:{test.fingerprint}".encode()).hexdigest()
    return DataPair(train, test, "streamed", fingerprint, "a user Dataset (its own transforms)")


def data_pair_from_objects(train: Any, test: Any, name: str | None = None) -> DataPair:
    """The Python API's path: ``train``/``test`` are Datasets, DataLoaders or in-memory Datasets;
    ``test=None`` stands for the training set itself (the caller evaluates on a held-out part)."""
    if test is None:
        test = train
    if isinstance(train, Dataset):
        if not isinstance(test, Dataset):
            raise KdlensError("give train and test of the same kind (both kdlens in-memory Datasets or both torch Datasets)")
        return DataPair(train, test, "in-memory", reason="kdlens in-memory Dataset")
    label = name or f"python:{type(getattr(train, 'dataset', train)).__qualname__}"
    tr = as_streamed(train, label, "train")
    te = tr if test is train else as_streamed(test, label, "test")
    tr, te = fill_raw_normalisation(tr, te)
    fingerprint = hashlib.sha256(f"{tr.fingerprint}:{te.fingerprint}".encode()).hexdigest()
    return DataPair(tr, te, "streamed", fingerprint, "a user Dataset (its own transforms)")
