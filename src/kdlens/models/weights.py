"""Trained weights from a local file: a ``state_dict`` or a full training checkpoint.

Accepted files (``torch.load(weights_only=True)``, never pickled code):

* a plain ``state_dict`` (``torch.save(model.state_dict(), PATH)``);
* a checkpoint dict holding it under ``model`` (kdlens, RepDistiller), ``state_dict``
  (Lightning, timm) or ``model_state_dict``;
* either of the above saved from ``DistributedDataParallel`` (keys prefixed ``module.``).

Nothing is downloaded; a mismatch names the missing, unexpected and mis-shaped keys.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdlens.errors import KdlensError
from kdlens.store import safe_torch_load

STATE_KEYS = ("model", "state_dict", "model_state_dict")


def extract_state_dict(obj: Any, source: str) -> dict[str, torch.Tensor]:
    """The parameter/buffer mapping inside a loaded file (see the module docstring)."""
    if isinstance(obj, Mapping):
        for key in STATE_KEYS:
            if key in obj and isinstance(obj[key], Mapping):
                return extract_state_dict(obj[key], source)
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors and len(tensors) == len(obj):
            if all(k.startswith("module.") for k in tensors):
                tensors = {k.removeprefix("module."): v for k, v in tensors.items()}
            return tensors
    raise KdlensError(
        f"weights file {source!r} holds no state_dict: expected a mapping of parameter names to "
        f"tensors, or a checkpoint with one under {', '.join(repr(k) for k in STATE_KEYS)}; save "
        "weights with torch.save(model.state_dict(), PATH)"
    )


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Load ``path`` safely and return its state_dict."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise KdlensError(f"weights file {str(p)!r} does not exist (model.weights / --weights must be a local file)")
    return extract_state_dict(safe_torch_load(p), str(p))


def load_state_checked(model: nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    """``load_state_dict`` with a readable report of missing / unexpected / mis-shaped keys."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shape = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
             for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shape:
        lines = [f"{what}: checkpoint does not fit the architecture"]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): {', '.join(missing[:8])}{' …' if len(missing) > 8 else ''}")
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): {', '.join(unexpected[:8])}{' …' if len(unexpected) > 8 else ''}")
        if shape:
            lines.append("  shape mismatches: " + "; ".join(shape[:6]))
        raise KdlensError("\n".join(lines))
    model.load_state_dict(dict(state))


def load_weights(model: nn.Module, path: str | os.PathLike[str], what: str = "model") -> nn.Module:
    """Load the weights in ``path`` into ``model`` (in place; returned for chaining)."""
    load_state_checked(model, read_state_dict(path), f"{what} weights from {str(path)!r}")
    return model
