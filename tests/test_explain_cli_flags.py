"""`kdlens hints`, `embed` and `softlabels …`: one meaning per flag, analyses recorded in the run
store (never in the current directory or a run's directory), the teacher's dataset by default,
--threads, the embed truncation note and a help line on every option (issue 14)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
import yaml
from typer.testing import CliRunner

from kdlens.cli.main import app
from kdlens.config import DistillConfig, TrainConfig, validate
from kdlens.errors import KdlensError
from kdlens.explain.hint_search import auto_hint_layers
from kdlens.explain.inputs import choose_dataset
from kdlens.store import RunIndex
from kdlens.store.analysis import analysis_name, check_store, finished_analyses, subject_label
from kdlens.train.distill_run import run_distillation
from kdlens.train.run import run_training


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    """A resnet8 trained one epoch on `synthetic` (16×16, 512 test images): not digits, so a
    command that fell back to digits would show."""
    store = tmp_path_factory.mktemp("teachers")
    cfg = validate(TrainConfig, {"model": {"name": "resnet8"}, "data": {"name": "synthetic"}, "epochs": 1,
                                 "batch_size": 128, "out": str(store), "name": "syn"})
    return run_training(cfg, progress=False).path


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def said(result) -> str:
    return " ".join(result.output.split())


def files(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")}


# ----------------------------------------------------------------------------------------------
# one meaning per flag
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("command", "old", "new"),
    [
        (["hints"], "--k", "--clusters"),
        (["hints"], "--n", "--samples"),
        (["hints"], "--torch-threads", "--threads"),
        (["embed", "--method", "pca"], "--k", "--neighbours"),
        (["embed", "--method", "pca"], "--n", "--images"),
    ],
)
def test_old_spellings_exit_2_naming_the_new_flag(teacher, tmp_path, monkeypatch, command, old, new):
    monkeypatch.chdir(tmp_path)
    flag = "--run" if command[0] == "embed" else "--teacher"
    r = invoke(*command, flag, teacher, old, "3")
    assert r.exit_code == 2, r.output
    assert f"{old} was renamed: use {new}" in said(r) and f"{new} 3" in said(r)
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------------------------------
# outputs: the run store, a row each, never the current directory or the teacher run
# ----------------------------------------------------------------------------------------------
def test_analyses_land_in_the_store_with_a_row(teacher, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = files(teacher)

    r = invoke("hints", "--teacher", teacher, "--clusters", 2, "--samples", 100, "--threads", 1, "--quiet")
    assert r.exit_code == 0, r.output
    r = invoke("embed", "--run", teacher, "--points", "C,E", "--method", "pca", "--images", 600, "--neighbours", 5,
               "--threads", 1, "--quiet")
    assert r.exit_code == 0, r.output
    # the test split has fewer images than asked: one line says so (even with --quiet)
    assert "--images 600, but the test split of synthetic has 512 images: embedding all 512" in said(r)
    r = invoke("softlabels", "entropy", "--teacher", teacher, "--temperatures", "1,4", "--threads", 1, "--quiet")
    assert r.exit_code == 0, r.output

    assert os.listdir(tmp_path) == ["runs"]  # nothing else in the working directory
    assert files(teacher) == before  # nor in the teacher's run directory
    rows = {rec.kind: rec for rec in RunIndex(tmp_path / "runs").list()}
    assert set(rows) == {"hints", "embed", "softlabels"} and {r.status for r in rows.values()} == {"done"}
    dirs = {kind: tmp_path / "runs" / rec.id for kind, rec in rows.items()}
    assert dirs["hints"].name.startswith("hints-syn-") and dirs["embed"].name.startswith("embed-pca-syn-")
    assert dirs["softlabels"].name.startswith("softlabels-entropy-syn-")
    for d in dirs.values():
        assert (d / "config.yaml").is_file() and (d / "result.json").is_file()

    hints = json.loads((dirs["hints"] / "hints.json").read_text())
    assert hints["k"] == 2 and hints["n"] == 100 and hints["data"]["dataset"] == "synthetic"
    assert rows["hints"].metrics["hint_layers"] == hints["hint_layers"]
    with np.load(dirs["embed"] / teacher.name / "embeddings.npz") as npz:
        assert npz["E"].shape == (512, 2)  # all of the test split
    # the teacher's dataset is the default: synthetic, not digits
    assert json.loads((dirs["softlabels"] / "entropy.json").read_text())["dataset"] == "synthetic"
    assert yaml.safe_load((dirs["softlabels"] / "config.yaml").read_text())["data"]["name"] == "synthetic"
    assert finished_analyses(tmp_path / "runs", "hints") == [dirs["hints"]]

    # the same command again: skipped; --restart computes it again
    r = invoke("hints", "--teacher", teacher, "--clusters", 2, "--samples", 100, "--quiet")
    assert r.exit_code == 0 and "already done (skipped)" in said(r) and "hint points" in said(r)
    r = invoke("hints", "--teacher", teacher, "--clusters", 2, "--samples", 100, "--quiet", "--restart")
    assert r.exit_code == 0 and "wrote" in said(r)
    assert RunIndex(tmp_path / "runs").get(rows["hints"].id).attempts == 2
    assert os.listdir(tmp_path) == ["runs"]


def test_out_must_be_a_store_not_a_run_directory(teacher, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = files(teacher)
    for args in (["hints", "--teacher", teacher], ["embed", "--run", teacher, "--method", "pca"],
                 ["softlabels", "projection", "--teacher", teacher]):
        r = invoke(*args, "--out", teacher)
        assert r.exit_code == 2, r.output
        assert "is a run directory; --out is the run store" in said(r)
    assert files(teacher) == before and os.listdir(tmp_path) == []
    with pytest.raises(KdlensError, match="is a file"):
        check_store(next(teacher.glob("config.yaml")))


def test_analysis_names():
    assert subject_label("runs/resnet8-digits-1a2b3c4d5e") == "resnet8-digits"
    assert subject_label("weights/my model.pt") == "my_model"
    assert analysis_name("softlabels", ["runs/a-1a2b3c4d5e", "runs/b"], "entropy") == "softlabels-entropy-a+1"
    assert analysis_name("hints", ["t.pt"]) == "hints-t"


# ----------------------------------------------------------------------------------------------
# the teacher's dataset
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", [
    ["hints"], ["embed", "--method", "pca"], ["softlabels", "entropy"], ["softlabels", "missing-class"],
    ["softlabels", "transfer-set"], ["softlabels", "projection"], ["softlabels", "noise"],
])
def test_another_dataset_than_the_teachers_exits_2(teacher, tmp_path, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    flag = "--run" if command[0] == "embed" else "--teacher"
    r = invoke(*command, flag, teacher, "--dataset", "digits")
    if r.exit_code == 2 and "No such command" in r.output:
        pytest.skip(f"no command {' '.join(command)}")
    assert r.exit_code == 2, r.output
    text = said(r)
    assert "was trained on 'synthetic' but --dataset is 'digits'" in text and "--allow-dataset-mismatch" in text
    assert os.listdir(tmp_path) == []


def test_choose_dataset(teacher, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.yaml").write_text(yaml.safe_dump({"data": {"name": "digits", "root": None}}))
    assert choose_dataset([str(teacher)], None)[0] == "synthetic"
    assert choose_dataset([str(teacher)], "digits", allow_mismatch=True) == ("digits", None)
    name, own = choose_dataset([str(teacher), str(other)], "digits", allow_mismatch=True)
    assert name == "digits" and own == {"data": {"name": "digits", "root": None}}
    with pytest.raises(KdlensError, match="different datasets"):
        choose_dataset([str(teacher), str(other)], None)
    with pytest.raises(KdlensError, match="is a checkpoint file.*give --dataset"):
        choose_dataset([str(teacher / "checkpoints" / "last.pt")], None)
    assert choose_dataset([str(teacher / "checkpoints" / "last.pt")], "digits") == ("digits", None)


# ----------------------------------------------------------------------------------------------
# distill --hints auto finds a hints analysis in the teacher's store
# ----------------------------------------------------------------------------------------------
def test_distill_hints_auto_reuses_the_analysis_in_the_teachers_store(teacher, tmp_path):
    store = teacher.parent
    r = invoke("hints", "--teacher", teacher, "--clusters", 2, "--samples", 200, "--out", store, "--quiet")
    assert r.exit_code == 0, r.output
    [saved] = [d / "hints.json" for d in finished_analyses(store, "hints")
               if json.loads((d / "hints.json").read_text())["n"] == 200]
    marked = json.loads(saved.read_text())
    chosen = list(reversed(marked["selection"]["indices"]))  # a reuse must return these points
    marked["selection"].update(indices=chosen, indices_1based=[i + 1 for i in chosen])
    saved.write_text(json.dumps(marked))
    cfg = validate(DistillConfig, {
        "teacher": {"run": str(teacher)}, "model": {"name": "resnet8"}, "method": "at+kd", "hints": "auto:2",
        "epochs": 1, "out": str(tmp_path / "distill"), "name": "s",
    })
    outcome = run_distillation(cfg, progress=False, hint_search=auto_hint_layers)
    assert outcome.metrics["hint_layers"]["teacher"] == [marked["layer_names"][i] for i in chosen]
    assert not list((tmp_path / "distill" / "cache" / "hint-search").glob("hints-*.json"))  # no new search


# ----------------------------------------------------------------------------------------------
# help lines and --threads
# ----------------------------------------------------------------------------------------------
def _commands():
    group = typer.main.get_command(app)
    yield "hints", group.commands["hints"]
    yield "embed", group.commands["embed"]
    for name, cmd in group.commands["softlabels"].commands.items():
        yield f"softlabels {name}", cmd


def test_every_option_has_a_help_line_and_threads():
    for name, cmd in _commands():
        options = [p for p in cmd.params if p.param_type_name == "option"]  # typer vendors its own click
        missing = [p.name for p in options if not (p.help or "").strip()]
        assert not missing, f"{name}: options without help: {missing}"
        flags = {f for p in options for f in p.opts}
        assert {"--threads", "--out", "--restart"} <= flags, name
        if name != "softlabels pretraining":  # trains its own teachers: no teacher run to disagree with
            assert "--allow-dataset-mismatch" in flags, name
        assert not {"--k", "--n", "--torch-threads"} & {f for p in options if not p.hidden for f in p.opts}, name


def test_hints_uniform_baseline_and_step1_modes_from_the_cli(teacher, tmp_path):
    """`--algorithm uniform` is PURSUhInT's baseline (resnet8: 3 candidate blocks, k = 2 → groups
    {1, 2} and {3}, floored mean positions 1 and 3); `--parallel intra-op` gives the same hint points as the default batch workers; a bad
    `--precision` is exit 2 before anything is written."""
    out = tmp_path / "runs"
    common = ("hints", "--teacher", teacher, "--clusters", 3, "--samples", 100, "--threads", 1, "--quiet")
    r = invoke(*common[:4], 2, *common[5:], "--algorithm", "uniform", "--out", out)
    assert r.exit_code == 0, r.output
    [uniform] = [d for d in out.iterdir() if d.name.startswith("hints-")]
    assert json.loads((uniform / "hints.json").read_text())["hint_layers"] == ["layer1.0", "layer3.0"]
    r = invoke(*common, "--parallel", "intra-op", "--out", tmp_path / "intra")
    batches = invoke(*common, "--out", tmp_path / "batches")
    assert r.exit_code == 0 and batches.exit_code == 0, r.output + batches.output
    found = [json.loads(next((tmp_path / s).glob("hints-*/hints.json")).read_text())["similarity"]
             for s in ("intra", "batches")]
    assert found[0] == found[1]
    r = invoke(*common, "--precision", "fp16", "--out", tmp_path / "bad")
    assert r.exit_code == 2 and "precision" in said(r) and "bf16" in said(r)
    assert not (tmp_path / "bad").exists()
