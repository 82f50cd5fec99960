"""Limited-label distillation with unlabeled data (Lee & Wallraven 2021, Table 1 shape).

For each balanced label budget and fold: a teacher is trained (or fine-tuned from
``teacher_init``) on the labeled set; an undistilled student (UD) is trained on the
labeled set alone; a distilled student (D) is trained in cycles of labeled CE and
unlabeled KL(T=4) with the teacher (:class:`~kdlens.train.distill_loop.LimitedLabelLoop`).
Every run is a store run, so a re-run skips finished work.

Epochs on the labeled set scale with the budget so that every budget gets a comparable
number of SGD steps: ``min(200, max(10, round(20000 / budget)))`` (kdlens's choice; the
paper trains to convergence).

``semi`` adds Table 1's semi-supervised baselines (:mod:`kdlens.train.semi_loops`:
``pseudo_label``, ``pi_model``, ``mean_teacher``, ``mixmatch``, ``fixmatch``) on the same
labeled folds and unlabeled pool, with the student architecture and ``student_epochs``
passes over the unlabeled pool, like the distilled student.  Their column is the student's
final accuracy, as for UD and D; the EMA model's (what Mean Teacher, MixMatch and FixMatch
evaluate) is kept in the rows as ``<method>_ema``.  FixMatch "Reduced", the baseline Lee &
Wallraven ran themselves, is ``semi=("fixmatch",)`` with ``student="wrn_28_1"``.

A teacher with outside knowledge: ``teacher_init`` (weights from elsewhere, e.g. ImageNet),
or ``teacher_pretrain="disjoint"`` (pre-trained here on a reserve no fold sees:
:mod:`kdlens.studies.teacher_pretrain`).  ``compare_scratch=True`` also trains, per cell, a
teacher from scratch on the same labels and distils a second student from it, so Table 1's
"D from a teacher with outside knowledge" and "D from a scratch teacher" share folds, unlabeled
pool, UD and baselines (rows ``teacher_scratch`` and ``distilled_scratch``).  The paper's own protocol is the ``paper`` scale
of :mod:`kdlens.studies.limited_label_paper`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kdlens.config import DataConfig, DistillConfig, TrainConfig, validate
from kdlens.errors import KdlensError
from kdlens.models.registry import MODELS
from kdlens.studies.summary import fmt_mean_std, mean_std
from kdlens.studies.teacher_pretrain import (
    DEFAULT_FRACTION,
    check_folds_disjoint,
    check_pretrain_source,
    load_pair,
    plan_reserve,
    pretrain_teacher,
)
from kdlens.train.data_setup import prepare_data
from kdlens.train.distill_run import run_distillation
from kdlens.train.run import run_training
from kdlens.train.semi_loops import SEMI_LOOPS
from kdlens.train.semi_run import run_semi_supervised

#: Table 1's names of the semi-supervised baselines
SEMI_TITLES = {"pseudo_label": "Pseudo-Label", "pi_model": "Π-model", "mean_teacher": "Mean Teacher",
               "mixmatch": "MixMatch", "fixmatch": "FixMatch"}


def labeled_epochs(budget: int) -> int:
    return min(200, max(10, round(20000 / budget)))


def semi_methods(text: str | Sequence[str] | None) -> list[str]:
    """``"fixmatch,mean_teacher"`` (or ``"all"``, or a list) → checked method names."""
    if text is None:
        return []
    names = [n.strip() for n in text.split(",")] if isinstance(text, str) else list(text)
    names = [n for n in names if n]
    if names == ["all"]:
        return list(SEMI_TITLES)
    for name in names:
        SEMI_LOOPS.get(name)  # unknown names fail here, with close matches
    return names


def _fold_data(dataset: str, budget: int, fold: int, folds: int, fold_mode: str, unlabeled_limit: int | None,
               data_root: str | None, options: dict[str, Any]) -> dict[str, Any]:
    """The ``data`` section of one fold's runs: ``disjoint`` folds of one split seed, or
    ``resample``: independent balanced draws (fold ``f`` = split seed ``f``)."""
    data: dict[str, Any] = {"name": dataset, "budget": budget, "n_folds": folds, "fold": fold,
                            "unlabeled_limit": unlabeled_limit, **options}
    if fold_mode == "resample":
        data.update(n_folds=1, fold=0, split_seed=fold)
    if data_root is not None:
        data["root"] = data_root
    return data


def _check_arguments(teacher: str, student: str, fold_mode: str, teacher_init: str | None,
                     teacher_pretrain: str | None) -> str | None:
    for name in (teacher, student):  # fail before the first of many runs trains
        MODELS.get(name)
    if fold_mode not in ("disjoint", "resample"):
        raise KdlensError(f"fold_mode must be disjoint or resample, got {fold_mode!r}")
    source = check_pretrain_source(teacher_pretrain)
    if source is not None and teacher_init is not None:
        raise KdlensError("give one teacher initialisation: --teacher-init (weights from elsewhere) or "
                          f"--teacher-pretrain {source} (pre-trained here on a disjoint reserve)")
    if source is not None and fold_mode == "resample":
        raise KdlensError("--teacher-pretrain needs disjoint folds of one split seed (fold_mode=disjoint): "
                          "resampled folds would each hold out a different reserve")
    return source


def run_limited_label_study(
    dataset: str = "fashion-mnist",
    budgets: Sequence[int] = (100, 500, 1000, 5000),
    folds: int = 3,
    teacher: str = "thesis_teacher_small",
    student: str = "thesis_student",
    student_epochs: int = 3,
    unlabeled_limit: int | None = None,
    temperature: float = 4.0,
    teacher_init: str | None = None,
    labeled_epochs_override: int | None = None,
    teacher_cache: str = "auto",
    out: str = "runs/limited-label",
    progress: bool = False,
    extra: dict[str, Any] | None = None,
    semi: Sequence[str] = (),
    semi_options: dict[str, dict[str, Any]] | None = None,
    *,
    data_root: str | None = None,
    augmentation: dict[str, Any] | None = None,
    teacher_kwargs: dict[str, Any] | None = None,
    fold_mode: str = "disjoint",
    teacher_pretrain: str | None = None,
    log: Callable[[str], None] | None = None,
    pretrain_fraction: float = DEFAULT_FRACTION,
    pretrain_epochs: int | None = None,
    compare_scratch: bool = False,
    evaluations: int = 10,
) -> list[dict[str, Any]]:
    """``semi``: semi-supervised baselines run beside UD and D (``semi_options``: method →
    its hyper-parameters, e.g. ``{"fixmatch": {"threshold": 0.9}}``).

    ``data_root``: where the dataset's files are; ``augmentation``: data options of the
    teacher, UD and D (e.g. ``{"crop_padding": 0, "hflip": True}``); ``teacher_kwargs``: the
    teacher's constructor arguments (``{"upsample_to": 224}``); ``fold_mode``: ``disjoint``
    folds or ``resample`` (independent draws, split seed = fold).  ``teacher_pretrain="disjoint"``
    pre-trains the teacher on a ``pretrain_fraction`` reserve outside every fold's labels and
    unlabeled pool (:mod:`kdlens.studies.teacher_pretrain`) for ``pretrain_epochs`` (default:
    the epoch rule at the reserve's size), then fine-tunes it on each budget.  ``compare_scratch``:
    also a scratch teacher and its distilled student per cell (needs one of the two initialisations).
    ``evaluations``: test-set evaluations per run, spread evenly, the last epoch always (1: only the
    final accuracy the tables use; on small budgets the 10,000 test images otherwise cost more than
    the training)."""
    if evaluations < 1:
        raise KdlensError(f"evaluations must be at least 1 (the final test accuracy), got {evaluations}")
    source = _check_arguments(teacher, student, fold_mode, teacher_init, teacher_pretrain)
    if compare_scratch and source is None and teacher_init is None:
        raise KdlensError("compare_scratch compares a teacher with outside knowledge against a scratch teacher: "
                          "give --teacher-pretrain disjoint or --teacher-init as well")
    semi = semi_methods(semi)
    semi_options = semi_options or {}
    for method in semi_options:
        if method not in semi:
            raise KdlensError(f"semi_options for {method!r}, which is not among the methods run ({', '.join(semi) or 'none'})")
    common = {"out": out, **(extra or {})}
    pair = load_pair({"name": dataset, **({"root": data_root} if data_root else {})})
    plan = plan_reserve(pair, pretrain_fraction) if source else None
    held_out = plan.data_options if plan else {}
    grid = [(b, f, _fold_data(dataset, b, f, folds, fold_mode, unlabeled_limit, data_root, held_out))
            for b in budgets for f in range(folds)]
    for _, _, data in grid:  # every fold's split is checked before anything trains
        prepare_data(validate(DataConfig, data), pair)
    if plan:
        check_folds_disjoint(plan, pair, [d for _, _, d in grid])
        epochs = pretrain_epochs or labeled_epochs(len(plan.reserve))
        teacher_init = pretrain_teacher(plan, pair, {
            **common, "model": {"name": teacher, "kwargs": teacher_kwargs or {}},
            "data": {"name": dataset, **({"root": data_root} if data_root else {}), **(augmentation or {})},
            "epochs": epochs,
            "eval_every": max(1, epochs // evaluations), "name": f"teacher-pretrain-{source}"}, progress)
    rows = []
    say = log or (lambda _message: None)
    runs_per_cell = 3 + 2 * compare_scratch + len(semi)
    for cell, (budget, fold, data) in enumerate(grid):
        labeled_data = {**data, **(augmentation or {})}
        scratch = ", scratch teacher, D (scratch)" if compare_scratch else ""
        say(f"budget {budget}, fold {fold} ({cell + 1}/{len(grid)}): teacher, UD, D{scratch}"
            f"{''.join(', ' + m for m in semi)} ({runs_per_cell} runs)")
        epochs = labeled_epochs_override or labeled_epochs(budget)
        every = max(1, epochs // evaluations)  # test evaluations per labeled-set run
        student_every = max(1, student_epochs // evaluations)

        def train_teacher(init: str | None, name: str):
            return run_training(validate(TrainConfig, {
                **common, "model": {"name": teacher, "init": init, "kwargs": teacher_kwargs or {}},
                "data": labeled_data, "epochs": epochs, "eval_every": every, "name": name}), resume=True, progress=progress)

        def distil_from(teacher_run, name: str):
            return run_distillation(validate(DistillConfig, {
                **common, "teacher": {"run": str(teacher_run.path)}, "model": {"name": student}, "data": labeled_data,
                "loop": "limited_label", "loss": {"T": temperature}, "epochs": student_epochs,
                "eval_every": student_every, "cache": teacher_cache, "name": name}), resume=True, progress=progress)

        t = train_teacher(teacher_init, f"teacher-b{budget}-f{fold}")
        ud = run_training(validate(TrainConfig, {
            **common, "model": {"name": student}, "data": labeled_data, "epochs": epochs, "eval_every": every,
            "name": f"ud-b{budget}-f{fold}"}), resume=True, progress=progress)
        d = distil_from(t, f"d-b{budget}-f{fold}")
        row = {"budget": budget, "fold": fold, "teacher": t.metrics["final_acc"],
               "undistilled": ud.metrics["final_acc"], "distilled": d.metrics["final_acc"]}
        if compare_scratch:
            t0 = train_teacher(None, f"teacher-scratch-b{budget}-f{fold}")
            row["teacher_scratch"] = t0.metrics["final_acc"]
            row["distilled_scratch"] = distil_from(t0, f"d-scratch-b{budget}-f{fold}").metrics["final_acc"]
        for method in semi:
            cfg = validate(TrainConfig, {
                **common, "model": {"name": student}, "data": data, "epochs": student_epochs,
                "eval_every": student_every, "semi": method, "semi_options": semi_options.get(method, {}), "name": f"{method}-b{budget}-f{fold}"})
            run = run_semi_supervised(cfg, resume=True, progress=progress)
            row[method] = run.metrics["final_acc"]
            if run.metrics.get("ema_final_acc") is not None:
                row[f"{method}_ema"] = run.metrics["ema_final_acc"]
        rows.append(row)
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "limited_label.json").write_text(json.dumps(rows, indent=1))
    from kdlens.figures.style import paper_style, save_figure

    with paper_style():
        save_figure(limited_label_figure(rows), Path(out) / "limited_label")
    return rows


#: the table's columns as figure series: row key → legend name (semi-supervised ones appended)
FIGURE_SERIES = {"undistilled": "UD", "distilled": "D", "distilled_scratch": "D (scratch teacher)",
                 "teacher": "teacher", "teacher_scratch": "scratch teacher"}


def limited_label_figure(rows: list[dict[str, Any]]):
    """Table 1 as a figure (``limited_label.png`` beside ``limited_label.json``): test accuracy
    against the label budget (log x), one line per column of :func:`limited_label_table` through
    the fold means, ± std bars and each fold as an open circle."""
    from kdlens.figures.summary import plot_mean_curves

    budgets = sorted({r["budget"] for r in rows})
    names = {**FIGURE_SERIES, **SEMI_TITLES}
    series = {label: [[r[key] for r in rows if r["budget"] == b and key in r] for b in budgets]
              for key, label in names.items() if any(key in r for r in rows)}
    styles = {"teacher": {"color": "0.15", "marker": "s", "ls": "--"},
              "scratch teacher": {"color": "0.6", "marker": "s", "ls": ":"}}
    semi_colors = ("tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive")  # never a teacher's grey
    styles.update({SEMI_TITLES[m]: {"ls": "-.", "ms": 3, "color": c} for m, c in zip(SEMI_TITLES, semi_colors, strict=True)})
    return plot_mean_curves([float(b) for b in budgets], series, xlabel="labeled examples",
                            ylabel="test accuracy (%)", logx=True, styles=styles,
                            title="Limited labels + unlabeled data (Lee & Wallraven Table 1 shape)")


def fmt_mean_range(values: Sequence[float]) -> str:
    """``"2.00 (max−min 2.00)"``: mean and the fold spread as Lee & Wallraven report it."""
    values = [float(v) for v in values]
    if len(values) == 1:
        return f"{values[0]:.2f} (n = 1)"
    return f"{sum(values) / len(values):.2f} (max−min {max(values) - min(values):.2f})"


def limited_label_table(rows: list[dict[str, Any]], spread: str = "std") -> str:
    """Markdown table: budget | UD | D | teacher | D − UD (mean ± std over folds, or with
    ``spread="range"`` mean and max − min), then a column per semi-supervised baseline the rows hold."""
    if spread not in ("std", "range"):
        raise KdlensError(f"spread must be std or range, got {spread!r}")
    fmt = fmt_mean_std if spread == "std" else fmt_mean_range
    methods = [m for m in SEMI_TITLES if any(m in r for r in rows)]
    scratch = any("distilled_scratch" in r for r in rows)
    head = ["labels", "undistilled (UD)", "distilled (D)", "teacher", "D − UD"]
    if scratch:
        head += ["D (scratch teacher)", "scratch teacher", "D(scratch) − UD"]
    head += [SEMI_TITLES[m] for m in methods]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for budget in sorted({r["budget"] for r in rows}):
        sel = [r for r in rows if r["budget"] == budget]
        gain = mean_std([r["distilled"] - r["undistilled"] for r in sel])[0]
        cells = [str(budget), fmt([r["undistilled"] for r in sel]), fmt([r["distilled"] for r in sel]),
                 fmt([r["teacher"] for r in sel]), f"{gain:+.2f}"]
        if scratch:
            gain0 = mean_std([r["distilled_scratch"] - r["undistilled"] for r in sel])[0]
            cells += [fmt([r["distilled_scratch"] for r in sel]), fmt([r["teacher_scratch"] for r in sel]),
                      f"{gain0:+.2f}"]
        cells += [fmt([r[m] for r in sel if m in r]) for m in methods]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
