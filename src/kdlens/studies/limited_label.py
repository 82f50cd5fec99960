"""Limited-label distillation with unlabeled data (Lee & Wallraven 2021, Table 1 shape).

For each balanced label budget and fold: a teacher is trained (or fine-tuned from
``teacher_init``) on the labeled set; an undistilled student (UD) is trained on the
labeled set alone; a distilled student (D) is trained in cycles of labeled CE and
unlabeled KL(T=4) with the teacher (:class:`~kdlens.train.distill_loop.LimitedLabelLoop`).
Every run is a store run, so a re-run skips finished work.

Epochs on the labeled set scale with the budget so that every budget gets a comparable
number of SGD steps: ``min(200, max(10, round(20000 / budget)))`` (kdlens's choice; the
paper trains to convergence).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kdlens.config import DistillConfig, TrainConfig, validate
from kdlens.models.registry import MODELS
from kdlens.studies.summary import fmt_mean_std, mean_std
from kdlens.train.distill_run import run_distillation
from kdlens.train.run import run_training


def labeled_epochs(budget: int) -> int:
    return min(200, max(10, round(20000 / budget)))


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
) -> list[dict[str, Any]]:
    for name in (teacher, student):  # fail before the first of many runs trains
        MODELS.get(name)
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
            rows.append({"budget": budget, "fold": fold, "teacher": t.metrics["final_acc"],
                         "undistilled": ud.metrics["final_acc"], "distilled": d.metrics["final_acc"]})
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "limited_label.json").write_text(json.dumps(rows, indent=1))
    return rows


def limited_label_table(rows: list[dict[str, Any]]) -> str:
    """Markdown table: budget | UD | D | teacher (mean ± std over folds)."""
    lines = ["| labels | undistilled (UD) | distilled (D) | teacher | D − UD |", "|---|---|---|---|---|"]
    for budget in sorted({r["budget"] for r in rows}):
        sel = [r for r in rows if r["budget"] == budget]
        gain = mean_std([r["distilled"] - r["undistilled"] for r in sel])[0]
        lines.append(
            f"| {budget} | {fmt_mean_std([r['undistilled'] for r in sel])} | "
            f"{fmt_mean_std([r['distilled'] for r in sel])} | {fmt_mean_std([r['teacher'] for r in sel])} | "
            f"{gain:+.2f} |"
        )
    return "\n".join(lines)
