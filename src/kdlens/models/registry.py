"""The model registry: ``create_model("resnet20", num_classes=100)``.

Every zoo module registers factories with :func:`register_model`; a factory takes
``num_classes`` and ``in_channels`` plus its own keyword options.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from torch import nn

from kdlens.errors import KdlensError, unknown_name
from kdlens.registry import Registry

ModelFactory = Callable[..., nn.Module]

MODELS: Registry[ModelFactory] = Registry("model")


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator: register a factory ``f(num_classes, in_channels=3, **kw) -> nn.Module``."""
    return MODELS.register(name)


def create_model(name: str, num_classes: int, in_channels: int = 3, **kw: object) -> nn.Module:
    """Build the zoo model ``name`` with freshly initialised weights (unless ``weights=`` says otherwise).

    ``input_size`` (the side of square inputs) is accepted by every model so that callers can
    pass the dataset's size uniformly: models whose layers depend on it (the thesis CNNs)
    use it, size-agnostic ones (adaptive pooling) only check that it is at least 8.
    Unknown names and unknown keyword options raise a :class:`~kdlens.errors.KdlensError`
    listing close matches.
    """
    factory = MODELS.get(name)
    params = inspect.signature(factory).parameters
    options = [p for p in params if p not in ("num_classes", "in_channels")]
    if "input_size" not in params and "input_size" in kw:
        size = kw.pop("input_size")
        if size is not None and int(size) < 8:  # type: ignore[call-overload]
            raise KdlensError(f"model {name!r} needs inputs of at least 8×8, got input_size={size}")
    for key in kw:
        if key not in options:
            raise unknown_name(f"option of model {name!r}", key, [*options, "input_size"])
    return factory(num_classes=num_classes, in_channels=in_channels, **kw)


def list_models() -> list[str]:
    """Registered model names, sorted."""
    return MODELS.names()


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of ``model`` (shared tensors counted once, buffers excluded)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
