"""``kdlens demo``: three studies → one report; the shipped example studies expand at every scale."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kdlens.cli.main import app
from kdlens import demo
from kdlens.studies.grid import SCALES, load_study

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

TINY = {
    "softlabel": """
        name: softlabel
        defaults: {data: {name: digits}, model: {name: thesis_student}, epochs: 1}
        groups:
          teacher: {kind: train}
          entropy: {kind: softlabel-entropy, needs: [teacher], params: {temperatures: [1, 4]}}
          projection: {kind: projection, needs: [teacher]}
        scales: {smoke: {}}
    """,
    "hints": """
        name: hints
        defaults: {data: {name: digits}, model: {name: thesis_student}, epochs: 1}
        groups:
          teacher: {kind: train}
          search: {kind: hint-search, needs: [teacher], params: {n: 200}}
        scales: {smoke: {}}
    """,
    "embedding": """
        name: embedding
        defaults: {data: {name: digits, budget: 40}, model: {name: thesis_student}, epochs: 1}
        groups:
          ud: {kind: train}
        scales: {smoke: {}}
    """,
}


@pytest.mark.parametrize("name", demo.DEMO_STUDIES)
@pytest.mark.parametrize("scale", SCALES)
def test_example_studies_expand(name, scale, tmp_path):
    study = load_study(EXAMPLES / f"{name}.yaml", scale, tmp_path)
    kinds = {t.kind for t in study.tasks}
    assert len(study.tasks) >= 5 and {"train"} <= kinds
    if scale == "full":
        assert all(t.config.get("data", {}).get("name") == "fashion-mnist" for t in study.tasks if t.is_run)
    else:
        assert all(t.config.get("data", {}).get("name") == "digits" for t in study.tasks if t.is_run)


def test_demo_runs_three_studies_and_writes_one_report(tmp_path, monkeypatch):
    examples = tmp_path / "examples"
    examples.mkdir()
    for name, text in TINY.items():
        (examples / f"{name}.yaml").write_text(textwrap.dedent(text))
    monkeypatch.setattr(demo, "examples_dir", lambda: examples)
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    report = out / "report.html"
    assert str(report) in result.output and report.is_file()
    numbers = json.loads((out / "report.json").read_text())
    assert set(numbers["studies"]) == {"softlabel/smoke", "hints/smoke", "embedding/smoke"}
    filled = {k for k, v in numbers["sections"].items() if not v["missing"]}
    assert {"entropy", "projection", "hint-points"} <= filled
    assert "not run yet" in report.read_text()  # the sections these tiny studies do not cover
    again = CliRunner().invoke(app, ["demo", "--out", str(out), "--quiet"])  # all done: only the report
    assert again.exit_code == 0 and str(report) in again.output


def test_demo_unknown_dataset_exits_2(tmp_path):
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path), "--dataset", "mnsit"])
    assert result.exit_code == 2 and "mnsit" in result.output
