"""``kdlens embed``: outputs for a run, and bad input → exit 2 with nothing written."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from kdlens.cli.main import app
from kdlens.models import create_model


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("runs") / "student"
    (path / "checkpoints").mkdir(parents=True)
    config = {"kind": "train", "model": {"name": "thesis_student", "kwargs": {}}, "data": {"name": "digits", "root": None}}
    (path / "config.yaml").write_text(yaml.safe_dump(config))
    torch.manual_seed(0)
    model = create_model("thesis_student", num_classes=10, in_channels=1, input_size=8)
    torch.save({"model": model.state_dict()}, path / "checkpoints" / "last.pt")
    return path


def invoke(*args):
    return CliRunner().invoke(app, ["embed", *map(str, args)])


def analysis(store, method):
    """The analysis directory the command wrote in the run store."""
    [out] = store.glob(f"embed-{method}-student*")
    return out


def test_embed_writes_npz_csv_and_plots(run_dir, tmp_path):
    res = invoke("--run", run_dir, "--points", "C,D,E", "--method", "ivis", "--images", 120,
                 "--param", "epochs=3", "--param", "k=15", "--out", tmp_path / "emb", "--quiet")
    assert res.exit_code == 0, res.output
    out = analysis(tmp_path / "emb", "ivis")
    with np.load(out / "student" / "embeddings.npz") as npz:
        assert {"C", "D", "E", "labels", "indices"} <= set(npz.files)
        assert npz["C"].shape == (120, 2)
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [r["point"] for r in rows] == ["C", "D", "E"]
    assert all(0 <= float(r["trustworthiness"]) <= 1 and float(r["ivis_loss"]) >= 0 for r in rows)
    assert rows[2]["layer"] == "logits" and rows[2]["features"] == "10"
    for name in ("scatter_ivis.png", "class_area_ivis.png", "ivis_loss.png", "class_areas.csv"):
        assert (out / name).stat().st_size > 0, name


def test_two_runs_side_by_side_with_pca(run_dir, tmp_path):
    res = invoke("--run", run_dir, "--run", run_dir, "--points", "A,E", "--method", "pca", "--images", 60,
                 "--pool", "--out", tmp_path / "pca", "--quiet")
    assert res.exit_code == 0, res.output
    out = analysis(tmp_path / "pca", "pca")
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert {r["run"] for r in rows} == {"student", "student-2"}
    assert rows[0]["features"] == "16"  # pooled: channels of stage1
    assert (out / "scatter_pca.png").exists() and not (out / "ivis_loss.png").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--method", "tnse"], "Did you mean: tsne"),
        (["--points", "A,X"], "A, B, C, D, E"),
        (["--images", "3"], "--images must be at least"),
        (["--neighbours", "0"], "--neighbours must be in"),
        (["--param", "epochz=3"], "epochz"),
        (["--param", "nonsense"], "key=value"),
        (["--mass", "1.5"], "--mass"),
    ],
)
def test_bad_input_exit_2_nothing_written(run_dir, tmp_path, args, message):
    out = tmp_path / "never"
    res = invoke("--run", run_dir, "--out", out, *args)
    assert res.exit_code == 2
    assert message in " ".join(res.output.split())
    assert not out.exists()


def test_missing_run_and_missing_point(tmp_path, run_dir):
    out = tmp_path / "never"
    res = invoke("--run", tmp_path / "nope", "--out", out)
    assert res.exit_code == 2 and "no such run directory" in " ".join(res.output.split())
    base = tmp_path / "base"
    (base / "checkpoints").mkdir(parents=True)
    (base / "config.yaml").write_text(yaml.safe_dump({"model": {"name": "baseline_student"}, "data": {"name": "digits"}}))
    torch.save({"model": create_model("baseline_student", num_classes=10, in_channels=1, input_size=8).state_dict()},
               base / "checkpoints" / "last.pt")
    res = invoke("--run", base, "--points", "A,E", "--out", out)
    assert res.exit_code == 2 and "no extraction point(s) A" in " ".join(res.output.split())
    assert not out.exists()
