"""``kdlens tune``: Bayesian search of γ, α, β, T with Optuna on a validation split.

Every trial is an ordinary distillation run in the run store (``TUNE-trialN``), so a
finished trial is never re-trained; the Optuna study lives in ``OUT/NAME.optuna.sqlite``
and a killed search resumes, running only the trials still missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kdlens.config import TuneConfig, validate
from kdlens.config.schema import DistillConfig
from kdlens.errors import KdlensError


def trial_config(cfg: TuneConfig, params: dict[str, float], number: int) -> DistillConfig:
    data = cfg.base.model_dump()
    for key, value in params.items():
        if key == "T":
            data["loss"] = {**data.get("loss", {}), "T": value}
        else:
            data[key] = value
    data["eval_split"] = "val"
    data["name"] = f"{cfg.name}-trial{number}"
    return validate(DistillConfig, data, source=f"trial {number}")


def run_tune(cfg: TuneConfig, progress: bool = True) -> dict[str, Any]:
    try:
        import optuna
    except ImportError:
        raise KdlensError("kdlens tune needs Optuna: pip install 'kdlens[tune]'") from None
    from kdlens.explain.hint_search import auto_hint_layers
    from kdlens.train.distill_run import run_distillation

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    Path(cfg.base.out).mkdir(parents=True, exist_ok=True)
    storage = f"sqlite:///{Path(cfg.base.out).resolve() / (cfg.name + '.optuna.sqlite')}"
    study = optuna.create_study(
        study_name=cfg.name, storage=storage, load_if_exists=True, direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=cfg.seed),
    )
    # trials left RUNNING by a killed search are closed as failed, then re-asked
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
    done = lambda: [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]  # noqa: E731
    while len(done()) < cfg.trials:
        trial = study.ask()
        params = {k: trial.suggest_float(k, r.low, r.high, log=r.log) for k, r in cfg.space.items()}
        outcome = run_distillation(trial_config(cfg, params, trial.number), progress=progress, hint_search=auto_hint_layers)
        value = outcome.metrics.get("best_acc")
        if value is None:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            continue
        study.tell(trial, value)
        if progress:
            print(f"trial {trial.number}: {params} → val acc {value:.2f}%")
    best = study.best_trial
    return {"best_params": best.params, "best_val_acc": best.value, "trials": len(done()), "storage": storage}
