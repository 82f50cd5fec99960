"""kdlens data layer: in-memory datasets, splits and batched augmentation.

>>> from kdlens.data import load_dataset, TensorBatches, BatchAugment, balanced_budget
>>> train = load_dataset("digits")                    # always present
>>> labeled = balanced_budget(train.labels, budget=100, seed=0)
>>> aug = BatchAugment(crop=1, hflip=False, mean=train.mean, std=train.std)
>>> for x, y, idx in TensorBatches(train.images, train.labels, 64, indices=labeled):
...     x = aug(x)

Datasets: ``digits``, ``fashion-mnist``, ``mnist``, ``cifar10``, ``cifar100``,
``mnist1d``, ``synthetic`` (see :func:`list_datasets`; each source module documents its
files, sizes and normalisation constants).
"""

from kdlens.data import sources as _sources  # noqa: F401  (registers the datasets)
from kdlens.data.augment import BatchAugment, crop_and_flip, normalize, to_float
from kdlens.data.batches import TensorBatches
from kdlens.data.catalog import (
    DATASETS,
    DatasetSource,
    dataset_normalization,
    dataset_source,
    default_data_root,
    list_datasets,
    load_dataset,
    register_dataset,
)
from kdlens.data.cifar_format import RestrictedUnpickler, UnsafePickleError, load_restricted_pickle
from kdlens.data.dataset import Dataset
from kdlens.data.idx_format import IdxFormatError, read_idx, write_idx
from kdlens.data.splits import (
    balanced_budget,
    complement,
    labeled_unlabeled,
    random_n_per_class,
    remove_classes,
    top_n_per_class,
    validation_split,
)

__all__ = [
    "DATASETS",
    "BatchAugment",
    "Dataset",
    "DatasetSource",
    "IdxFormatError",
    "RestrictedUnpickler",
    "TensorBatches",
    "UnsafePickleError",
    "balanced_budget",
    "complement",
    "crop_and_flip",
    "dataset_normalization",
    "dataset_source",
    "default_data_root",
    "labeled_unlabeled",
    "list_datasets",
    "load_dataset",
    "load_restricted_pickle",
    "normalize",
    "random_n_per_class",
    "read_idx",
    "register_dataset",
    "remove_classes",
    "to_float",
    "top_n_per_class",
    "validation_split",
    "write_idx",
]
