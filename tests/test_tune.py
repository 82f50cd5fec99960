from pathlib import Path

import optuna
import pytest
import yaml
from typer.testing import CliRunner

from kdlens.cli.main import app
from kdlens.config import DistillConfig, TrainConfig, TuneConfig, load_config, validate
from kdlens.config.search_space import lookup
from kdlens.errors import KdlensError
from kdlens.store import RunIndex
from kdlens.studies.tune import run_tune
from kdlens.train.run import run_training

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher")
    return run_training(validate(TrainConfig, {"model": {"name": "baseline_student"}, "data": {"name": "digits"},
                                               "epochs": 1, "out": str(out), "name": "teacher"}),
                        progress=False).path


def _tune_cfg(teacher, out, trials):
    return validate(TuneConfig, {
        "base": {"teacher": {"run": str(teacher)}, "model": {"name": "baseline_student"},
                 "data": {"name": "digits", "val_fraction": 0.2}, "epochs": 1, "out": str(out)},
        "space": {"alpha": {"low": 0.1, "high": 1.0}, "T": {"low": 1.0, "high": 8.0}},
        "trials": trials, "name": "t",
    })


def test_tune_records_trials_and_resumes(teacher, tmp_path):
    out = tmp_path / "runs"
    first = run_tune(_tune_cfg(teacher, out, 2), progress=False)
    assert first["trials"] == 2 and 0 <= first["best_val_acc"] <= 100
    assert set(first["best_params"]) == {"alpha", "T"}
    assert len(RunIndex(out).list("done")) == 2
    again = run_tune(_tune_cfg(teacher, out, 2), progress=False)  # nothing left to do
    assert again["trials"] == 2 and len(RunIndex(out).list("done")) == 2
    more = run_tune(_tune_cfg(teacher, out, 3), progress=False)
    study = optuna.load_study(study_name="t", storage=more["storage"])
    assert len([t for t in study.trials if t.state.name == "COMPLETE"]) == 3
    best = yaml.safe_load(Path(more["best_config"]).read_text())
    assert best["loss"]["T"] == study.best_trial.params["T"]  # the short name T is loss.T


def test_tune_config_errors():
    base = {"teacher": {"run": "x"}, "data": {"name": "digits"}}
    with pytest.raises(KdlensError, match="val_fraction must be > 0"):
        validate(TuneConfig, {"base": base})
    with pytest.raises(KdlensError, match="cannot tune"):
        validate(TuneConfig, {"base": {**base, "data": {"val_fraction": 0.1}}, "space": {"lr": {"low": 0.1, "high": 1}}})


BASE = {"teacher": {"run": "x"}, "data": {"name": "digits", "val_fraction": 0.2}}


@pytest.mark.parametrize("base, space, message", [
    (BASE, {"optim.lrr": {"low": 0.01, "high": 0.1}}, r"space\.optim\.lrr: cannot tune 'optim\.lrr'.*did you mean optim\.lr"),
    (BASE, {"lr": {"low": 0.01, "high": 0.1}}, r"did you mean optim\.lr\?"),
    (BASE, {"batchsize": {"choices": [32, 64]}}, r"did you mean batch_size"),
    (BASE, {"optim": {"low": 0.01, "high": 0.1}}, r"is a section; name a key inside it: optim\.lr"),
    ({**BASE, "kind": "train", "teacher": None}, {"gamma": {"low": 0.1, "high": 1}}, r"not a key of a train config"),
    (BASE, {"batch_size": {"low": 16, "high": 128}}, r"batch_size takes whole numbers: add int: true"),
    (BASE, {"optim.schedule": {"choices": ["cosine", "cosnie"]}}, r"optim\.schedule='cosnie' is not a valid distill config"),
    (BASE, {"optim.lr": {"low": 0.0, "high": 0.1}}, r"optim\.lr=0\.0 is not a valid.*greater than 0"),
    (BASE, {"data.crop_padding": {"low": 0.5, "high": 4, "int": True}}, r"whole-number low"),
    (BASE, {"T": {"low": 1, "high": 4}, "loss.T": {"low": 1, "high": 4}}, r"name the same key loss\.T"),
    (BASE, {"eval_split": {"choices": ["test"]}}, r"kdlens tune sets it"),
    (BASE, {"seed": {"low": 0, "high": 3, "int": True, "choices": [1]}}, r"either choices or a low/high range"),
])
def test_bad_search_space_fails_at_load(tmp_path, base, space, message):
    base = {k: v for k, v in base.items() if v is not None}
    path = tmp_path / "tune.yaml"
    path.write_text(yaml.safe_dump({"base": base, "space": space}))
    with pytest.raises(KdlensError, match=message):
        load_config(TuneConfig, path, [])
    result = CliRunner().invoke(app, ["tune", str(path), "--quiet"])
    assert result.exit_code == 2


def test_base_errors_name_the_key_with_close_matches():
    with pytest.raises(KdlensError, match=r"base\.optim\.lrr: unknown key \(did you mean lr\?\)"):
        validate(TuneConfig, {"base": {"kind": "train", "data": {"val_fraction": 0.2}, "optim": {"lrr": 0.1}}})
    with pytest.raises(KdlensError, match=r"base\.teacher: unknown key"):  # a train config has no teacher
        validate(TuneConfig, {"base": {**BASE, "kind": "train"}})
    with pytest.raises(KdlensError, match=r"kind 'tune' cannot be tuned"):
        validate(TuneConfig, {"base": {**BASE, "kind": "tune"}})


def test_default_space_follows_the_base_kind():
    assert set(validate(TuneConfig, {"base": BASE}).space) == {"gamma", "alpha", "T"}
    train = validate(TuneConfig, {"base": {"kind": "train", "data": {"val_fraction": 0.2}}})
    assert isinstance(train.base, TrainConfig) and not isinstance(train.base, DistillConfig)
    assert set(train.space) == {"optim.lr", "batch_size"}


def test_example_tune_config_loads():
    cfg = load_config(TuneConfig, EXAMPLES / "tune.yaml", [])
    assert {"optim.lr", "batch_size", "T", "alpha"} <= set(cfg.space)


def test_train_base_samples_int_and_categorical_within_bounds(tmp_path):
    out = tmp_path / "runs"
    cfg = validate(TuneConfig, {
        "base": {"kind": "train", "model": {"name": "baseline_student"},
                 "data": {"name": "digits", "val_fraction": 0.2}, "epochs": 1, "out": str(out)},
        "space": {"batch_size": {"low": 16, "high": 64, "int": True, "step": 16},
                  "optim.schedule": {"choices": ["cosine", "constant"]},
                  "optim.lr": {"low": 0.01, "high": 0.1, "log": True}},
        "trials": 2, "name": "sup",
    })
    result = run_tune(cfg, progress=False)
    study = optuna.load_study(study_name="sup", storage=result["storage"])
    trials = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(trials) == 2
    for trial in trials:
        p = trial.params
        assert type(p["batch_size"]) is int and p["batch_size"] in (16, 32, 48, 64)
        assert p["optim.schedule"] in ("cosine", "constant")
        assert type(p["optim.lr"]) is float and 0.01 <= p["optim.lr"] <= 0.1
        (run_dir,) = out.glob(f"sup-trial{trial.number}-*")  # the trial ran with exactly these values
        resolved = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert resolved["kind"] == "train" and resolved["eval_split"] == "val"
        assert all(lookup(resolved, k) == v and type(lookup(resolved, k)) is type(v) for k, v in p.items())

    best_path = Path(result["best_config"])
    assert best_path == out / "sup.best.yaml"
    best = load_config(TrainConfig, best_path, [])
    assert best.batch_size == result["best_params"]["batch_size"]
    assert best.optim.schedule == result["best_params"]["optim.schedule"]
    assert best.optim.lr == result["best_params"]["optim.lr"]
    run = CliRunner().invoke(app, ["train", str(best_path), "--quiet"])
    assert run.exit_code == 0, run.output


def test_cli_tune_writes_a_best_yaml_that_distill_runs_unchanged(teacher, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative paths, as a user writes them
    tune_yaml = tmp_path / "tune.yaml"
    tune_yaml.write_text(yaml.safe_dump({
        "base": {"teacher": {"run": str(teacher)}, "model": {"name": "baseline_student"},
                 "data": {"name": "digits", "val_fraction": 0.2}, "epochs": 1, "out": "runs"},
        "space": {"optim.lr": {"low": 1e-4, "high": 0.1, "log": True},
                  "batch_size": {"choices": [32, 64]},
                  "T": {"low": 1.0, "high": 8.0}, "alpha": {"low": 0.1, "high": 1.0}},
        "trials": 2, "name": "kd",
    }))
    result = CliRunner().invoke(app, ["tune", str(tune_yaml), "--quiet"])
    assert result.exit_code == 0, result.output
    best_path = Path("runs") / "kd.best.yaml"
    assert f"best config: {best_path}" in result.output

    study = optuna.load_study(study_name="kd", storage=f"sqlite:///{(tmp_path / 'runs' / 'kd.optuna.sqlite')}")
    params = study.best_trial.params
    written = yaml.safe_load(best_path.read_text())
    assert {k: lookup(written, k) for k in params} == params  # exactly the best trial's values
    assert all(type(lookup(written, k)) is type(v) for k, v in params.items())
    assert "eval_split" not in written and "name" not in written  # the base's, not the trial's
    best = load_config(DistillConfig, best_path, [])
    assert (best.optim.lr, best.batch_size, best.loss["T"], best.alpha) == (
        params["optim.lr"], params["batch_size"], params["T"], params["alpha"])

    run = CliRunner().invoke(app, ["distill", str(best_path), "--quiet"])
    assert run.exit_code == 0, run.output
    assert "done" in run.output
