"""What a sweep takes in and hands back: :class:`StudentSpec` (what differs between the students
of a stack: seed, transfer set, soft targets) and :class:`StackResult` (per-student accuracies,
histories and weights), with the default KD loss weights ``KD_ALPHA`` / ``KD_GAMMA``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from torch import Tensor

from kdlens.data.dataset import as_index_tensor
from kdlens.errors import KdlensError

KD_ALPHA, KD_GAMMA = 0.9, 0.1  # kdlens's "kd" method weights (distill/methods.py)


@dataclass(frozen=True)
class StudentSpec:
    """One student of a sweep: initialisation, transfer set and soft targets.

    Attributes:
        seed: initialisation seed (``torch.manual_seed(seed)`` before building the model,
            as :func:`~kdlens.train.model_setup.model_for_data` does).
        temperature: distillation temperature ``T`` (> 0).
        soft_source: ``"teacher"`` (softmax of the teacher logits at ``T``) or ``"ls"``
            (label smoothing with ``alpha_ls``: no class similarity).
        alpha_ls: α_LS of the ``"ls"`` source.
        noise, noise_scale, noise_seed: ``"none"``, ``"uniform"`` (U(−s, s)) or ``"normal"``
            (N(0, s²)) noise added to the soft target, clamped and renormalised.
        removed_classes: classes whose examples get weight 0 (missing-class test).
        subset: training-set indices this student may use (``None``: all).
        teacher: which teacher's logits (index into a stack of teacher logits).
        alpha, gamma: weights of the soft (KD) and hard (CE) terms.
        tags: free-form labels carried into results (``{"class": 3, "T": 9}``).
    """

    seed: int = 0
    temperature: float = 4.0
    soft_source: Literal["teacher", "ls"] = "teacher"
    alpha_ls: float = 0.1
    noise: Literal["none", "uniform", "normal"] = "none"
    noise_scale: float = 0.0
    noise_seed: int = 0
    removed_classes: tuple[int, ...] = ()
    subset: tuple[int, ...] | np.ndarray | None = field(default=None, compare=False)
    teacher: int = 0
    alpha: float = KD_ALPHA
    gamma: float = KD_GAMMA
    tags: dict[str, Any] = field(default_factory=dict, compare=False)

    def check(self, num_classes: int, num_teachers: int, n_train: int) -> None:
        """Raise a :class:`KdlensError` naming the bad field."""
        if not self.temperature > 0:
            raise KdlensError(f"student spec: temperature must be > 0, got {self.temperature}")
        if self.soft_source not in ("teacher", "ls"):
            raise KdlensError(f"student spec: soft_source must be 'teacher' or 'ls', got {self.soft_source!r}")
        if not 0.0 <= self.alpha_ls <= 1.0:
            raise KdlensError(f"student spec: alpha_ls must be in [0, 1], got {self.alpha_ls}")
        if self.noise not in ("none", "uniform", "normal"):
            raise KdlensError(f"student spec: noise must be 'none', 'uniform' or 'normal', got {self.noise!r}")
        if self.noise_scale < 0:
            raise KdlensError(f"student spec: noise_scale must be >= 0, got {self.noise_scale}")
        bad = [c for c in self.removed_classes if not 0 <= int(c) < num_classes]
        if bad:
            raise KdlensError(f"student spec: removed class id(s) {bad} do not exist; allowed 0..{num_classes - 1}")
        if len(set(self.removed_classes)) >= num_classes:
            raise KdlensError("student spec: removing every class leaves nothing to train on")
        if self.soft_source == "teacher" and not 0 <= self.teacher < max(num_teachers, 0):
            if num_teachers == 0:
                raise KdlensError("student spec: soft_source='teacher' needs teacher logits, none were given")
            raise KdlensError(f"student spec: teacher index {self.teacher} out of range 0..{num_teachers - 1}")
        if self.alpha < 0 or self.gamma < 0 or self.alpha + self.gamma == 0:
            raise KdlensError(f"student spec: need alpha, gamma >= 0, not both 0; got {self.alpha}, {self.gamma}")
        if self.subset is not None:
            as_index_tensor(self.subset, n_train, "student spec subset")


@dataclass
class StackResult:
    """What a sweep produced: per-student test accuracies, histories and weights.

    ``accuracy``: ``S`` test accuracy in %; ``class_accuracy``: ``S×K`` accuracy on each
    class's test images in % (NaN for a class without test images); ``steps``: optimiser steps
    each student took; ``history``: one row per epoch with each student's mean loss;
    ``state_dicts``: each student's weights in the template's layout (CPU), when kept.
    """

    specs: list[StudentSpec]
    accuracy: np.ndarray
    class_accuracy: np.ndarray
    steps: np.ndarray
    history: list[dict[str, Any]]
    seconds: float
    state_dicts: list[dict[str, Tensor]] = field(default_factory=list, repr=False)

    def rows(self) -> list[dict[str, Any]]:
        """One tidy row per student: its tags, spec fields and accuracies."""
        out = []
        for i, spec in enumerate(self.specs):
            row: dict[str, Any] = dict(spec.tags)
            row.update(
                student=i, seed=spec.seed, T=spec.temperature, soft_source=spec.soft_source,
                alpha_ls=spec.alpha_ls, noise=spec.noise, noise_scale=spec.noise_scale,
                removed_classes=list(spec.removed_classes), teacher=spec.teacher,
                test_acc=float(self.accuracy[i]), steps=int(self.steps[i]),
            )
            out.append(row)
        return out
