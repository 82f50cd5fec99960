"""`kdlens softlabels …` on a tiny teacher trained on digits for one epoch."""

import json

import pytest
from typer.testing import CliRunner

from kdlens.cli.main import app
from kdlens.config import TrainConfig, validate
from kdlens.train.run import run_training


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher")
    cfg = validate(TrainConfig, {"model": {"name": "cnn_student"}, "data": {"name": "digits"},
                                 "epochs": 1, "batch_size": 64, "out": str(out), "name": "tiny"})
    return str(run_training(cfg, progress=False).path)


def _run(args):
    return CliRunner().invoke(app, ["softlabels", *args])


def analysis(store, command):
    """The analysis directory `softlabels COMMAND` wrote in the run store ``store``."""
    [out] = store.glob(f"softlabels-{command}-tiny*")
    return out


def test_entropy_writes_figure_csv_json(teacher_run, tmp_path):
    out = tmp_path / "e"
    r = _run(["entropy", "--teacher", teacher_run, "--teacher", teacher_run, "--temperatures", "1,3,9",
              "--ls-alphas", "0,0.1,0.5", "--out", str(out)])
    assert r.exit_code == 0, r.output
    out = analysis(out, "entropy")
    for name in ("entropy.png", "entropy.csv", "entropy.json", "label_variance.csv", "soft_label_table.csv"):
        assert (out / name).stat().st_size > 0
    summary = json.loads((out / "entropy.json").read_text())
    assert len(summary["teachers"]) == 2 and summary["teachers"][next(iter(summary["teachers"]))]["temperatures"] == [1, 3, 9]


def test_missing_class_transfer_set_projection_write_their_files(teacher_run, tmp_path):
    common = ["--teacher", teacher_run, "--epochs", "1", "--batch-size", "64", "--quiet"]
    r = _run(["missing-class", *common, "--classes", "0,1", "--temperatures", "3,9", "--ls-alphas", "0.1",
              "--train-subset", "500", "--out", str(tmp_path / "m")])
    assert r.exit_code == 0, r.output
    m = analysis(tmp_path / "m", "missing-class")
    assert all((m / f"missing_class.{ext}").exists() for ext in ("png", "csv", "json"))
    assert json.loads((m / "missing_class.json").read_text())["classes"] == [0, 1]
    r = _run(["transfer-set", *common, "--ns", "3,10", "--random-seeds", "0", "--student", "baseline_student",
              "--out", str(tmp_path / "t")])
    assert r.exit_code == 0, r.output
    t = analysis(tmp_path / "t", "transfer-set")
    assert (t / "transfer_set.csv").exists() and list(t.glob("transfer_set_top_entropy_*.png"))
    r = _run(["projection", "--teacher", teacher_run, "--classes", "3,5,8", "--max-per-class", "20",
              "--out", str(tmp_path / "p")])
    assert r.exit_code == 0, r.output
    p = analysis(tmp_path / "p", "projection")
    assert (p / "projection.png").exists()
    assert len((p / "projection.csv").read_text().splitlines()) == 1 + 60


@pytest.mark.parametrize("args", [
    ["missing-class", "--classes", "0,12"],
    ["missing-class", "--temperatures", "3,0"],
    ["missing-class", "--temperatures", "3,x"],
    ["entropy", "--temperatures", "-1"],
    ["transfer-set", "--T", "0"],
    ["projection", "--classes", "0,1,10"],
    ["projection", "--classes", "0,1"],
    ["missing-class", "--student", "no_such_model"],
])
def test_bad_input_exits_2_and_writes_nothing(teacher_run, tmp_path, args):
    out = tmp_path / "never"
    r = _run([*args, "--teacher", teacher_run, "--out", str(out)])
    assert r.exit_code == 2, r.output
    assert "error" in r.output
    assert not out.exists()


def test_missing_teacher_exits_2(tmp_path):
    r = _run(["entropy", "--teacher", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and not (tmp_path / "o").exists()
