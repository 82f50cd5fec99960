"""Which teacher → student layer pairs a hint loss uses.

Teacher layers: 1-based sub-block indices (PURSUhInT Table 3 numbering), tap names,
``"conventional"`` (the last sub-block before each downsampling, plus the last block),
``"all"`` (every sub-block: AFD over all teacher–student links) or ``"auto"`` (the
hint-point search).  Student layers default to the conventional points when the counts
agree, else to the student sub-block at the same relative depth: ``round(i / L_t · L_s)``
(1-based); ``hints: all`` for a loss that does not pair layers (AFD) defaults the student
to ``all`` too.

With several hint terms (``crd+at+kd``) each term has its own layers:
:func:`default_term_layers` says which when a term names none.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from kdlens.errors import KdlensError
from kdlens.models import conventional_hint_layers, list_taps


#: layer keywords of ``hints`` / ``student_hints`` / a term's ``layers``
KEYWORDS = ("conventional", "all", "auto")

#: hint losses whose RepDistiller form takes the penultimate (pooled) feature, ``feat[-1]``
#: in RepDistiller's train_student.py: CRD, RKD, PKT and CC (the embedding / relation
#: losses; CC's docstring says so for its β).  Every other hint loss uses the hint layers.
PENULTIMATE_LOSSES = frozenset({"crd", "rkd", "pkt", "cc"})


def default_term_layers(loss: str, hints: str | Sequence[int] | Sequence[str]) -> str | Sequence[int] | Sequence[str]:
    """The teacher layers of a hint term that names none, among several hint terms:
    ``"penultimate"`` for :data:`PENULTIMATE_LOSSES`, else the run's ``hints``."""
    return "penultimate" if loss in PENULTIMATE_LOSSES else hints


def hint_blocks(model: nn.Module) -> list[str]:
    return [t for t in list_taps(model, form="post") if t not in ("penultimate", "logits")]


def parse_hint_spec(spec: str | Sequence[int] | Sequence[str]) -> str | list[int] | list[str]:
    """``"6,27,49"`` → [6, 27, 49]; ``"layer1.2,layer2.0"`` → names; keywords unchanged."""
    if isinstance(spec, str):
        if spec in KEYWORDS or spec.startswith("auto:"):
            return spec
        parts = [p.strip() for p in spec.split(",") if p.strip()]
        if all(p.lstrip("-").isdigit() for p in parts):
            return [int(p) for p in parts]
        return parts
    return list(spec)


def resolve_layers(
    spec: str | Sequence[int] | Sequence[str],
    model: nn.Module,
    example: torch.Tensor,
    role: str,
    auto: Callable[[int | None], list[str]] | None = None,
) -> list[str]:
    """``auto`` / ``auto:K``: ``auto(K or None)`` runs or loads the PURSUhInT hint search;
    ``all``: every sub-block (:func:`hint_blocks`)."""
    spec = parse_hint_spec(spec)
    blocks = hint_blocks(model)
    if spec == "conventional":
        return conventional_hint_layers(model, example)
    if spec == "all":
        if not blocks:
            raise KdlensError(f"{role} hints 'all': the model has no sub-blocks to tap; name its layers instead")
        return list(blocks)
    if isinstance(spec, str) and (spec == "auto" or spec.startswith("auto:")):
        k = spec.removeprefix("auto").removeprefix(":")
        if auto is None or (k and not k.isdigit()):
            raise KdlensError(
                f"{role} hints {spec!r}: 'auto' (or 'auto:K', K hint points) is the teacher's hint-point "
                "search; student layers follow the teacher's by relative depth"
            )
        return auto(int(k) if k else None)
    if spec and all(isinstance(s, int) for s in spec):
        bad = [i for i in spec if not 1 <= i <= len(blocks)]
        if bad:
            raise KdlensError(
                f"{role} hint index(es) {bad} out of range: the model has {len(blocks)} sub-blocks, "
                f"allowed 1..{len(blocks)} (1-based, as in PURSUhInT Table 3)"
            )
        return [blocks[i - 1] for i in spec]
    names = [str(s) for s in spec]
    known = set(list_taps(model, form="all")) | {n for n, _ in model.named_modules() if n}
    for name in names:
        if name not in known:
            from kdlens.errors import unknown_name

            raise unknown_name(f"{role} layer", name, list_taps(model, form="all"))
    return names


def match_student_layers(
    teacher_layers: list[str], teacher: nn.Module, student: nn.Module, example: torch.Tensor
) -> list[str]:
    """Student layers for ``teacher_layers``: conventional ↔ conventional, else relative depth."""
    t_blocks, s_blocks = hint_blocks(teacher), hint_blocks(student)
    if teacher_layers == conventional_hint_layers(teacher, example):
        s_conv = conventional_hint_layers(student, example)
        if len(s_conv) == len(teacher_layers):
            return s_conv
    out = []
    for name in teacher_layers:
        base = name.removesuffix(".preact")
        if base not in t_blocks or not s_blocks:
            out.append(name)  # penultimate / logits / custom names map to the same name
            continue
        rel = (t_blocks.index(base) + 1) / len(t_blocks)
        out.append(s_blocks[max(1, round(rel * len(s_blocks))) - 1] + name[len(base):])
    return out
