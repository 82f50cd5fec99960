"""One meaning per flag (issue 14): `--teacher` is a run directory or checkpoint everywhere —
`study limited-label` names its teacher architecture `--teacher-model`, and `kdlens tune` takes
the README's `--teacher RUN`; `study run --help` lists every scale of the example studies."""

import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from kdlens.cli.main import app
from kdlens.config import TrainConfig, validate
from kdlens.train.run import run_training

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _said(res) -> str:
    return " ".join(res.output.replace("│", " ").split())


def test_limited_label_names_its_teacher_architecture_teacher_model():
    res = CliRunner().invoke(app, ["study", "limited-label", "--help"])
    assert res.exit_code == 0
    assert "--teacher-model" in res.output and "--teacher-init" in res.output
    assert not re.search(r"--teacher(?![-\w])", res.output)  # no bare --teacher taking a model name
    refused = CliRunner().invoke(app, ["study", "limited-label", "--teacher", "resnet8"])
    assert refused.exit_code == 2 and "No such option" in _said(refused)


def test_limited_label_teacher_model_reaches_the_study(tmp_path):
    res = CliRunner().invoke(app, ["study", "limited-label", "--dataset", "digits", "--budgets", "20", "--folds", "1",
                                   "--teacher-model", "resnet_twenty", "--out", str(tmp_path / "ll")])
    assert res.exit_code == 2 and "resnet_twenty" in _said(res) and "resnet20" in _said(res)  # close match
    assert not (tmp_path / "ll").exists()


def test_study_run_help_lists_every_scale():
    res = CliRunner().invoke(app, ["study", "run", "--help"])
    assert res.exit_code == 0
    for scale in ("smoke", "small", "cpu", "full"):
        assert scale in _said(res)
    for example in ("hints.yaml", "softlabel.yaml", "embedding.yaml"):  # what the help claims
        assert set(yaml.safe_load((EXAMPLES / example).read_text())["scales"]) <= {"smoke", "small", "cpu", "full"}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher")
    return run_training(validate(TrainConfig, {"model": {"name": "baseline_student"}, "data": {"name": "digits"},
                                               "epochs": 1, "out": str(out), "name": "teacher"}),
                        progress=False).path


def test_tune_as_the_readme_writes_it_with_teacher(teacher, tmp_path, monkeypatch):
    """`kdlens tune examples/tune.yaml --teacher RUN` (README), cut to one short trial."""
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["tune", str(EXAMPLES / "tune.yaml"), "--teacher", str(teacher), "trials=1",
                                   "base.epochs=1", "--quiet"])
    assert res.exit_code == 0, res.output
    best = yaml.safe_load(next((tmp_path / "runs").glob("*.best.yaml")).read_text())
    assert best["teacher"]["run"] == str(teacher)


def test_tune_teacher_flag_and_override_of_the_same_key_are_exit_2(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["tune", str(EXAMPLES / "tune.yaml"), "--teacher", "runs/a",
                                   "base.teacher.run=runs/b"])
    assert res.exit_code == 2 and "'base.teacher.run' is set twice" in _said(res)
    assert "runs/a" in _said(res) and "runs/b" in _said(res)
