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
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kdlens.config import DistillConfig, TrainConfig, validate
from kdlens.errors import KdlensError
from kdlens.models.registry import MODELS
from kdlens.studies.summary import fmt_mean_std, mean_std
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
) -> list[dict[str, Any]]:
    """``semi``: semi-supervised baselines run beside UD and D (``semi_options``: method →
    its hyper-parameters, e.g. ``{"fixmatch": {"threshold": 0.9}}``)."""
    for name in (teacher, student):  # fail before the first of many runs trains
        MODELS.get(name)
    semi = semi_methods(semi)
    semi_options = semi_options or {}
    for method in semi_options:
        if method not in semi:
            raise KdlensError(f"semi_options for {method!r}, which is not among the methods run ({', '.join(semi) or 'none'})")
    rows = []
    common = {"out": out, **(extra or {})}
    for budget in budgets:
        for fold in range(folds):
            data = {"name": dataset, "budget": budget, "n_folds": folds, "fold": fold,
                    "unlabeled_limit": unlabeled_limit}
            epochs = labeled_epochs_override or labeled_epochs(budget)
            every = max(1, epochs // 10)  # ~10 test evaluations per labeled-set run
            t = run_training(validate(TrainConfig, {
                **common, "model": {"name": teacher, "init": teacher_init}, "data": data, "epochs": epochs,
                "eval_every": every, "name": f"teacher-b{budget}-f{fold}"}), progress=progress)
            ud = run_training(validate(TrainConfig, {
                **common, "model": {"name": student}, "data": data, "epochs": epochs, "eval_every": every,
                "name": f"ud-b{budget}-f{fold}"}), progress=progress)
            d = run_distillation(validate(DistillConfig, {
                **common, "teacher": {"run": str(t.path)}, "model": {"name": student}, "data": data,
                "loop": "limited_label", "loss": {"T": temperature}, "epochs": student_epochs,
                "cache": teacher_cache, "name": f"d-b{budget}-f{fold}"}), progress=progress)
            row = {"budget": budget, "fold": fold, "teacher": t.metrics["final_acc"],
                   "undistilled": ud.metrics["final_acc"], "distilled": d.metrics["final_acc"]}
            for method in semi:
                cfg = validate(TrainConfig, {
                    **common, "model": {"name": student}, "data": data, "epochs": student_epochs,
                    "semi": method, "semi_options": semi_options.get(method, {}), "name": f"{method}-b{budget}-f{fold}"})
                run = run_semi_supervised(cfg, resume=True, progress=progress)
                row[method] = run.metrics["final_acc"]
                if run.metrics.get("ema_final_acc") is not None:
                    row[f"{method}_ema"] = run.metrics["ema_final_acc"]
            rows.append(row)
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "limited_label.json").write_text(json.dumps(rows, indent=1))
    return rows


def limited_label_table(rows: list[dict[str, Any]]) -> str:
    """Markdown table: budget | UD | D | teacher | D − UD (mean ± std over folds), then a
    column per semi-supervised baseline the rows hold."""
    methods = [m for m in SEMI_TITLES if any(m in r for r in rows)]
    head = ["labels", "undistilled (UD)", "distilled (D)", "teacher", "D − UD"] + [SEMI_TITLES[m] for m in methods]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for budget in sorted({r["budget"] for r in rows}):
        sel = [r for r in rows if r["budget"] == budget]
        gain = mean_std([r["distilled"] - r["undistilled"] for r in sel])[0]
        cells = [str(budget), fmt_mean_std([r["undistilled"] for r in sel]), fmt_mean_std([r["distilled"] for r in sel]),
                 fmt_mean_std([r["teacher"] for r in sel]), f"{gain:+.2f}"]
        cells += [fmt_mean_std([r[m] for r in sel if m in r]) for m in methods]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
