"""``kdlens tune``: Bayesian search (Optuna TPE) of any config keys on a validation split.

The base is a distill config (the default) or a train config (``kind: train``); the space
maps its dotted keys (``optim.lr``, ``batch_size``, ``loss.T``, ``gamma`` …) to float / int
ranges or choices (:mod:`kdlens.config.search_space`).  Every trial is an ordinary run in
the run store (``NAME-trialN``, evaluated on ``eval_split: val``), so a finished trial is
never re-trained; the Optuna study lives in ``OUT/NAME.optuna.sqlite`` and a killed search
resumes, running only the trials still missing.  After the search ``OUT/NAME.best.yaml``
holds the base with the best trial's values applied: ``kdlens train|distill`` run it as is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from kdlens.config import TuneConfig, validate
from kdlens.config.schema import TrainConfig
from kdlens.config.search_space import SearchParam
from kdlens.errors import KdlensError, TrainingDivergedError
from kdlens.store.atomic import atomic_write_text

MAX_FAILURES_IN_A_ROW = 5


def trial_config(cfg: TuneConfig, params: dict[str, Any], number: int) -> TrainConfig:
    """Trial ``number``: ``cfg.base`` with ``params`` applied as ``key=value`` overrides."""
    return validate(type(cfg.base), cfg.trial_mapping(params, number), source=f"trial {number}")


def suggest(trial: Any, name: str, dim: SearchParam) -> Any:
    """One value of ``dim`` from an Optuna trial (``suggest_float`` / ``_int`` / ``_categorical``)."""
    if dim.choices is not None:
        return trial.suggest_categorical(name, dim.choices)
    assert dim.low is not None and dim.high is not None
    if dim.integer:
        return trial.suggest_int(name, int(dim.low), int(dim.high), step=int(dim.step or 1), log=dim.log)
    return trial.suggest_float(name, dim.low, dim.high, step=dim.step, log=dim.log)


def best_config_path(cfg: TuneConfig) -> Path:
    """``OUT/NAME.best.yaml``, beside the study's ``OUT/NAME.optuna.sqlite``."""
    return Path(cfg.base.out) / f"{cfg.name}.best.yaml"


def write_best_config(cfg: TuneConfig, params: dict[str, Any], header: str) -> Path:
    """Write the base with ``params`` applied (only the keys the base states, plus these) and
    check that it loads as the base's kind of config."""
    data = cfg.best_mapping(params)
    validate(type(cfg.base), data, source="best config")
    path = best_config_path(cfg)
    body = yaml.safe_dump(data, sort_keys=False, default_flow_style=None, allow_unicode=True)
    atomic_write_text(path, header + body)
    return path


def check_inputs(cfg: TuneConfig) -> None:
    """The base config's data and (for distillation) teacher load, before any file is written."""
    from kdlens.config import DistillConfig
    from kdlens.train.data_setup import prepare_data

    data = prepare_data(cfg.base.data)
    if isinstance(cfg.base, DistillConfig):
        from kdlens.train.teacher import load_teacher

        t = cfg.base.teacher
        load_teacher(t.run, data.train, t.model, which=t.checkpoint, weights=t.weights, kwargs=t.kwargs)


def run_tune(cfg: TuneConfig, progress: bool = True) -> dict[str, Any]:
    try:
        import optuna
    except ImportError:
        raise KdlensError("kdlens tune needs Optuna: pip install 'kdlens[tune]'") from None

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    check_inputs(cfg)  # a bad teacher or dataset fails here: nothing is written before the inputs are checked
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
    run = _runner(cfg)
    failures = 0
    assert cfg.space is not None  # filled in by TuneConfig
    while len(done()) < cfg.trials:
        trial = study.ask()
        params = {key: suggest(trial, key, dim) for key, dim in cfg.space.items()}
        try:
            value = run(trial_config(cfg, params, trial.number), progress).metrics.get("best_acc")
        except TrainingDivergedError as exc:  # e.g. a too-large lr: a failed trial, not a failed search
            value = None
            if progress:
                print(f"trial {trial.number}: {params} diverged ({exc})")
        except BaseException:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            raise
        if value is None:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            failures += 1
            if failures >= MAX_FAILURES_IN_A_ROW:
                raise KdlensError(f"{failures} trials in a row failed (last: {params}); narrow the search space")
            continue
        failures = 0
        study.tell(trial, value)
        if progress:
            print(f"trial {trial.number}: {params} → val acc {value:.2f}%")
    best = study.best_trial
    header = (f"# kdlens tune {cfg.name}: the best of {len(done())} trials (trial {best.number}, "
              f"val acc {best.value:.2f}%): {best.params}\n"
              f"# run it with: kdlens {cfg.base.kind} {best_config_path(cfg)}\n")
    path = write_best_config(cfg, best.params, header)
    return {"best_params": best.params, "best_val_acc": best.value, "best_trial": best.number,
            "best_config": str(path), "trials": len(done()), "storage": storage}


def _runner(cfg: TuneConfig):
    """``run(trial_cfg, progress) -> RunOutcome`` for the base's kind."""
    if cfg.base.kind == "train":
        from kdlens.train.run import run_training

        return lambda c, progress: run_training(c, resume=True, progress=progress)  # an interrupted trial continues
    from kdlens.explain.hint_search import auto_hint_layers
    from kdlens.train.distill_run import run_distillation

    return lambda c, progress: run_distillation(c, resume=True, progress=progress, hint_search=auto_hint_layers)
