"""From a :class:`~kdlens.config.DataConfig` to tensors, splits and augmentation.

Everything is checked here, before any training: an unknown dataset, a class id that
does not exist, a label budget larger than the data all raise a KdlensError.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from kdlens.config import DataConfig
from kdlens.data import (
    BatchAugment,
    Dataset,
    TensorBatches,
    labeled_unlabeled,
    normalize,
    remove_classes,
    validation_split,
)
from kdlens.data.reference import DataPair, resolve_data
from kdlens.data.torch_dataset import StreamedDataset
from kdlens.errors import KdlensError
from kdlens.train.evaluate import EvalSet
from kdlens.train.loop import Batch
from kdlens.train.stream_source import StreamedEvalSet, StreamSource

# Standard augmentation per dataset: random crop (padding 4) + flips for CIFAR (He et al.
# 2016, as in RepDistiller); none for the grey-scale digit/clothing sets (Vats 2021 trains
# MNIST/Fashion-MNIST without augmentation).
DEFAULT_AUGMENTATION: dict[str, tuple[int | None, bool]] = {
    "cifar10": (4, True),
    "cifar100": (4, True),
}


@dataclass
class PreparedData:
    """Both splits (in memory or streamed), the split indices and the augmentation of a run."""

    train: Dataset | StreamedDataset
    test: Dataset | StreamedDataset
    splits: dict[str, np.ndarray]
    augment: BatchAugment
    val_indices: np.ndarray | None = None
    unlabeled_indices: np.ndarray | None = None
    notes: dict[str, object] = field(default_factory=dict)
    path: str = "in-memory"
    fingerprint: str | None = None
    num_workers: int | None = None

    @property
    def train_indices(self) -> np.ndarray:
        return self.splits["train"]

    @property
    def streamed(self) -> bool:
        return isinstance(self.train, StreamedDataset)

    def _eval(self, data: Dataset | StreamedDataset, indices: np.ndarray | None = None):
        if isinstance(data, StreamedDataset):
            return StreamedEvalSet(data, indices, self.num_workers)
        if indices is not None:
            data = data.subset(indices)
        mean, std = self.train.mean, self.train.std
        return EvalSet(data.images, data.labels, lambda x: normalize(x, mean, std))

    def eval_set(self, device: torch.device | None = None):
        """The test split, prepared for the model (``device`` is accepted for old callers)."""
        return self._eval(self.test)

    def val_set(self):
        return None if self.val_indices is None else self._eval(self.train, self.val_indices)

    def train_inputs(self):
        """The whole training split in index order: a tensor of raw images (in memory) or a
        streamed evaluation set (for the teacher-output cache)."""
        return self._eval(self.train) if self.streamed else self.train.images

    def example(self, device: torch.device, n: int = 2) -> torch.Tensor:
        """``n`` prepared training inputs, for dry forwards (shapes, class counts)."""
        if isinstance(self.train, StreamedDataset):
            return self._eval(self.train).prepare(self.train.stack(range(min(n, len(self.train))))).to(device)
        mean, std = self.train.mean, self.train.std
        return normalize(self.train.images[:n].to(device), mean, std)

    def batch_source(self, indices: np.ndarray | None, batch_size: int, device: torch.device, drop_last: bool = False):
        """Shuffled, augmented training batches of ``indices`` from the path that holds the data."""
        if isinstance(self.train, StreamedDataset):
            return StreamSource(self.train, indices, batch_size, self.augment, device, self.num_workers, drop_last)
        return InMemorySource(self.train.images, self.train.labels, indices, batch_size, self.augment, device, drop_last)


def resolve_config_data(cfg: DataConfig) -> DataPair:
    """The train/test pair named by ``cfg.name`` (a catalog name, ``folder:DIR`` or ``python:…``)."""
    return resolve_data(
        cfg.name, root=cfg.root, download=cfg.download, stream=cfg.stream,
        memory_limit_mb=cfg.memory_limit_mb, image_size=cfg.image_size, on_bad_image=cfg.on_bad_image,
    )


def prepare_data(cfg: DataConfig, pair: DataPair | None = None, log: bool = False) -> PreparedData:
    """Splits and augmentation of ``cfg`` over ``pair`` (default: the data ``cfg.name`` names)."""
    pair = pair if pair is not None else resolve_config_data(cfg)
    if log:
        print(pair.describe())
    train, test = pair.train, pair.test
    labels = train.labels.numpy()
    pool = np.arange(len(train), dtype=np.int64)
    splits: dict[str, np.ndarray] = {}
    val_idx = None
    if cfg.val_fraction > 0:
        pool, val_idx = validation_split(labels, cfg.val_fraction, seed=cfg.split_seed)
        splits["val"] = val_idx
    unlabeled = None
    if cfg.budget is not None:
        if cfg.budget > len(pool):
            raise KdlensError(
                f"data.budget={cfg.budget} is larger than the {len(pool)} training examples of "
                f"{cfg.name!r}; allowed: 1..{len(pool)} (divisible by {train.num_classes} classes)"
            )
        lab, unl = labeled_unlabeled(
            labels[pool], cfg.budget, fold=cfg.fold, n_folds=cfg.n_folds, seed=cfg.split_seed
        )
        pool, unlabeled = pool[lab], pool[unl]
        if cfg.unlabeled_limit is not None and cfg.unlabeled_limit < len(unlabeled):
            rng = np.random.default_rng(cfg.split_seed + 7919 * cfg.fold)
            unlabeled = np.sort(rng.choice(unlabeled, cfg.unlabeled_limit, replace=False))
        splits["unlabeled"] = unlabeled
    if cfg.remove_classes:
        bad = [c for c in cfg.remove_classes if not 0 <= c < train.num_classes]
        if bad:
            raise KdlensError(
                f"data.remove_classes: class id(s) {bad} do not exist in {cfg.name!r}; "
                f"allowed: 0..{train.num_classes - 1} ({', '.join(train.classes)})"
            )
        pool = pool[remove_classes(labels[pool], cfg.remove_classes)]
    splits["train"] = np.sort(pool)
    crop, flip = DEFAULT_AUGMENTATION.get(cfg.name, (None, False))
    crop = cfg.crop_padding if cfg.crop_padding is not None else crop
    flip = cfg.hflip if cfg.hflip is not None else flip
    augment = BatchAugment(crop=crop or None, hflip=flip, mean=train.mean, std=train.std)
    return PreparedData(train, test, splits, augment, val_idx, unlabeled, path=pair.path,
                        fingerprint=pair.fingerprint, num_workers=cfg.num_workers)


class InMemorySource:
    """Shuffled, augmented mini-batches of an in-memory dataset, ready for the model."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        indices: np.ndarray | None,
        batch_size: int,
        augment: BatchAugment,
        device: torch.device,
        drop_last: bool = False,
    ) -> None:
        self.images = images.to(device)
        self.labels = labels.to(device)
        self.indices = indices
        self.batch_size = batch_size
        self.augment = augment
        self.device = device
        self.drop_last = drop_last

    def _batches(self, generator: torch.Generator) -> TensorBatches:
        return TensorBatches(
            self.images, self.labels, self.batch_size, shuffle=True, drop_last=self.drop_last,
            generator=generator, indices=self.indices,
        )

    def __len__(self) -> int:
        return len(self._batches(torch.Generator()))

    def epoch(self, generator: torch.Generator) -> Iterator[Batch]:
        for x, y, idx in self._batches(generator):
            dy, dx, flip = self.augment.sample(x.shape[0], generator)
            yield Batch(x=self.augment.apply(x, dy, dx, flip), y=y, idx=idx, extras={"flip": flip})
