"""Architecture fingerprint: what a model *is*, for run identity.

A run's identity must change when the model changes, even when its reference string does
not (the user edited ``my_pkg/models.py``).  The fingerprint hashes

* the module tree: every submodule's dotted name and class (``module.qualname``);
* every parameter and buffer name with its shape and dtype;
* the source code of every class in the tree that is not from torch, torchvision or timm
  (those are pinned by their version instead).

Weights are *not* part of it (see :func:`kdlens.distill.cache.weights_hash` for that).
"""

from __future__ import annotations

import hashlib
import inspect
import json
from typing import Any

from torch import nn

LIBRARIES = ("torch", "torchvision", "timm")


def _class_id(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _class_source(cls: type) -> str:
    """Source of a user-defined class, or the library's version for torch/torchvision/timm."""
    top = cls.__module__.split(".")[0]
    if top in LIBRARIES:
        module = __import__(top)
        return f"{top}=={getattr(module, '__version__', '?')}"
    try:
        return inspect.getsource(cls)
    except (OSError, TypeError):  # defined in a REPL / exec: fall back to its methods' bytecode
        code = [getattr(v, "__code__", None) for v in vars(cls).values()]
        return repr([(c.co_name, c.co_code.hex(), c.co_consts) for c in code if c is not None])


def architecture_description(model: nn.Module) -> dict[str, Any]:
    """The parts the fingerprint hashes, as plain data (useful to see *what* changed)."""
    tree = [[name, _class_id(type(m))] for name, m in model.named_modules()]
    tensors = [[name, list(t.shape), str(t.dtype)] for name, t in model.state_dict().items()]
    classes = sorted({type(m) for m in model.modules()}, key=_class_id)
    return {
        "tree": tree,
        "tensors": tensors,
        "sources": {_class_id(c): hashlib.sha256(_class_source(c).encode()).hexdigest() for c in classes},
    }


def architecture_fingerprint(model: nn.Module) -> str:
    """SHA-256 (hex) of :func:`architecture_description`."""
    canonical = json.dumps(architecture_description(model), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()
