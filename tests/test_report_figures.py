"""Report figures: the numbers of a figure are those of its table (mean ± std over folds, each
fold drawn), every CSV names run / fold / seed, every figure exists as PNG / SVG / PDF with
vector text, legends never cover data, and the polish items of issue 14 (projection templates
among their classes, visible medians, legible heatmap numbers, density legends, error bars).
Built on a study result constructed here (no training), so it runs in seconds."""

from __future__ import annotations

import ast
import csv
import json
import re
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from kdlens.figures.style import PAGE, paper_style, parse_formats
from kdlens.report.html import write_report_of
from kdlens.report.sections import ReportData, build_sections
from kdlens.studies.grid import TaskState, load_study

SRC = Path(__file__).resolve().parents[1] / "src" / "kdlens"

STUDY = textwrap.dedent("""
    name: built
    defaults: {data: {name: digits, n_folds: 2}, model: {name: thesis_student}, epochs: 1}
    groups:
      teacher: {kind: train, grid: {data.budget: [40, 80], data.fold: [0, 1]}}
      ud: {kind: train, grid: {data.budget: [40, 80], data.fold: [0, 1]}}
      d: {kind: distill, needs: [teacher], config: {teacher: {run: "${teacher}"}}, grid: {data.budget: [40, 80], data.fold: [0, 1]}}
      embedding: {kind: embedding, needs: [ud, d], each: [data.budget, data.fold], params: {points: "C,D"}}
    report: {teacher_group: teacher}
""")

# fold 0 alone says D > UD at C (0.43 > 0.42); the mean over folds says D < UD (0.44 < 0.485):
# the disagreement of issue 14 (a figure of fold 0 next to a table of the mean)
IVIS = {("UD", "C"): [0.42, 0.55], ("D", "C"): [0.43, 0.45], ("UD", "D"): [0.61, 0.63], ("D", "D"): [0.52, 0.58]}
ACC = {"teacher": (90.0, 94.0), "ud": (50.0, 56.0), "d": (60.0, 69.0)}  # final_acc of folds 0, 1 (+ budget / 10)
WITHIN = {"UD": [0.20, 0.26], "D": [0.31, 0.35]}
CLASSES = ["T-shirt", "Trouser", "Pullover"]


def _run_dir(root: Path, task, fold: int, budget: int, acc: float) -> Path:
    path = root / f"{task.id}-0123456789"
    path.mkdir(parents=True)
    config = {"kind": task.kind, "name": task.id, "seed": 7 + fold, "model": {"name": "thesis_student"},
              "data": {"name": "digits", "budget": budget, "n_folds": 2, "fold": fold}}
    (path / "config.yaml").write_text(yaml.safe_dump(config))
    (path / "model.json").write_text(json.dumps({"reference": "thesis_student", "num_classes": 3,
                                                 "image_shape": [1, 8, 8], "classes": CLASSES}))
    (path / "result.json").write_text(json.dumps({"final_acc": acc}))
    return path


def _write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def _embedding_step(path: Path, fold: int) -> None:
    path.mkdir(parents=True)
    rng = np.random.default_rng(fold)
    labels = np.repeat(np.arange(3), 20)
    metrics, areas, arrays = [], [], {"labels": labels}
    for model in ("UD", "D"):
        for point, layer in (("C", "stage3.0"), ("D", "penultimate")):
            metrics.append({"model": model, "run": f"{model.lower()}_fold-{fold}", "point": point, "layer": layer,
                            "features": 64, "method": "ivis", "trustworthiness": 0.8 + 0.01 * fold,
                            "continuity": 0.8, "knn_preservation": 0.3, "knn_accuracy": 0.7,
                            "distance_spearman": 0.5, "class_area_ratio": 0.4,
                            "ivis_loss": IVIS[(model, point)][fold], "ivis_epochs": 3})
            areas += [{"model": model, "point": point, "method": "ivis", "class": c,
                       "ratio": 0.2 + 0.1 * c + 0.05 * fold + (0.1 if model == "UD" else 0.0)} for c in range(3)]
            arrays[f"ivis__{model}__{point}"] = rng.normal(size=(60, 2)) + labels[:, None] * 3.0
    _write_csv(path / "metrics.csv", metrics)
    _write_csv(path / "class_areas.csv", areas)
    _write_csv(path / "superclass.csv", [{"model": m, "run": f"{m}-{fold}", "within_r2": WITHIN[m][fold],
                                          "between_r2": 0.1, "r2_tops": WITHIN[m][fold]} for m in ("UD", "D")])
    np.savez(path / "embeddings.npz", **arrays)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A study result written by hand: teacher / UD / D runs of two budgets × two folds and the
    embedding step of each, with the numbers above."""
    root = tmp_path_factory.mktemp("built")
    (root / "built.yaml").write_text(STUDY)
    study = load_study(root / "built.yaml", out=root / "study")
    states = []
    for task in study.tasks:
        budget, fold = int(task.levels["data.budget"]), int(task.levels["data.fold"])
        if task.is_run:
            acc = ACC[task.group][fold] + budget / 10
            path = _run_dir(study.directory, task, fold, budget, acc)
            states.append(TaskState(task, "done", path=str(path), metrics={"final_acc": acc}))
        else:
            path = study.directory / "steps" / task.id
            _embedding_step(path, fold)
            states.append(TaskState(task, "done", path=str(path), metrics={}))
    return ReportData([study], states={study.directory: states})


@pytest.fixture(scope="module")
def sections(built):
    return {s.id: s for s in build_sections(built)}


def _mean_std(cell: str) -> tuple[float, float]:
    m, s = cell.split(" ± ")
    return float(m), float(s)


def _marks(ax) -> dict[str, list[tuple[float, float, float]]]:
    """(x, mean, std) of every labelled mark of a figure drawn by kdlens.figures.summary:
    dots (an error bar container with a label) or bars (a bar container with a label and the
    error bars drawn right after it)."""
    from matplotlib.container import BarContainer, ErrorbarContainer

    out: dict[str, list[tuple[float, float, float]]] = {}
    containers = list(ax.containers)
    for i, c in enumerate(containers):
        label = c.get_label()
        if label is None or label.startswith("_"):
            continue
        if isinstance(c, ErrorbarContainer):
            xs, means = c.lines[0].get_xdata(), c.lines[0].get_ydata()
            err = c
        elif isinstance(c, BarContainer):
            xs = [p.get_x() + p.get_width() / 2 for p in c.patches]
            means = [p.get_height() for p in c.patches]
            err = containers[i + 1]
        else:
            continue
        segments = {round(float(seg[0][0]), 9): (seg[1][1] - seg[0][1]) / 2
                    for lc in err.lines[2] for seg in lc.get_segments()}
        out[label] = [(float(x), float(m), float(segments.get(round(float(x), 9), 0.0)))
                      for x, m in zip(xs, means, strict=True)]
    return out


def _fold_points(ax) -> list[float]:
    """The y values of the open circles (each fold's value)."""
    from matplotlib.collections import PathCollection

    return sorted(float(y) for c in ax.collections if isinstance(c, PathCollection) for _, y in c.get_offsets())


# ------------------------------------------------------------------------------------ numbers
def test_ivis_figure_shows_the_tables_mean_and_std_and_each_fold(sections):
    sec = sections["ivis-loss"]
    table = sec.tables[0]
    assert table.columns == ["point", "UD", "D"]
    fig = sec.figures[0].figure
    ax = fig.axes[0]
    marks = _marks(ax)
    assert set(marks) == {"UD", "D"}
    for row in table.rows:
        point = row[0]
        for j, model in enumerate(table.columns[1:], start=1):
            m, s = _mean_std(row[j])
            x, fm, fs = marks[model][["C", "D"].index(point)]
            assert fm == pytest.approx(m, abs=5e-5) and fs == pytest.approx(s, abs=5e-5)
            assert fm == pytest.approx(np.mean(IVIS[(model, point)])) and fs == pytest.approx(np.std(IVIS[(model, point)], ddof=1))
    # the mean says D < UD at C, where fold 0 alone said the opposite: the figure follows the table
    assert marks["D"][0][1] < marks["UD"][0][1] and IVIS[("D", "C")][0] > IVIS[("UD", "C")][0]
    assert _fold_points(ax) == pytest.approx(sorted(v for vals in IVIS.values() for v in vals) * 1)


def test_budget_superclass_and_class_area_figures_agree_with_their_tables(sections):
    budget = sections["budget"]
    table = budget.tables[0]
    marks = _marks(budget.figures[0].figure.axes[0])
    for r, row in enumerate(table.rows):
        for j, role in enumerate(["UD", "D", "teacher"]):
            m, s = _mean_std(row[1 + table.columns[1:].index(role)])
            assert marks[role][r][1] == pytest.approx(m, abs=5e-3) and marks[role][r][2] == pytest.approx(s, abs=5e-3)

    sup = sections["superclass"]
    marks = _marks(sup.figures[0].figure.axes[0])
    for row in sup.tables[0].rows:
        budget_label, model = f"{row[0]} labels", row[1]
        m, s = _mean_std(row[2])
        groups = [t.get_text() for t in sup.figures[0].figure.axes[0].get_xticklabels()]
        x, fm, fs = marks[model][groups.index(budget_label)]
        assert fm == pytest.approx(m, abs=5e-4) and fs == pytest.approx(s, abs=5e-4) and fs > 0  # error bars drawn

    area = sections["class-area"]
    fig = area.figures[0].figure
    table = area.tables[0]
    diamonds = sorted((ln.get_xdata()[0], ln.get_ydata()[0]) for ln in fig.axes[0].lines if ln.get_marker() == "D")
    table_means = sorted(_mean_std(c)[0] for row in table.rows for c in row[1:])
    assert sorted(round(y, 3) for _, y in diamonds) == pytest.approx(table_means, abs=1e-3)


# --------------------------------------------------------------------------------- CSV + files
def test_every_csv_names_run_fold_and_seed(built, tmp_path):
    out = write_report_of(built, tmp_path / "report.html")
    csvs = sorted((tmp_path / "report_data").glob("*.csv"))
    assert len(csvs) >= 6
    for path in csvs:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        assert rows and {"run", "fold", "seed"} <= set(rows[0]), path.name
    with open(tmp_path / "report_data" / "ivis-loss__ivis_loss_40.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {(r["model"], r["fold"], r["seed"]) for r in rows} == {(m, str(f), str(7 + f)) for m in ("UD", "D") for f in (0, 1)}
    assert all(re.fullmatch(r"(ud|d)_budget-40_fold-[01]-0123456789", r["run"]) for r in rows)
    assert all(r["run"].startswith("ud" if r["model"] == "UD" else "d_") for r in rows)
    assert "run, fold and seed" in out.read_text()


def test_figures_in_every_format_with_vector_text(built, tmp_path):
    write_report_of(built, tmp_path / "report.html", formats="png,svg,pdf")
    numbers = json.loads((tmp_path / "report.json").read_text())
    figures = [f for s in numbers["sections"].values() for f in s["figures"]]
    assert len(figures) >= 6
    for fig in figures:
        files = sorted(fig["files"])
        stem = files[0].rsplit(".", 1)[0]
        assert files == [f"{stem}.pdf", f"{stem}.png", f"{stem}.svg"]
        png, svg, pdf = ((tmp_path / f"{stem}.{e}").read_bytes() for e in ("png", "svg", "pdf"))
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        assert b"<text" in svg and b"<svg" in svg  # text stays text
        assert pdf[:5] == b"%PDF-" and b"/FontFile2" in pdf and b"/Type3" not in pdf  # TrueType, not bitmaps
    # a second report with fewer formats leaves no stale file behind
    write_report_of(built, tmp_path / "report.html", formats="png")
    assert not list((tmp_path / "report_figures").glob("*.svg")) and list((tmp_path / "report_figures").glob("*.png"))


def test_formats_are_checked():
    assert parse_formats("png, SVG,pdf,png") == ["png", "svg", "pdf"]
    from kdlens.errors import KdlensError

    with pytest.raises(KdlensError, match="png, svg, pdf"):
        parse_formats("png,jpg")


def test_cli_formats_flag_exits_2_on_unknown_format(tmp_path):
    from kdlens.cli.main import app

    result = CliRunner().invoke(app, ["report", str(tmp_path), "--formats", "png,tiff"])
    assert result.exit_code == 2 and "tiff" in result.output and "svg" in result.output


def test_figures_fit_a_paper(sections):
    for sec in sections.values():
        for item in sec.figures:
            fig = item.figure
            assert fig is not None, f"{sec.id}: {item.title} is not redrawn from the numbers"
            width, height = fig.get_size_inches()
            assert width <= PAGE + 1e-6 and height <= 9, (sec.id, width, height)
            fig.canvas.draw()
            sizes = [t.get_fontsize() for t in fig.findobj(lambda a: hasattr(a, "get_fontsize") and hasattr(a, "get_text"))
                     if t.get_visible() and t.get_text()]
            assert sizes and min(sizes) >= 6.5, (sec.id, min(sizes))


# ------------------------------------------------------------------------------------ legends
def covered_points(fig) -> list[str]:
    """Data a legend covers: for every legend (of an axes or of the figure), every data point
    (line vertices, scatter offsets, error bars, contour vertices) and every bar / box / image
    of any axes that lies inside the legend's box on the canvas. Empty when nothing is covered."""
    from matplotlib.collections import Collection
    from matplotlib.image import AxesImage
    from matplotlib.patches import Rectangle

    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legends = [lg for lg in [*fig.legends, *(ax.get_legend() for ax in fig.axes)] if lg is not None]
    found = []
    for lg in legends:
        box = lg.get_window_extent(renderer)
        for ax in fig.axes:
            area = ax.get_window_extent(renderer)
            points = []
            for line in ax.lines:
                if line.get_visible() and len(line.get_xydata()):
                    points.append(line.get_transform().transform(line.get_xydata()))
            for c in ax.collections:
                if not isinstance(c, Collection) or not c.get_visible():
                    continue
                offsets = c.get_offsets()
                if len(offsets) and np.ptp(np.asarray(offsets), axis=0).any():
                    points.append(c.get_offset_transform().transform(offsets))
                for p in c.get_paths():
                    if len(p.vertices):
                        points.append(c.get_transform().transform(p.vertices))
            for xy in points:
                xy = xy[np.isfinite(xy).all(1)]
                inside_axes = (xy[:, 0] >= area.x0) & (xy[:, 0] <= area.x1) & (xy[:, 1] >= area.y0) & (xy[:, 1] <= area.y1)
                hit = inside_axes & (xy[:, 0] > box.x0) & (xy[:, 0] < box.x1) & (xy[:, 1] > box.y0) & (xy[:, 1] < box.y1)
                if hit.any():
                    found.append(f"{lg.get_texts()[0].get_text()!r} covers {int(hit.sum())} point(s) of {ax.get_title()!r}")
            for artist in [*ax.patches, *ax.images]:
                if isinstance(artist, (Rectangle, AxesImage)) and artist.get_visible():
                    if artist.get_window_extent(renderer).overlaps(box) and area.overlaps(box):
                        found.append(f"{lg.get_texts()[0].get_text()!r} covers a {type(artist).__name__} of {ax.get_title()!r}")
    return found


def test_no_legend_covers_data_in_any_report_figure(sections):
    checked = 0
    for sec in sections.values():
        for item in sec.figures:
            assert covered_points(item.figure) == [], (sec.id, item.title)
            checked += 1
    assert checked >= 6


def test_the_covered_points_check_sees_a_legend_on_data():
    from kdlens.figures.style import new_figure

    fig = new_figure(3, 3)
    ax = fig.add_subplot(1, 1, 1)
    ax.scatter(np.linspace(0, 1, 50), np.linspace(0, 1, 50), label="points")
    ax.legend(loc="center")
    assert covered_points(fig)


def _selection(L=12, k=3):
    from kdlens.explain.hints import select_hint_points

    i = np.arange(L)
    return np.exp(-np.abs(i[:, None] - i[None, :]) / 3.0), select_hint_points(
        np.exp(-np.abs(i[:, None] - i[None, :]) / 3.0), k, names=[f"layer{j}.conv" for j in range(L)])


def test_heatmap_legend_sits_off_the_matrix():
    from kdlens.figures.similarity import plot_similarity_heatmap

    S, sel = _selection()
    with paper_style():
        fig = plot_similarity_heatmap(S, sel, conventional=[3, 7, 11], title="cka")
    assert covered_points(fig) == []
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any("conventional" in t for t in texts) and any("hint points" in t for t in texts)


def test_embedding_grid_legend_and_row_labels_stay_off_the_panels():
    from kdlens.figures.embed import plot_embedding_grid

    rng = np.random.default_rng(0)
    lab = np.repeat(np.arange(10), 12)
    emb = {m: {p: rng.normal(size=(120, 2)) + lab[:, None] for p in "ABCDE"} for m in ("UD", "D")}
    with paper_style():
        fig = plot_embedding_grid(emb, lab, [f"class {i}" for i in range(10)], method="ivis")
    assert covered_points(fig) == []
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    panels = [ax.get_window_extent(renderer) for ax in fig.axes]
    for ax in fig.axes:  # the row labels UD / D sit left of the panels, on none of them
        label = ax.yaxis.label
        if label.get_text():
            box = label.get_window_extent(renderer)
            assert not any(box.overlaps(p) for p in panels), label.get_text()
    assert fig.get_size_inches()[0] <= PAGE + 1e-6


# ------------------------------------------------------------------------------------- polish
def test_projection_axes_labelled_and_templates_among_their_classes():
    from kdlens.figures.softlabels import plot_projections, template_placement

    rng = np.random.default_rng(1)
    tau = np.array([[-0.05, -0.03], [0.06, -0.03], [0.0, 0.07]])  # templates: a small triangle
    labels = np.repeat([0, 1, 2], 30)
    coords = 40 * tau[labels] + np.array([1.5, -0.7]) + rng.normal(scale=0.3, size=(90, 2))
    placed, s = template_placement(coords, labels, [0, 1, 2], tau)
    assert s == pytest.approx(40, rel=0.1)
    means = np.array([coords[labels == c].mean(0) for c in range(3)])
    for k in range(3):  # each star is nearest its own class, far nearer than the raw template was
        d = np.linalg.norm(means - placed[k], axis=1)
        assert d.argmin() == k and d[k] < 0.5 < np.linalg.norm(means[k] - tau[k])
    with paper_style():
        fig = plot_projections({"small": (coords, labels, tau), "large": (coords, labels, tau)}, [0, 1, 2],
                               ["a", "b", "c"])
    for ax in fig.axes:
        assert "template" in ax.get_xlabel()
        stars = [c for c in ax.collections if len(c.get_offsets()) == 1]
        assert np.allclose(np.array([c.get_offsets()[0] for c in stars]), placed)
    assert "template" in fig.axes[0].get_ylabel()
    assert covered_points(fig) == []


def _contrast(c1, c2) -> float:
    """WCAG contrast ratio of two RGB(A) colours."""
    def lum(c):
        rgb = [x / 12.92 if x <= 0.03928 else ((x + 0.055) / 1.055) ** 2.4 for x in c[:3]]
        return 0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2]
    a, b = sorted((lum(c1), lum(c2)), reverse=True)
    return (a + 0.05) / (b + 0.05)


def test_missing_class_cell_numbers_legible():
    from types import SimpleNamespace

    from matplotlib.colors import to_rgba

    from kdlens.figures.softlabels import plot_missing_class_heatmaps
    from kdlens.figures.style import PNG_DPI

    acc = [[0.0, 12.0, 48.0, 61.0], [3.0, 35.0, 77.0, 95.0], [1.0, 22.0, 55.0, 100.0]]
    result = SimpleNamespace(teachers=["small"], temperatures=[1, 4, 9, 20], missing_class_accuracy={"small": acc},
                             ls_alphas=[0.1, 0.5], ls_missing_class_accuracy=[[0, 1], [0, 0], [2, 0]],
                             classes=[0, 1, 2], class_names=CLASSES)
    with paper_style():
        fig = plot_missing_class_heatmaps(result)
    fig.canvas.draw()
    cells = 0
    for ax in fig.axes:
        if not ax.images:
            continue
        im = ax.images[0]
        data = im.get_array()
        for t in ax.texts:
            x, y = (int(round(v)) for v in t.get_position())
            cell = im.cmap(im.norm(data[y, x]))
            assert t.get_fontsize() >= 8 and t.get_fontsize() * PNG_DPI / 72 >= 16  # ≥ 16 px tall on the page
            assert _contrast(to_rgba(t.get_color()), cell) >= 4.5, (t.get_text(), t.get_color())
            cells += 1
    assert fig.axes[0].get_yticklabels()[-1].get_text() == "mean"
    assert cells == 3 * 4 + 4 + 3 * 2 + 2  # every cell, plus the mean rows


def test_class_area_medians_visible(sections):
    from matplotlib.colors import to_rgba
    from matplotlib.patches import PathPatch

    ax = sections["class-area"].figures[0].figure.axes[0]
    boxes = [p for p in ax.patches if isinstance(p, PathPatch)]
    medians = [ln for ln in ax.lines if ln.get_linewidth() >= 1.5 and len(ln.get_xdata()) == 2]
    assert boxes and len(medians) == len(boxes)
    for box in boxes:
        face = to_rgba(box.get_facecolor())
        face = tuple(face[i] * face[3] + (1 - face[3]) for i in range(3))  # on white
        assert all(_contrast(to_rgba(m.get_color()), face) >= 3 for m in medians)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "median" in legend and "mean" in legend


def test_density_panels_have_titles_and_a_legend(sections):
    item = next(f for f in sections["class-area"].figures if f.name.startswith("density"))
    fig = item.figure
    titles = [ax.get_title() for ax in fig.axes]
    assert len(titles) == 2 and all("area ratio" in t and "T-shirt" in t for t in titles)
    assert titles[0].startswith("UD") and titles[1].startswith("D")
    assert all(ax.title.get_fontsize() >= 8 for ax in fig.axes)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any("region of the class" in t for t in legend) and any("region of all points" in t for t in legend)
    assert covered_points(fig) == []


def test_superclass_bars_have_error_bars(sections):
    from matplotlib.container import BarContainer

    ax = sections["superclass"].figures[0].figure.axes[0]
    assert any(isinstance(c, BarContainer) for c in ax.containers)
    assert all(s > 0 for marks in _marks(ax).values() for _, _, s in marks)


# ------------------------------------------------------------------------------- import circle
def _report_imports() -> dict[str, set[str]]:
    """Module → the kdlens.report / kdlens.figures modules it imports (anywhere in its code,
    type-only imports included), by parsing the sources."""
    graph: dict[str, set[str]] = {}
    for path in [*(SRC / "report").rglob("*.py"), *(SRC / "figures").rglob("*.py")]:
        rel = path.relative_to(SRC.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        module = ".".join(parts)
        package = parts if path.name == "__init__.py" else parts[:-1]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = ".".join(package[: len(package) - node.level + 1]) if node.level else ""
                name = ".".join(x for x in (base, node.module or "") if x)
                found.add(name)
                found |= {f"{name}.{a.name}" for a in node.names}
        graph[module] = {m for m in found if m.startswith(("kdlens.report", "kdlens.figures")) and m != module}
    for module in graph:
        graph[module] &= set(graph)
    return graph


def test_no_import_circle_in_report_or_figures():
    graph = _report_imports()
    assert "kdlens.report.sections.access" in graph and "kdlens.report.sections.content" in graph
    assert "kdlens.report.sections.access" not in graph["kdlens.report.sections.content"]
    cycles = []

    def visit(module, stack):
        for target in graph[module]:
            if target in stack:
                cycles.append(stack[stack.index(target):] + [target])
            elif target not in seen:
                seen.add(target)
                visit(target, stack + [target])

    seen: set[str] = set()
    for module in sorted(graph):
        if module not in seen:
            seen.add(module)
            visit(module, [module])
    # a package's __init__ importing its own submodules is not a circle unless one imports it back
    assert cycles == [], cycles
