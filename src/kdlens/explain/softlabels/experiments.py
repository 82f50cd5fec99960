"""The soft-label hypothesis as experiments on students (Vats 2021, *Response-based knowledge
distillation*, ch. 4 and 6).

Every function takes teacher logits for the transfer set (one ``N×K`` tensor, or a mapping
``name → N×K`` to compare several teachers in one run) plus the data, trains all the students
it needs **together** through :func:`kdlens.train.vectorized.train_students` (one batch and one
cached teacher output serve every student; see that module for the exact batch and mask
semantics) and returns tidy results: ``rows()`` (one dict per student / cell) and matrices.
The functions never train a teacher: compute teacher logits with :func:`teacher_logits`.

* :func:`missing_class_test` — Hinton et al. 2015 §3 / thesis §4.4: remove class ``c`` from
  the transfer set, distill at temperature ``T``, measure accuracy on class ``c``'s test
  images; with the label-smoothing control (soft labels with no similarity information).
* :func:`entropy_ranked_transfer_sets` — thesis §4.6: the top-N examples per class by the
  teacher's soft-label entropy at ``T`` vs a random-N baseline.
* :func:`soft_label_noise` — thesis §4.8: noise added to the soft labels, renormalised,
  redrawn every step.
* :func:`teacher_pretraining_sweep` — thesis ch. 6: teachers trained with different batch
  sizes and epochs; their soft-label entropy and their students' accuracy over ``T``.

Defaults (kdlens's, stated here): students start from one initialisation seed (so cells differ
only by transfer set and soft targets), SGD lr 0.05 with momentum 0.9 and weight decay 5e-4,
constant schedule, batch 128, loss ``0.9·T²·KL + 0.1·CE`` (kdlens's ``kd`` weights). The
label-smoothing control uses ``T = 1``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from kdlens.config import OptimConfig
from kdlens.data import Dataset, random_n_per_class, top_n_per_class
from kdlens.errors import KdlensError
from kdlens.explain.softlabels.entropy import (
    THESIS_TEMPERATURES,
    check_temperatures,
    entropy_by_temperature,
    soft_label_entropy,
)
from kdlens.train.vectorized import KD_ALPHA, KD_GAMMA, StackResult, StudentSpec, train_students

__all__ = [
    "MissingClassResult",
    "NoiseResult",
    "PretrainingResult",
    "TransferSetResult",
    "entropy_ranked_transfer_sets",
    "missing_class_test",
    "soft_label_noise",
    "teacher_logits",
    "teacher_pretraining_sweep",
    "top_entropy_examples",
]

Student = str | Callable[[int], nn.Module]
TeacherLogits = torch.Tensor | Mapping[str, torch.Tensor]


@torch.no_grad()
def teacher_logits(model: nn.Module, data: Dataset, device: torch.device | str = "cpu", batch_size: int = 1000) -> torch.Tensor:
    """The (frozen) teacher's logits for every example of ``data`` in eval mode: ``N×K`` float32
    on the CPU, computed once and then shared by every student of a sweep."""
    from kdlens.data import normalize
    from kdlens.train.evaluate import EvalSet, predict_logits

    dev = torch.device(device) if isinstance(device, str) else device
    model.to(dev)
    return predict_logits(model, EvalSet(data.images, data.labels, lambda x: normalize(x, data.mean, data.std)),
                          dev, batch_size)


# ----------------------------------------------------------------------------------------------
# shared plumbing
# ----------------------------------------------------------------------------------------------
def _teachers(logits: TeacherLogits | None, n: int, k: int) -> tuple[list[str], torch.Tensor | None]:
    if logits is None:
        return [], None
    named = dict(logits) if isinstance(logits, Mapping) else {"teacher": logits}
    if not named:
        raise KdlensError("give at least one teacher's logits")
    stacked = []
    for name, t in named.items():
        t = torch.as_tensor(t).float().cpu()
        if t.shape != (n, k):
            raise KdlensError(f"teacher {name!r}: logits must be N×K = {n}×{k} for the transfer set, got {tuple(t.shape)}")
        stacked.append(t)
    return list(named), torch.stack(stacked)


def _check_classes(classes: Sequence[int] | None, k: int, what: str = "classes") -> list[int]:
    if classes is None:
        return list(range(k))
    out = [int(c) for c in classes]
    bad = [c for c in out if not 0 <= c < k]
    if bad:
        raise KdlensError(f"{what}: unknown class id(s) {bad}; allowed 0..{k - 1}")
    if len(set(out)) != len(out):
        raise KdlensError(f"{what}: repeated class ids in {out}")
    if not out:
        raise KdlensError(f"{what}: give at least one class")
    return out


def _check_alphas(alphas: Sequence[float]) -> tuple[float, ...]:
    out = tuple(float(a) for a in alphas)
    bad = [a for a in out if not 0.0 <= a <= 1.0]
    if bad:
        raise KdlensError(f"alpha_ls values must lie in [0, 1], got {bad}")
    return out


@dataclass
class SweepSettings:
    """How the students of an experiment are trained (passed to ``train_students``)."""

    epochs: int = 2
    batch_size: int = 128
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(schedule="constant"))
    seed: int = 0
    student_seed: int = 0
    alpha: float = KD_ALPHA
    gamma: float = KD_GAMMA
    backend: str = "grouped"
    #: "shared" (masked full-set batches) or "own" (each student its subset loader); see
    #: kdlens.train.vectorized. Transfer-set experiments always use "own".
    batches: str = "shared"
    chunk_size: int | None = None
    device: str = "cpu"
    progress: bool = False

    def train(self, student: Student, specs: list[StudentSpec], train: Dataset, test: Dataset,
              t_stack: torch.Tensor | None, **kw: Any) -> StackResult:
        kw.setdefault("epochs", self.epochs)
        kw.setdefault("batches", self.batches)
        return train_students(
            student, specs, train, t_stack, test=test, batch_size=self.batch_size, optim=self.optim,
            seed=self.seed, backend=self.backend, chunk_size=self.chunk_size,  # type: ignore[arg-type]
            device=self.device, keep_states=False, progress=self.progress, **kw,
        )

    def spec(self, **kw: Any) -> StudentSpec:
        return StudentSpec(seed=self.student_seed, alpha=self.alpha, gamma=self.gamma, **kw)


def _other_accuracy(class_acc: np.ndarray, counts: np.ndarray, c: int) -> float:
    keep = np.arange(len(counts)) != c
    w = counts[keep].astype(float)
    vals = class_acc[keep]
    ok = ~np.isnan(vals)
    return float((vals[ok] * w[ok]).sum() / max(w[ok].sum(), 1))


# ----------------------------------------------------------------------------------------------
# missing-class test
# ----------------------------------------------------------------------------------------------
@dataclass
class MissingClassResult:
    """Class × temperature matrices of the missing-class test (values in %).

    ``missing_class_accuracy[teacher]``: ``C×T``, accuracy on the removed class's test images;
    ``test_accuracy[teacher]``: ``C×T`` overall test accuracy; ``ls_*``: ``C×A`` for the
    label-smoothing control over α_LS (empty when no α was given).
    """

    classes: list[int]
    class_names: list[str]
    temperatures: tuple[float, ...]
    ls_alphas: tuple[float, ...]
    teachers: list[str]
    missing_class_accuracy: dict[str, np.ndarray]
    test_accuracy: dict[str, np.ndarray]
    ls_missing_class_accuracy: np.ndarray
    ls_test_accuracy: np.ndarray
    records: list[dict[str, Any]]
    seconds: float

    def rows(self) -> list[dict[str, Any]]:
        return list(self.records)

    def to_dict(self) -> dict[str, Any]:
        return {
            "classes": self.classes, "class_names": self.class_names, "temperatures": list(self.temperatures),
            "ls_alphas": list(self.ls_alphas), "teachers": self.teachers,
            "missing_class_accuracy": {k: v.tolist() for k, v in self.missing_class_accuracy.items()},
            "test_accuracy": {k: v.tolist() for k, v in self.test_accuracy.items()},
            "ls_missing_class_accuracy": self.ls_missing_class_accuracy.tolist(),
            "ls_test_accuracy": self.ls_test_accuracy.tolist(), "seconds": self.seconds,
        }


def missing_class_test(
    student: Student,
    train: Dataset,
    test: Dataset,
    teacher_logits: TeacherLogits | None,
    classes: Sequence[int] | None = None,
    temperatures: Sequence[float] = THESIS_TEMPERATURES,
    ls_alphas: Sequence[float] = (),
    settings: SweepSettings | None = None,
) -> MissingClassResult:
    """For each class ``c`` in ``classes`` (default: all) and each ``T``, distill a student on the
    transfer set without class ``c`` and report its accuracy on class ``c``'s test images
    (Hinton et al. 2015 §3: a student can recognise a class it never saw from the similarity
    information in soft labels; Vats 2021 §4.4). ``ls_alphas`` adds the label-smoothing control:
    soft labels ``(1−α)·onehot + α/K`` at ``T = 1`` — no similarity, so close to 0 % expected.

    All ``|classes|·(|T|·|teachers| + |α|)`` students are trained together; with
    ``settings.batches="shared"`` (default) they share every batch and the removed examples get
    weight 0 (loss and batch norm), with ``"own"`` each runs a loader over its own transfer set
    (exactly a subset-trained student; no shared input). The two differ in batch composition
    and step count, which matters for a fragile quantity like the missing class's accuracy
    after few steps.
    """
    settings = settings or SweepSettings()
    k = train.num_classes
    classes = _check_classes(classes, k)
    ts = check_temperatures(temperatures)
    alphas = _check_alphas(ls_alphas)
    names, t_stack = _teachers(teacher_logits, len(train), k)
    if not names and not alphas:
        raise KdlensError("missing-class test: give teacher logits and/or ls_alphas")
    specs: list[StudentSpec] = []
    for ti, name in enumerate(names):
        for c in classes:
            for T in ts:
                specs.append(settings.spec(temperature=T, removed_classes=(c,), teacher=ti,
                                           tags={"source": "teacher", "teacher": name, "removed_class": c, "T": T}))
    for c in classes:
        for a in alphas:
            specs.append(settings.spec(temperature=1.0, soft_source="ls", alpha_ls=a, removed_classes=(c,),
                                       tags={"source": "ls", "teacher": f"LS α={a:g}", "removed_class": c, "alpha_ls": a}))
    result = settings.train(student, specs, train, test, t_stack)
    counts = test.class_counts().numpy()
    mca = {n: np.zeros((len(classes), len(ts))) for n in names}
    acc = {n: np.zeros((len(classes), len(ts))) for n in names}
    ls_mca = np.zeros((len(classes), len(alphas)))
    ls_acc = np.zeros((len(classes), len(alphas)))
    records = []
    for i, spec in enumerate(specs):
        c = spec.removed_classes[0]
        ci = classes.index(c)
        missing = float(result.class_accuracy[i, c])
        total = float(result.accuracy[i])
        if spec.soft_source == "teacher":
            name = names[spec.teacher]
            mca[name][ci, ts.index(spec.temperature)] = missing
            acc[name][ci, ts.index(spec.temperature)] = total
        else:
            ls_mca[ci, alphas.index(spec.alpha_ls)] = missing
            ls_acc[ci, alphas.index(spec.alpha_ls)] = total
        records.append({
            "source": spec.tags["source"], "teacher": spec.tags["teacher"], "removed_class": c,
            "class_name": train.classes[c], "T": spec.temperature,
            "alpha_ls": spec.alpha_ls if spec.soft_source == "ls" else None,
            "missing_class_acc": missing, "other_classes_acc": _other_accuracy(result.class_accuracy[i], counts, c),
            "test_acc": total, "steps": int(result.steps[i]),
        })
    return MissingClassResult(classes, [train.classes[c] for c in classes], ts, alphas, names, mca, acc,
                              ls_mca, ls_acc, records, result.seconds)


# ----------------------------------------------------------------------------------------------
# entropy-ranked transfer sets
# ----------------------------------------------------------------------------------------------
def top_entropy_examples(logits: Any, labels: Any, T: float = 9.0, k: int = 10) -> np.ndarray:
    """``K×k`` training indices: the ``k`` examples of each class with the highest soft-label
    entropy at ``T`` (most similarity information), highest first; ``-1`` pads small classes."""
    h = soft_label_entropy(logits, T)
    y = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    num_classes = int(logits.shape[1])
    out = np.full((num_classes, k), -1, dtype=np.int64)
    for c in range(num_classes):
        members = np.flatnonzero(y == c)
        order = members[np.lexsort((members, -h[members]))][:k]
        out[c, : len(order)] = order
    return out


@dataclass
class TransferSetResult:
    """Accuracy (%) vs examples per class for entropy-ranked and random transfer sets.

    ``curves[(teacher, selection)]``: mean test accuracy over seeds for every ``N`` of
    ``ns`` (``selection`` is ``"entropy"`` or ``"random"``); ``top_examples[teacher]``: ``K×10``
    indices of each class's highest-entropy examples (for an image grid).
    """

    ns: tuple[int, ...]
    T: float
    teachers: list[str]
    curves: dict[tuple[str, str], np.ndarray]
    top_examples: dict[str, np.ndarray]
    records: list[dict[str, Any]]
    seconds: float

    def rows(self) -> list[dict[str, Any]]:
        return list(self.records)

    def to_dict(self) -> dict[str, Any]:
        return {"ns": list(self.ns), "T": self.T, "teachers": self.teachers,
                "curves": [{"teacher": t, "selection": s, "test_acc": v.tolist()} for (t, s), v in self.curves.items()],
                "top_examples": {t: v.tolist() for t, v in self.top_examples.items()}, "seconds": self.seconds}


def entropy_ranked_transfer_sets(
    student: Student,
    train: Dataset,
    test: Dataset,
    teacher_logits: TeacherLogits,
    ns: Sequence[int] = (5, 10, 20, 50, 100, 200, 500, 1000, 2000),
    T: float = 9.0,
    distill_temperature: float | None = None,
    random_seeds: Sequence[int] = (0,),
    min_steps: int = 0,
    settings: SweepSettings | None = None,
) -> TransferSetResult:
    """Distill on the top-``N`` examples per class ranked by the teacher's soft-label entropy at
    ``T`` (default 9, Vats 2021 §4.6), for every ``N`` in ``ns``, against ``N`` random examples
    per class (one student per seed in ``random_seeds``; empty: no baseline).

    Each student iterates over its own subset like a subset loader (``batches="own"``) for
    ``settings.epochs`` epochs, or more when ``min_steps`` asks for at least that many steps
    (small sets have few batches per epoch). Distillation runs at ``distill_temperature``
    (default: ``T``).
    """
    settings = settings or SweepSettings()
    k = train.num_classes
    names, t_stack = _teachers(teacher_logits, len(train), k)
    (T,) = check_temperatures([T])
    (dT,) = check_temperatures([distill_temperature if distill_temperature is not None else T])
    ns = tuple(int(n) for n in ns)
    if not ns or min(ns) < 1:
        raise KdlensError(f"ns must be positive integers (examples per class), got {list(ns)}")
    labels = train.labels.numpy()
    smallest = int(np.bincount(labels, minlength=k).min())
    if max(ns) > smallest:
        raise KdlensError(f"ns: {max(ns)} examples per class asked, but the smallest class has {smallest}; "
                          f"allowed: N <= {smallest}")
    specs: list[StudentSpec] = []
    top: dict[str, np.ndarray] = {}
    assert t_stack is not None
    for ti, name in enumerate(names):
        h = soft_label_entropy(t_stack[ti], T)
        top[name] = top_entropy_examples(t_stack[ti], labels, T, 10)
        for n in ns:
            subset = top_n_per_class(labels, h, n, largest=True)
            specs.append(settings.spec(temperature=dT, teacher=ti, subset=subset,
                                       tags={"teacher": name, "selection": "entropy", "seed": None, "n_per_class": n}))
            for seed in random_seeds:
                subset = random_n_per_class(labels, n, seed=int(seed))
                specs.append(settings.spec(temperature=dT, teacher=ti, subset=subset,
                                           tags={"teacher": name, "selection": "random", "seed": int(seed), "n_per_class": n}))
    epochs = [max(settings.epochs, math.ceil(min_steps / math.ceil(len(s.subset) / settings.batch_size)))  # type: ignore[arg-type]
              for s in specs]
    result = settings.train(student, specs, train, test, t_stack, batches="own", epochs=epochs)
    records, sums, counts = [], {}, {}
    for i, spec in enumerate(specs):
        key = (spec.tags["teacher"], spec.tags["selection"])
        j = ns.index(spec.tags["n_per_class"])
        sums.setdefault(key, np.zeros(len(ns)))[j] += result.accuracy[i]
        counts.setdefault(key, np.zeros(len(ns)))[j] += 1
        records.append({**spec.tags, "T_rank": T, "T_distill": dT, "epochs": epochs[i],
                        "steps": int(result.steps[i]), "test_acc": float(result.accuracy[i])})
    curves = {key: sums[key] / np.maximum(counts[key], 1) for key in sums}
    return TransferSetResult(ns, T, names, curves, top, records, result.seconds)


# ----------------------------------------------------------------------------------------------
# noise in soft labels
# ----------------------------------------------------------------------------------------------
@dataclass
class NoiseResult:
    """Test accuracy (%) vs noise scale: ``accuracy[(source, noise)]`` over ``scales`` (mean over seeds)."""

    scales: tuple[float, ...]
    accuracy: dict[tuple[str, str], np.ndarray]
    records: list[dict[str, Any]]
    seconds: float

    def rows(self) -> list[dict[str, Any]]:
        return list(self.records)


def soft_label_noise(
    student: Student,
    train: Dataset,
    test: Dataset,
    teacher_logits: TeacherLogits | None,
    scales: Sequence[float] = (0.0, 0.01, 0.05, 0.1, 0.2, 0.5),
    noises: Sequence[str] = ("uniform",),
    T: float = 4.0,
    ls_alpha: float | None = None,
    seeds: Sequence[int] = (0,),
    settings: SweepSettings | None = None,
) -> NoiseResult:
    """Distill with noise of each scale added to the soft labels (Vats 2021 §4.8): uniform
    ``U(−s, s)`` or normal ``N(0, s²)``, clamped at 0, renormalised, redrawn every step from
    each student's own generator (seeded by ``seeds``). Sources: every teacher at ``T``, and the
    label-smoothing target with ``ls_alpha`` (at ``T = 1``) when given."""
    settings = settings or SweepSettings()
    k = train.num_classes
    names, t_stack = _teachers(teacher_logits, len(train), k)
    (T,) = check_temperatures([T])
    scales = tuple(float(s) for s in scales)
    if any(s < 0 for s in scales):
        raise KdlensError(f"noise scales must be >= 0, got {list(scales)}")
    for noise in noises:
        if noise not in ("uniform", "normal"):
            raise KdlensError(f"noise must be 'uniform' or 'normal', got {noise!r}")
    sources = [(n, dict(teacher=i, temperature=T)) for i, n in enumerate(names)]
    if ls_alpha is not None:
        (a,) = _check_alphas([ls_alpha])
        sources.append((f"LS α={a:g}", dict(soft_source="ls", alpha_ls=a, temperature=1.0)))
    if not sources:
        raise KdlensError("soft-label noise: give teacher logits and/or ls_alpha")
    specs = []
    for source, kw in sources:
        for noise in noises:
            for s in scales:
                for seed in seeds:
                    specs.append(settings.spec(noise=noise if s > 0 else "none", noise_scale=s, noise_seed=int(seed),
                                               tags={"source": source, "noise": noise, "scale": s, "seed": int(seed)}, **kw))
    result = settings.train(student, specs, train, test, t_stack)
    sums: dict[tuple[str, str], np.ndarray] = {}
    cnt: dict[tuple[str, str], np.ndarray] = {}
    records = []
    for i, spec in enumerate(specs):
        key = (spec.tags["source"], spec.tags["noise"])
        j = scales.index(spec.tags["scale"])
        sums.setdefault(key, np.zeros(len(scales)))[j] += result.accuracy[i]
        cnt.setdefault(key, np.zeros(len(scales)))[j] += 1
        records.append({**spec.tags, "T": spec.temperature, "test_acc": float(result.accuracy[i])})
    return NoiseResult(scales, {key: sums[key] / cnt[key] for key in sums}, records, result.seconds)


# ----------------------------------------------------------------------------------------------
# teacher pre-training sweep
# ----------------------------------------------------------------------------------------------
@dataclass
class PretrainingResult:
    """Per teacher configuration: soft-label entropy over ``T`` and the student's accuracy over ``T``.

    ``entropy[name]``: mean entropy for every temperature; ``student_accuracy[name]``: test
    accuracy (%) of the student distilled at every temperature; ``configs[name]`` the teacher's
    training settings (e.g. batch size and epochs) as given.
    """

    temperatures: tuple[float, ...]
    teachers: list[str]
    configs: dict[str, dict[str, Any]]
    entropy: dict[str, np.ndarray]
    student_accuracy: dict[str, np.ndarray]
    records: list[dict[str, Any]]
    seconds: float

    def rows(self) -> list[dict[str, Any]]:
        return list(self.records)


def teacher_pretraining_sweep(
    student: Student,
    train: Dataset,
    test: Dataset,
    teachers: Mapping[str, torch.Tensor],
    temperatures: Sequence[float] = THESIS_TEMPERATURES,
    configs: Mapping[str, Mapping[str, Any]] | None = None,
    settings: SweepSettings | None = None,
) -> PretrainingResult:
    """Vats 2021 ch. 6: how a teacher's pre-training (batch size × epochs) shapes its soft labels
    and what its students learn. ``teachers`` maps a name to the logits of a teacher trained with
    the settings in ``configs[name]`` (e.g. ``{"batch_size": 16, "epochs": 5}``; the caller trains
    the teachers). For every teacher: mean soft-label entropy at each ``T`` and the test accuracy
    of a student (e.g. ``"baseline_student"`` or ``"cnn_student"``) distilled at each ``T``;
    all students in one stack."""
    settings = settings or SweepSettings()
    if not teachers:
        raise KdlensError("teacher pre-training sweep: give at least one teacher's logits")
    names, t_stack = _teachers(teachers, len(train), train.num_classes)
    ts = check_temperatures(temperatures)
    assert t_stack is not None
    configs = {n: dict((configs or {}).get(n, {})) for n in names}
    entropy = {n: entropy_by_temperature(t_stack[i], train.labels, ts).mean for i, n in enumerate(names)}
    specs = [settings.spec(temperature=T, teacher=i, tags={"teacher": n, "T": T})
             for i, n in enumerate(names) for T in ts]
    result = settings.train(student, specs, train, test, t_stack)
    acc = {n: np.zeros(len(ts)) for n in names}
    records = []
    for i, spec in enumerate(specs):
        n, j = spec.tags["teacher"], ts.index(spec.temperature)
        acc[n][j] = result.accuracy[i]
        records.append({"teacher": n, **configs[n], "T": spec.temperature, "mean_entropy": float(entropy[n][j]),
                        "student_acc": float(result.accuracy[i])})
    return PretrainingResult(ts, names, configs, entropy, acc, records, result.seconds)
