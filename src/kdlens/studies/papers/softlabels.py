"""The soft-label hypothesis (Vats 2021, *Response-based knowledge distillation*) as study steps.

Each step needs a group of trained teachers (``teachers: GROUP``, default ``teacher``; the
teachers are named by their grid levels, e.g. the model name) and calls
:mod:`kdlens.explain.softlabels`; the students of the experiments are trained together in
stacks (:mod:`kdlens.train.vectorized`).  The teachers' training-set logits are computed once
per teacher run and cached under ``STUDY/cache/teacher-logits/``.

* ``softlabel-entropy`` — mean entropy of softmax(z/T) over T per teacher, label smoothing's
  entropy over α_LS (thesis Figs. 5.2–5.4): ``entropy.png``, ``entropy.csv``.
* ``missing-class`` — students distilled without class c, accuracy on c per T, and the
  label-smoothing control (§4.4): ``missing_class.png``, ``missing_class.csv/json``.
* ``transfer-set`` — accuracy vs top-N-entropy examples per class, random baseline (§4.6):
  ``transfer_set.png``, ``top_entropy.png`` (image grid), ``transfer_set.csv/json``.
* ``projection`` — penultimate activations on the plane of three class templates (§4.7):
  ``projection.png``.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from kdlens.errors import KdlensError
from kdlens.studies.papers import Dependency, StepContext, load_run_model, register_step, run_dataset

SWEEP = ("student", "epochs", "batch_size", "lr", "seed", "student_seed", "chunk_size", "backend", "alpha", "gamma",
         "batches")


def _teacher_name(dep: Dependency, label: str | None) -> str:
    if label and label in dep.levels:
        return str(dep.levels[label])
    if dep.levels:
        return "-".join(str(v) for v in dep.levels.values())
    return dep.id


def _teachers(ctx: StepContext) -> list[tuple[str, Dependency]]:
    deps = ctx.needs(ctx.param("teachers", "teacher"))
    return [(_teacher_name(d, ctx.param("teacher_label")), d) for d in deps]


def _logits(ctx: StepContext, dep: Dependency, data: Any, split: str):
    """The teacher's logits on ``split`` (cached per run directory)."""
    import torch

    from kdlens.explain.softlabels import teacher_logits
    from kdlens.store import atomic_write_bytes

    path = ctx.study_dir / "cache" / "teacher-logits" / f"{dep.path.name}-{split}.npy"
    if path.exists():
        try:
            arr = np.load(path, allow_pickle=False)
            if arr.shape == (len(data), data.num_classes):
                return torch.from_numpy(arr)
        except (OSError, ValueError):
            pass
    z = teacher_logits(load_run_model(dep, data), data)
    buf = io.BytesIO()
    np.save(buf, z.numpy(), allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())
    return z


def _settings(ctx: StepContext):
    from kdlens.config import OptimConfig
    from kdlens.explain.softlabels import SweepSettings

    s = SweepSettings()
    s.epochs = int(ctx.param("epochs", s.epochs))
    s.batch_size = int(ctx.param("batch_size", s.batch_size))
    s.seed = int(ctx.param("seed", s.seed))
    s.student_seed = int(ctx.param("student_seed", s.student_seed))
    s.chunk_size = ctx.param("chunk_size", s.chunk_size)
    s.backend = ctx.param("backend", s.backend)
    for name in ("alpha", "gamma"):  # weights of the soft (KD) and hard (CE) terms
        if ctx.param(name) is not None:
            setattr(s, name, float(ctx.param(name)))
    if ctx.param("batches") is not None and hasattr(s, "batches"):
        s.batches = ctx.param("batches")
    if ctx.param("lr") is not None:
        s.optim = OptimConfig(schedule="constant", lr=float(ctx.param("lr")))
    return s


@register_step("softlabel-entropy")
def entropy_step(ctx: StepContext) -> dict[str, Any]:
    """Mean soft-label entropy vs T per teacher, label smoothing's entropy vs α_LS; needs teacher(s)."""
    from kdlens.explain.softlabels import (
        DEFAULT_LS_ALPHAS,
        DEFAULT_TEMPERATURES,
        entropy_by_temperature,
        label_smoothing_entropy_curve,
    )
    from kdlens.figures.softlabels import plot_entropy_curves
    from kdlens.figures.softlabels_extra import plot_class_entropy_curves
    from kdlens.figures.style import paper_style

    ctx.check_params(("teachers", "teacher_label", "temperatures", "ls_alphas"))
    teachers = _teachers(ctx)
    train = run_dataset(teachers[0][1], "train")
    temps = ctx.param("temperatures", list(DEFAULT_TEMPERATURES))
    alphas = ctx.param("ls_alphas", list(DEFAULT_LS_ALPHAS))
    tables, rows, summary = {}, [], {}
    for name, dep in teachers:
        table = entropy_by_temperature(_logits(ctx, dep, train, "train"), train.labels, temps, class_names=train.classes)
        tables[name] = table
        rows += table.rows(teacher=name)
        for T, h in zip(table.temperatures, table.mean, strict=True):
            summary[f"{name}/T={T:g}"] = float(h)
    ctx.write_csv("entropy.csv", rows)
    ctx.save_figure("entropy.png", plot_entropy_curves(
        tables, ls_curve=(alphas, label_smoothing_entropy_curve(alphas, train.num_classes))))
    with paper_style():  # Fig. 4.4: every class's curve, faded, behind the mean
        ctx.save_figure("entropy_per_class.png", plot_class_entropy_curves(tables))
    return {"teachers": [n for n, _ in teachers], "mean_entropy": summary}


@register_step("missing-class")
def missing_class_step(ctx: StepContext) -> dict[str, Any]:
    """Students distilled without class c: accuracy on c per T, label-smoothing control; needs teacher(s)."""
    from kdlens.explain.softlabels import THESIS_TEMPERATURES, missing_class_test
    from kdlens.figures.softlabels import plot_missing_class_heatmaps

    ctx.check_params(("teachers", "teacher_label", "classes", "temperatures", "ls_alphas", *SWEEP))
    teachers = _teachers(ctx)
    train = run_dataset(teachers[0][1], "train")
    test = run_dataset(teachers[0][1], "test")
    logits = {name: _logits(ctx, dep, train, "train") for name, dep in teachers}
    result = missing_class_test(
        ctx.param("student", "cnn_student"), train, test, logits, classes=ctx.param("classes"),
        temperatures=ctx.param("temperatures", list(THESIS_TEMPERATURES)), ls_alphas=ctx.param("ls_alphas", [0.1, 0.5]),
        settings=_settings(ctx),
    )
    ctx.write_csv("missing_class.csv", result.rows())
    ctx.write_json("missing_class.json", result.to_dict())
    ctx.save_figure("missing_class.png", plot_missing_class_heatmaps(result))
    out: dict[str, Any] = {"seconds_students": round(result.seconds, 3), "students": len(result.records)}
    for name in result.teachers:
        out[f"{name}/mean_missing_class_acc"] = float(np.mean(result.missing_class_accuracy[name]))
    if result.ls_alphas:
        out["LS/mean_missing_class_acc"] = float(np.mean(result.ls_missing_class_accuracy))
    return out


@register_step("transfer-set")
def transfer_set_step(ctx: StepContext) -> dict[str, Any]:
    """Students on the top-N-entropy examples per class vs N random ones; needs teacher(s)."""
    from kdlens.explain.softlabels import entropy_ranked_transfer_sets
    from kdlens.figures.softlabels import plot_image_grid, plot_transfer_set_curves

    ctx.check_params(("teachers", "teacher_label", "ns", "T", "random_seeds", "min_steps", *SWEEP))
    teachers = _teachers(ctx)
    train = run_dataset(teachers[0][1], "train")
    test = run_dataset(teachers[0][1], "test")
    logits = {name: _logits(ctx, dep, train, "train") for name, dep in teachers}
    smallest = int(np.bincount(train.labels.numpy(), minlength=train.num_classes).min())
    ns = [n for n in ctx.param("ns", [5, 10, 20, 50, 100, 200, 500, 1000, 2000]) if n <= smallest] or [smallest]
    result = entropy_ranked_transfer_sets(
        ctx.param("student", "cnn_student"), train, test, logits, ns=ns, T=float(ctx.param("T", 9.0)),
        random_seeds=ctx.param("random_seeds", [0]), min_steps=int(ctx.param("min_steps", 0)), settings=_settings(ctx),
    )
    ctx.write_csv("transfer_set.csv", result.rows())
    ctx.write_json("transfer_set.json", result.to_dict())
    ctx.save_figure("transfer_set.png", plot_transfer_set_curves(result))
    first = result.teachers[0]
    ctx.save_figure("top_entropy.png", plot_image_grid(
        train.images, result.top_examples[first], train.classes,
        title=f"highest-entropy training examples per class ({first}, T = {result.T:g})"))
    return {"ns": list(result.ns), **{f"{t}/{s}/N={n}": float(v) for (t, s), acc in result.curves.items()
                                      for n, v in zip(result.ns, acc, strict=True)}}


@register_step("projection")
def projection_step(ctx: StepContext) -> dict[str, Any]:
    """Penultimate activations on the plane of three class templates, per teacher; needs teacher(s)."""
    from kdlens.data import normalize
    from kdlens.explain.softlabels import TemplateProjection, penultimate_activations
    from kdlens.figures.softlabels import plot_projections

    ctx.check_params(("teachers", "teacher_label", "classes", "n", "ls_comparison"))
    teachers = _teachers(ctx)
    test = run_dataset(teachers[0][1], "test")
    classes = [int(c) for c in ctx.param("classes", [0, 1, 2])]
    labels = test.labels.numpy()
    keep = np.flatnonzero(np.isin(labels, classes))
    n = ctx.param("n")
    if n is not None and len(keep) > int(n):
        keep = np.sort(np.random.default_rng(0).choice(keep, size=int(n), replace=False))
    import torch

    x = normalize(test.images[torch.as_tensor(keep)], test.mean, test.std)
    panels = {}
    rows = []
    for name, dep in teachers:
        model = load_run_model(dep, test)
        proj = TemplateProjection(classes).fit(model)
        coords = proj.transform(penultimate_activations(model, x))
        panels[name] = (coords, labels[keep], proj.template_coords_)
        rows += [{"teacher": name, "class": int(c), "x": float(a), "y": float(b)}
                 for c, (a, b) in zip(labels[keep], coords, strict=True)]
    ctx.write_csv("projection.csv", rows)
    ctx.save_figure("projection.png", plot_projections(panels, classes, test.classes))
    out: dict[str, Any] = {"classes": classes, "points": int(len(keep))}
    if ctx.param("ls_comparison", False):  # Fig. 4.5: a plainly trained vs a label-smoothing model
        out.update(_ls_comparison(ctx, teachers, panels, classes, test.classes))
    return out


def _ls_comparison(ctx: StepContext, teachers: list[tuple[str, Dependency]], panels: dict[str, Any],
                   classes: list[int], class_names: list[str]) -> dict[str, Any]:
    """Fig. 4.5 (Vats 2021, after Müller et al. 2019): the needed runs must be one trained with
    ``label_smoothing`` 0 and one with α_LS > 0; writes ``ls_projection.png`` and returns each
    one's class spread (:func:`~kdlens.figures.softlabels_extra.class_spread`)."""
    from kdlens.figures.softlabels_extra import class_spread, plot_ls_projection_comparison
    from kdlens.figures.style import paper_style

    alphas = {name: float(dep.config().get("label_smoothing", 0.0) or 0.0) for name, dep in teachers}
    plain = [n for n, a in alphas.items() if a == 0.0]
    smoothed = [n for n, a in alphas.items() if a > 0.0]
    if len(plain) != 1 or len(smoothed) != 1:
        raise KdlensError(f"step {ctx.task_id}: ls_comparison needs one run with label_smoothing 0 and one with "
                          f"label_smoothing > 0; have {alphas}")
    with paper_style():
        ctx.save_figure("ls_projection.png", plot_ls_projection_comparison(
            panels[plain[0]], panels[smoothed[0]], classes, class_names, alpha_ls=alphas[smoothed[0]]))
    return {"spread_plain": class_spread(*panels[plain[0]][:2], classes),
            "spread_label_smoothing": class_spread(*panels[smoothed[0]][:2], classes),
            "alpha_ls": alphas[smoothed[0]]}
