"""Objects by import path (``"package.module:Name"``): user models, dataset factories.

Shared by the model and data references, so it sits below every layer.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from kdlens.errors import KdlensError, close_matches


def import_object(path: str, what: str = "model") -> Any:
    """``"pkg.module:Attr"`` (``Attr`` may be dotted) → the object, with errors for people."""
    if ":" not in path:
        raise KdlensError(f"{what} reference {path!r}: an import path is written package.module:Name")
    module_name, attr = path.split(":", 1)
    if os.getcwd() not in sys.path:  # as `python -m` does: the user's own packages beside them
        sys.path.append(os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise KdlensError(
            f"{what} reference {path!r}: cannot import module {module_name!r} ({exc}); it must be "
            "installed, on PYTHONPATH or in the current directory"
        ) from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = [n for n in dir(obj) if not n.startswith("_")]
            hint = close_matches(part, names)
            raise KdlensError(
                f"{what} reference {path!r}: {module_name!r} has no attribute {part!r}"
                + (f". Did you mean: {', '.join(hint)}?" if hint else "")
            )
        obj = getattr(obj, part)
    return obj
