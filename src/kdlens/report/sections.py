"""The sections of the study report: what each paper's experiment shows, built from a study's
recorded runs and step outputs.

A section is a function ``build(data: ReportData) -> Section`` registered for one of the three
papers with a title and a one-line caption of what to look for.  It returns tables (rows of
plain values; every number also goes to CSV/JSON) and figures (PNG bytes, from the steps'
files or drawn here from the aggregated numbers).  When the study it needs has not run (or
not far enough), the section says "not run yet" and how to run it, instead of failing.

Tables aggregate over folds / seeds as mean ± sample standard deviation
(:func:`kdlens.studies.summary.mean_std`).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdlens.studies.grid import Study, TaskState, task_states
from kdlens.studies.summary import mean_std

# ------------------------------------------------------------------------------ content
PAPERS = {
    "softlabel": ("The soft-label hypothesis", "Vats 2021, Response-based knowledge distillation (thesis)",
                  "examples/softlabel.yaml"),
    "hints": ("Hint points by layer clustering", "Keser et al. 2022, PURSUhInT", "examples/hints.yaml"),
    "embedding": ("The embedding space of distilled students",
                  "Lee & Wallraven 2021, Visualizing the embedding space to explain the effect of knowledge distillation",
                  "examples/embedding.yaml"),
}


@dataclass
class Table:
    name: str  # file stem of its CSV
    columns: list[str]
    rows: list[list[Any]]
    title: str | None = None
    numbers: list[dict[str, Any]] = field(default_factory=list)  # tidy rows of the raw numbers


@dataclass
class FigureItem:
    png: bytes
    title: str
    caption: str | None = None


@dataclass
class Section:
    id: str
    paper: str
    title: str
    caption: str
    tables: list[Table] = field(default_factory=list)
    figures: list[FigureItem] = field(default_factory=list)
    missing: str | None = None  # "not run yet …" when there is nothing to show
    notes: list[str] = field(default_factory=list)

    @property
    def filled(self) -> bool:
        return self.missing is None and bool(self.tables or self.figures)


@dataclass
class SectionSpec:
    id: str
    paper: str
    title: str
    caption: str
    build: Callable[[ReportData, Section], None]


SECTIONS: list[SectionSpec] = []


def section(id: str, paper: str, title: str, caption: str):
    def register(fn: Callable[[ReportData, Section], None]):
        SECTIONS.append(SectionSpec(id, paper, title, caption, fn))
        return fn

    return register


def fmt(values: Sequence[float], digits: int = 2) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "—"
    m, s = mean_std(values)
    return f"{m:.{digits}f} ± {s:.{digits}f}" if len(values) > 1 else f"{m:.{digits}f}"


# ------------------------------------------------------------------------ study access
class ReportData:
    """The studies a report covers, with their task states; lookups by kind and group."""

    def __init__(self, studies: Sequence[Study]) -> None:
        self.studies = list(studies)
        self.states = {s.directory: task_states(s) for s in self.studies}

    def for_paper(self, paper: str) -> list[Study]:
        kinds = PAPER_KINDS[paper]
        return [s for s in self.studies if s.name == paper or any(g.kind in kinds for g in s.spec.groups.values())]

    def done(self, study: Study, kind: str | None = None, group: str | None = None) -> list[TaskState]:
        return [st for st in self.states[study.directory] if st.status == "done"
                and (kind is None or st.task.kind == kind) and (group is None or st.task.group == group)]

    def steps(self, paper: str, kind: str) -> list[tuple[Study, TaskState]]:
        return [(s, st) for s in self.for_paper(paper) for st in self.done(s, kind)]

    def option(self, study: Study, key: str, default: Any) -> Any:
        return (study.spec.report or {}).get(key, default)


PAPER_KINDS = {
    "softlabel": {"softlabel-entropy", "missing-class", "transfer-set", "projection"},
    "hints": {"hint-search"},
    "embedding": {"embedding", "limited-label"},
}


def _png(path: Path) -> bytes | None:
    return path.read_bytes() if path.is_file() else None


def _add_png(sec: Section, path: Path, title: str) -> None:
    """Adds a step's PNG file as a figure, when the step wrote it."""
    png = _png(path)
    if png:
        sec.figures.append(FigureItem(png, title))


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def _fig_png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", dpi=90)
    return buf.getvalue()


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _num(v: Any) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if x == x else None


def _label(levels: dict[str, Any], skip: Sequence[str] = ()) -> str:
    return ", ".join(f"{k.split('.')[-1]}={v}" for k, v in levels.items() if k not in skip) or "—"


def _not_run(sec: Section, paper: str, what: str) -> None:
    sec.missing = f"not run yet: {what} (run `kdlens study run {PAPERS[paper][2]}`)"


def _finished_steps(data: ReportData, sec: Section, paper: str, kind: str, what: str) -> list[tuple[Study, TaskState]]:
    """The paper's finished steps of one kind; with none, marks the section not run."""
    steps = data.steps(paper, kind)
    if not steps:
        _not_run(sec, paper, f"no {what} step has finished")
    return steps


def _final_accs(states: Sequence[TaskState]) -> list[float]:
    return [v for v in (st.metrics.get("final_acc") for st in states) if v is not None]


def _axes(width: float, height: float) -> tuple[Any, Any]:
    """A new figure (Agg canvas, 90 dpi) with one axes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=90)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(1, 1, 1)


# ---------------------------------------------------------------- the soft-label paper
@section("entropy", "softlabel", "Soft-label entropy vs temperature",
         "Look for: the small-capacity teacher's curve above the large one's at every T (more similarity "
         "information in its soft labels); every curve rising towards log K; label smoothing gaining entropy "
         "with α_LS without any class similarity.")
def _entropy(data: ReportData, sec: Section) -> None:
    for study, st in _finished_steps(data, sec, "softlabel", "softlabel-entropy", "soft-label entropy"):
        path = Path(st.path)
        _add_png(sec, path / "entropy.png", f"{study.name} ({study.scale}): mean entropy of softmax(z/T)")
        rows = [r for r in _read_csv(path / "entropy.csv") if r.get("class") == "all"]
        teachers = list(dict.fromkeys(r["teacher"] for r in rows))
        temps = list(dict.fromkeys(r["T"] for r in rows))
        table = Table("entropy", ["T", *teachers], [], "mean soft-label entropy (nats) over the training set")
        for T in temps:
            vals = {r["teacher"]: _num(r["mean_entropy"]) for r in rows if r["T"] == T}
            table.rows.append([T, *(f"{vals.get(t):.3f}" if vals.get(t) is not None else "—" for t in teachers)])
            table.numbers += [{"study": study.name, "T": float(T), "teacher": t, "mean_entropy": vals.get(t)} for t in teachers]
        sec.tables.append(table)


@section("missing-class", "softlabel", "Missing-class test",
         "Look for: students recognising a class they never saw (high accuracy on the removed class) once T is "
         "large enough — the similarity information of soft labels; the label-smoothing control staying near 0 %.")
def _missing(data: ReportData, sec: Section) -> None:
    for study, st in _finished_steps(data, sec, "softlabel", "missing-class", "missing-class"):
        path = Path(st.path)
        _add_png(sec, path / "missing_class.png",
                 f"{study.name}: accuracy (%) on the removed class, per removed class and T")
        res = _read_json(path / "missing_class.json")
        if not res:
            continue
        temps = res["temperatures"]
        table = Table("missing_class", ["soft labels", *[f"T={t:g}" for t in temps]], [],
                      "accuracy on the removed class (%), mean ± std over the removed classes")
        for name in res["teachers"]:
            m = res["missing_class_accuracy"][name]
            cols = [[row[j] for row in m] for j in range(len(temps))]
            table.rows.append([f"teacher {name}", *(fmt(c, 1) for c in cols)])
            table.numbers += [{"study": study.name, "source": name, "T": t, "removed_class": res["classes"][i],
                               "missing_class_acc": m[i][j]} for i in range(len(m)) for j, t in enumerate(temps)]
        for j, a in enumerate(res.get("ls_alphas", [])):
            vals = [row[j] for row in res["ls_missing_class_accuracy"]]
            table.rows.append([f"label smoothing α={a:g} (T=1)", *([fmt(vals, 1)] + ["—"] * (len(temps) - 1))])
            table.numbers += [{"study": study.name, "source": f"LS α={a:g}", "T": 1.0, "removed_class": res["classes"][i],
                               "missing_class_acc": v} for i, v in enumerate(vals)]
        sec.tables.append(table)


@section("transfer-set", "softlabel", "Entropy-ranked transfer sets",
         "Look for: students distilled on each class's highest-entropy examples beating students on as many random "
         "examples at small N, with the gap closing as N grows; the image grid shows which examples carry the most "
         "similarity information.")
def _transfer(data: ReportData, sec: Section) -> None:
    for study, st in _finished_steps(data, sec, "softlabel", "transfer-set", "transfer-set"):
        path = Path(st.path)
        for name, title in (("transfer_set.png", "student test accuracy vs examples per class"),
                            ("top_entropy.png", "highest-entropy training examples per class")):
            _add_png(sec, path / name, f"{study.name}: {title}")
        res = _read_json(path / "transfer_set.json")
        if not res:
            continue
        ns = res["ns"]
        table = Table("transfer_set", ["teacher", "selection", *[f"N={n}" for n in ns]], [],
                      f"student test accuracy (%) by examples per class (ranked at T = {res['T']:g})")
        records = _read_csv(path / "transfer_set.csv")
        for curve in res["curves"]:
            cells = []
            for n in ns:
                vals = [_num(r["test_acc"]) for r in records if r["teacher"] == curve["teacher"]
                        and r["selection"] == curve["selection"] and int(float(r["n_per_class"])) == n]
                cells.append(fmt(vals, 1))
            table.rows.append([curve["teacher"], "top entropy" if curve["selection"] == "entropy" else "random", *cells])
            table.numbers += [{"study": study.name, "teacher": curve["teacher"], "selection": curve["selection"],
                               "n_per_class": n, "test_acc": a} for n, a in zip(ns, curve["test_acc"], strict=True)]
        sec.tables.append(table)


@section("projection", "softlabel", "Penultimate-layer projections",
         "Look for: how tightly each class clusters around its template (stars) — tight, separated clusters mean "
         "little similarity between classes in the soft labels; spread towards the other templates means more.")
def _projection(data: ReportData, sec: Section) -> None:
    for study, st in _finished_steps(data, sec, "softlabel", "projection", "projection"):
        _add_png(sec, Path(st.path) / "projection.png", f"{study.name}: test activations on the plane of classes "
                                                        f"{st.metrics.get('classes')}' templates, one panel per teacher")
        rows = _read_csv(Path(st.path) / "projection.csv")
        if rows:
            teachers = list(dict.fromkeys(r["teacher"] for r in rows))
            classes = list(dict.fromkeys(r["class"] for r in rows))
            table = Table("projection_spread", ["teacher", *[f"class {c}" for c in classes]], [],
                          "spread of each class in the plane (mean distance to the class mean)")
            import numpy as np

            for t in teachers:
                cells = []
                for c in classes:
                    pts = np.array([[float(r["x"]), float(r["y"])] for r in rows if r["teacher"] == t and r["class"] == c])
                    spread = float(np.linalg.norm(pts - pts.mean(0), axis=1).mean()) if len(pts) else None
                    cells.append("—" if spread is None else f"{spread:.3f}")
                    table.numbers.append({"study": study.name, "teacher": t, "class": int(c), "spread": spread})
                table.rows.append([t, *cells])
            sec.tables.append(table)


# ---------------------------------------------------------------------- PURSUhInT
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


# ------------------------------------------------------------------ Lee & Wallraven
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


# ------------------------------------------------------------------------ all sections
def build_sections(data: ReportData) -> list[Section]:
    out = []
    for spec in SECTIONS:
        sec = Section(spec.id, spec.paper, spec.title, spec.caption)
        try:
            spec.build(data, sec)
        except Exception as exc:  # a broken artefact must not take the whole report down
            sec.tables, sec.figures = [], []
            sec.missing = f"could not be built: {type(exc).__name__}: {exc}"
        if sec.missing is None and not (sec.tables or sec.figures):
            sec.missing = "not run yet: nothing recorded for this section"
        out.append(sec)
    return out
