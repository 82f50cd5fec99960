"""Two more soft-label study steps (Vats 2021): noise in soft labels and teacher pre-training.

* ``softlabel-noise`` (§4.8) — needs teacher(s): students distilled from noisy soft labels of
  every teacher at ``T`` and of label smoothing (``ls_alphas``), over ``scales`` × ``noises`` ×
  ``seeds``; with ``classes`` each student also leaves one class out and its accuracy on that
  class is reported (:func:`kdlens.explain.softlabels.noise.soft_label_noise_sweep`). Writes
  ``noise.png``, ``noise.csv``, ``noise.json``.
* ``softlabel-pretraining`` (ch. 6) — trains one teacher run per batch size in the study's run
  store (per-epoch weights kept) and measures entropy and a student per (batch size, epoch)
  (:func:`kdlens.studies.pretraining.run_pretraining_sweep`). The teacher config is that of the
  needed teacher run named by ``teacher`` (default: the first; ``needs: [teacher]``), or
  ``model`` + ``data`` without needs; ``teacher_config`` overrides keys of it (e.g. ``optim``).
  Writes ``pretraining.png``, ``pretraining.csv``, ``pretraining.json`` (with the
  recommendation) and ``recommendation.txt``.

In a study file::

    noise:
      kind: softlabel-noise
      needs: [teacher]
      params: {student: baseline_student, scales: [0, 0.05, 0.1, 0.2, 0.5], T: 4, classes: [0, 6], epochs: 3}
    pretraining:
      kind: softlabel-pretraining
      needs: [teacher]
      params: {teacher: cnn_teacher_small, batch_sizes: [16, 64, 256, 1024, 4096], teacher_epochs: 6, T: 9,
               student: baseline_student, epochs: 2}   # epochs / batch_size / lr: the students'
"""

from __future__ import annotations

from typing import Any

from kdlens.errors import KdlensError
from kdlens.figures.style import paper_style
from kdlens.studies.papers import StepContext, register_step, run_dataset
from kdlens.studies.papers.softlabels import SWEEP, _logits, _settings, _teachers


@register_step("softlabel-noise")
def noise_step(ctx: StepContext) -> dict[str, Any]:
    """Student accuracy (and missing-class accuracy) vs noise scale in the soft labels; needs teacher(s)."""
    from kdlens.explain.softlabels.noise import DEFAULT_NOISE_SCALES, NOISES, noise_values, soft_label_noise_sweep
    from kdlens.figures.softlabels_extra import plot_noise_sweep

    ctx.check_params(("teachers", "teacher_label", "scales", "noises", "T", "ls_alphas", "classes", "seeds", *SWEEP))
    teachers = _teachers(ctx)
    train = run_dataset(teachers[0][1], "train")
    test = run_dataset(teachers[0][1], "test")
    logits = {name: _logits(ctx, dep, train, "train") for name, dep in teachers}
    result = soft_label_noise_sweep(
        ctx.param("student", "cnn_student"), train, test, logits, scales=ctx.param("scales", list(DEFAULT_NOISE_SCALES)),
        noises=ctx.param("noises", list(NOISES)), T=float(ctx.param("T", 4.0)), ls_alphas=ctx.param("ls_alphas", [0.1]),
        removed_classes=ctx.param("classes"), seeds=ctx.param("seeds", [0]), settings=_settings(ctx),
    )
    rows = result.rows()
    ctx.write_csv("noise.csv", rows)
    ctx.write_json("noise.json", result.to_dict())
    with paper_style():
        ctx.save_figure("noise.png", plot_noise_sweep(
            result, noise_values(rows, result.scales),
            noise_values(rows, result.scales, "missing_class_acc") if result.removed_classes else None))
    out: dict[str, Any] = {"students": len({r["student"] for r in rows}), "seconds_students": round(result.seconds, 3)}
    for (source, noise), acc in result.accuracy.items():
        for s, v in zip(result.scales, acc, strict=True):
            out[f"{source}/{noise}/s={s:g}/test_acc"] = float(v)
    for (source, noise), acc in result.missing_class_accuracy.items():
        for s, v in zip(result.scales, acc, strict=True):
            out[f"{source}/{noise}/s={s:g}/missing_class_acc"] = float(v)
    return out


@register_step("softlabel-pretraining")
def pretraining_step(ctx: StepContext) -> dict[str, Any]:
    """Teachers per batch size (weights kept per epoch) → entropy and student accuracy; the recommendation."""
    from kdlens.studies.grid.spec import deep_merge
    from kdlens.figures.softlabels_extra import plot_pretraining
    from kdlens.studies.pretraining import DEFAULT_BATCH_SIZES, recommendation_text, run_pretraining_sweep

    ctx.check_params(("teachers", "teacher_label", "teacher", "model", "data", "teacher_config", "batch_sizes",
                      "teacher_epochs", "measure_epochs", "temperatures", "T", "student_T", "tolerance",
                      "train_subset", *SWEEP))
    base: dict[str, Any]
    if ctx.deps:
        named = _teachers(ctx)
        wanted = ctx.param("teacher")
        match = [dep for name, dep in named if wanted is None or name == wanted]
        if not match:
            raise KdlensError(f"step {ctx.task_id}: no needed teacher is named {wanted!r}; "
                              f"have {', '.join(n for n, _ in named)}")
        base = {k: v for k, v in match[0].config().items() if k not in ("out", "name", "kind")}
    else:
        if ctx.param("model") is None:
            raise KdlensError(f"step {ctx.task_id}: give 'model' (and 'data'), or needs: [teacher]")
        base = {"model": {"name": ctx.param("model")}, "data": ctx.param("data", {"name": "digits"})}
    if ctx.param("teacher_config"):
        base = deep_merge(base, dict(ctx.param("teacher_config")))
    student = ctx.param("student", "baseline_student")
    result = run_pretraining_sweep(
        base, ctx.param("batch_sizes", list(DEFAULT_BATCH_SIZES)),
        ctx.param("measure_epochs") or int(ctx.param("teacher_epochs", 10)), ctx.param("temperatures"),
        float(ctx.param("T", 9.0)), None if student in (None, "none") else student, ctx.param("student_T"),
        _settings(ctx), float(ctx.param("tolerance", 1.0)), ctx.study_dir, ctx.param("train_subset"),
        int(ctx.param("seed", 0)),
    )
    ctx.write_csv("pretraining.csv", result.rows())
    ctx.write_json("pretraining.json", result.to_dict())
    (ctx.out_dir / "recommendation.txt").write_text(recommendation_text(result.recommendation) + "\n")
    with paper_style():
        ctx.save_figure("pretraining.png", plot_pretraining(result))
    rec = result.recommendation
    return {"recommended_batch_size": rec["batch_size"], "recommended_epochs": rec["epochs"],
            "recommended_entropy": rec["entropy"], "recommended_teacher_acc": rec["teacher_acc"],
            "recommended_student_acc": rec.get("student_acc"),
            "best_student_acc": (rec.get("best_student") or {}).get("student_acc"),
            "spearman_entropy_student": rec.get("spearman_entropy_student"),
            "seconds_teachers": round(result.seconds_teachers, 3), "seconds_students": round(result.seconds_students, 3)}
