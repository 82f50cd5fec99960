"""Teacher pre-training (Vats 2021, *Response-based knowledge distillation*, ch. 6; Figs. 6.2–6.5):
how the teacher's batch size and number of epochs shape its soft labels, and what a student
learns from them.

For every batch size one teacher run is trained (:func:`kdlens.train.epoch_checkpoints.run_training_keeping_epochs`,
recorded in the run store under ``out``, reused when it is already done) and keeps its weights
after every epoch. For every (batch size, epoch) the kept teacher's soft labels on the transfer
set are measured — mean entropy over temperatures (:mod:`kdlens.explain.softlabels`) — and a
student (default the thesis's single-layer ``baseline_student``) is distilled from it at
``student_T``; all those students are trained together in one stack
(:func:`kdlens.explain.softlabels.teacher_pretraining_sweep`).

The thesis's recommendation — choose the teacher's batch size and epochs by the entropy of its
soft labels rather than by its accuracy alone — is :func:`recommend`: among the (batch size,
epochs) whose teacher is within ``tolerance`` accuracy points of the best teacher, the one with
the highest mean entropy at ``T``. The result says how that teacher's student compares with the
best student of the sweep, and the rank correlation between teacher entropy and student
accuracy over all cells (whether the rule holds here is an empirical question, not assumed).

Defaults (kdlens's): ``T = 9`` (the thesis's temperature of the entropy-ranked transfer sets),
batch sizes 16 … 8,192 in powers of two, the teacher optimiser of the base config (a constant
learning rate when it names none) with the **same learning rate for every batch size** (no
scaling rule; override it per sweep with ``optim.lr``).

Cost: every (batch size, epoch) cell is one teacher forward pass over the transfer set (for
entropy and the students' targets); ``measure_epochs`` / ``train_subset`` bound it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kdlens.config import TrainConfig, validate
from kdlens.errors import KdlensError

__all__ = [
    "DEFAULT_BATCH_SIZES",
    "PretrainingSweepResult",
    "check_batch_sizes",
    "check_epochs",
    "recommend",
    "recommendation_text",
    "run_pretraining_sweep",
    "teacher_configs",
]

#: Vats 2021 ch. 6: teacher batch sizes from 16 to 8,192.
DEFAULT_BATCH_SIZES: tuple[int, ...] = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)


def check_batch_sizes(batch_sizes: Sequence[int]) -> tuple[int, ...]:
    out = []
    for b in batch_sizes:
        if isinstance(b, bool) or int(b) != b or int(b) < 1:
            raise KdlensError(f"batch sizes must be positive integers, got {list(batch_sizes)}")
        out.append(int(b))
    if not out:
        raise KdlensError("give at least one teacher batch size (e.g. 16,64,256,1024)")
    if len(set(out)) != len(out):
        raise KdlensError(f"batch sizes repeat: {out}")
    return tuple(out)


def check_epochs(epochs: int | Sequence[int]) -> tuple[int, ...]:
    """Epoch counts to measure: ``E`` means ``1…E``; a list is taken as given (sorted)."""
    seq = list(range(1, int(epochs) + 1)) if isinstance(epochs, (int, np.integer)) else list(epochs)
    bad = [e for e in seq if isinstance(e, bool) or int(e) != e or int(e) < 1]
    if not seq or bad:
        raise KdlensError(f"teacher epochs must be positive integers, got {epochs!r}")
    out = sorted({int(e) for e in seq})
    if len(out) != len(seq):
        raise KdlensError(f"teacher epochs repeat: {seq}")
    return tuple(out)


def teacher_configs(base: Mapping[str, Any], batch_sizes: Sequence[int], epochs: int, out: str | Path,
                    name: str | None = None) -> dict[int, TrainConfig]:
    """One validated teacher config per batch size (``base`` with ``batch_size``, ``epochs``,
    an evaluation every epoch, ``out`` and a name ``pretrain-<model>-b<batch>``); all are checked
    before any trains."""
    from kdlens.train.run import short_name

    base = {k: v for k, v in dict(base).items() if k not in ("kind", "out", "name")}
    base.setdefault("optim", {"schedule": "constant"})
    stem = name or f"pretrain-{short_name(str((base.get('model') or {}).get('name', 'model')))}"
    return {b: validate(TrainConfig, {**base, "batch_size": b, "epochs": int(epochs), "eval_every": 1,
                                      "out": str(out), "name": f"{stem}-b{b}"}, f"teacher config (batch size {b})")
            for b in check_batch_sizes(batch_sizes)}


@dataclass
class PretrainingSweepResult:
    """Per teacher batch size ``b`` (rows) and epoch count ``e`` (columns):

    ``entropy[b, e, t]`` mean soft-label entropy (nats) over the transfer set at
    ``temperatures[t]``; ``teacher_accuracy[b, e]`` the teacher's test accuracy (%) after ``e``
    epochs; ``student_accuracy[b, e]`` the test accuracy (%) of the student distilled from it at
    ``student_T``; ``runs[b]`` the teacher's run directory; ``recommendation`` from
    :func:`recommend`.
    """

    batch_sizes: tuple[int, ...]
    epochs: tuple[int, ...]
    temperatures: tuple[float, ...]
    T: float
    student_T: float
    student: str
    entropy: np.ndarray
    teacher_accuracy: np.ndarray
    student_accuracy: np.ndarray
    runs: dict[int, str]
    recommendation: dict[str, Any] = field(default_factory=dict)
    seconds_teachers: float = 0.0
    seconds_students: float = 0.0

    def rows(self) -> list[dict[str, Any]]:
        """One tidy row per (batch size, epochs, temperature)."""
        out = []
        for i, b in enumerate(self.batch_sizes):
            for j, e in enumerate(self.epochs):
                for t, T in enumerate(self.temperatures):
                    out.append({"batch_size": b, "epochs": e, "T": T, "mean_entropy": float(self.entropy[i, j, t]),
                                "teacher_acc": _num(self.teacher_accuracy[i, j]),
                                "student_acc": _num(self.student_accuracy[i, j]), "student_T": self.student_T,
                                "run": Path(self.runs[b]).name})
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"batch_sizes": list(self.batch_sizes), "epochs": list(self.epochs),
                "temperatures": list(self.temperatures), "T": self.T, "student_T": self.student_T,
                "student": self.student, "entropy": self.entropy.tolist(),
                "teacher_accuracy": self.teacher_accuracy.tolist(), "student_accuracy": self.student_accuracy.tolist(),
                "runs": {str(b): str(p) for b, p in self.runs.items()}, "recommendation": self.recommendation,
                "seconds_teachers": self.seconds_teachers, "seconds_students": self.seconds_students}


def _num(v: Any) -> float | None:
    v = float(v)
    return v if np.isfinite(v) else None


def _spearman(x: np.ndarray, y: np.ndarray) -> float | None:
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3:
        return None

    def ranks(v: np.ndarray) -> np.ndarray:  # average ranks of ties
        order = np.argsort(v, kind="mergesort")
        r = np.empty(len(v))
        r[order] = np.arange(len(v), dtype=float)
        for u in np.unique(v):
            r[v == u] = r[v == u].mean()
        return r

    rx, ry = ranks(x[ok]), ranks(y[ok])
    if rx.std() == 0 or ry.std() == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])


def recommend(batch_sizes: Sequence[int], epochs: Sequence[int], entropy_at_T: np.ndarray, teacher_accuracy: np.ndarray,
              student_accuracy: np.ndarray | None = None, T: float = 9.0, tolerance: float = 1.0) -> dict[str, Any]:
    """The (batch size, epochs) to pre-train the teacher with, chosen by entropy (Vats 2021 ch. 6):
    among the cells whose teacher accuracy is within ``tolerance`` points of the best, the one
    with the highest mean entropy at ``T`` (ties: the smaller batch, then fewer epochs). With the
    students' accuracies: that cell's student, the best student, and the Spearman correlation of
    entropy and student accuracy over every cell."""
    h = np.asarray(entropy_at_T, dtype=float)
    acc = np.asarray(teacher_accuracy, dtype=float)
    if tolerance < 0:
        raise KdlensError(f"accuracy tolerance must be >= 0, got {tolerance}")
    if not np.isfinite(acc).any():
        raise KdlensError("no teacher accuracy recorded: cannot recommend a batch size and epochs")
    best = float(np.nanmax(acc))
    eligible = np.isfinite(acc) & (acc >= best - tolerance) & np.isfinite(h)
    cells = [(i, j) for i in range(h.shape[0]) for j in range(h.shape[1]) if eligible[i, j]]
    i, j = max(cells, key=lambda c: (h[c], -c[0], -c[1]))
    out: dict[str, Any] = {
        "rule": f"highest mean soft-label entropy at T = {T:g} among teachers within {tolerance:g} accuracy "
                f"points of the best teacher ({best:.2f} %)",
        "batch_size": int(batch_sizes[i]), "epochs": int(epochs[j]), "T": float(T), "entropy": float(h[i, j]),
        "teacher_acc": float(acc[i, j]), "best_teacher_acc": best, "tolerance": float(tolerance),
        "eligible": int(len(cells)),
    }
    ib, jb = np.unravel_index(int(np.nanargmax(acc)), acc.shape)
    out["most_accurate_teacher"] = {"batch_size": int(batch_sizes[ib]), "epochs": int(epochs[jb]),
                                    "entropy": float(h[ib, jb]), "teacher_acc": float(acc[ib, jb])}
    if student_accuracy is not None and np.isfinite(np.asarray(student_accuracy, dtype=float)).any():
        s = np.asarray(student_accuracy, dtype=float)
        out["student_acc"] = _num(s[i, j])
        isb, jsb = np.unravel_index(int(np.nanargmax(s)), s.shape)
        out["best_student"] = {"batch_size": int(batch_sizes[isb]), "epochs": int(epochs[jsb]),
                               "student_acc": float(s[isb, jsb]), "entropy": float(h[isb, jsb])}
        out["most_accurate_teacher"]["student_acc"] = _num(s[ib, jb])
        out["spearman_entropy_student"] = _spearman(h.ravel(), s.ravel())
    return out


def _epochs(n: int) -> str:
    return f"{n} epoch{'s' if n != 1 else ''}"


def recommendation_text(rec: Mapping[str, Any]) -> str:
    """The recommendation as lines for people."""
    lines = [f"recommendation (Vats 2021 ch. 6, choose the teacher's batch size and epochs by entropy): "
             f"batch size {rec['batch_size']}, {_epochs(rec['epochs'])}",
             f"  rule: {rec['rule']}",
             f"  its soft labels: mean entropy {rec['entropy']:.3f} nats at T = {rec['T']:g}; teacher test accuracy "
             f"{rec['teacher_acc']:.2f} %"]
    top = rec.get("most_accurate_teacher")
    if top:
        lines.append(f"  most accurate teacher: batch size {top['batch_size']}, {_epochs(top['epochs'])}, "
                     f"{top['teacher_acc']:.2f} %, entropy {top['entropy']:.3f}"
                     + (f", its student {top['student_acc']:.2f} %" if top.get("student_acc") is not None else ""))
    if rec.get("student_acc") is not None:
        best = rec["best_student"]
        lines.append(f"  student of the recommended teacher: {rec['student_acc']:.2f} %; best student of the sweep: "
                     f"{best['student_acc']:.2f} % (batch size {best['batch_size']}, {_epochs(best['epochs'])}, "
                     f"teacher entropy {best['entropy']:.3f})")
        rho = rec.get("spearman_entropy_student")
        if rho is not None:
            lines.append(f"  Spearman correlation of teacher entropy and student accuracy over the sweep: {rho:+.2f}")
    return "\n".join(lines)


def run_pretraining_sweep(
    base: Mapping[str, Any],
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    epochs: int | Sequence[int] = 10,
    temperatures: Sequence[float] | None = None,
    T: float = 9.0,
    student: str | None = "baseline_student",
    student_T: float | None = None,
    settings: Any = None,
    tolerance: float = 1.0,
    out: str | Path = "runs/pretraining",
    train_subset: int | None = None,
    seed: int = 0,
    progress: bool = False,
    log: Any = None,
) -> PretrainingSweepResult:
    """The whole sweep (module docstring). ``base``: a teacher ``TrainConfig`` mapping (model,
    data, optim, bf16, …; batch size and epochs are set per run); ``epochs``: ``E`` (measure
    after every epoch 1…E) or the epoch counts to measure (the runs train to the largest);
    ``temperatures``: where entropy is measured (``T`` and ``student_T`` are added);
    ``student=None`` skips the students; ``settings``: their
    :class:`~kdlens.explain.softlabels.SweepSettings`; ``train_subset``: a seeded sample of the
    training split as the transfer set (the teachers train on the whole split)."""
    from kdlens.explain.inputs import in_memory, open_data
    from kdlens.explain.softlabels import (
        DEFAULT_TEMPERATURES,
        SweepSettings,
        check_temperatures,
        entropy_by_temperature,
        teacher_logits,
        teacher_pretraining_sweep,
    )
    from kdlens.models import list_models
    from kdlens.train.epoch_checkpoints import epoch_checkpoint, run_training_keeping_epochs
    from kdlens.train.teacher import load_teacher

    say = log or (lambda line: None)
    measured = check_epochs(epochs)
    (T,) = check_temperatures([T])
    (sT,) = check_temperatures([student_T if student_T is not None else T])
    temps = tuple(sorted(set(check_temperatures(temperatures if temperatures is not None else DEFAULT_TEMPERATURES))
                         | {T, sT}))
    if student is not None and student not in list_models():
        from kdlens.errors import unknown_name

        raise unknown_name("model", student, list_models())
    if tolerance < 0:
        raise KdlensError(f"accuracy tolerance must be >= 0, got {tolerance}")
    configs = teacher_configs(base, batch_sizes, max(measured), out)  # every config checked before training
    bs = tuple(configs)
    settings = settings or SweepSettings()

    start = time.perf_counter()
    runs: dict[int, str] = {}
    for b, cfg in configs.items():
        say(f"teacher batch size {b}: {cfg.epochs} epochs ({cfg.model.name} on {cfg.data.name})")
        outcome = run_training_keeping_epochs(cfg, resume=True, progress=progress)
        runs[b] = str(outcome.path)
    seconds_teachers = time.perf_counter() - start

    first = next(iter(configs.values()))
    data = open_data(first.data.name, first.data.root, first.model_dump())
    train = in_memory(data.split("train"), train_subset, seed)
    test = in_memory(data.split("test"))
    entropy = np.full((len(bs), len(measured), len(temps)), np.nan)
    t_acc = np.full((len(bs), len(measured)), np.nan)
    logits: dict[str, Any] = {}
    cells: dict[str, tuple[int, int]] = {}
    from kdlens.store import RunDir

    for i, b in enumerate(bs):
        history = {int(r["epoch"]): r for r in RunDir(runs[b]).read_metrics() if "epoch" in r}
        for j, e in enumerate(measured):
            path = epoch_checkpoint(runs[b], e)
            if not path.is_file():
                raise KdlensError(f"teacher run {runs[b]} kept no weights for epoch {e} ({path}); train it again "
                                  "with restart")
            cfg = configs[b]
            model = load_teacher(None, train, cfg.model.name, seed=cfg.seed, weights=str(path),
                                 kwargs=dict(cfg.model.kwargs)).model
            z = teacher_logits(model, train, settings.device)
            entropy[i, j] = entropy_by_temperature(z, train.labels, temps).mean
            t_acc[i, j] = float(history.get(e, {}).get("test_acc", np.nan))
            name = f"b{b}-e{e}"
            logits[name], cells[name] = z, (i, j)
    s_acc = np.full((len(bs), len(measured)), np.nan)
    seconds_students = 0.0
    if student is not None:
        say(f"distilling {len(logits)} {student} students at T = {sT:g} (one stack)")
        res = teacher_pretraining_sweep(student, train, test, logits, [sT],
                                        {n: {"batch_size": bs[c[0]], "epochs": measured[c[1]]} for n, c in cells.items()},
                                        settings)
        for name, (i, j) in cells.items():
            s_acc[i, j] = float(res.student_accuracy[name][0])
        seconds_students = res.seconds
    rec = recommend(bs, measured, entropy[:, :, temps.index(T)], t_acc, s_acc if student is not None else None, T,
                    tolerance)
    return PretrainingSweepResult(bs, measured, temps, T, sT, student or "", entropy, t_acc, s_acc, runs, rec,
                                  seconds_teachers, seconds_students)
