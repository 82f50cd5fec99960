"""Mini-batches sliced from in-memory tensors: the training hot path.

:class:`TensorBatches` replaces a ``DataLoader`` for data that is already one tensor:
each batch is one ``index_select`` (or a view, when iterating in order), with no
per-sample Python and no worker processes.  It also yields the dataset indices of the
batch, which teacher-output caches need.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch

from kdlens.data.dataset import as_index_tensor, select_rows
from kdlens.errors import KdlensError

if TYPE_CHECKING:
    from kdlens.data.dataset import Dataset


class TensorBatches:
    """Iterate ``(x, y, idx)`` mini-batches over ``images``/``labels``.

    Args:
        images: ``N×…`` tensor (uint8 images as loaded; any device).
        labels: ``N`` tensor (same device as ``images``).
        batch_size: samples per batch.
        shuffle: a new random order every epoch (every ``iter()``).
        drop_last: skip the last, smaller batch.
        generator: ``torch.Generator`` (CPU) for the order; with the same seed the
            sequence of epochs is identical.  ``None`` uses torch's global generator.
        indices: iterate only these dataset indices (e.g. a labeled budget from
            :mod:`kdlens.data.splits`); ``idx`` still refers to the full dataset.

    Yields ``(x, y, idx)``: ``x = images[idx]``, ``y = labels[idx]``, ``idx`` int64 on
    the images' device.  ``len()`` is the number of batches per epoch.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        shuffle: bool = True,
        drop_last: bool = False,
        generator: torch.Generator | None = None,
        indices: object = None,
    ) -> None:
        if images.shape[0] != labels.shape[0]:
            raise KdlensError(f"{images.shape[0]} images but {labels.shape[0]} labels")
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise KdlensError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.images = images
        self.labels = labels
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.generator = generator
        self.indices = None if indices is None else as_index_tensor(indices, images.shape[0], "indices")

    @classmethod
    def from_dataset(cls, dataset: Dataset, batch_size: int, **kwargs: object) -> TensorBatches:
        """Batches over a :class:`~kdlens.data.dataset.Dataset`'s images and labels."""
        return cls(dataset.images, dataset.labels, batch_size, **kwargs)  # type: ignore[arg-type]

    @property
    def num_samples(self) -> int:
        """Samples per epoch (before ``drop_last``)."""
        return int(self.images.shape[0] if self.indices is None else self.indices.numel())

    def __len__(self) -> int:
        n, b = self.num_samples, self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def _order(self) -> torch.Tensor | None:
        """Dataset indices in epoch order (CPU), or None for the plain 0..N-1 order."""
        if not self.shuffle:
            return self.indices
        perm = torch.randperm(self.num_samples, generator=self.generator)
        return perm if self.indices is None else self.indices[perm]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        order = self._order()
        device = self.images.device
        if order is not None:
            order = order.to(device)
        n, b = self.num_samples, self.batch_size
        stop = n - n % b if self.drop_last else n
        for start in range(0, stop, b):
            end = min(start + b, n)
            if order is None:  # in-order over everything: views, no copies
                idx = torch.arange(start, end, device=device)
                yield self.images[start:end], self.labels[start:end], idx
            else:
                idx = order[start:end]
                yield select_rows(self.images, idx), select_rows(self.labels, idx), idx
