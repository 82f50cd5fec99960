"""Does KD help? The same student trained alone vs distilled from a teacher, over seeds."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kdlens.config import DistillConfig, TrainConfig, validate
from kdlens.store import RunDir
from kdlens.studies.summary import fmt_mean_std, mean_std
from kdlens.train.distill_run import run_distillation
from kdlens.train.run import run_training


def run_kd_vs_alone(
    teacher_run: str,
    dataset: str = "fashion-mnist",
    student: str = "cnn_student",
    method: str = "kd",
    seeds: Sequence[int] = (0, 1, 2),
    epochs: int = 5,
    out: str = "runs/kd-vs-alone",
    progress: bool = False,
    extra: dict[str, Any] | None = None,
    distill_extra: dict[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """``extra``: config keys of both runs; ``distill_extra``: of the distilled run only (γ, α,
    ``loss.T``). Runs already done in ``out`` (same config) are reused, not retrained; ``log``
    is told which run starts."""
    pairs = []  # every seed's configs are validated before anything trains
    for seed in seeds:
        common = {"out": out, "model": {"name": student}, "data": {"name": dataset}, "epochs": epochs,
                  "seed": seed, **(extra or {})}
        pairs.append((validate(TrainConfig, {**common, "name": f"alone-s{seed}"}),
                      validate(DistillConfig, {**common, "teacher": {"run": teacher_run}, "method": method,
                                               "name": f"{method}-s{seed}", **(distill_extra or {})})))
    rows = []
    for seed, (alone_cfg, kd_cfg) in zip(seeds, pairs):
        # distilled first: its set-up checks (method, hint layers, teacher vs data) fail before
        # anything trains
        done = 2 * len(rows)
        if log is not None:
            log(f"run {done + 1}/{2 * len(pairs)}: seed {seed}, {student} distilled ({method})")
        kd = run_distillation(kd_cfg, resume=True, progress=progress)  # a study resumes whatever exists
        if log is not None:
            log(f"run {done + 2}/{2 * len(pairs)}: seed {seed}, {student} alone")
        alone = run_training(alone_cfg, resume=True, progress=progress)
        rows.append({"seed": seed, "alone_final": alone.metrics["final_acc"], "alone_best": alone.metrics["best_acc"],
                     "kd_final": kd.metrics["final_acc"], "kd_best": kd.metrics["best_acc"],
                     "alone_final5": alone.metrics.get("final_acc5"), "kd_final5": kd.metrics.get("final_acc5")})
    Path(out).mkdir(parents=True, exist_ok=True)
    tag = "".join(f"_{k}-{v}" for k, v in sorted((distill_extra or {}).items()) if k != "loss")
    tag += f"_T-{distill_extra['loss']['T']:g}" if distill_extra and "loss" in distill_extra else ""
    (Path(out) / f"kd_vs_alone{tag}.json").write_text(json.dumps(rows, indent=1))
    return rows


def kd_vs_alone_table(rows: list[dict[str, Any]], method: str = "kd") -> str:
    """Markdown: final and best top-1 test accuracy and final top-5 (mean ± std over seeds)."""
    def top5(key: str) -> str:  # runs recorded before top-5 was reported have none
        values = [r.get(key) for r in rows]
        return "—" if None in values else fmt_mean_std(values)

    return "\n".join([
        "| student | final test acc | best test acc | final top-5 |", "|---|---|---|---|",
        f"| alone | {fmt_mean_std([r['alone_final'] for r in rows])} | {fmt_mean_std([r['alone_best'] for r in rows])} "
        f"| {top5('alone_final5')} |",
        f"| {method} | {fmt_mean_std([r['kd_final'] for r in rows])} | {fmt_mean_std([r['kd_best'] for r in rows])} "
        f"| {top5('kd_final5')} |",
    ])


# Teacher − student-alone gaps measured on Fashion-MNIST (benchmarks/RESULTS.md, KD weights
# γ 0.1, α 0.9, T 4): 0.21 and 0.49 points → KD lost; 1.51 and 1.79 points → KD won.
SMALL_TEACHER_GAP = 1.0


def teacher_accuracy(teacher_run: str) -> float | None:
    """The teacher run's final test accuracy (``result.json``), or None if it has none."""
    result = RunDir(teacher_run).read_result() if Path(teacher_run).is_dir() else None
    return None if not result or result.get("final_acc") is None else float(result["final_acc"])


def kd_vs_alone_verdict(rows: list[dict[str, Any]], teacher_acc: float | None) -> str:
    """What the table says: KD − alone per seed, the teacher's lead over the student alone and,
    when that lead is under :data:`SMALL_TEACHER_GAP` points, why KD is unlikely to help."""
    diffs = [r["kd_final"] - r["alone_final"] for r in rows]
    wins = sum(d > 0 for d in diffs)
    lines = [f"KD − alone (final test acc): {', '.join(f'{d:+.2f}' for d in diffs)}; "
             f"mean {sum(diffs) / len(diffs):+.2f}; KD ahead in {wins} of {len(diffs)} seeds"]
    if teacher_acc is not None:
        alone, _ = mean_std([r["alone_final"] for r in rows])
        gap = teacher_acc - alone
        lines.append(f"teacher {teacher_acc:.2f}%: {gap:+.2f} points over the student alone")
        if gap < SMALL_TEACHER_GAP:
            lines.append(
                f"the teacher leads the student alone by less than {SMALL_TEACHER_GAP:g} point: it has little "
                "accuracy to transfer (on Fashion-MNIST, leads of 0.2–0.5 made KD lose, 1.5–1.8 made it win). "
                "Train a stronger teacher (longer, augmented: examples/teacher_fmnist.yaml) before tuning "
                "α and T; see docs/DIAGNOSING.md"
            )
    return "\n".join(lines)
