"""Build a zoo model for a dataset: classes, channels and (where needed) input size."""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from kdlens.data import Dataset
from kdlens.models import create_model
from kdlens.models.registry import MODELS


def model_for_data(name: str, data: Dataset, seed: int, **kwargs: Any) -> nn.Module:
    """``create_model`` with ``num_classes``/``in_channels`` (and ``input_size`` for models
    whose flattened layers depend on it) taken from ``data``; weights seeded by ``seed``."""
    c, h, _ = data.image_shape
    params = inspect.signature(MODELS.get(name)).parameters
    if "input_size" in params and "input_size" not in kwargs:
        kwargs["input_size"] = h
    torch.manual_seed(seed)
    return create_model(name, num_classes=data.num_classes, in_channels=c, **kwargs)
