"""The in-memory :class:`Dataset`: whole splits held as tensors.

kdlens trains small models on small images, so a split is loaded once into one
uint8 tensor ``N×C×H×W`` (plus int64 labels) and mini-batches are slices of it
(:class:`kdlens.data.batches.TensorBatches`).  No per-image Python objects, no
``DataLoader``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from kdlens.errors import KdlensError


def as_index_tensor(indices: object, size: int, what: str = "indices") -> torch.Tensor:
    """``indices`` (list, numpy array or tensor of ints) as a 1-D int64 CPU tensor.

    Raises :class:`KdlensError` if they are not integers or fall outside ``[0, size)``.
    """
    if isinstance(indices, torch.Tensor):
        idx = indices.detach().to("cpu")
    else:
        arr = np.asarray(indices)
        if arr.size == 0:
            arr = arr.astype(np.int64)
        idx = torch.from_numpy(np.ascontiguousarray(arr))
    if idx.dtype.is_floating_point or idx.dtype in (torch.bool, torch.complex64, torch.complex128):
        raise KdlensError(f"{what} must be integers, got dtype {idx.dtype}")
    idx = idx.reshape(-1).to(torch.int64)
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= size):
        raise KdlensError(
            f"{what} out of range: allowed 0..{size - 1}, got min {int(idx.min())}, max {int(idx.max())}"
        )
    return idx


def select_rows(tensor: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``tensor[idx]`` along dim 0.  For contiguous tensors this goes through a 2-D view:
    ``index_select`` on N×C×H×W uint8 was measured here up to 1000× slower than on the
    N×(C·H·W) view when the CPU cores are busy."""
    idx = idx.to(tensor.device)
    if tensor.ndim > 2 and tensor.is_contiguous():
        flat = tensor.reshape(tensor.shape[0], -1).index_select(0, idx)
        return flat.view(idx.numel(), *tensor.shape[1:])
    return tensor.index_select(0, idx)


@dataclass(frozen=True, eq=False)
class Dataset:
    """One split of a dataset, held in memory.

    Attributes:
        name: registry name (``"fashion-mnist"``, …).
        images: ``torch.uint8`` tensor ``N×C×H×W`` with values 0..255.  Exception:
            ``mnist1d`` is a float32 signal ``N×1×1×40`` (already standardised by its
            generator; see :mod:`kdlens.data.sources.mnist1d_generated`).
        labels: ``torch.int64`` tensor ``N`` with values in ``[0, num_classes)``.
        classes: class names, index = label.
        coarse_labels: ``torch.int64`` ``N`` (CIFAR-100's 20 superclasses) or ``None``.
        coarse_classes: names of the coarse labels or ``None``.
        mean, std: per-channel normalisation constants in [0, 1] units, from the
            *training* split (so the test split is normalised the same way).
        split: ``"train"``, ``"test"`` or ``None`` (e.g. hand-built datasets).
    """

    name: str
    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    coarse_labels: torch.Tensor | None = None
    coarse_classes: list[str] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    split: str | None = None

    def __post_init__(self) -> None:
        if self.images.ndim != 4:
            raise KdlensError(
                f"dataset {self.name!r}: images must be N×C×H×W, got shape {tuple(self.images.shape)}"
            )
        if self.labels.ndim != 1 or self.labels.dtype != torch.int64:
            raise KdlensError(
                f"dataset {self.name!r}: labels must be a 1-D int64 tensor, got "
                f"{self.labels.dtype} of shape {tuple(self.labels.shape)}"
            )
        n = self.images.shape[0]
        if self.labels.shape[0] != n:
            raise KdlensError(f"dataset {self.name!r}: {n} images but {self.labels.shape[0]} labels")
        if n and (int(self.labels.min()) < 0 or int(self.labels.max()) >= len(self.classes)):
            raise KdlensError(
                f"dataset {self.name!r}: labels must lie in 0..{len(self.classes) - 1} "
                f"({len(self.classes)} classes), got {int(self.labels.min())}..{int(self.labels.max())}"
            )
        if (self.coarse_labels is None) != (self.coarse_classes is None):
            raise KdlensError(f"dataset {self.name!r}: give both coarse_labels and coarse_classes, or neither")
        if self.coarse_labels is not None:
            if self.coarse_labels.shape != self.labels.shape or self.coarse_labels.dtype != torch.int64:
                raise KdlensError(f"dataset {self.name!r}: coarse_labels must be int64 with one entry per image")
            if n and int(self.coarse_labels.max()) >= len(self.coarse_classes or []):
                raise KdlensError(f"dataset {self.name!r}: coarse label out of range of coarse_classes")
        for field in ("mean", "std"):
            value = getattr(self, field)
            if value is not None and len(value) != self.images.shape[1]:
                raise KdlensError(
                    f"dataset {self.name!r}: {field} has {len(value)} entries for "
                    f"{self.images.shape[1]} channels"
                )

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, split={self.split!r}, n={len(self)}, "
            f"image_shape={self.image_shape}, dtype={self.images.dtype}, num_classes={self.num_classes})"
        )

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def num_coarse_classes(self) -> int | None:
        return None if self.coarse_classes is None else len(self.coarse_classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)``."""
        c, h, w = self.images.shape[1:]
        return (int(c), int(h), int(w))

    def subset(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> Dataset:
        """The samples at ``indices`` (in that order), same classes and constants."""
        idx = as_index_tensor(indices, len(self), what=f"subset indices of {self.name!r}")
        return replace(
            self,
            images=select_rows(self.images, idx),
            labels=select_rows(self.labels, idx),
            coarse_labels=None if self.coarse_labels is None else select_rows(self.coarse_labels, idx),
        )

    def to(self, device: torch.device | str) -> Dataset:
        """A copy with all tensors on ``device`` (e.g. the GPU, to batch there)."""
        return replace(
            self,
            images=self.images.to(device),
            labels=self.labels.to(device),
            coarse_labels=None if self.coarse_labels is None else self.coarse_labels.to(device),
        )

    def class_counts(self) -> torch.Tensor:
        """Number of samples per class, length ``num_classes``."""
        return torch.bincount(self.labels.cpu(), minlength=self.num_classes)
