"""One meaning per flag, --print-config, --threads and help lines (issue 14)."""

from __future__ import annotations

import pytest
import typer
import yaml
from typer.testing import CliRunner

from kdlens.cli.main import app
from kdlens.config import DistillConfig, validate
from kdlens.train.threads import choose_threads


def test_a_flag_and_an_override_of_the_same_key_exit_2_naming_both():
    result = CliRunner().invoke(app, ["distill", "--teacher", "nowhere", "--epochs", "2", "epochs=3"])
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "epochs=2" in text and "epochs=3" in text


def test_print_config_prints_the_resolved_yaml_with_the_teachers_dataset(tmp_path):
    run = tmp_path / "teacher-run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"data": {"name": "synthetic"}, "model": {"name": "resnet8"}}))
    result = CliRunner().invoke(app, ["distill", "--teacher", str(run), "--alpha", "0.5", "--T", "3", "--print-config"])
    assert result.exit_code == 0, result.output
    cfg = validate(DistillConfig, yaml.safe_load(result.output))
    assert cfg.data.name == "synthetic" and cfg.alpha == 0.5 and cfg.loss["T"] == 3
    assert not (tmp_path / "runs").exists()


def _commands(cmd, path=()):
    """Every leaf command of the CLI as (path, command)."""
    if hasattr(cmd, "commands"):
        for name, sub in cmd.commands.items():
            yield from _commands(sub, (*path, name))
    else:
        yield " ".join(path), cmd


def test_every_option_of_every_command_has_a_help_line():
    commands = dict(_commands(typer.main.get_command(app)))
    assert {"distill", "train", "profile", "hints", "study limited-label", "softlabels noise", "demo"} <= set(commands)
    missing = {name: [p.name for p in cmd.params if p.param_type_name == "option" and not p.hidden
                      and not (p.help or "").strip()] for name, cmd in commands.items()}
    assert not {k: v for k, v in missing.items() if v}, "options without help"


def test_threads_default_leaves_busy_cores_alone(monkeypatch):
    import os

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (2.6, 0.0, 0.0))
    assert choose_threads()[0] == 1  # 4 cores, 2.6 busy → round(1.4) = 1 free
    monkeypatch.setattr(os, "getloadavg", lambda: (0.2, 0.0, 0.0))
    assert choose_threads()[0] == 4
    monkeypatch.setattr(os, "getloadavg", lambda: (9.0, 0.0, 0.0))
    assert choose_threads()[0] == 1  # never below one
    assert choose_threads(3) == (3, "as asked (--threads)")


def test_train_print_config_and_double_keys(tmp_path):
    result = CliRunner().invoke(app, ["train", "--model", "resnet8", "--epochs", "2", "--print-config"])
    assert result.exit_code == 0, result.output
    config = yaml.safe_load(result.output)
    assert config["model"]["name"] == "resnet8" and config["epochs"] == 2 and config["precision"] == "auto"
    twice = CliRunner().invoke(app, ["train", "--lr", "0.1", "optim.lr=0.2"])
    assert twice.exit_code == 2 and "optim.lr" in " ".join(twice.output.split())


def test_kd_vs_alone_takes_every_loss_weight_and_helps_every_option():
    group = typer.main.get_command(app)
    cmd = group.commands["study"].commands["kd-vs-alone"]
    options = {opt for p in cmd.params for opt in getattr(p, "opts", [])}
    assert {"--gamma", "--alpha", "--beta", "--T"} <= options  # as on distill
    assert not [p.name for p in cmd.params if p.param_type_name == "option" and not (p.help or "").strip()]


def test_print_config_on_tune_and_study(tmp_path):
    tune_yaml = tmp_path / "tune.yaml"
    tune_yaml.write_text("base: {kind: train, model: {name: resnet8}, data: {name: digits, val_fraction: 0.2}, "
                         f"out: {tmp_path / 'out'}}}\ntrials: 2\n")
    result = CliRunner().invoke(app, ["tune", str(tune_yaml), "trials=3", "--print-config"])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.output)["trials"] == 3 and not (tmp_path / "out").exists()
    study_yaml = tmp_path / "study.yaml"
    study_yaml.write_text(yaml.safe_dump({"name": "s", "defaults": {"data": {"name": "digits"}, "epochs": 1},
                                          "groups": {"t": {"kind": "train", "grid": {"seed": [0, 1]}}}}))
    result = CliRunner().invoke(app, ["study", "run", str(study_yaml), "--out", str(tmp_path / "s"),
                                      "--set", "defaults.epochs=2", "--print-config"])
    assert result.exit_code == 0, result.output
    tasks = yaml.safe_load(result.output)["tasks"]
    assert len(tasks) == 2 and all(t["config"]["epochs"] == 2 for t in tasks)
    assert not (tmp_path / "s").exists()
