"""The sections of Lee & Wallraven 2021: accuracy vs label budget, the per-layer embeddings
of the undistilled (UD) and distilled (D) students, the converged Ivis loss, the class-area
ratio and the output correlation within superclasses, plus the two plots drawn here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kdlens.report.sections.access import (ReportData, _axes, _fig_png, _final_accs, _label, _not_run, _num,
                                           _png, _read_csv)
from kdlens.report.sections.content import FigureItem, Section, Table, fmt, section
from kdlens.studies.grid import Study, TaskState
from kdlens.studies.summary import mean_std


def _embedding_roles(study: Study) -> dict[str, str]:
    for g in study.spec.groups.values():
        if g.kind == "embedding":
            return dict(g.params.get("models", {"UD": "ud", "D": "d"}))
    return {"UD": "ud", "D": "d"}


@section("budget", "embedding", "Accuracy vs label budget",
         "Look for: the distilled student (D) above the undistilled one (UD) at small label budgets — the unlabeled "
         "examples carry the teacher's knowledge — and the gap shrinking as labels grow; the teacher as reference.")
def _budget(data: ReportData, sec: Section) -> None:
    found = False
    for study in data.for_paper("embedding"):
        roles = {**_embedding_roles(study), "teacher": data.option(study, "teacher_group", "teacher")}
        by_role = {role: [st for st in data.done(study, group=g) if st.task.is_run and "data.budget" in st.task.levels]
                   for role, g in roles.items()}
        budgets = sorted({st.task.levels["data.budget"] for sts in by_role.values() for st in sts}, key=float)
        if not budgets:
            continue
        found = True
        table = Table("accuracy_vs_budget", ["labels", *[f"{r}" for r in roles], "D − UD", "folds"], [],
                      "final test accuracy (%), mean ± std over folds")
        series: dict[str, list[float | None]] = {r: [] for r in roles}
        for b in budgets:
            cells, means, n_folds = [], {}, 0
            for role, sts in by_role.items():
                vals = _final_accs([st for st in sts if st.task.levels["data.budget"] == b])
                n_folds = max(n_folds, len(vals))
                cells.append(fmt(vals))
                means[role] = mean_std(vals)[0] if vals else None
                series[role].append(means[role])
                table.numbers += [{"study": study.name, "budget": b, "model": role, "final_acc": v} for v in vals]
            ud, d = means.get("UD"), means.get("D")
            table.rows.append([b, *cells, "—" if ud is None or d is None else f"{d - ud:+.2f}", n_folds])
        sec.tables.append(table)
        sec.figures.append(FigureItem(_fig_png(_budget_plot(budgets, series)),
                                      f"{study.name}: test accuracy vs labeled examples (mean over folds)"))
    for study, st in data.steps("embedding", "limited-label"):
        rows = _read_csv(Path(st.path) / "limited_label.csv")
        if not rows:
            continue
        found = True
        table = Table("accuracy_vs_budget_steps", ["labels", "UD", "D", "teacher", "D − UD", "folds"], [],
                      f"{study.name} ({st.task.id}): final test accuracy (%), mean ± std over folds")
        for b in sorted({r["budget"] for r in rows}, key=float):
            sel = [r for r in rows if r["budget"] == b]
            ud = [_num(r["undistilled"]) for r in sel]
            d = [_num(r["distilled"]) for r in sel]
            t = [_num(r["teacher"]) for r in sel]
            table.rows.append([b, fmt(ud), fmt(d), fmt(t), f"{mean_std(d)[0] - mean_std(ud)[0]:+.2f}", len(sel)])
            table.numbers += [{"study": study.name, "budget": b, "model": m, "final_acc": v}
                              for m, vals in (("UD", ud), ("D", d), ("teacher", t)) for v in vals]
        sec.tables.append(table)
    if not found:
        _not_run(sec, "embedding", "no teacher / UD / D runs with a label budget have finished")


def _budget_plot(budgets: list[Any], series: dict[str, list[float | None]]):
    fig, ax = _axes(5.0, 3.4)
    xs = [float(b) for b in budgets]
    for role, ys in series.items():
        pts = [(x, y) for x, y in zip(xs, ys, strict=True) if y is not None]
        if pts:
            ax.plot(*zip(*pts, strict=True), marker="o", label=role, ls="--" if role == "teacher" else "-")
    ax.set_xscale("log")
    ax.set_xticks(xs, [str(b) for b in budgets])
    ax.set_xticks([], minor=True)
    ax.set_xlabel("labeled examples")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def _embedding_steps(data: ReportData) -> list[tuple[Study, TaskState]]:
    def key(pair: tuple[Study, TaskState]) -> tuple:
        return (str(pair[0].directory), [(_num(v) if _num(v) is not None else float("inf"), str(v))
                                         for v in pair[1].task.levels.values()])

    return sorted(data.steps("embedding", "embedding"), key=key)


def _embedding_budgets(data: ReportData, sec: Section) -> dict[tuple[str, Any], list[TaskState]]:
    """The finished embedding steps by (study, label budget); with none, marks the section not run."""
    out: dict[tuple[str, Any], list[TaskState]] = {}
    for study, st in _embedding_steps(data):
        out.setdefault((study.name, st.task.levels.get("data.budget", "all")), []).append(st)
    if not out:
        _not_run(sec, "embedding", "no embedding step has finished")
    return out


@section("embeddings", "embedding", "Embeddings per layer A–E (UD vs D)",
         "Look for: classes separating progressively from A (early) to E (logits); at the late layers, tighter and "
         "better separated class clusters for the distilled student (bottom row) than the undistilled one (top row).")
def _embeddings(data: ReportData, sec: Section) -> None:
    budgets = _embedding_budgets(data, sec)
    if not budgets:
        return
    table = Table("embedding_quality", ["labels", "model", "point", "layer", "trustworthiness", "kNN preservation",
                                        "kNN accuracy"], [], "embedding quality (Ivis), mean ± std over folds")
    for (name, budget), sts in budgets.items():
        first = Path(sts[0].path)
        for png_path in sorted(first.glob("scatter_*.png")):
            method = png_path.stem.split("_", 1)[1]
            sec.figures.append(FigureItem(png_path.read_bytes(), f"{name}, {budget} labels ({_label(sts[0].task.levels)}): "
                                                                 f"{method} embeddings of the test set at A–E"))
        rows = [r for st in sts for r in _read_csv(Path(st.path) / "metrics.csv")]
        for model in dict.fromkeys(r["model"] for r in rows):
            for point in dict.fromkeys(r["point"] for r in rows if r["model"] == model):
                sel = [r for r in rows if r["model"] == model and r["point"] == point and r["method"] == rows[0]["method"]]
                table.rows.append([budget, model, point, sel[0]["layer"], *(fmt([_num(r[k]) for r in sel], 3) for k in
                                   ("trustworthiness", "knn_preservation", "knn_accuracy"))])
        table.numbers += [{"study": name, "budget": budget, **r} for r in rows]
    sec.tables.append(table)


@section("ivis-loss", "embedding", "Converged Ivis loss",
         "Look for: per layer, how the converged triplet loss of the distilled student (D) compares with the "
         "undistilled one (UD) — a lower loss means neighbourhoods that are easier to preserve in 2-D (Table 2).")
def _ivis_loss(data: ReportData, sec: Section) -> None:
    budgets = _embedding_budgets(data, sec)
    if not budgets:
        return
    any_rows = False
    for (name, budget), sts in budgets.items():
        rows = [r for st in sts for r in _read_csv(Path(st.path) / "metrics.csv") if r["method"] == "ivis"]
        if not rows:
            continue
        any_rows = True
        models = list(dict.fromkeys(r["model"] for r in rows))
        points = list(dict.fromkeys(r["point"] for r in rows))
        table = Table(f"ivis_loss_{budget}", ["point", *models], [], f"{name}, {budget} labels: converged Ivis loss, "
                                                                     f"mean ± std over {len(sts)} fold(s)")
        for p in points:
            table.rows.append([p, *(fmt([_num(r["ivis_loss"]) for r in rows if r["model"] == m and r["point"] == p], 4)
                                    for m in models)])
        table.numbers += [{"study": name, "budget": budget, "model": r["model"], "point": r["point"],
                           "ivis_loss": _num(r["ivis_loss"])} for r in rows]
        sec.tables.append(table)
        png = _png(Path(sts[0].path) / "ivis_loss.png")
        if png:
            sec.figures.append(FigureItem(png, f"{name}, {budget} labels: converged Ivis loss per layer"))
    if not any_rows:
        sec.missing = "not run yet: no Ivis embedding in the embedding steps (add ivis to methods)"


@section("class-area", "embedding", "Class-area ratio",
         "Look for: smaller class areas (more compact classes relative to all points) at the late layers, and "
         "smaller for the distilled student than the undistilled one (Figs. 7–8); the density panel shows one class's "
         "90 % region (solid) against that of all points (dashed).")
def _class_area(data: ReportData, sec: Section) -> None:
    from kdlens.figures.embed import plot_class_area_boxplots

    budgets = _embedding_budgets(data, sec)
    if not budgets:
        return
    for (name, budget), sts in budgets.items():
        rows = [r for st in sts for r in _read_csv(Path(st.path) / "class_areas.csv")]
        if not rows:
            continue
        method = rows[0]["method"]
        rows = [r for r in rows if r["method"] == method]
        ratios: dict[str, dict[str, list[float]]] = {}
        for r in rows:
            ratios.setdefault(r["model"], {}).setdefault(r["point"], []).append(float(r["ratio"]))
        fig = plot_class_area_boxplots(ratios, title=f"{budget} labels: class-area ratio ({method}, all classes and folds)")
        sec.figures.append(FigureItem(_fig_png(fig), f"{name}, {budget} labels: class-area ratio per layer"))
        models = list(ratios)
        points = list(dict.fromkeys(p for m in models for p in ratios[m]))
        table = Table(f"class_area_{budget}", ["point", *models], [],
                      f"{name}, {budget} labels: mean class-area ratio ± std over classes and folds ({method})")
        for p in points:
            table.rows.append([p, *(fmt(ratios[m].get(p, []), 3) for m in models)])
        table.numbers += [{"study": name, "budget": budget, **r} for r in rows]
        sec.tables.append(table)
        png = next((_png(p) for p in sorted(Path(sts[0].path).glob("density_*.png"))), None)
        if png:
            sec.figures.append(FigureItem(png, f"{name}, {budget} labels: one class's density at the last convolutional point"))


@section("superclass", "embedding", "Output correlation within superclasses",
         "Look for: a higher within-superclass r² for the distilled student than the undistilled one (the teacher's "
         "knowledge of which classes resemble each other), measured against the between-superclass baseline (Fig. 5).")
def _superclass(data: ReportData, sec: Section) -> None:
    budgets = _embedding_budgets(data, sec)
    if not budgets:
        return
    table = Table("superclass", ["labels", "model", "within r²", "between r²", "within − between"], [],
                  "mean r² between class outputs (softmax), mean ± std over folds")
    bars: dict[str, dict[str, float]] = {}
    for (name, budget), sts in budgets.items():
        rows = [r for st in sts for r in _read_csv(Path(st.path) / "superclass.csv")]
        for model in dict.fromkeys(r["model"] for r in rows):
            sel = [r for r in rows if r["model"] == model]
            w = [_num(r["within_r2"]) for r in sel]
            b = [_num(r["between_r2"]) for r in sel]
            diff = [x - y for x, y in zip(w, b, strict=True) if x is not None and y is not None]
            table.rows.append([budget, model, fmt(w, 3), fmt(b, 3), fmt(diff, 3)])
            bars.setdefault(f"{budget} labels", {})[model] = mean_std([x for x in w if x is not None])[0] if any(
                x is not None for x in w) else float("nan")
        table.numbers += [{"study": name, "budget": budget, **r} for r in rows]
    if not table.rows:
        sec.missing = "not run yet: the embedding steps found no superclasses (give params.superclasses)"
        return
    sec.tables.append(table)
    sec.figures.append(FigureItem(_fig_png(_superclass_plot(bars)), "within-superclass r² per label budget and model"))


def _superclass_plot(bars: dict[str, dict[str, float]]):
    fig, ax = _axes(1.6 + 1.4 * len(bars), 3.2)
    models = list(dict.fromkeys(m for v in bars.values() for m in v))
    width = 0.8 / max(1, len(models))
    for i, m in enumerate(models):
        xs = [j + (i - (len(models) - 1) / 2) * width for j in range(len(bars))]
        ax.bar(xs, [v.get(m, float("nan")) for v in bars.values()], width=width * 0.9, label=m)
    ax.set_xticks(range(len(bars)), list(bars))
    ax.set_ylabel("within-superclass r²")
    ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return fig
