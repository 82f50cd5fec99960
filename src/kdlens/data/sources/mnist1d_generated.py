"""MNIST-1D, generated offline by the ``mnist1d`` package.

Greydanus & Kobak 2024, "Scaling down deep learning with MNIST-1D" (ICML);
https://github.com/greydanus/mnist1d.  ``mnist1d.data.make_dataset()`` with its
default arguments (``get_dataset_args()``: 5,000 samples, seed 42, 80/20 split,
length-40 signals) → **4,000 train / 1,000 test**, 10 classes (digits ``"0"``…``"9"``).
``get_dataset`` is never called: it tries to download a pickle first.

The signals are real-valued, so ``images`` is **float32 N×1×1×40** (not uint8).  The
generator already centres and scales the whole set to mean 0, std 1, so the
normalisation constants are the identity: mean (0.0,), std (1.0,); pass the signal
through :func:`kdlens.data.augment.normalize` unchanged (float input is not rescaled).

``make_dataset`` seeds Python's and numpy's global random generators; their states are
saved and restored around the call so loading MNIST-1D does not disturb other code.
"""

from __future__ import annotations

import random
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from kdlens.data.catalog import register_dataset
from kdlens.data.dataset import Dataset
from kdlens.errors import DatasetNotFoundError

MNIST1D_MEAN = (0.0,)
MNIST1D_STD = (1.0,)


@lru_cache(maxsize=1)
def _generate() -> dict[str, np.ndarray]:
    try:
        from mnist1d.data import make_dataset  # noqa: PLC0415 - optional dependency
    except ImportError as exc:
        raise DatasetNotFoundError(
            "dataset 'mnist1d' needs the mnist1d package: pip install 'kdlens[mnist1d]' "
            f"(or pip install mnist1d) ({exc})"
        ) from None
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        data = make_dataset()
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    return {k: np.asarray(data[k]) for k in ("x", "y", "x_test", "y_test")}


@register_dataset(
    "mnist1d",
    mean=MNIST1D_MEAN,
    std=MNIST1D_STD,
    description="MNIST-1D: 4,000/1,000 float signals of length 40 (N×1×1×40), 10 classes (generated)",
)
def load_mnist1d(split: str, root: Path | None, download: bool) -> Dataset:
    data = _generate()
    x, y = (data["x"], data["y"]) if split == "train" else (data["x_test"], data["y_test"])
    signals = torch.from_numpy(x.astype(np.float32)).reshape(len(x), 1, 1, -1)
    return Dataset(
        name="mnist1d",
        images=signals,
        labels=torch.from_numpy(y.astype(np.int64)),
        classes=[str(d) for d in range(10)],
        mean=MNIST1D_MEAN,
        std=MNIST1D_STD,
        split=split,
    )
