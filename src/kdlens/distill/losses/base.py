"""The two kinds of distillation loss, and the registry that finds them by name.

* :class:`LogitLoss` — response-based: ``forward(student_logits, teacher_logits,
  targets=None) -> scalar``.
* :class:`HintLoss` — feature / relation based: built from the per-sample feature
  shapes of each (student, teacher) layer pair, because adapters (regressors,
  embeddings, connectors) need them; ``forward(student_feats, teacher_feats,
  **context) -> scalar`` is the sum over pairs.

Teacher tensors are treated as fixed targets: every loss detaches them.

Losses register with ``@register_loss("name")``; :data:`LOSSES` maps names to
classes (``LOSSES.get`` raises :class:`~kdlens.errors.KdlensError` listing close
matches).  The class attribute ``kind`` ("logit" or "hint") says which signature a
loss has.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import ClassVar, TypeVar

import torch
from torch import Tensor, nn

from kdlens.errors import KdlensError
from kdlens.registry import Registry

Shape = tuple[int, ...]

LOSSES: Registry[type[nn.Module]] = Registry("loss")

L = TypeVar("L", bound=type[nn.Module])


def register_loss(name: str) -> Callable[[L], L]:
    """Class decorator: register a loss under ``name`` and record the name on it."""

    def decorate(cls: L) -> L:
        cls.name = name  # type: ignore[attr-defined]
        return LOSSES.register(name)(cls)

    return decorate


class LogitLoss(nn.Module):
    """Base class of response-based losses (kind ``"logit"``).

    ``needs_teacher``: whether ``teacher_logits`` is used (label smoothing: no).
    ``needs_targets``: whether ``targets`` is used.  Targets equal to ``-1`` mark
    unlabeled samples; each loss documents what it does with them.
    """

    kind: ClassVar[str] = "logit"
    name: ClassVar[str] = ""
    needs_teacher: ClassVar[bool] = True
    needs_targets: ClassVar[bool] = False
    #: linear warm-up of the term's weight over this fraction of the epochs (0: none);
    #: see :attr:`HintLoss.warmup_fraction`
    warmup_fraction: ClassVar[float] = 0.0

    def forward(  # pragma: no cover - abstract
        self, student_logits: Tensor, teacher_logits: Tensor | None = None, targets: Tensor | None = None
    ) -> Tensor:
        raise NotImplementedError

    def _teacher(self, teacher_logits: Tensor | None, like: Tensor) -> Tensor:
        """The teacher logits as a fixed target: detached, in the student's dtype."""
        if teacher_logits is None:
            raise KdlensError(f"loss {self.name!r} needs teacher logits, but none were given")
        return teacher_logits.detach().to(dtype=like.dtype)

    def _targets(self, targets: Tensor | None) -> Tensor:
        if targets is None:
            raise KdlensError(f"loss {self.name!r} needs class targets, but none were given")
        return targets


def targets_or_teacher_argmax(targets: Tensor | None, teacher_logits: Tensor) -> Tensor:
    """Class indices for losses that need a "target class" for every sample.

    Labeled samples keep their label; unlabeled ones (target ``-1``, or no targets
    at all) use the teacher's arg-max as a pseudo-label.  This is kdlens's rule
    for running target-aware losses (DKD, WSL) on unlabeled transfer data.
    """
    pseudo = teacher_logits.argmax(dim=1)
    if targets is None:
        return pseudo
    return torch.where(targets >= 0, targets, pseudo)


def as_target(teacher: Tensor, like: Tensor) -> Tensor:
    """A teacher tensor as a fixed target: detached, in ``like``'s dtype."""
    return teacher.detach().to(dtype=like.dtype)


class HintLoss(nn.Module):
    """Base class of feature / relation losses (kind ``"hint"``).

    Built as ``cls(student_shapes, teacher_shapes, **hyper)``: per-sample shapes,
    ``(C, H, W)`` or ``(D,)``, one per (student, teacher) layer pair, in order.

    Phase attributes for the training loop (it owns the loop; the loss only says
    what it needs):

    ``requires_pretraining``
        The method has a phase before the main training (FitNet stage 1, AB and
        FSP initialisation, FT paraphraser training).  The loop then minimises
        :meth:`pretrain_loss` first.
    ``pretrain_trains_student``
        In that phase the student (up to the tapped layers) is trained together
        with :meth:`pretrain_parameters` (FitNet, AB, FSP); if ``False`` only the
        loss's own modules are trained (FT's paraphraser, on teacher features).
    ``active_in_main_phase``
        Whether the paper keeps this term in the main phase (AB and FSP use the
        transfer only as initialisation, so ``False`` there).
    ``warmup_fraction``
        The loop raises the term's weight linearly over the first
        ``max(1, round(warmup_fraction · epochs))`` epochs: weight · min(1, (e + 1) / W)
        in epoch e (0-based); 0 means no warm-up (ReviewKD: 20 / 240).

    Layer attribute:

    ``pairs_layers``
        ``True`` (default): student layer i is paired with teacher layer i, so both
        lists have the same length.  ``False``: the loss relates any number of teacher
        layers to any number of student layers (AFD's attention over all links), and
        the counts may differ.
    """

    kind: ClassVar[str] = "hint"
    name: ClassVar[str] = ""
    #: whether (D,) feature shapes are accepted (spatial methods need (C, H, W))
    accepts_vectors: ClassVar[bool] = True
    #: the fewest layer pairs the method can work with
    min_pairs: ClassVar[int] = 1
    #: whether student layer i goes with teacher layer i (equal counts); see above
    pairs_layers: ClassVar[bool] = True
    #: linear warm-up of the term's weight over this fraction of the epochs; see above
    warmup_fraction: ClassVar[float] = 0.0
    requires_pretraining: bool = False
    pretrain_trains_student: ClassVar[bool] = False
    active_in_main_phase: ClassVar[bool] = True

    def __init__(self, student_shapes: Sequence[Sequence[int]], teacher_shapes: Sequence[Sequence[int]]) -> None:
        super().__init__()
        self.student_shapes: list[Shape] = [self._shape(s, "student") for s in student_shapes]
        self.teacher_shapes: list[Shape] = [self._shape(t, "teacher") for t in teacher_shapes]
        if self.pairs_layers and len(self.student_shapes) != len(self.teacher_shapes):
            raise KdlensError(
                f"{self.name}: got {len(self.student_shapes)} student layers but "
                f"{len(self.teacher_shapes)} teacher layers; give one student layer per teacher layer"
            )
        if self.pairs_layers and len(self.student_shapes) < self.min_pairs:
            raise KdlensError(
                f"{self.name}: needs at least {self.min_pairs} layer pair(s), got {len(self.student_shapes)}"
            )
        if not self.pairs_layers and min(len(self.student_shapes), len(self.teacher_shapes)) < self.min_pairs:
            raise KdlensError(
                f"{self.name}: needs at least {self.min_pairs} teacher and {self.min_pairs} student layer(s), "
                f"got {len(self.teacher_shapes)} teacher and {len(self.student_shapes)} student"
            )
        if not self.accepts_vectors:
            for role, shapes in (("student", self.student_shapes), ("teacher", self.teacher_shapes)):
                for i, s in enumerate(shapes):
                    if len(s) != 3:
                        raise KdlensError(
                            f"{self.name}: {role} layer {i} has shape {s}; this method needs "
                            f"convolutional feature maps (C, H, W). Tap a convolutional layer instead."
                        )

    def _shape(self, shape: Iterable[int], role: str) -> Shape:
        s = tuple(int(d) for d in shape)
        if len(s) not in (1, 3) or any(d <= 0 for d in s):
            raise KdlensError(
                f"{self.name}: {role} feature shape {s} is not a per-sample shape (C, H, W) or (D,)"
            )
        return s

    @property
    def num_pairs(self) -> int:
        return len(self.student_shapes)

    def check_features(self, student_feats: Sequence[Tensor], teacher_feats: Sequence[Tensor]) -> None:
        """Raise a readable error if the tensors do not match the declared shapes."""
        for role, feats, shapes in (
            ("student", student_feats, self.student_shapes),
            ("teacher", teacher_feats, self.teacher_shapes),
        ):
            if len(feats) != len(shapes):
                raise KdlensError(f"{self.name}: expected {len(shapes)} {role} feature tensors, got {len(feats)}")
            for i, (f, s) in enumerate(zip(feats, shapes)):
                if tuple(f.shape[1:]) != s:
                    raise KdlensError(
                        f"{self.name}: {role} feature {i} has per-sample shape {tuple(f.shape[1:])}, "
                        f"but the loss was built for {s}"
                    )

    def forward(self, student_feats: Sequence[Tensor], teacher_feats: Sequence[Tensor], **context) -> Tensor:
        """Sum of :meth:`pair_loss` over the layer pairs (teacher features detached and
        cast to the student's dtype, e.g. from a half-precision teacher cache)."""
        self.check_features(student_feats, teacher_feats)
        terms = [
            self.pair_loss(i, f_s, as_target(f_t, f_s), **context)
            for i, (f_s, f_t) in enumerate(zip(student_feats, teacher_feats))
        ]
        return torch.stack(terms).sum()

    def pair_loss(self, i: int, f_s: Tensor, f_t: Tensor, **context) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def pretrain_loss(self, student_feats: Sequence[Tensor], teacher_feats: Sequence[Tensor], **context) -> Tensor:
        """Loss of the pre-training phase (only where ``requires_pretraining``)."""
        raise KdlensError(f"{self.name}: this method has no pre-training phase")

    def pretrain_parameters(self) -> Iterator[nn.Parameter]:
        """The loss's own parameters trained in the pre-training phase."""
        return iter(())
