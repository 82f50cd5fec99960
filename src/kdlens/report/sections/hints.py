"""The sections of PURSUhInT (Keser et al. 2022): the teacher's layer similarity with its
clusters and hint points, and the accuracy of students distilled from the conventional vs
the proposed hint points (table and figure from the same per-seed numbers).
"""

from __future__ import annotations

from pathlib import Path

from kdlens.report.sections.access import (NO_RUN, ReportData, final_accs, finished_steps, mark_not_run, read_csv,
                                           read_json, read_png)
from kdlens.report.sections.content import FigureItem, Section, Table, fmt, section
from kdlens.studies.grid import TaskState
from kdlens.studies.summary import mean_std


@section("hint-points", "hints", "Layer similarity, clusters and hint points",
         "Look for: blocks of high similarity along the diagonal (the clusters, separated by lines); the proposed "
         "hint points (red circles, cluster centres) against the conventional ones (white crosses, ends of stages).")
def _hint_points(data: ReportData, sec: Section) -> None:
    from kdlens.explain.hint_search import HintSearchResult
    from kdlens.figures.similarity import plot_similarity_heatmap

    for study, st in finished_steps(data, sec, "hints", "hint-search", "hint-search"):
        path = Path(st.path)
        m = st.metrics
        teacher = data.needed_runs(study, st, st.task.config.get("teacher", "teacher"))
        info = data.run_info(teacher[0].path) if teacher else dict(NO_RUN)
        title = (f"{study.name}: {m.get('metric', '')} similarity of the {m.get('layers', '?')} layers of "
                 f"{m.get('teacher_model', 'the teacher')}")
        raw = read_json(path / "hints.json")
        try:
            if not raw:
                raise ValueError("the step wrote no hints.json")
            result = HintSearchResult.from_dict(raw)
            fig = plot_similarity_heatmap(result.similarity, result.selection, conventional=result.conventional,
                                          title=f"{result.metric} ({result.form}-activation), k = {result.k}")
            sec.figures.append(FigureItem(title, "hints", fig))
        except Exception as err:  # noqa: BLE001 - the step's own PNG when the numbers cannot be redrawn
            png = read_png(path / "hints.png")
            if png:
                sec.figures.append(FigureItem(title, "hints", png=png))
                sec.notes.append(f"hints.png shown as the step drew it (PNG only): {type(err).__name__}: {err}")
        rows = read_csv(path / "clusters.csv")
        table = Table("hint_clusters", ["cluster", "layers (1-based)", "size", "proposed point", "layer",
                                        "conventional point", "conv. layer"], [],
                      f"clusters of {m.get('teacher_model', 'the teacher')} (k = {m.get('k')}, N = {m.get('n')})")
        for r in rows:
            table.rows.append([r["cluster"], r["members"], r["size"], r["hint"], r["layer"],
                               r.get("conventional") or "—", r.get("conventional_layer") or "—"])
        table.add_numbers({"study": study.name, **r, **info} for r in rows)
        sec.tables.append(table)


HINT_LABELS = {"conventional": "conventional points", "auto": "proposed (cluster centres)"}


def _level(st: TaskState, key: str) -> str:
    """A task's grid level for ``key``, else its config value, as a string."""
    return str(st.task.levels.get(key, st.task.config.get(key)))


@section("hint-accuracy", "hints", "Baseline vs proposed hint points",
         "Look for: for each method, students distilled from the proposed points reaching at least the accuracy of "
         "the conventional points (PURSUhInT Table 4), and both above the student trained alone.")
def _hint_accuracy(data: ReportData, sec: Section) -> None:
    from kdlens.figures.summary import plot_grouped_values

    found = False
    for study in data.for_paper("hints"):
        runs = [st for st in data.done(study, "distill") if "hints" in st.task.levels or "method" in st.task.levels]
        if not runs:
            continue
        found = True
        methods = list(dict.fromkeys(_level(st, "method") for st in runs))
        hints = list(dict.fromkeys(_level(st, "hints") for st in runs))
        cols = [HINT_LABELS.get(h, f"hints {h}") for h in hints]
        table = Table("hint_accuracy", ["student", *cols, "Δ (last − first)"], [],
                      "final test accuracy (%), mean ± std over seeds")
        values: dict[str, dict[str, list[float]]] = {}
        for method in methods:
            cells, means = [], []
            for h, col in zip(hints, cols, strict=True):
                sts = [st for st in runs if _level(st, "method") == method and _level(st, "hints") == h]
                vals = final_accs(sts)
                cells.append(fmt(vals))
                means.append(mean_std(vals)[0] if vals else None)
                if vals:
                    values.setdefault(col, {})[method] = vals
                table.add_numbers({"study": study.name, **data.run_info(st.path), "method": method, "hints": h,
                                   "final_acc": st.metrics.get("final_acc")} for st in sts
                                  if st.metrics.get("final_acc") is not None)
            delta = f"{means[-1] - means[0]:+.2f}" if len(means) > 1 and None not in (means[0], means[-1]) else "—"
            table.rows.append([method, *cells, delta])
        for st_kind, label in (("alone", "student alone"), ("teacher", "teacher")):
            group = data.option(study, f"{st_kind}_group", st_kind)
            sts = [st for st in data.done(study, "train", group) if st.metrics.get("final_acc") is not None]
            vals = final_accs(sts)
            if vals:
                table.rows.append([label, fmt(vals), *["" for _ in hints[1:]], ""])
                values.setdefault("reference runs", {})[label] = vals
                table.add_numbers({"study": study.name, **data.run_info(st.path), "method": label, "hints": None,
                                   "final_acc": st.metrics["final_acc"]} for st in sts)
        failed = [st for st in data.states[study.directory] if st.task.kind == "distill" and st.status == "failed"]
        if failed:
            sec.notes.append(f"{len(failed)} student run(s) failed and are left out: "
                             + "; ".join(f"{st.task.id}: {st.reason}" for st in failed[:3]))
        sec.tables.append(table)
        if values:
            fig = plot_grouped_values(values, kind="dot", xlabel="student", ylabel="test accuracy (%)")
            sec.figures.append(FigureItem(f"{study.name}: final test accuracy per method and hint points "
                                          "(mean ± std over seeds, each seed a circle)", "hint_accuracy", fig))
    if not found:
        mark_not_run(sec, "hints", "no distilled student has finished")
