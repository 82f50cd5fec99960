"""A torch ``Dataset`` as kdlens sees it: the streamed counterpart of the in-memory
:class:`~kdlens.data.dataset.Dataset`.

:class:`StreamedDataset` wraps any map-style ``torch.utils.data.Dataset`` whose items are
``(image_tensor, label)`` — an image folder decoded lazily, or the user's own dataset with
its own transforms — and carries what kdlens needs without reading every image: labels,
class names, image shape, normalisation and a fingerprint for run identity and caches.
Batches are read by :class:`kdlens.data.streamed.LoaderBatches` (DataLoader workers).

Items are either ``uint8`` images (``raw``: kdlens crops, flips and normalises them batched,
as for in-memory data) or floating tensors already transformed by the user (taken as they
are: the user's own transforms are honoured and kdlens adds nothing).
"""

from __future__ import annotations

import hashlib
import inspect
import random
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from kdlens.errors import KdlensError


@dataclass(frozen=True, eq=False)
class StreamedDataset:
    """One split of a dataset read item by item.

    Attributes mirror :class:`~kdlens.data.dataset.Dataset` (``name``, ``labels``,
    ``classes``, ``mean``, ``std``, ``split``, ``image_shape``, ``num_classes``) plus
    ``source`` (the torch Dataset), ``raw`` (items are uint8 images) and ``fingerprint``.
    """

    name: str
    source: Any
    labels: torch.Tensor
    classes: list[str]
    image_shape: tuple[int, int, int]
    raw: bool
    fingerprint: str
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    split: str | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __repr__(self) -> str:
        kind = "uint8 images" if self.raw else "transformed tensors"
        return (f"StreamedDataset(name={self.name!r}, split={self.split!r}, n={len(self)}, "
                f"image_shape={self.image_shape}, {kind}, num_classes={self.num_classes})")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def coarse_labels(self) -> None:
        return None

    def class_counts(self) -> torch.Tensor:
        return torch.bincount(self.labels, minlength=self.num_classes)

    def item(self, index: int) -> torch.Tensor:
        """The image tensor of one item (with the dataset's own transform)."""
        return self.source[int(index)][0]

    def stack(self, indices: Any) -> torch.Tensor:
        """Items at ``indices`` read in this process and stacked (small batches only)."""
        return torch.stack([self.item(int(i)) for i in indices])


def _labels_of(ds: Any, n: int, name: str) -> torch.Tensor:
    """Labels without decoding images when the dataset exposes them (``targets``, ``labels``,
    as torchvision datasets do), else by reading every item once."""
    for attr in ("targets", "labels"):
        values = getattr(ds, attr, None)
        if values is not None and not callable(values):
            try:
                t = torch.as_tensor(np.asarray(values)).reshape(-1)
            except (TypeError, ValueError):
                continue
            if t.numel() == n and not t.dtype.is_floating_point:
                return t.to(torch.int64)
    return torch.tensor([int(_label(ds[i][1], name)) for i in range(n)], dtype=torch.int64)


def _label(y: Any, name: str) -> int:
    if isinstance(y, torch.Tensor):
        if y.numel() != 1:
            raise KdlensError(f"dataset {name!r}: items must be (image, class index); got a label of shape {tuple(y.shape)}")
        return int(y.item())
    if isinstance(y, (int, np.integer)):
        return int(y)
    raise KdlensError(f"dataset {name!r}: items must be (image, class index); got a label of type {type(y).__name__}")


def first_item(ds: Any, name: str) -> torch.Tensor:
    """The first item's image, checked: a tensor C×H×W (uint8 or floating)."""
    if len(ds) == 0:
        raise KdlensError(f"dataset {name!r} is empty")
    item = ds[0]
    if not isinstance(item, (tuple, list)) or len(item) < 2:
        raise KdlensError(f"dataset {name!r}: items must be (image, label) pairs; got {type(item).__name__}")
    x = item[0]
    if not isinstance(x, torch.Tensor):
        raise KdlensError(
            f"dataset {name!r}: images must be tensors but item 0 is a {type(x).__module__}.{type(x).__name__}; "
            "add transforms.ToTensor() (or transforms.PILToTensor() for uint8 images that kdlens "
            "then normalises and augments) to the dataset's transform"
        )
    if x.ndim != 3:
        raise KdlensError(f"dataset {name!r}: images must be C×H×W tensors; item 0 has shape {tuple(x.shape)}")
    if not (x.dtype == torch.uint8 or x.dtype.is_floating_point):
        raise KdlensError(f"dataset {name!r}: images must be uint8 or floating tensors; item 0 is {x.dtype}")
    return x


def seeded_item(ds: Any, index: int) -> torch.Tensor:
    """``ds[index][0]`` with torch, numpy and random seeded (a random transform gives the same
    result every call), global random states restored afterwards."""
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        random.seed(0)
        np.random.seed(0)
        try:
            return ds[index][0]
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


def torch_dataset_fingerprint(ds: Any, labels: torch.Tensor) -> str:
    """SHA-256 of the dataset's class (and its source code), its length, its labels and its
    first and last items read with seeded randomness (:func:`seeded_item`)."""
    digest = hashlib.sha256()
    cls = type(ds)
    digest.update(f"{cls.__module__}.{cls.__qualname__}:{len(ds)}".encode())
    try:
        digest.update(inspect.getsource(cls).encode())
    except (OSError, TypeError):
        pass
    digest.update(labels.numpy().tobytes())
    for index in {0, len(ds) - 1}:
        x = seeded_item(ds, index).detach().cpu().contiguous()
        digest.update(str(x.dtype).encode() + x.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def wrap_torch_dataset(
    ds: Any,
    name: str | None = None,
    split: str | None = None,
    classes: list[str] | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
) -> StreamedDataset:
    """A user's map-style dataset of ``(image tensor, class index)`` as a :class:`StreamedDataset`.

    Class names come from ``classes`` or the dataset's ``classes`` attribute, else ``"0"…"K-1"``.
    ``mean``/``std`` are only used for uint8 items (floating items are the user's, as they are).
    """
    if not hasattr(ds, "__getitem__") or not hasattr(ds, "__len__"):
        raise KdlensError(
            f"expected a map-style torch Dataset (with __getitem__ and __len__), got {type(ds).__name__}"
        )
    name = name or f"python:{type(ds).__module__}.{type(ds).__qualname__}"
    x = first_item(ds, name)
    labels = _labels_of(ds, len(ds), name)
    names = list(classes or getattr(ds, "classes", None) or [])
    k = int(labels.max()) + 1 if labels.numel() else 0
    if not names:
        names = [str(i) for i in range(k)]
    if labels.numel() and (int(labels.min()) < 0 or k > len(names)):
        raise KdlensError(f"dataset {name!r}: labels {int(labels.min())}..{k - 1} do not fit its {len(names)} classes")
    raw = x.dtype == torch.uint8
    if raw and (mean is None or std is None):
        mean = std = None  # filled in by the caller from a sample of the training split
    c, h, w = (int(s) for s in x.shape)
    return StreamedDataset(
        name=name, source=ds, labels=labels, classes=[str(n) for n in names], image_shape=(c, h, w),
        raw=raw, fingerprint=torch_dataset_fingerprint(ds, labels), mean=mean if raw else None,
        std=std if raw else None, split=split,
    )


def materialize(data: Any, n: int | None = None, seed: int = 0, name: str | None = None, rows: Any = None):
    """A sample of a dataset held in memory, for the explain tools (hint search, embeddings,
    soft-label diagnostics), which read whole arrays.

    ``data``: a kdlens in-memory Dataset (returned as is, or its sample), a
    :class:`StreamedDataset`, a torch Dataset or a DataLoader.  ``n``: that many items, a
    seeded random choice without replacement (sorted), else all.  Items are read with
    their own transform (uint8 images stay uint8 with the dataset's mean/std; a user's
    transformed floats are kept as they are, mean/std ``None``).  ``rows``: exactly these
    items instead (in that order).
    """
    from torch.utils.data import DataLoader

    from kdlens.data.dataset import Dataset

    if isinstance(data, DataLoader):
        data = data.dataset
    if isinstance(data, Dataset):
        if n is None or n >= len(data):
            return data
        rows = np.sort(np.random.default_rng(seed).choice(len(data), size=n, replace=False))
        return data.subset(rows)
    if not isinstance(data, StreamedDataset):
        data = wrap_torch_dataset(data, name=name)
        if data.raw:
            from kdlens.data.folder import estimate_mean_std

            mean, std = estimate_mean_std(data.source)
            data = replace(data, mean=tuple(mean), std=tuple(std))
    total = len(data)
    if rows is None:
        rows = np.arange(total) if n is None or n >= total else np.sort(
            np.random.default_rng(seed).choice(total, size=n, replace=False))
    rows = np.asarray(rows, dtype=np.int64)
    images = data.stack(rows)
    return Dataset(
        name=data.name, images=images if data.raw else images.float(), labels=data.labels[torch.as_tensor(rows)],
        classes=list(data.classes), mean=data.mean, std=data.std, split=data.split,
    )
