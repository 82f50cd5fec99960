"""The sections of the soft-label paper (Vats 2021): soft-label entropy vs temperature, the
missing-class test, entropy-ranked transfer sets and penultimate-layer projections, each
built from the finished steps of the softlabel study.  Every figure is redrawn here from the
step's numbers (CSV / JSON, and for the projection the teacher's classifier), so it can be
written as PNG, SVG and PDF; a step's own PNG is used only when that fails.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from kdlens.report.sections.access import (NO_RUN, ReportData, finished_steps, num, read_csv, read_json,
                                           read_png)
from kdlens.report.sections.content import FigureItem, Section, Table, fmt, section, values_by
from kdlens.studies.grid import Study, TaskState


def teacher_runs(data: ReportData, study: Study, st: TaskState) -> dict[str, dict[str, Any]]:
    """The teachers of a soft-label step by the name the step gives them (a level of the
    teacher task, else its id; see ``kdlens.studies.papers.softlabels``) → run / fold / seed."""
    groups = st.task.config.get("teachers", "teacher")
    groups = [groups] if isinstance(groups, str) else list(groups)
    label = st.task.config.get("teacher_label")
    out = {}
    for dep in data.needed_runs(study, st, groups):
        levels = dep.task.levels
        name = (str(levels[label]) if label and label in levels
                else "-".join(str(v) for v in levels.values()) if levels else dep.task.id)
        out[name] = data.run_info(dep.path)
    return out


def _teacher_paths(data: ReportData, study: Study, st: TaskState) -> dict[str, Path]:
    groups = st.task.config.get("teachers", "teacher")
    groups = [groups] if isinstance(groups, str) else list(groups)
    names = list(teacher_runs(data, study, st))
    return {n: Path(dep.path) for n, dep in zip(names, data.needed_runs(study, st, groups), strict=True)}


def _fallback(sec: Section, png_path: Path, title: str, name: str, err: Exception | None = None) -> None:
    """The step's own PNG, when the figure cannot be redrawn from the numbers."""
    png = read_png(png_path)
    if png:
        sec.figures.append(FigureItem(title, name, png=png))
        if err is not None:
            sec.notes.append(f"{png_path.name}: shown as the step drew it (PNG only): {type(err).__name__}: {err}")


@section("entropy", "softlabel", "Soft-label entropy vs temperature",
         "Look for: the small-capacity teacher's curve above the large one's at every T (more similarity "
         "information in its soft labels); every curve rising towards log K; label smoothing gaining entropy "
         "with α_LS without any class similarity.")
def _entropy(data: ReportData, sec: Section) -> None:
    from kdlens.explain.softlabels import DEFAULT_LS_ALPHAS, label_smoothing_entropy_curve
    from kdlens.figures.softlabels import plot_entropy_curves

    for study, st in finished_steps(data, sec, "softlabel", "softlabel-entropy", "soft-label entropy"):
        path = Path(st.path)
        csv_rows = read_csv(path / "entropy.csv")
        rows = [r for r in csv_rows if r.get("class") == "all"]
        runs = teacher_runs(data, study, st)
        teachers = list(dict.fromkeys(r["teacher"] for r in rows))
        temps = list(dict.fromkeys(r["T"] for r in rows))
        table = Table("entropy", ["T", *teachers], [], "mean soft-label entropy (nats) over the training set")
        for T in temps:
            vals = {r["teacher"]: num(r["mean_entropy"]) for r in rows if r["T"] == T}
            table.rows.append([T, *(f"{vals.get(t):.3f}" if vals.get(t) is not None else "—" for t in teachers)])
            table.add_numbers({"study": study.name, **runs.get(t, NO_RUN), "T": float(T), "teacher": t,
                               "mean_entropy": vals.get(t)} for t in teachers)
        sec.tables.append(table)
        title = f"{study.name} ({study.scale}): mean entropy of softmax(z/T)"
        try:
            k = len({r["class"] for r in csv_rows if r.get("class") != "all"}) or len(
                data.model_card(next(iter(_teacher_paths(data, study, st).values()), None)).get("classes", []))
            if k < 2:
                raise ValueError("the number of classes is unknown")
            tables = {t: SimpleNamespace(temperatures=[float(r["T"]) for r in rows if r["teacher"] == t],
                                         mean=[num(r["mean_entropy"]) for r in rows if r["teacher"] == t],
                                         max_entropy=math.log(k)) for t in teachers}
            alphas = list(st.task.config.get("ls_alphas", DEFAULT_LS_ALPHAS))
            curve = (alphas, list(label_smoothing_entropy_curve(alphas, k)))
            sec.figures.append(FigureItem(title, "entropy", plot_entropy_curves(tables, ls_curve=curve)))
        except Exception as err:  # noqa: BLE001 - a figure that cannot be redrawn falls back to the step's PNG
            _fallback(sec, path / "entropy.png", title, "entropy", err)


@section("missing-class", "softlabel", "Missing-class test",
         "Look for: students recognising a class they never saw (high accuracy on the removed class) once T is "
         "large enough — the similarity information of soft labels; the label-smoothing control staying near 0 %. "
         "The heatmaps' last row is the table's mean over the removed classes.")
def _missing(data: ReportData, sec: Section) -> None:
    from kdlens.figures.softlabels import plot_missing_class_heatmaps

    for study, st in finished_steps(data, sec, "softlabel", "missing-class", "missing-class"):
        path = Path(st.path)
        res = read_json(path / "missing_class.json")
        title = f"{study.name}: accuracy (%) on the removed class, per removed class and T"
        if not res:
            _fallback(sec, path / "missing_class.png", title, "missing_class")
            continue
        runs = teacher_runs(data, study, st)
        temps = res["temperatures"]
        table = Table("missing_class", ["soft labels", *[f"T={t:g}" for t in temps]], [],
                      "accuracy on the removed class (%), mean ± std over the removed classes")
        for name in res["teachers"]:
            m = res["missing_class_accuracy"][name]
            cols = [[row[j] for row in m] for j in range(len(temps))]
            table.rows.append([f"teacher {name}", *(fmt(c, 1) for c in cols)])
            table.add_numbers({"study": study.name, **runs.get(name, NO_RUN), "source": name, "T": t,
                               "removed_class": res["classes"][i], "missing_class_acc": m[i][j]}
                              for i in range(len(m)) for j, t in enumerate(temps))
        for j, a in enumerate(res.get("ls_alphas", [])):
            vals = [row[j] for row in res["ls_missing_class_accuracy"]]
            table.rows.append([f"label smoothing α={a:g} (T=1)", *([fmt(vals, 1)] + ["—"] * (len(temps) - 1))])
            table.add_numbers({"study": study.name, "source": f"LS α={a:g}", "T": 1.0, "removed_class": res["classes"][i],
                               "missing_class_acc": v} for i, v in enumerate(vals))
        sec.tables.append(table)
        try:
            result = SimpleNamespace(**{**res, "class_names": res.get("class_names") or [str(c) for c in res["classes"]]})
            sec.figures.append(FigureItem(title, "missing_class", plot_missing_class_heatmaps(result)))
        except Exception as err:  # noqa: BLE001
            _fallback(sec, path / "missing_class.png", title, "missing_class", err)


@section("transfer-set", "softlabel", "Entropy-ranked transfer sets",
         "Look for: students distilled on each class's highest-entropy examples beating students on as many random "
         "examples at small N, with the gap closing as N grows; the image grid shows which examples carry the most "
         "similarity information.")
def _transfer(data: ReportData, sec: Section) -> None:
    from kdlens.figures.softlabels import plot_transfer_set_curves

    for study, st in finished_steps(data, sec, "softlabel", "transfer-set", "transfer-set"):
        path = Path(st.path)
        res = read_json(path / "transfer_set.json")
        title = f"{study.name}: student test accuracy vs examples per class (mean ± std over selection seeds)"
        if not res:
            _fallback(sec, path / "transfer_set.png", title, "transfer_set")
            _image_grid(data, sec, study, st, None)
            continue
        runs = teacher_runs(data, study, st)
        ns = res["ns"]
        records = [{**r, "n_per_class": int(float(r["n_per_class"])), "test_acc": num(r["test_acc"])}
                   for r in read_csv(path / "transfer_set.csv")]
        if not records:  # an older step without per-seed rows: its mean curves
            records = [{"teacher": c["teacher"], "selection": c["selection"], "n_per_class": n, "test_acc": a, "seed": ""}
                       for c in res["curves"] for n, a in zip(ns, c["test_acc"], strict=True)]
        by = values_by(records, ("teacher", "selection", "n_per_class"), "test_acc")
        table = Table("transfer_set", ["teacher", "selection", *[f"N={n}" for n in ns]], [],
                      f"student test accuracy (%) by examples per class (ranked at T = {res['T']:g}), "
                      "mean ± std over selection seeds")
        values: dict[tuple[str, str], list[list[float]]] = {}
        for curve in res["curves"]:
            key = (curve["teacher"], curve["selection"])
            values[key] = [by.get((*key, n), []) for n in ns]
            table.rows.append([curve["teacher"], "top entropy" if curve["selection"] == "entropy" else "random",
                               *(fmt(v, 1) for v in values[key])])
        table.add_numbers({"study": study.name, **runs.get(r["teacher"], NO_RUN), "seed": num(r.get("seed")),
                           "teacher": r["teacher"], "selection": r["selection"], "n_per_class": r["n_per_class"],
                           "test_acc": r["test_acc"]} for r in records)
        sec.tables.append(table)
        try:
            sec.figures.append(FigureItem(title, "transfer_set", plot_transfer_set_curves(
                SimpleNamespace(ns=ns, T=float(res["T"]), curves={}), values=values)))
        except Exception as err:  # noqa: BLE001
            _fallback(sec, path / "transfer_set.png", title, "transfer_set", err)
        _image_grid(data, sec, study, st, res)


def _image_grid(data: ReportData, sec: Section, study: Study, st: TaskState, res: dict[str, Any] | None) -> None:
    """The highest-entropy training examples per class, redrawn from the teacher's dataset."""
    from kdlens.figures.softlabels import plot_image_grid

    path = Path(st.path)
    title = f"{study.name}: highest-entropy training examples per class"
    try:
        if not res or not res.get("top_examples"):
            raise ValueError("transfer_set.json lists no top examples")
        first = res["teachers"][0]
        teacher = _teacher_paths(data, study, st).get(first)
        cfg = (data.run_config(teacher).get("data") or {}) if teacher else {}
        if not cfg.get("name"):
            raise ValueError(f"the dataset of teacher {first!r} is unknown")
        from kdlens.data import load_dataset

        train = load_dataset(cfg["name"], "train", root=cfg.get("root"))
        fig = plot_image_grid(train.images, np.asarray(res["top_examples"][first]), list(train.classes))
        sec.figures.append(FigureItem(f"{title} ({first}, T = {float(res['T']):g})", "top_entropy", fig))
    except Exception as err:  # noqa: BLE001
        _fallback(sec, path / "top_entropy.png", title, "top_entropy", err)


@section("projection", "softlabel", "Penultimate-layer projections",
         "Look for: how tightly each class clusters around its template (stars) — tight, separated clusters mean "
         "little similarity between classes in the soft labels; spread towards the other templates means more. "
         "The templates' triangle is drawn scaled to the activations (the scale is in the legend).")
def _projection(data: ReportData, sec: Section) -> None:
    from kdlens.figures.softlabels import plot_projections

    for study, st in finished_steps(data, sec, "softlabel", "projection", "projection"):
        path = Path(st.path)
        classes = [int(c) for c in st.task.config.get("classes", st.metrics.get("classes") or [0, 1, 2])]
        title = f"{study.name}: test activations on the plane of classes {classes}' templates, one panel per teacher"
        rows = read_csv(path / "projection.csv")
        if not rows:
            _fallback(sec, path / "projection.png", title, "projection")
            continue
        runs = teacher_runs(data, study, st)
        teachers = list(dict.fromkeys(r["teacher"] for r in rows))
        found = list(dict.fromkeys(r["class"] for r in rows))
        table = Table("projection_spread", ["teacher", *[f"class {c}" for c in found]], [],
                      "spread of each class in the plane (mean distance to the class mean)")
        coords = {t: (np.array([[float(r["x"]), float(r["y"])] for r in rows if r["teacher"] == t]),
                      np.array([int(r["class"]) for r in rows if r["teacher"] == t])) for t in teachers}
        for t in teachers:
            cells = []
            for c in found:
                pts = coords[t][0][coords[t][1] == int(c)]
                spread = float(np.linalg.norm(pts - pts.mean(0), axis=1).mean()) if len(pts) else None
                cells.append("—" if spread is None else f"{spread:.3f}")
                table.add_numbers([{"study": study.name, **runs.get(t, NO_RUN), "teacher": t, "class": int(c),
                                    "spread": spread}])
            table.rows.append([t, *cells])
        sec.tables.append(table)
        try:
            paths = _teacher_paths(data, study, st)
            panels = {t: (*coords[t], _template_coords(paths[t], classes)) for t in teachers}
            names = data.model_card(paths[teachers[0]]).get("classes") or None
            sec.figures.append(FigureItem(title, "projection", plot_projections(panels, classes, names)))
        except Exception as err:  # noqa: BLE001
            _fallback(sec, path / "projection.png", title, "projection", err)


def _template_coords(run: Path, classes: list[int]) -> np.ndarray:
    """The 2-D coordinates of the classes' templates in their plane, from the run's classifier
    (the projection step does not record them): the model rebuilt from ``model.json`` with the
    weights the step loaded (``last.pt``)."""
    from kdlens.explain.softlabels import TemplateProjection
    from kdlens.models.reference import build_model
    from kdlens.models.weights import load_weights

    card = read_json(run / "model.json")
    if not card or not card.get("reference"):
        raise ValueError(f"run {run.name} has no model.json to rebuild its classifier from")
    c, h, _ = card["image_shape"]
    model = build_model(card["reference"], num_classes=card["num_classes"], in_channels=c, input_size=h,
                        kwargs=card.get("kwargs") or {})
    checkpoint = run / "checkpoints" / "last.pt"
    if not checkpoint.is_file():
        checkpoint = run / "checkpoints" / "best.pt"
    load_weights(model, checkpoint, f"run {run.name}")
    return TemplateProjection(classes).fit(model).template_coords_
