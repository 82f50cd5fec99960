"""Does KD help? The same student trained alone vs distilled from a teacher, over seeds."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kdlens.config import DistillConfig, TrainConfig, validate
from kdlens.studies.summary import fmt_mean_std
from kdlens.train.distill_run import run_distillation
from kdlens.train.run import run_training


def run_kd_vs_alone(
    teacher_run: str,
    dataset: str = "fashion-mnist",
    student: str = "thesis_student",
    method: str = "kd",
    seeds: Sequence[int] = (0, 1, 2),
    epochs: int = 5,
    out: str = "runs/kd-vs-alone",
    progress: bool = False,
    extra: dict[str, Any] | None = None,
    distill_extra: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """``extra``: config keys of both runs; ``distill_extra``: of the distilled run only (γ, α,
    ``loss.T``). Runs already done in ``out`` (same config) are reused, not retrained."""
    rows = []
    for seed in seeds:
        common = {"out": out, "model": {"name": student}, "data": {"name": dataset}, "epochs": epochs,
                  "seed": seed, **(extra or {})}
        alone = run_training(validate(TrainConfig, {**common, "name": f"alone-s{seed}"}), progress=progress)
        kd = run_distillation(validate(DistillConfig, {**common, "teacher": {"run": teacher_run}, "method": method,
                                                       "name": f"{method}-s{seed}", **(distill_extra or {})}),
                              progress=progress)
        rows.append({"seed": seed, "alone_final": alone.metrics["final_acc"], "alone_best": alone.metrics["best_acc"],
                     "kd_final": kd.metrics["final_acc"], "kd_best": kd.metrics["best_acc"]})
    Path(out).mkdir(parents=True, exist_ok=True)
    tag = "".join(f"_{k}-{v}" for k, v in sorted((distill_extra or {}).items()) if k != "loss")
    tag += f"_T-{distill_extra['loss']['T']:g}" if distill_extra and "loss" in distill_extra else ""
    (Path(out) / f"kd_vs_alone{tag}.json").write_text(json.dumps(rows, indent=1))
    return rows


def kd_vs_alone_table(rows: list[dict[str, Any]], method: str = "kd") -> str:
    return "\n".join([
        "| student | final test acc | best test acc |", "|---|---|---|",
        f"| alone | {fmt_mean_std([r['alone_final'] for r in rows])} | {fmt_mean_std([r['alone_best'] for r in rows])} |",
        f"| {method} | {fmt_mean_std([r['kd_final'] for r in rows])} | {fmt_mean_std([r['kd_best'] for r in rows])} |",
    ])
