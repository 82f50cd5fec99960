"""Distillation losses, one module each, found by name through :data:`LOSSES`.

Importing this package registers every loss.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from torch import nn

from kdlens.distill.losses import (  # noqa: F401  (importing registers the losses)
    ab,
    afd,
    at,
    cc,
    crd,
    dist,
    dkd,
    fitnet,
    fsp,
    ft,
    kd,
    kdsvd,
    ls,
    lskd,
    noisy_kd,
    nst,
    ofd,
    pkt,
    reviewkd,
    rkd,
    skd,
    sp,
    vid,
    wsl,
)
from kdlens.distill.losses.base import LOSSES, HintLoss, LogitLoss, register_loss
from kdlens.errors import KdlensError, close_matches


def create_loss(
    name: str,
    student_shapes: Sequence[Sequence[int]] | None = None,
    teacher_shapes: Sequence[Sequence[int]] | None = None,
    **hyper: Any,
) -> nn.Module:
    """Build the loss registered as ``name``.

    Hint losses need the per-sample ``student_shapes`` / ``teacher_shapes`` of the
    layer pairs; logit losses ignore them.  Unknown hyper-parameters raise a
    :class:`KdlensError` naming the ones the loss accepts.
    """
    cls = LOSSES.get(name)
    params = inspect.signature(cls.__init__).parameters
    known = [p for p in params if p not in ("self", "student_shapes", "teacher_shapes")]
    for key in hyper:
        if key not in known:
            hint = close_matches(key, known)
            raise KdlensError(
                f"loss {name!r} has no parameter {key!r}."
                + (f" Did you mean: {', '.join(hint)}?" if hint else "")
                + f" Its parameters: {', '.join(known) or '(none)'}"
            )
    missing = [
        p.name
        for p in params.values()
        if p.name in known and p.default is inspect.Parameter.empty and p.name not in hyper
    ]
    if missing:
        raise KdlensError(f"loss {name!r} needs {', '.join(missing)}")
    if cls.kind == "hint":
        if student_shapes is None or teacher_shapes is None:
            raise KdlensError(f"loss {name!r} is a hint loss: give student_shapes and teacher_shapes")
        return cls(student_shapes, teacher_shapes, **hyper)
    return cls(**hyper)


__all__ = ["LOSSES", "HintLoss", "LogitLoss", "create_loss", "register_loss"]
