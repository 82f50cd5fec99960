"""The sections of Lee & Wallraven 2021: the Fig. 1 quadrant toy, accuracy vs label budget, the per-layer embeddings
of the undistilled (UD) and distilled (D) students, the converged Ivis loss, the class-area
ratio and the output correlation within superclasses.

Tables and figures are built from the same per-fold numbers (every step's CSV, all folds):
a table cell is ``mean ± std`` over folds, its figure mark the same mean and std with each
fold's value drawn.  Scatter and density panels show one fold's embedding (named).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from kdlens.report.sections.access import (NO_RUN, ReportData, final_accs, finished_steps, level_label,
                                           mark_not_run, num, read_csv, read_json)
from kdlens.report.sections.content import FigureItem, Section, Table, fmt, section, values_by
from kdlens.studies.grid import Study, TaskState
from kdlens.studies.summary import mean_std


def _embedding_roles(study: Study) -> dict[str, str]:
    for g in study.spec.groups.values():
        if g.kind == "embedding":
            return dict(g.params.get("models", {"UD": "ud", "D": "d"}))
    return {"UD": "ud", "D": "d"}


@section("toy", "embedding", "Fig. 1: the quadrant toy — is the global layout kept?",
         "Look for: the four quadrants of the plane back in their arrangement after 2-D noise → 15-D → 2-D (the "
         "diagonal quadrants farthest apart: layout kept) and a high Spearman ρ between distances in the plane and "
         "in the embedding. Lee & Wallraven report that t-SNE keeps neighbourhoods but may place the quadrants "
         "anywhere, while Ivis keeps the global layout.")
def _toy(data: ReportData, sec: Section) -> None:
    from kdlens.explain.embed.toy import ToyResult, toy_distance_panel
    from kdlens.figures.embed import plot_toy_check, plot_toy_distances

    steps = finished_steps(data, sec, "embedding", "embed-toy", "quadrant-toy (embed-toy)")
    for study, st in steps:
        scores = read_json(Path(st.path) / "toy_scores.json")
        npz = Path(st.path) / "toy_embeddings.npz"
        if not scores or not npz.is_file():
            continue
        rows, n, seed = scores["methods"], scores["n"], scores.get("seed", 0)
        suffix = "" if len(steps) == 1 else f"_{study.name}_{st.task.id}"
        table = Table(f"toy_scores{suffix}", ["method", "global structure ρ", "centroid r", "layout", "seconds"], [],
                      f"{study.name}: {n} points of 2-D noise → 15-D → 2-D (ρ: Spearman of pairwise distances, "
                      "plane vs embedding; r: Pearson of the six quadrant-centroid distances)")
        with np.load(npz) as arrays:
            xy, quadrant = arrays["xy"], arrays["quadrant"]
            results = {r["method"]: ToyResult(r["method"], arrays[r["method"]], float(r["global_structure"]),
                                              float(r["centroid_correlation"]), bool(r["layout_preserved"]))
                       for r in rows if r["method"] in arrays.files}
        for r in rows:
            table.rows.append([r["method"], f"{r['global_structure']:.3f}", f"{r['centroid_correlation']:.3f}",
                               "kept" if r["layout_preserved"] else "lost", f"{r['seconds']:.1f}"])
        table.add_numbers({"study": study.name, **NO_RUN, "points": n, "toy_seed": seed,
                           **{k: r[k] for k in ("method", "global_structure", "centroid_correlation",
                                                "layout_preserved", "seconds")}} for r in rows)
        sec.tables.append(table)
        if results:
            sec.figures.append(FigureItem(f"{study.name}: the plane coloured by quadrant and its re-embeddings "
                                          f"({n} points)", f"toy{suffix}", plot_toy_check(results, xy, quadrant)))
            sec.figures.append(FigureItem(f"{study.name}: distance correlations, plane vs embedding",
                                          f"toy_distances{suffix}",
                                          plot_toy_distances({m: toy_distance_panel(r, xy, quadrant, seed=seed)
                                                              for m, r in results.items()})))
    if steps and not sec.tables:
        sec.missing = "not run yet: the embed-toy step wrote no toy_scores.json / toy_embeddings.npz"


@section("budget", "embedding", "Accuracy vs label budget",
         "Look for: the distilled student (D) above the undistilled one (UD) at small label budgets — the unlabeled "
         "examples carry the teacher's knowledge — and the gap shrinking as labels grow; the teacher as reference.")
def _budget(data: ReportData, sec: Section) -> None:
    found = False
    for study in data.for_paper("embedding"):
        roles = {**_embedding_roles(study), "teacher": data.option(study, "teacher_group", "teacher")}
        by_role = {role: [st for st in data.done(study, group=g) if st.task.is_run and "data.budget" in st.task.levels
                          and st.metrics.get("final_acc") is not None] for role, g in roles.items()}
        budgets = sorted({st.task.levels["data.budget"] for sts in by_role.values() for st in sts}, key=float)
        if not budgets:
            continue
        found = True
        table = Table("accuracy_vs_budget", ["labels", *roles, "D − UD", "folds"], [],
                      "final test accuracy (%), mean ± std over folds")
        series: dict[str, list[list[float]]] = {r: [] for r in roles}
        for b in budgets:
            cells, means, n_folds = [], {}, 0
            for role, sts in by_role.items():
                sel = [st for st in sts if st.task.levels["data.budget"] == b]
                vals = final_accs(sel)
                n_folds = max(n_folds, len(vals))
                cells.append(fmt(vals))
                means[role] = mean_std(vals)[0] if vals else None
                series[role].append(vals)
                table.add_numbers({"study": study.name, **data.run_info(st.path), "budget": b, "model": role,
                                   "final_acc": st.metrics["final_acc"]} for st in sel)
            ud, d = means.get("UD"), means.get("D")
            table.rows.append([b, *cells, "—" if ud is None or d is None else f"{d - ud:+.2f}", n_folds])
        sec.tables.append(table)
        sec.figures.append(FigureItem(
            f"{study.name}: test accuracy vs labeled examples (mean ± std over folds, each fold a circle)",
            "accuracy_vs_budget", _budget_plot(budgets, series)))
    for study, st in data.steps("embedding", "limited-label"):
        rows = read_csv(Path(st.path) / "limited_label.csv")
        if not rows:
            continue
        found = True
        table = Table("accuracy_vs_budget_steps", ["labels", "UD", "D", "teacher", "D − UD", "folds"], [],
                      f"{study.name} ({st.task.id}): final test accuracy (%), mean ± std over folds")
        budgets = sorted({r["budget"] for r in rows}, key=float)
        series = {"UD": [], "D": [], "teacher": []}
        for b in budgets:
            sel = [r for r in rows if r["budget"] == b]
            cols = {m: [num(r[c]) for r in sel] for m, c in (("UD", "undistilled"), ("D", "distilled"),
                                                             ("teacher", "teacher"))}
            for m, vals in cols.items():
                series[m].append([v for v in vals if v is not None])
            table.rows.append([b, fmt(cols["UD"]), fmt(cols["D"]), fmt(cols["teacher"]),
                               f"{mean_std(cols['D'])[0] - mean_std(cols['UD'])[0]:+.2f}", len(sel)])
            for r in sel:
                for m, prefix, c in (("UD", "ud", "undistilled"), ("D", "d", "distilled"), ("teacher", "teacher", "teacher")):
                    run = data.named_run(study, f"{prefix}-b{r['budget']}-f{r['fold']}")
                    info = data.run_info(run) if run else {"run": None, "fold": num(r.get("fold")), "seed": None}
                    table.add_numbers([{"study": study.name, **info, "budget": b, "model": m, "final_acc": num(r[c])}])
        sec.tables.append(table)
        sec.figures.append(FigureItem(
            f"{study.name} ({st.task.id}): test accuracy vs labeled examples (mean ± std over folds)",
            f"accuracy_vs_budget_{st.task.id}", _budget_plot(budgets, series)))
    if not found:
        mark_not_run(sec, "embedding", "no teacher / UD / D runs with a label budget have finished")


def _budget_plot(budgets: list[Any], series: dict[str, list[list[float]]]):
    from kdlens.figures.summary import plot_mean_curves

    styles = {"teacher": {"ls": "--", "color": "0.35", "marker": "s"}}
    return plot_mean_curves([float(b) for b in budgets], series, xlabel="labeled examples", ylabel="test accuracy (%)",
                            logx=True, styles=styles)


def _embedding_steps(data: ReportData) -> list[tuple[Study, TaskState]]:
    def key(pair: tuple[Study, TaskState]) -> tuple:
        return (str(pair[0].directory), [(num(v) if num(v) is not None else float("inf"), str(v))
                                         for v in pair[1].task.levels.values()])

    return sorted(data.steps("embedding", "embedding"), key=key)


def _embedding_budgets(data: ReportData, sec: Section) -> list[tuple[Study, Any, list[TaskState]]]:
    """The finished embedding steps (one per fold) by study and label budget; with none, marks
    the section not run."""
    out: dict[tuple[Path, Any], tuple[Study, Any, list[TaskState]]] = {}
    for study, st in _embedding_steps(data):
        budget = st.task.levels.get("data.budget", "all")
        out.setdefault((study.directory, budget), (study, budget, []))[2].append(st)
    if not out:
        mark_not_run(sec, "embedding", "no embedding step has finished")
    return list(out.values())


def _role_runs(data: ReportData, study: Study, st: TaskState) -> dict[str, dict[str, Any]]:
    """Run / fold / seed of the model behind each role (UD, D, …) of one embedding step."""
    out = {}
    for role, group in _embedding_roles(study).items():
        runs = data.needed_runs(study, st, group)
        out[role] = data.run_info(runs[0].path) if runs else dict(NO_RUN)
    return out


def _step_rows(data: ReportData, study: Study, sts: list[TaskState], name: str) -> list[dict[str, Any]]:
    """The rows of one CSV of every (fold's) step, each with the run / fold / seed of its model."""
    out = []
    for st in sts:
        runs = _role_runs(data, study, st)
        out += [{**r, **runs.get(r.get("model"), NO_RUN)} for r in read_csv(Path(st.path) / name)]
    return out


def _fold_text(data: ReportData, study: Study, st: TaskState, n: int) -> str:
    folds = {i["fold"] for i in _role_runs(data, study, st).values() if i["fold"] is not None}
    shown = f"fold {sorted(folds)[0]}" if len(folds) == 1 else level_label(st.task.levels)
    return f"{shown} of {n} fold(s)" if n > 1 else shown


def _class_names(data: ReportData, study: Study, st: TaskState) -> list[str] | None:
    for run in data.needed_runs(study, st):
        names = data.model_card(run.path).get("classes")
        if names:
            return list(names)
    return None


@section("embeddings", "embedding", "Embeddings per layer A–E (UD vs D)",
         "Look for: classes separating progressively from A (early) to E (logits); at the late layers, tighter and "
         "better separated class clusters for the distilled student (bottom row) than the undistilled one (top row).")
def _embeddings(data: ReportData, sec: Section) -> None:
    from kdlens.figures.embed import plot_embedding_grid

    budgets = _embedding_budgets(data, sec)
    if not budgets:
        return
    table = Table("embedding_quality", ["labels", "model", "point", "layer", "trustworthiness", "kNN preservation",
                                        "kNN accuracy"], [], "embedding quality, mean ± std over folds")
    for study, budget, sts in budgets:
        first = Path(sts[0].path)
        rows = _step_rows(data, study, sts, "metrics.csv")
        layers = {(r["model"], r["point"]): r["layer"] for r in rows}
        arrays = np.load(first / "embeddings.npz") if (first / "embeddings.npz").is_file() else None
        if arrays is not None:
            with arrays:
                stored = {k: arrays[k] for k in arrays.files}
            methods = list(dict.fromkeys(k.split("__")[0] for k in stored if k.count("__") == 2))
            for method in methods:
                emb: dict[str, dict[str, np.ndarray]] = {}
                for k, v in stored.items():
                    parts = k.split("__")
                    if len(parts) == 3 and parts[0] == method:
                        emb.setdefault(parts[1], {})[parts[2]] = v
                titles = {m: {p: f"{p}: {layers.get((m, p), '')}".rstrip(": ") for p in emb[m]} for m in emb}
                fig = plot_embedding_grid(emb, stored["labels"], _class_names(data, study, sts[0]), titles=titles,
                                          point_size=2.5, method=method)
                sec.figures.append(FigureItem(
                    f"{study.name}, {budget} labels ({_fold_text(data, study, sts[0], len(sts))}): {method} embeddings "
                    "of the test set at each extraction point; rows UD and D", f"scatter_{method}_{budget}", fig))
        method0 = rows[0]["method"] if rows else None
        for model in dict.fromkeys(r["model"] for r in rows):
            for point in dict.fromkeys(r["point"] for r in rows if r["model"] == model):
                sel = [r for r in rows if r["model"] == model and r["point"] == point and r["method"] == method0]
                if sel:
                    table.rows.append([budget, model, point, sel[0]["layer"], *(fmt([num(r[k]) for r in sel], 3) for k in
                                       ("trustworthiness", "knn_preservation", "knn_accuracy"))])
        table.add_numbers({"study": study.name, "budget": budget, **r} for r in rows)
    sec.tables.append(table)


@section("ivis-loss", "embedding", "Converged Ivis loss",
         "Look for: per layer, how the converged triplet loss of the distilled student (D) compares with the "
         "undistilled one (UD) — a lower loss means neighbourhoods that are easier to preserve in 2-D (Table 2). "
         "Table and figure: mean ± std over folds; the figure also shows each fold's loss.")
def _ivis_loss(data: ReportData, sec: Section) -> None:
    from kdlens.figures.embed import plot_ivis_loss

    budgets = _embedding_budgets(data, sec)
    if not budgets:
        return
    any_rows = False
    for study, budget, sts in budgets:
        rows = [r for r in _step_rows(data, study, sts, "metrics.csv") if r["method"] == "ivis"]
        if not rows:
            continue
        any_rows = True
        by = values_by(rows, ("model", "point"), "ivis_loss")
        models = list(dict.fromkeys(r["model"] for r in rows))
        points = list(dict.fromkeys(r["point"] for r in rows))
        table = Table(f"ivis_loss_{budget}", ["point", *models], [],
                      f"{study.name}, {budget} labels: converged Ivis loss, mean ± std over {len(sts)} fold(s)")
        for p in points:
            table.rows.append([p, *(fmt(by.get((m, p), []), 4) for m in models)])
        table.add_numbers({"study": study.name, **{k: r[k] for k in ("run", "fold", "seed")}, "budget": budget,
                           "model": r["model"], "point": r["point"], "layer": r.get("layer"),
                           "ivis_loss": num(r["ivis_loss"])} for r in rows)
        sec.tables.append(table)
        losses = {m: {p: by[(m, p)] for p in points if (m, p) in by} for m in models}
        sec.figures.append(FigureItem(
            f"{study.name}, {budget} labels: converged Ivis loss per layer (mean ± std over {len(sts)} fold(s))",
            f"ivis_loss_{budget}", plot_ivis_loss(losses, title=None)))
    if not any_rows:
        sec.missing = "not run yet: no Ivis embedding in the embedding steps (add ivis to methods)"


@section("class-area", "embedding", "Class-area ratio",
         "Look for: smaller class areas (more compact classes relative to all points) at the late layers, and "
         "smaller for the distilled student than the undistilled one (Figs. 7–8); the density panels show one "
         "class's 90 % region (solid) against that of all points (dashed).")
def _class_area(data: ReportData, sec: Section) -> None:
    from kdlens.figures.embed import plot_class_area_boxplots

    budgets = _embedding_budgets(data, sec)
    if not budgets:
        return
    for study, budget, sts in budgets:
        rows = _step_rows(data, study, sts, "class_areas.csv")
        if not rows:
            continue
        method = rows[0]["method"]
        rows = [r for r in rows if r["method"] == method]
        by = values_by(rows, ("model", "point"), "ratio")
        models = list(dict.fromkeys(r["model"] for r in rows))
        points = list(dict.fromkeys(r["point"] for r in rows))
        ratios = {m: {p: by.get((m, p), []) for p in points} for m in models}
        fig = plot_class_area_boxplots(ratios, title=None)
        sec.figures.append(FigureItem(f"{study.name}, {budget} labels: class-area ratio per layer ({method}, every "
                                      f"class of {len(sts)} fold(s); diamond = the table's mean)",
                                      f"class_area_{budget}", fig))
        table = Table(f"class_area_{budget}", ["point", *models], [],
                      f"{study.name}, {budget} labels: mean class-area ratio ± std over classes and folds ({method})")
        for p in points:
            table.rows.append([p, *(fmt(ratios[m].get(p, []), 3) for m in models)])
        table.add_numbers({"study": study.name, "budget": budget, **r} for r in rows)
        sec.tables.append(table)
        _density(data, sec, study, budget, sts, method)


def _density(data: ReportData, sec: Section, study: Study, budget: Any, sts: list[TaskState], method: str) -> None:
    """One class's density at the last convolutional point, UD and D side by side (first fold)."""
    from kdlens.explain.embed import class_density
    from kdlens.figures.embed import plot_class_density_panels

    st = sts[0]
    path = Path(st.path) / "embeddings.npz"
    if not path.is_file():
        return
    with np.load(path) as arrays:
        stored = {k: arrays[k] for k in arrays.files}
    labels = stored.get("labels")
    roles = [r for r in _embedding_roles(study) if any(k.startswith(f"{method}__{r}__") for k in stored)]
    if labels is None or not roles:
        return
    points = [k.split("__")[2] for k in stored if k.startswith(f"{method}__{roles[0]}__")]
    conv = [p for p in "ABC" if p in points] or points
    point = conv[-1]
    cls = int(st.task.config.get("density_class", 0))
    mass = float(st.task.config.get("mass", 0.9))
    names = _class_names(data, study, st)
    cname = names[cls] if names and cls < len(names) else str(cls)
    cname = f"class {cname}" if cname.isdigit() else cname
    layers = {(r["model"], r["point"]): r["layer"] for r in read_csv(Path(st.path) / "metrics.csv")}
    panels = {}
    for role in roles:
        y = stored[f"{method}__{role}__{point}"]
        layer = layers.get((role, point))
        panels[f"{role}, point {point}" + (f" ({layer})" if layer else "") + f": {cname}"] = (
            y, class_density(y, labels, cls, mass=mass))
    sec.figures.append(FigureItem(
        f"{study.name}, {budget} labels ({_fold_text(data, study, st, len(sts))}): density of {cname} at the last "
        f"convolutional point ({point}, {method})", f"density_{method}_{budget}",
        plot_class_density_panels(panels, labels=labels)))


@section("superclass", "embedding", "Output correlation within superclasses",
         "Look for: a higher within-superclass r² for the distilled student than the undistilled one (the teacher's "
         "knowledge of which classes resemble each other), measured against the between-superclass baseline (Fig. 5).")
def _superclass(data: ReportData, sec: Section) -> None:
    from kdlens.figures.summary import plot_grouped_values

    budgets = _embedding_budgets(data, sec)
    if not budgets:
        return
    table = Table("superclass", ["labels", "model", "within r²", "between r²", "within − between"], [],
                  "mean r² between class outputs (softmax), mean ± std over folds")
    bars: dict[str, dict[str, list[float]]] = {}
    for study, budget, sts in budgets:
        rows = _step_rows(data, study, sts, "superclass.csv")
        for model in dict.fromkeys(r["model"] for r in rows):
            sel = [r for r in rows if r["model"] == model]
            w = [num(r["within_r2"]) for r in sel]
            b = [num(r["between_r2"]) for r in sel]
            diff = [x - y for x, y in zip(w, b, strict=True) if x is not None and y is not None]
            table.rows.append([budget, model, fmt(w, 3), fmt(b, 3), fmt(diff, 3)])
            bars.setdefault(model, {})[f"{budget} labels"] = [x for x in w if x is not None]
        table.add_numbers({"study": study.name, "budget": budget, **r} for r in rows)
    if not table.rows:
        sec.missing = "not run yet: the embedding steps found no superclasses (give params.superclasses)"
        return
    sec.tables.append(table)
    fig = plot_grouped_values(bars, kind="bar", xlabel="label budget", ylabel="within-superclass r²")
    sec.figures.append(FigureItem("within-superclass r² per label budget and model (mean ± std over folds, "
                                  "each fold a circle)", "superclass", fig))
