"""Model references: the user's own architectures by name.

A *model reference* names an architecture in one string, the same in the CLI, YAML and
Python:

=========================  ===============================================================
``resnet20``               a kdlens zoo model (``kdlens models``); ``zoo:resnet20`` too
``torchvision:resnet18``   ``torchvision.models.get_model(name, weights=None, …)``
``timm:resnet18``          ``timm.create_model(name, pretrained=False, …)`` (extra ``timm``)
``my_pkg.models:TinyNet``  an importable class or factory function, called with ``kwargs``
=========================  ===============================================================

Weights are never downloaded: every model starts from its random initialisation and takes
trained weights only from a local file (:func:`kdlens.models.weights.load_weights`).
``num_classes`` and ``in_channels`` are passed to factories that accept them (timm calls the
latter ``in_chans``); a factory that does not is checked by a dry forward in the caller.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from kdlens.errors import KdlensError, unknown_name
from kdlens.imports import import_object
from kdlens.models.registry import MODELS, create_model

PREFIXES = ("zoo", "torchvision", "timm")


def split_reference(ref: str) -> tuple[str, str]:
    """``"torchvision:resnet18"`` → ``("torchvision", "resnet18")``; a zoo name → ``("zoo", name)``;
    ``"pkg.mod:Cls"`` → ``("python", "pkg.mod:Cls")``."""
    ref = ref.strip()
    if ":" not in ref:
        return "zoo", ref
    head, tail = ref.split(":", 1)
    if head in PREFIXES:
        return head, tail
    if head == "python":  # python:pkg.mod:Cls, the dataset references' spelling
        return "python", tail
    return "python", ref


def build_model(
    ref: str,
    num_classes: int,
    in_channels: int = 3,
    input_size: int | None = None,
    kwargs: dict[str, Any] | None = None,
) -> nn.Module:
    """A freshly initialised model for ``ref`` (see the module docstring)."""
    kind, name = split_reference(ref)
    kw = dict(kwargs or {})
    if kind == "zoo":
        params = inspect.signature(MODELS.get(name)).parameters
        if "input_size" in params and input_size is not None:
            kw.setdefault("input_size", input_size)
        return create_model(name, num_classes=num_classes, in_channels=in_channels, **kw)
    if kind == "torchvision":
        return _torchvision_model(name, num_classes, in_channels, kw)
    if kind == "timm":
        return _timm_model(name, num_classes, in_channels, kw)
    return _imported_model(name, num_classes, in_channels, input_size, kw)


def _torchvision_model(name: str, num_classes: int, in_channels: int, kw: dict[str, Any]) -> nn.Module:
    import torchvision.models as tvm

    known = tvm.list_models()
    if name not in known:
        raise unknown_name("torchvision model", name, known)
    if in_channels != 3:
        raise KdlensError(
            f"torchvision:{name} takes 3-channel images but the data has {in_channels} channel(s); "
            "use a kdlens zoo model, a timm model (in_chans is set for you), or your own module"
        )
    if kw.get("weights") not in (None, "none", "None"):
        raise KdlensError(
            f"torchvision:{name}: kdlens never downloads weights (model.kwargs.weights="
            f"{kw['weights']!r}); save them to a file once and give model.weights=PATH"
        )
    kw.pop("weights", None)
    try:
        return tvm.get_model(name, weights=None, num_classes=num_classes, **kw)
    except TypeError as exc:
        raise KdlensError(f"torchvision:{name} does not take these options {sorted(kw)}: {exc}") from None


def _timm_model(name: str, num_classes: int, in_channels: int, kw: dict[str, Any]) -> nn.Module:
    try:
        import timm
    except ImportError:
        raise KdlensError(
            f"timm:{name} needs the timm package: pip install 'kdlens[timm]' (or pip install timm)"
        ) from None
    known = timm.list_models()
    if name not in known:
        raise unknown_name("timm model", name, known)
    if kw.pop("pretrained", False):
        raise KdlensError(f"timm:{name}: kdlens never downloads weights; give model.weights=PATH")
    try:
        return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_channels, **kw)
    except TypeError as exc:
        raise KdlensError(f"timm:{name} does not take these options {sorted(kw)}: {exc}") from None


def _parameters(factory: Callable[..., Any]) -> dict[str, inspect.Parameter]:
    try:
        return dict(inspect.signature(factory).parameters)
    except (TypeError, ValueError):
        return {}


def _imported_model(
    path: str, num_classes: int, in_channels: int, input_size: int | None, kw: dict[str, Any]
) -> nn.Module:
    """Call the user's class/factory; ``num_classes`` and ``in_channels`` are passed when it
    names them or takes ``**kwargs``, ``input_size`` only when it names it."""
    factory = import_object(path)
    if not callable(factory):
        raise KdlensError(f"model reference {path!r} is a {type(factory).__name__}, not a class or function")
    params = _parameters(factory)
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    for key, value in (("num_classes", num_classes), ("in_channels", in_channels), ("input_size", input_size)):
        named = key in params
        if value is not None and key not in kw and (named or (var_kw and key != "input_size")):
            kw[key] = value
    try:
        model = factory(**kw)
    except TypeError as exc:
        raise KdlensError(f"model {path!r} could not be built with options {sorted(kw)}: {exc}") from None
    if not isinstance(model, nn.Module):
        raise KdlensError(f"model {path!r} returned a {type(model).__name__}, not a torch nn.Module")
    return model
