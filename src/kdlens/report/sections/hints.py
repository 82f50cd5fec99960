"""The sections of PURSUhInT (Keser et al. 2022): the teacher's layer similarity with its
clusters and hint points, and the accuracy of students distilled from the conventional vs
the proposed hint points.
"""

from __future__ import annotations

from pathlib import Path

from kdlens.report.sections.access import (ReportData, _add_png, _final_accs, _finished_steps, _not_run,
                                           _read_csv)
from kdlens.report.sections.content import Section, Table, fmt, section
from kdlens.studies.grid import TaskState
from kdlens.studies.summary import mean_std


@section("hint-points", "hints", "Layer similarity, clusters and hint points",
         "Look for: blocks of high similarity along the diagonal (the clusters, separated by lines); the proposed "
         "hint points (red circles, cluster centres) against the conventional ones (white crosses, ends of stages).")
def _hint_points(data: ReportData, sec: Section) -> None:
    for study, st in _finished_steps(data, sec, "hints", "hint-search", "hint-search"):
        path = Path(st.path)
        m = st.metrics
        _add_png(sec, path / "hints.png", f"{study.name}: {m.get('metric', '')} similarity of the "
                                          f"{m.get('layers', '?')} layers of {m.get('teacher_model', 'the teacher')}")
        rows = _read_csv(path / "clusters.csv")
        table = Table("hint_clusters", ["cluster", "layers (1-based)", "size", "proposed point", "layer",
                                        "conventional point", "conv. layer"], [],
                      f"clusters of {m.get('teacher_model', 'the teacher')} (k = {m.get('k')}, N = {m.get('n')})")
        for r in rows:
            table.rows.append([r["cluster"], r["members"], r["size"], r["hint"], r["layer"],
                               r.get("conventional") or "—", r.get("conventional_layer") or "—"])
            table.numbers.append({"study": study.name, **r})
        sec.tables.append(table)


HINT_LABELS = {"conventional": "conventional points", "auto": "proposed (cluster centres)"}


def _level(st: TaskState, key: str) -> str:
    """A task's grid level for ``key``, else its config value, as a string."""
    return str(st.task.levels.get(key, st.task.config.get(key)))


@section("hint-accuracy", "hints", "Baseline vs proposed hint points",
         "Look for: for each method, students distilled from the proposed points reaching at least the accuracy of "
         "the conventional points (PURSUhInT Table 4), and both above the student trained alone.")
def _hint_accuracy(data: ReportData, sec: Section) -> None:
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
        for method in methods:
            cells, means = [], []
            for h in hints:
                vals = _final_accs([st for st in runs if _level(st, "method") == method and _level(st, "hints") == h])
                cells.append(fmt(vals))
                means.append(mean_std(vals)[0] if vals else None)
                table.numbers += [{"study": study.name, "method": method, "hints": h, "final_acc": v} for v in vals]
            delta = f"{means[-1] - means[0]:+.2f}" if len(means) > 1 and None not in (means[0], means[-1]) else "—"
            table.rows.append([method, *cells, delta])
        for st_kind, label in (("alone", "student alone"), ("teacher", "teacher")):
            group = data.option(study, f"{st_kind}_group", st_kind)
            vals = _final_accs(data.done(study, "train", group))
            if vals:
                table.rows.append([label, fmt(vals), *["" for _ in hints[1:]], ""])
                table.numbers += [{"study": study.name, "method": label, "hints": None, "final_acc": v} for v in vals]
        failed = [st for st in data.states[study.directory] if st.task.kind == "distill" and st.status == "failed"]
        if failed:
            sec.notes.append(f"{len(failed)} student run(s) failed and are left out: "
                             + "; ".join(f"{st.task.id}: {st.reason}" for st in failed[:3]))
        sec.tables.append(table)
    if not found:
        _not_run(sec, "hints", "no distilled student has finished")
