"""scikit-learn's bundled 8×8 handwritten digits: the always-present default.

``sklearn.datasets.load_digits`` (the UCI "Optical Recognition of Handwritten
Digits" test set, Alpaydin & Kaynak 1998): 1,797 grey 8×8 images with values 0..16,
10 classes.  Pixels are scaled to uint8 by ``round(v * 255 / 16)``.

Split: ``sklearn.model_selection.train_test_split(test_size=360, stratify=labels,
random_state=0)`` → **1,437 train / 360 test**, stratified, the same on every
machine; within a split, images keep their original order.

Normalisation (training split, pixels / 255): mean 0.3054, std 0.3760 (computed here;
checked by the tests).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from kdlens.data.catalog import register_dataset
from kdlens.data.dataset import Dataset

DIGITS_TEST_SIZE = 360
DIGITS_SPLIT_SEED = 0
DIGITS_MEAN = (0.3054,)
DIGITS_STD = (0.3760,)


@lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    from sklearn.datasets import load_digits  # noqa: PLC0415 - keep `import kdlens.data` light
    from sklearn.model_selection import train_test_split  # noqa: PLC0415

    bunch = load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    labels = bunch.target.astype(np.int64)
    train, test = train_test_split(
        np.arange(len(labels)), test_size=DIGITS_TEST_SIZE, stratify=labels, random_state=DIGITS_SPLIT_SEED
    )
    return images, labels, {"train": np.sort(train), "test": np.sort(test)}


@register_dataset(
    "digits",
    mean=DIGITS_MEAN,
    std=DIGITS_STD,
    description="scikit-learn digits: 1,437/360 grey 8×8 handwritten digits, 10 classes (bundled)",
)
def load_digits_dataset(split: str, root: Path | None, download: bool) -> Dataset:
    images, labels, splits = _digits_arrays()
    idx = splits[split]
    return Dataset(
        name="digits",
        images=torch.from_numpy(images[idx]),
        labels=torch.from_numpy(labels[idx]),
        classes=[str(d) for d in range(10)],
        mean=DIGITS_MEAN,
        std=DIGITS_STD,
        split=split,
    )
