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
    load_dataset,
    normalize,
    remove_classes,
    validation_split,
)
from kdlens.errors import KdlensError
from kdlens.train.evaluate import EvalSet
from kdlens.train.loop import Batch

# Standard augmentation per dataset: random crop (padding 4) + flips for CIFAR (He et al.
# 2016, as in RepDistiller); none for the grey-scale digit/clothing sets (Vats 2021 trains
# MNIST/Fashion-MNIST without augmentation).
DEFAULT_AUGMENTATION: dict[str, tuple[int | None, bool]] = {
    "cifar10": (4, True),
    "cifar100": (4, True),
}


@dataclass
class PreparedData:
    train: Dataset
    test: Dataset
    splits: dict[str, np.ndarray]
    augment: BatchAugment
    val_indices: np.ndarray | None = None
    unlabeled_indices: np.ndarray | None = None
    notes: dict[str, object] = field(default_factory=dict)

    @property
    def train_indices(self) -> np.ndarray:
        return self.splits["train"]

    def eval_set(self, device: torch.device) -> EvalSet:
        test = self.test
        mean, std = self.train.mean, self.train.std
        return EvalSet(test.images, test.labels, lambda x: normalize(x, mean, std))

    def val_set(self) -> EvalSet | None:
        if self.val_indices is None:
            return None
        val = self.train.subset(self.val_indices)
        mean, std = self.train.mean, self.train.std
        return EvalSet(val.images, val.labels, lambda x: normalize(x, mean, std))


def prepare_data(cfg: DataConfig) -> PreparedData:
    train = load_dataset(cfg.name, "train", root=cfg.root, download=cfg.download)
    test = load_dataset(cfg.name, "test", root=cfg.root, download=cfg.download)
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
    return PreparedData(train, test, splits, augment, val_idx, unlabeled)


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
