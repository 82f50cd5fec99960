"""Vats 2021 Figs. 4.4 and 4.5 as study steps: per-class entropy curves beside the mean, and the
penultimate projection of a plainly trained vs a label-smoothing model."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import yaml

from kdlens.errors import KdlensError
from kdlens.figures.softlabels_extra import class_spread
from kdlens.studies.grid import load_study, run_study

STUDY = {
    "name": "ls-figures",
    "defaults": {"data": {"name": "digits"}, "model": {"name": "cnn_student"}, "epochs": 2},
    "groups": {
        "models": {"kind": "train", "grid": {"label_smoothing": [
            {"label": "plain", "label_smoothing": 0.0}, {"label": "LS 0.3", "label_smoothing": 0.3}]}},
        "entropy": {"kind": "softlabel-entropy", "needs": ["models"], "params": {"teachers": "models", "temperatures": [1, 4]}},
        "ls": {"kind": "projection", "needs": ["models"], "params": {"teachers": "models", "classes": [0, 1, 2], "ls_comparison": True}},
    },
    "scales": {"smoke": {}},
}


def test_entropy_per_class_and_ls_projection_steps(tmp_path):
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(STUDY))
    study = load_study(tmp_path / "s.yaml", "smoke", tmp_path / "study")
    summary = run_study(study, workers=1, progress=False)
    assert summary.failed == 0
    steps = tmp_path / "study" / "steps"
    assert (steps / "entropy" / "entropy_per_class.png").stat().st_size > 0  # Fig. 4.4
    assert (steps / "ls" / "ls_projection.png").stat().st_size > 0  # Fig. 4.5
    # the spreads the step reports are those of its own projected points
    with open(steps / "ls" / "projection.csv") as f:
        rows = list(csv.DictReader(f))
    from kdlens.store import RunIndex

    metrics = {r.id: r.metrics for r in RunIndex(tmp_path / "study" / "tasks").list()}["ls"]
    for name, key in (("plain", "spread_plain"), ("LS 0.3", "spread_label_smoothing")):
        pts = np.array([[float(r["x"]), float(r["y"])] for r in rows if r["teacher"] == name])
        labels = np.array([int(r["class"]) for r in rows if r["teacher"] == name])
        assert metrics[key] == pytest.approx(class_spread(pts, labels, [0, 1, 2]))
    assert metrics["alpha_ls"] == 0.3


def test_ls_comparison_needs_one_plain_and_one_smoothed_run(tmp_path):
    spec = {**STUDY, "groups": {**STUDY["groups"], "models": {"kind": "train", "grid": {"seed": [0, 1]}}}}
    spec["groups"].pop("entropy")
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    study = load_study(tmp_path / "s.yaml", "smoke", tmp_path / "study")
    summary = run_study(study, workers=1, progress=False)
    assert summary.failed == 1
    from kdlens.store import RunIndex

    [ls] = [r for r in RunIndex(tmp_path / "study" / "tasks").list() if r.id == "ls"]
    assert "one run with label_smoothing 0 and one with label_smoothing > 0" in (ls.reason or "")
    assert KdlensError  # the reason is a KdlensError's message (one line, no traceback)
