"""The sections of the soft-label paper (Vats 2021): soft-label entropy vs temperature, the
missing-class test, entropy-ranked transfer sets and penultimate-layer projections, each
built from the finished steps of the softlabel study.
"""

from __future__ import annotations

from pathlib import Path

from kdlens.report.sections.access import (ReportData, _add_png, _finished_steps, _num, _read_csv,
                                           _read_json)
from kdlens.report.sections.content import Section, Table, fmt, section


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
