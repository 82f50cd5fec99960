"""Training and evaluation batches from a streamed dataset (DataLoader workers).

The streamed counterparts of :class:`~kdlens.train.data_setup.InMemorySource` and
:class:`~kdlens.train.evaluate.EvalSet`: items are read by
:class:`kdlens.data.streamed.LoaderBatches` in the epoch order drawn from the trainer's
seeded generator (so a resumed run replays the same order); uint8 images are cropped,
flipped and normalised batched, exactly as in memory, and a user's already-transformed
tensors are used as they are.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import torch

from kdlens.data import BatchAugment, normalize
from kdlens.data.streamed import LoaderBatches
from kdlens.data.torch_dataset import StreamedDataset
from kdlens.train.loop import Batch


def default_workers(num_workers: int | None) -> int:
    """``data.num_workers`` or ``min(4, CPUs)``."""
    return num_workers if num_workers is not None else min(4, os.cpu_count() or 1)


class StreamSource:
    """Shuffled, augmented mini-batches of a :class:`StreamedDataset`, ready for the model."""

    def __init__(
        self,
        data: StreamedDataset,
        indices: np.ndarray | None,
        batch_size: int,
        augment: BatchAugment,
        device: torch.device,
        num_workers: int | None = None,
        drop_last: bool = False,
    ) -> None:
        self.data = data
        self.indices = indices
        self.batch_size = batch_size
        self.augment = augment
        self.device = device
        self.num_workers = default_workers(num_workers)
        self.drop_last = drop_last
        self.skipped = 0
        self._loader: LoaderBatches | None = None  # one per source: its workers persist across epochs

    def _batches(self, generator: torch.Generator | None) -> LoaderBatches:
        return LoaderBatches(
            self.data.source, self.batch_size, shuffle=True, drop_last=self.drop_last, generator=generator,
            indices=self.indices, num_workers=self.num_workers, pin_memory=self.device.type == "cuda",
        )

    def __len__(self) -> int:
        return len(self._batches(None))

    def epoch(self, generator: torch.Generator) -> Iterator[Batch]:
        if self._loader is None:
            self._loader = self._batches(generator)
        batches = self._loader
        batches.generator = generator  # the epoch's order (and items' seeds) come from it
        for x, y, idx in batches:
            x, y = x.to(self.device, non_blocking=True), y.to(self.device)
            if self.data.raw:
                dy, dx, flip = self.augment.sample(x.shape[0], generator)
                yield Batch(x=self.augment.apply(x, dy, dx, flip), y=y, idx=idx, extras={"flip": flip})
            else:
                yield Batch(x=x.float(), y=y, idx=idx)
        self.skipped += batches.skipped


class StreamedEvalSet:
    """A streamed split (or its ``indices``) in index order, for evaluation and caches.

    With ``data.on_bad_image=skip`` the skipped images are left out and ``labels`` is
    narrowed to the images read, once a pass over the batches is complete."""

    def __init__(self, data: StreamedDataset, indices: np.ndarray | None = None, num_workers: int | None = None) -> None:
        self.data = data
        self.indices = indices
        self.num_workers = default_workers(num_workers)
        self.labels = data.labels if indices is None else data.labels[torch.as_tensor(indices)]

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return normalize(x, self.data.mean, self.data.std) if self.data.raw else x.float()

    def batches(self, batch_size: int, device: torch.device) -> Iterator[torch.Tensor]:
        loader = LoaderBatches(self.data.source, batch_size, shuffle=False, indices=self.indices,
                               num_workers=self.num_workers)
        kept = []
        for x, _, idx in loader:
            kept.append(idx.cpu())
            yield self.prepare(x.to(device))
        if loader.skipped:  # bad images skipped (data.on_bad_image=skip): labels of the rest
            self.labels = self.data.labels[torch.cat(kept)] if kept else self.labels[:0]
