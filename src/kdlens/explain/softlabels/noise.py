"""Noise in soft labels (Vats 2021, *Response-based knowledge distillation*, §4.8).

If a student learns from the *similarity information* in a teacher's soft labels, destroying
that information with noise should cost accuracy — and above all the accuracy on a class the
student never saw (the missing-class test, §4.4), which it can only learn from similarity.
Label-smoothing targets carry no similarity information; noise on them is the control.

The noisy target of every example, redrawn at **every step** from the student's own
generator, is (:func:`noisy_soft_labels`, the rule of
:func:`kdlens.distill.losses.noisy_kd.perturb_soft_labels`, which the vectorised trainer applies)::

    p̃ = max(p + ε, 0) / Σ_k max(p_k + ε_k, 0)       (a row that noise pushed entirely to 0 → uniform)

with ``ε ~ U(−s, s)`` (``"uniform"``) or ``ε ~ N(0, s²)`` (``"normal"``) per entry, ``s`` the
noise scale. The issue text only says "renormalised every step"; clipping at 0 then dividing by
the row sum is kdlens's choice (a softmax of log-probabilities plus noise would be another): it
keeps a target a probability vector and lets large noise push a soft label towards uniform.
Scale 0 means no noise at all (the target is not even renormalised, so it is bit for bit the
noiseless one).

:func:`soft_label_noise_sweep` trains every student together (:mod:`kdlens.train.vectorized`):
per soft-label source (each teacher at ``T``; label smoothing with each ``α_LS`` at ``T = 1``),
per removed class (none, or each class of ``removed_classes``), per noise type, per scale and
per noise seed. A scale-0 student has no noise at all (``noise="none"``): it is trained once per
source and removed class and stands for both noise types, and it is exactly the student of the
noiseless experiment with the same settings. Students start from one initialisation seed
(``settings.student_seed``), so the noise draw (``seeds``) is the only thing that varies
between repetitions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from kdlens.distill.losses.noisy_kd import perturb_soft_labels
from kdlens.errors import KdlensError
from kdlens.explain.softlabels.entropy import check_temperatures
from kdlens.explain.softlabels.experiments import (
    SweepSettings,
    Student,
    TeacherLogits,
    _check_alphas,
    _check_classes,
    _other_accuracy,
    _teachers,
)
from kdlens.train.vectorized import StudentSpec

__all__ = [
    "DEFAULT_NOISE_SCALES",
    "NOISES",
    "NoiseSweepResult",
    "check_noise_scales",
    "check_noises",
    "draw_noise",
    "noise_values",
    "noisy_soft_labels",
    "soft_label_noise_sweep",
]

#: The noise types: ``uniform`` ε ~ U(−s, s), ``normal`` ε ~ N(0, s²).
NOISES: tuple[str, ...] = ("uniform", "normal")
#: Default scales (kdlens's grid: from invisible next to soft labels of 0.1–0.9 to swamping them).
DEFAULT_NOISE_SCALES: tuple[float, ...] = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5)


def check_noise_scales(scales: Sequence[float]) -> tuple[float, ...]:
    """The scales as floats: at least one, each finite and ``>= 0``, none repeated."""
    try:
        out = tuple(float(s) for s in scales)
    except (TypeError, ValueError):
        raise KdlensError(f"noise scales must be numbers, got {list(scales)!r}") from None
    if not out:
        raise KdlensError("give at least one noise scale (e.g. 0,0.05,0.1,0.2)")
    bad = [s for s in out if not (math.isfinite(s) and s >= 0)]
    if bad:
        raise KdlensError(f"noise scales must be finite and >= 0, got {bad}")
    if len(set(out)) != len(out):
        raise KdlensError(f"noise scales repeat: {list(out)}")
    return out


def check_noises(noises: Sequence[str]) -> tuple[str, ...]:
    out = tuple(str(n) for n in noises)
    if not out:
        raise KdlensError(f"give at least one noise type ({', '.join(NOISES)})")
    bad = [n for n in out if n not in NOISES]
    if bad:
        raise KdlensError(f"unknown noise type(s) {bad}; use {', '.join(NOISES)}")
    if len(set(out)) != len(out):
        raise KdlensError(f"noise types repeat: {list(out)}")
    return out


def draw_noise(shape: Sequence[int], noise: str, scale: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """``ε`` of ``shape`` (float32): ``U(−scale, scale)`` or ``N(0, scale²)``, drawn exactly as the
    vectorised trainer draws it (``2·rand − 1`` times ``scale``; ``randn`` times ``scale``)."""
    (noise,) = check_noises([noise])
    (scale,) = check_noise_scales([scale])
    if noise == "uniform":
        return (2.0 * torch.rand(tuple(shape), generator=generator) - 1.0) * scale
    return torch.randn(tuple(shape), generator=generator) * scale


def noisy_soft_labels(probs: torch.Tensor, noise: str | torch.Tensor, scale: float = 0.0,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """``max(p + ε, 0)`` renormalised per row (an all-zero row becomes uniform). ``noise`` is the
    noise type (``ε`` drawn with ``scale`` from ``generator``) or ``ε`` itself."""
    probs = torch.as_tensor(probs, dtype=torch.float32)
    if probs.dim() != 2:
        raise KdlensError(f"soft labels must be an N×K matrix, got shape {tuple(probs.shape)}")
    if not isinstance(noise, torch.Tensor) and check_noise_scales([scale])[0] == 0.0:
        check_noises([noise])
        return probs.clone()  # as in training: scale 0 is no noise at all (not a renormalisation of p)
    eps = noise if isinstance(noise, torch.Tensor) else draw_noise(probs.shape, noise, scale, generator)
    if eps.shape != probs.shape:
        raise KdlensError(f"noise of shape {tuple(eps.shape)} for soft labels of shape {tuple(probs.shape)}")
    return perturb_soft_labels(probs, eps.to(probs.dtype))


@dataclass
class NoiseSweepResult:
    """Student accuracy (%) vs noise scale.

    ``accuracy[(source, noise)]``: test accuracy at every scale of ``scales`` (mean over noise
    seeds and removed classes); ``missing_class_accuracy[(source, noise)]``: accuracy on the
    removed class (mean over removed classes and seeds; empty when no class was removed).
    ``sources``: teacher names, then ``"LS α=…"`` per label-smoothing α. ``records``: one row per
    (student, noise type) with its numbers.
    """

    scales: tuple[float, ...]
    noises: tuple[str, ...]
    sources: list[str]
    T: float
    removed_classes: list[int]
    accuracy: dict[tuple[str, str], np.ndarray]
    missing_class_accuracy: dict[tuple[str, str], np.ndarray]
    records: list[dict[str, Any]]
    seconds: float

    def rows(self) -> list[dict[str, Any]]:
        return list(self.records)

    def to_dict(self) -> dict[str, Any]:
        return {
            "scales": list(self.scales), "noises": list(self.noises), "sources": self.sources, "T": self.T,
            "removed_classes": self.removed_classes,
            "accuracy": [{"source": s, "noise": n, "test_acc": v.tolist()} for (s, n), v in self.accuracy.items()],
            "missing_class_accuracy": [{"source": s, "noise": n, "missing_class_acc": v.tolist()}
                                       for (s, n), v in self.missing_class_accuracy.items()],
            "seconds": self.seconds,
        }


def soft_label_noise_sweep(
    student: Student,
    train: Any,
    test: Any,
    teacher_logits: TeacherLogits | None,
    scales: Sequence[float] = DEFAULT_NOISE_SCALES,
    noises: Sequence[str] = NOISES,
    T: float = 4.0,
    ls_alphas: Sequence[float] = (0.1,),
    removed_classes: Sequence[int] | None = None,
    seeds: Sequence[int] = (0,),
    settings: SweepSettings | None = None,
) -> NoiseSweepResult:
    """Distill a student from noisy soft labels for every source × removed class × noise type ×
    scale × seed (module docstring), all students in one stack; ``removed_classes`` (class ids)
    adds the missing-class test: each student is distilled without that class and its accuracy
    on the class's test images is reported."""
    settings = settings or SweepSettings()
    k = train.num_classes
    scales = check_noise_scales(scales)
    noises = check_noises(noises)
    (T,) = check_temperatures([T])
    alphas = _check_alphas(ls_alphas)
    removed = _check_classes(removed_classes, k, "removed classes") if removed_classes else []
    seeds = tuple(int(s) for s in seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        raise KdlensError(f"noise seeds: give distinct seeds, got {list(seeds)}")
    names, t_stack = _teachers(teacher_logits, len(train), k)
    sources: list[tuple[str, dict[str, Any]]] = [(n, {"teacher": i, "temperature": T}) for i, n in enumerate(names)]
    sources += [(f"LS α={a:g}", {"soft_source": "ls", "alpha_ls": a, "temperature": 1.0}) for a in alphas]
    if not sources:
        raise KdlensError("soft-label noise: give teacher logits and/or label-smoothing α values")
    cases: list[int | None] = list(removed) or [None]
    specs: list[StudentSpec] = []
    uses: list[list[tuple[str, int]]] = []  # per spec: the (noise, seed) cells it stands for
    for source, kw in sources:
        for c in cases:
            drop = () if c is None else (c,)
            for s in scales:
                if s == 0.0:  # noiseless: one student for every noise type and seed
                    specs.append(settings.spec(removed_classes=drop, tags={"source": source, "removed_class": c,
                                                                           "scale": 0.0}, **kw))
                    uses.append([(n, seed) for n in noises for seed in seeds])
                    continue
                for n in noises:
                    for seed in seeds:
                        specs.append(settings.spec(noise=n, noise_scale=s, noise_seed=seed, removed_classes=drop,
                                                   tags={"source": source, "removed_class": c, "scale": s}, **kw))
                        uses.append([(n, seed)])
    result = settings.train(student, specs, train, test, t_stack)
    counts = test.class_counts().numpy()
    acc_sum: dict[tuple[str, str], np.ndarray] = {}
    mca_sum: dict[tuple[str, str], np.ndarray] = {}
    cnt: dict[tuple[str, str], np.ndarray] = {}
    records = []
    for i, spec in enumerate(specs):
        source, c, s = spec.tags["source"], spec.tags["removed_class"], spec.tags["scale"]
        j = scales.index(s)
        total = float(result.accuracy[i])
        missing = None if c is None else float(result.class_accuracy[i, c])
        for n, seed in uses[i]:
            key = (source, n)
            acc_sum.setdefault(key, np.zeros(len(scales)))[j] += total
            cnt.setdefault(key, np.zeros(len(scales)))[j] += 1
            if missing is not None:
                mca_sum.setdefault(key, np.zeros(len(scales)))[j] += missing
            records.append({
                "source": source, "kind": "ls" if spec.soft_source == "ls" else "teacher", "noise": n, "scale": s,
                "seed": seed, "T": spec.temperature, "alpha_ls": spec.alpha_ls if spec.soft_source == "ls" else None,
                "removed_class": c, "class_name": None if c is None else train.classes[c],
                "test_acc": total, "missing_class_acc": missing,
                "other_classes_acc": None if c is None else _other_accuracy(result.class_accuracy[i], counts, c),
                "steps": int(result.steps[i]), "student": i,
            })
    order = {(src, n): None for src, _ in sources for n in noises}  # sources, then noise types, in order
    accuracy = {key: acc_sum[key] / cnt[key] for key in order}
    mca = {key: mca_sum[key] / cnt[key] for key in order if key in mca_sum}
    return NoiseSweepResult(scales, noises, [s for s, _ in sources], T, list(removed), accuracy, mca, records,
                            result.seconds)


def noise_values(records: Sequence[Mapping[str, Any]], scales: Sequence[float], value: str = "test_acc"
                 ) -> dict[tuple[str, str], list[list[float]]]:
    """The per-seed / per-removed-class numbers behind each mean: ``[(source, noise)][scale index]``
    (from :meth:`NoiseSweepResult.rows` or the rows of its CSV), for mean ± std figures."""
    out: dict[tuple[str, str], list[list[float]]] = {}
    index = {float(s): j for j, s in enumerate(scales)}
    for r in records:
        v = r.get(value)
        if v is None or v == "":
            continue
        try:
            x = float(v)
            j = index[float(r["scale"])]
        except (TypeError, ValueError, KeyError):
            continue
        out.setdefault((str(r["source"]), str(r["noise"])), [[] for _ in scales])[j].append(x)
    return out
