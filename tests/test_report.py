"""The study report: every section filled from a tiny study with all step kinds, self-contained
HTML, CSV/JSON numbers, "not run yet" placeholders, and the page in headless Chromium."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import textwrap

import pytest
import torch
from typer.testing import CliRunner

from kdlens.cli.main import app
from kdlens.report.html import write_report
from kdlens.report.sections import SECTIONS
from kdlens.studies.grid import load_study, run_study

# every step kind on digits with the fastest models; seconds per task
ALL_KINDS = textwrap.dedent("""
    name: everything
    defaults:
      data: {name: digits, n_folds: 2}
      model: {name: thesis_student}
      epochs: 1
      batch_size: 128
    groups:
      teacher:
        kind: train
        grid:
          data.budget: [{data.budget: 40, epochs: 2}]
          data.fold: [0, 1]
      ud:
        kind: train
        grid: {data.budget: [40], data.fold: [0, 1]}
      d:
        kind: distill
        needs: [teacher]
        config: {teacher: {run: "${teacher}"}, loop: limited_label, data: {unlabeled_limit: 200}}
        grid: {data.budget: [40], data.fold: [0, 1]}
      embedding:
        kind: embedding
        needs: [ud, d]
        each: [data.budget]
        grid: {data.fold: [0]}
        params:
          n: 120
          points: C,D,E
          method_params: {ivis: {k: 10, epochs: 2, patience: 1}}
          superclasses: {round: [0, 6, 8, 9], straight: [1, 4, 7], curved: [2, 3, 5]}
      toy:
        kind: embed-toy
        params: {n: 100, perplexity: 8, method_params: {ivis: {k: 8, epochs: 2}}}
      table1:
        kind: limited-label
        params: {dataset: digits, budgets: [20], folds: 1, teacher: baseline_student, student: baseline_student,
                 student_epochs: 1, unlabeled_limit: 100, labeled_epochs_override: 1}
      full_teacher:
        kind: train
        config: {epochs: 2}
      search:
        kind: hint-search
        needs: [full_teacher]
        params: {n: 300, teacher: full_teacher}
      student:
        kind: distill
        needs: [full_teacher, search]
        config: {teacher: {run: "${full_teacher}"}, beta: 10}
        grid: {method: [at+kd], hints: [conventional, auto]}
      entropy:
        kind: softlabel-entropy
        needs: [full_teacher]
        params: {teachers: full_teacher, temperatures: [1, 4, 9]}
      missing:
        kind: missing-class
        needs: [full_teacher]
        params: {teachers: full_teacher, classes: [0, 1], temperatures: [4], ls_alphas: [0.1], epochs: 1, gamma: 0.0}
      transfer:
        kind: transfer-set
        needs: [full_teacher]
        params: {teachers: full_teacher, ns: [5, 10], epochs: 1}
      projection:
        kind: projection
        needs: [full_teacher]
        params: {teachers: full_teacher, classes: [0, 1, 2]}
      noise:
        kind: softlabel-noise
        needs: [full_teacher]
        params: {teachers: full_teacher, student: baseline_student, scales: [0, 0.2], noises: [uniform], classes: [3], epochs: 1}
      pretraining:
        kind: softlabel-pretraining
        needs: [full_teacher]
        params: {teachers: full_teacher, teacher_config: {model: {name: baseline_student}}, batch_sizes: [64, 512],
                 teacher_epochs: 2, temperatures: [1, 4], T: 4, student: baseline_student, epochs: 1, train_subset: 300}
    report: {teacher_group: teacher}
""")


@pytest.fixture(scope="module")
def everything(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    path = root / "everything.yaml"
    path.write_text(ALL_KINDS)
    study = load_study(path, out=root / "study")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small models: one thread is fastest, and much faster on a busy CPU
    try:
        summary = run_study(study, workers=1, progress=False)
    finally:
        torch.set_num_threads(threads)
    assert summary.ok
    return study


def test_all_sections_filled_and_numbers_written(everything, tmp_path):
    out = write_report([everything.directory], out=tmp_path / "r" / "report.html")
    numbers = json.loads((tmp_path / "r" / "report.json").read_text())
    missing = {k: v["missing"] for k, v in numbers["sections"].items() if v["missing"]}
    assert not missing
    assert set(numbers["sections"]) == {s.id for s in SECTIONS}
    csvs = {p.name for p in (tmp_path / "r" / "report_data").glob("*.csv")}
    assert {"budget__accuracy_vs_budget.csv", "hint-accuracy__hint_accuracy.csv", "missing-class__missing_class.csv",
            "superclass__superclass.csv", "entropy__entropy.csv"} <= csvs
    budget = numbers["sections"]["budget"]["tables"]["accuracy_vs_budget"]
    assert {r["model"] for r in budget} == {"UD", "D", "teacher"} and len(budget) == 6  # 3 models × 2 folds
    assert len(numbers["sections"]["budget"]["tables"]["accuracy_vs_budget_steps"]) == 3  # the limited-label step
    hint = numbers["sections"]["hint-accuracy"]["tables"]["hint_accuracy"]
    assert {(r["method"], r["hints"]) for r in hint if r["hints"]} == {("at+kd", "conventional"), ("at+kd", "auto")}

    page = out.read_text()
    assert "not run yet" not in page
    # self-contained: every image inline, no reference to anything outside the file
    srcs = re.findall(r'<img src="([^"]+)"', page)
    assert len(srcs) >= 12 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert all(base64.b64decode(s.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n" for s in srcs)
    assert not re.search(r"""(src|href)=["'](https?:|//|file:)""", page) and "<script" not in page
    assert "± " in page and "Look for:" in page


def test_every_section_redrawn_in_every_format_with_run_fold_seed(everything, tmp_path):
    from test_report_figures import covered_points

    from kdlens.report.sections import ReportData, build_sections

    out = tmp_path / "r" / "report.html"
    result = CliRunner().invoke(app, ["report", str(everything.directory), "--out", str(out), "--formats", "png,svg,pdf"])
    assert result.exit_code == 0, result.output
    page = out.read_text()
    assert "PNG only" not in page  # every figure redrawn from the numbers, none copied from a step
    numbers = json.loads((tmp_path / "r" / "report.json").read_text())
    figures = [f for sec in numbers["sections"].values() for f in sec["figures"]]
    assert len(figures) >= 13
    for fig in figures:
        assert sorted(f.rsplit(".", 1)[1] for f in fig["files"]) == ["pdf", "png", "svg"]
        assert all((out.parent / f).stat().st_size > 1000 for f in fig["files"])
        assert b"<text" in (out.parent / next(f for f in fig["files"] if f.endswith(".svg"))).read_bytes()
    for path in (tmp_path / "r" / "report_data").glob("*.csv"):
        header = path.read_text().splitlines()[0].split(",")
        assert header[:4] == ["study", "run", "fold", "seed"], path.name
    # every run-backed row names its run directory
    budget = numbers["sections"]["budget"]["tables"]["accuracy_vs_budget"]
    assert all((everything.directory / r["run"] / "config.yaml").is_file() and r["fold"] in (0, 1) for r in budget)
    for sec in build_sections(ReportData([everything])):
        for item in sec.figures:
            assert covered_points(item.figure) == [], (sec.id, item.title)


def test_projection_templates_sit_among_their_classes(everything):
    import numpy as np

    from kdlens.report.sections import ReportData, build_sections

    sec = next(s for s in build_sections(ReportData([everything])) if s.id == "projection")
    ax = sec.figures[0].figure.axes[0]
    points = [c for c in ax.collections if len(c.get_offsets()) > 1]
    stars = [c.get_offsets()[0] for c in ax.collections if len(c.get_offsets()) == 1]
    means = np.array([np.asarray(c.get_offsets()).mean(0) for c in points])
    assert len(means) == len(stars) == 3 and ax.get_xlabel() and ax.get_ylabel()
    for k, star in enumerate(stars):  # each class's star is nearer its own class than any other
        assert np.linalg.norm(means - star, axis=1).argmin() == k


def test_missing_sections_say_not_run_yet(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("name: only\ngroups:\n  teacher: {kind: train, config: {data: {name: digits}, model: {name: baseline_student}, epochs: 1}}\n")
    study = load_study(path, out=tmp_path / "s")
    run_study(study, workers=1, progress=False)
    result = CliRunner().invoke(app, ["report", str(tmp_path / "s"), "--out", str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "r.html").read_text()
    assert page.count("not run yet") >= len(SECTIONS) and "examples/hints.yaml" in page


def test_report_errors(tmp_path):
    result = CliRunner().invoke(app, ["report", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and "does not exist" in " ".join(result.output.split())
    result = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2 and "holds no study" in " ".join(result.output.split())


# ------------------------------------------------------------------------------ browser
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--hide-scrollbars"]
CHECK = """<script>
window.__errors = [];
window.addEventListener('error', e => window.__errors.push(String(e.message || e.type)), true);
const _err = console.error; console.error = (...a) => { window.__errors.push(a.join(' ')); _err(...a); };
window.addEventListener('load', () => {
  const imgs = Array.from(document.images);
  const bad = imgs.filter(i => !i.complete || i.naturalWidth === 0).map(i => i.alt);
  const out = document.createElement('pre');
  out.id = 'kdlens-check';
  out.textContent = 'KDLENS-CHECK ' + JSON.stringify({images: imgs.length, broken: bad, errors: window.__errors});
  document.body.appendChild(out);
});
</script>"""


def _chromium_or_skip():
    if CHROMIUM is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed; .ci/run installs it (apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium); CI installs it")
    return CHROMIUM


def test_report_in_headless_chromium(everything, tmp_path):
    chromium = _chromium_or_skip()
    out = write_report([everything.directory], out=tmp_path / "report.html")
    probe = tmp_path / "probe.html"
    probe.write_text(out.read_text().replace("</body>", CHECK + "</body>"))
    common = [chromium, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*common, "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000", "--dump-dom",
                          probe.as_uri()], capture_output=True, text=True, timeout=120)
    marker = re.search(r"KDLENS-CHECK (\{.*?\})</pre>", dom.stdout)
    assert marker, f"no check marker in the DOM; chromium said: {dom.stderr[-2000:]}"
    check = json.loads(marker.group(1).replace("&quot;", '"'))
    figures = sum(len(s["figures"]) for s in json.loads((tmp_path / "report.json").read_text())["sections"].values())
    assert check["images"] == figures >= 12 and check["broken"] == [] and check["errors"] == []
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line and ("ERROR" in line or "error" in line)]
    assert console == []
    shot = tmp_path / "screenshot.png"
    subprocess.run([*common, f"--screenshot={shot}", "--window-size=1280,2000", out.as_uri()],
                   capture_output=True, text=True, timeout=120)
    assert shot.is_file() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    keep = os.environ.get("KDLENS_SCREENSHOT_DIR")
    if keep:
        shutil.copy(shot, keep)


def test_sections_follow_the_papers_in_order():
    # the report reads paper by paper, in PAPERS order; registration happens at import, so an
    # import re-ordering in kdlens.report.sections.registry must not reshuffle the report
    from kdlens.report.sections import PAPERS

    papers = [s.paper for s in SECTIONS]
    assert papers == sorted(papers, key=list(PAPERS).index)
    assert [s.id for s in SECTIONS][:2] == ["entropy", "missing-class"] and SECTIONS[-1].id == "superclass"
