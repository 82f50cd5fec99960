import optuna
import pytest

from kdlens.config import TrainConfig, TuneConfig, validate
from kdlens.errors import KdlensError
from kdlens.store import RunIndex
from kdlens.studies.tune import run_tune
from kdlens.train.run import run_training


def _tune_cfg(teacher, out, trials):
    return validate(TuneConfig, {
        "base": {"teacher": {"run": str(teacher)}, "model": {"name": "baseline_student"},
                 "data": {"name": "digits", "val_fraction": 0.2}, "epochs": 1, "out": str(out)},
        "space": {"alpha": {"low": 0.1, "high": 1.0}, "T": {"low": 1.0, "high": 8.0}},
        "trials": trials, "name": "t",
    })


def test_tune_records_trials_and_resumes(tmp_path):
    teacher = run_training(validate(TrainConfig, {"model": {"name": "baseline_student"}, "data": {"name": "digits"},
                                                  "epochs": 1, "out": str(tmp_path / "t"), "name": "teacher"}),
                           progress=False).path
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


def test_tune_config_errors():
    base = {"teacher": {"run": "x"}, "data": {"name": "digits"}}
    with pytest.raises(KdlensError, match="val_fraction must be > 0"):
        validate(TuneConfig, {"base": base})
    with pytest.raises(KdlensError, match="cannot tune"):
        validate(TuneConfig, {"base": {**base, "data": {"val_fraction": 0.1}}, "space": {"lr": {"low": 0.1, "high": 1}}})
