"""Report sections of the soft-label paper's last two experiments (Vats 2021): noise in soft
labels (§4.8, step ``softlabel-noise``) and teacher pre-training (ch. 6, step
``softlabel-pretraining``). Tables and figures are redrawn from the steps' CSV / JSON; a step's
own PNG is shown only when that fails.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np

from kdlens.report.sections.access import NO_RUN, ReportData, finished_steps, num, read_csv, read_json, read_png
from kdlens.report.sections.content import FigureItem, Section, Table, fmt, section


def _fallback(sec: Section, png: Path, title: str, name: str, err: Exception | None = None) -> None:
    data = read_png(png)
    if data:
        sec.figures.append(FigureItem(title, name, png=data))
        if err is not None:
            sec.notes.append(f"{png.name}: shown as the step drew it (PNG only): {type(err).__name__}: {err}")


def _cells(rows: list[dict[str, str]], scales: list[float], value: str) -> dict[tuple[str, str], list[list[float]]]:
    from kdlens.explain.softlabels.noise import noise_values

    return noise_values([{**r, value: num(r.get(value))} for r in rows], scales, value)


@section("noise", "softlabel", "Noise in soft labels",
         "Look for: student accuracy falling as the noise grows, faster for the teachers' soft labels than for "
         "label smoothing if the similarity information is what the student learns; with a removed class, its "
         "accuracy (learnable only from similarity) collapsing first. Noise is redrawn every step, clipped at 0 "
         "and renormalised; scale 0 is the noiseless student.")
def _noise(data: ReportData, sec: Section) -> None:
    from kdlens.figures.softlabels_extra import plot_noise_sweep
    from kdlens.report.sections.softlabel import teacher_runs

    for study, st in finished_steps(data, sec, "softlabel", "softlabel-noise", "noise-in-soft-labels"):
        path = Path(st.path)
        res = read_json(path / "noise.json")
        rows = read_csv(path / "noise.csv")
        title = f"{study.name}: student accuracy vs noise scale (mean ± std over seeds and removed classes)"
        if not res or not rows:
            _fallback(sec, path / "noise.png", title, "noise")
            continue
        runs = teacher_runs(data, study, st)
        scales = [float(s) for s in res["scales"]]
        acc = _cells(rows, scales, "test_acc")
        mca = _cells(rows, scales, "missing_class_acc") if res.get("removed_classes") else {}
        for name, values, what in (("noise_test_acc", acc, "student test accuracy (%)"),
                                   ("noise_missing_class_acc", mca, "accuracy on the removed class (%)")):
            if not values:
                continue
            table = Table(name, ["soft labels", "noise", *[f"s={s:g}" for s in scales]], [],
                          f"{what} by noise scale, mean ± std over seeds"
                          + (" and removed classes" if res.get("removed_classes") else ""))
            for (source, noise), cells in values.items():
                table.rows.append([source, noise, *(fmt(c, 1) for c in cells)])
            value = "test_acc" if values is acc else "missing_class_acc"
            table.add_numbers({"study": study.name, **runs.get(r["source"], NO_RUN), "source": r["source"],
                               "noise": r["noise"], "scale": num(r["scale"]), "noise_seed": num(r.get("seed")),
                               "removed_class": num(r.get("removed_class")), value: num(r.get(value))}
                              for r in rows)
            sec.tables.append(table)
        try:
            result = SimpleNamespace(scales=scales, sources=res.get("sources", []), T=res.get("T"),
                                     accuracy={k: [] for k in acc}, missing_class_accuracy={})
            sec.figures.append(FigureItem(title, "noise", plot_noise_sweep(result, acc, mca or None)))
        except Exception as err:  # noqa: BLE001 - a figure that cannot be redrawn falls back to the step's PNG
            _fallback(sec, path / "noise.png", title, "noise", err)


@section("pretraining", "softlabel", "Teacher pre-training: batch size × epochs",
         "Look for: how the teacher's batch size and epochs move the entropy of its soft labels, and whether the "
         "students of higher-entropy teachers are the better ones (panel d); the recommendation picks, among "
         "teachers close to the best accuracy, the one with the most entropy.")
def _pretraining(data: ReportData, sec: Section) -> None:
    from kdlens.figures.softlabels_extra import plot_pretraining
    from kdlens.studies.pretraining import recommendation_text

    for study, st in finished_steps(data, sec, "softlabel", "softlabel-pretraining", "teacher pre-training"):
        path = Path(st.path)
        res = read_json(path / "pretraining.json")
        title = f"{study.name}: teacher batch size × epochs (Figs. 6.2–6.5)"
        if not res:
            _fallback(sec, path / "pretraining.png", title, "pretraining")
            continue
        bs, ep, temps = res["batch_sizes"], res["epochs"], [float(t) for t in res["temperatures"]]
        T = float(res["T"])
        h = np.asarray(res["entropy"], dtype=float)[:, :, temps.index(T)]
        grids = (("pretraining_entropy", h, f"mean soft-label entropy at T = {T:g} (nats)", 3, "entropy"),
                 ("pretraining_teacher_acc", np.asarray(res["teacher_accuracy"], dtype=float),
                  "teacher test accuracy (%)", 2, "teacher_acc"),
                 ("pretraining_student_acc", np.asarray(res["student_accuracy"], dtype=float),
                  f"test accuracy (%) of the {res.get('student') or 'student'} distilled at T = "
                  f"{float(res['student_T']):g}", 2, "student_acc"))
        for name, grid, what, digits, key in grids:
            if not np.isfinite(grid).any():
                continue
            table = Table(name, ["teacher batch size", *[f"{e} ep" for e in ep]], [], what)
            for i, b in enumerate(bs):
                table.rows.append([b, *(f"{v:.{digits}f}" if np.isfinite(v) else "—" for v in grid[i])])
                info = data.run_info(res["runs"].get(str(b))) if res.get("runs") else dict(NO_RUN)
                table.add_numbers({"study": study.name, **info, "batch_size": b, "epochs": e,
                                   key: float(grid[i, j]) if np.isfinite(grid[i, j]) else None}
                                  for j, e in enumerate(ep))
            sec.tables.append(table)
        if res.get("recommendation"):
            sec.notes.extend(recommendation_text(res["recommendation"]).splitlines())
        try:
            result = SimpleNamespace(**{**res, "entropy": np.asarray(res["entropy"], dtype=float)})
            sec.figures.append(FigureItem(title, "pretraining", plot_pretraining(result)))
        except Exception as err:  # noqa: BLE001
            _fallback(sec, path / "pretraining.png", title, "pretraining", err)
