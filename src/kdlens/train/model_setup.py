"""Build a model for a dataset: classes, channels and (where needed) input size."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from kdlens.errors import KdlensError
from kdlens.models.reference import build_model
from kdlens.models.weights import load_weights


def model_for_data(name: str, data: Any, seed: int, weights: str | None = None, **kwargs: Any) -> nn.Module:
    """The model referenced by ``name`` (zoo name, ``torchvision:…``, ``timm:…``, ``pkg.mod:Cls``)
    with ``num_classes``/``in_channels`` (and ``input_size`` for models whose flattened
    layers depend on it) taken from ``data`` (an in-memory or streamed dataset); weights
    seeded by ``seed``, then loaded from ``weights`` (a local file) when given."""
    c, h, _ = data.image_shape
    torch.manual_seed(seed)
    model = build_model(name, num_classes=data.num_classes, in_channels=c, input_size=h, kwargs=kwargs)
    if weights is not None:
        load_weights(model, weights, f"model {name}")
    return model


@torch.no_grad()
def check_output_classes(model: nn.Module, example: torch.Tensor, num_classes: int, what: str) -> None:
    """A dry forward: ``model(example)`` must give ``N × num_classes`` logits."""
    was_training = model.training
    model.eval()
    try:
        out = model(example)
    except Exception as exc:  # a user's model on inputs of the wrong size, channels, …
        raise KdlensError(
            f"{what} failed on a batch of shape {tuple(example.shape)}: {type(exc).__name__}: {exc}"
        ) from None
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[1] != num_classes:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise KdlensError(
            f"{what} returned {shape} for a batch of {example.shape[0]}; kdlens needs logits of shape "
            f"(batch, {num_classes}) — the data has {num_classes} classes (pass num_classes to the model)"
        )
