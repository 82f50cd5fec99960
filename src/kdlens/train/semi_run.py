"""One recorded semi-supervised run: ``cfg.semi`` loop on the labeled budget + unlabeled pool.

``kdlens train semi=fixmatch data.budget=400`` (or a YAML file with ``semi:``) comes here;
the run is stored like any training run (kind ``train``; ``semi`` and ``semi_options`` are
part of its identity), with the method's resolved hyper-parameters and, for methods that
keep a weight EMA, the EMA model's test accuracy in its result.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from kdlens.config import TrainConfig
from kdlens.data.reference import DataPair
from kdlens.data.strong_augment import RandAugment
from kdlens.errors import KdlensError
from kdlens.store import RunDir
from kdlens.train.data_setup import PreparedData, prepare_data
from kdlens.train.evaluate import evaluate
from kdlens.train.run import (
    RunOutcome,
    build_student,
    execute_run,
    log_precision,
    run_identity,
    save_model_card,
    short_name,
)
from kdlens.train.run_trackers import run_trackers
from kdlens.train.semi_loops import SEMI_LOOPS, RawBatches, SemiSupervisedLoop, Views, resolve_params
from kdlens.train.trackers import check_trackers
from kdlens.train.trainer import Trainer, resolve_device

#: weak augmentation's shift when data.crop_padding is not given: 12.5 % of the side (FixMatch §2.3)
WEAK_SHIFT_FRACTION = 0.125


def build_semi_loop(cfg: TrainConfig, data: PreparedData, device: torch.device) -> SemiSupervisedLoop:
    """The ``cfg.semi`` loop over ``data``'s labeled split and unlabeled pool (in memory)."""
    if cfg.semi is None:
        raise KdlensError("build_semi_loop needs cfg.semi (pseudo_label, pi_model, mean_teacher, mixmatch, fixmatch)")
    cls = SEMI_LOOPS.get(cfg.semi)
    params = resolve_params(cls.Params, cfg.semi_options, cfg.semi)
    if data.streamed:
        raise KdlensError(f"semi={cfg.semi} needs the data in memory (its views are made on tensors): "
                          "use data.stream=off, or a dataset below data.memory_limit_mb")
    if data.unlabeled_indices is None or len(data.unlabeled_indices) == 0:
        raise KdlensError(f"semi={cfg.semi}: no unlabeled examples are left (data.budget={cfg.data.budget} of "
                          f"{len(data.train)}; data.unlabeled_limit={cfg.data.unlabeled_limit})")
    images = data.train.images
    if images.ndim != 4:
        raise KdlensError(f"semi={cfg.semi} augments N×C×H×W images; {cfg.data.name!r} has shape {tuple(images.shape)}")
    height, width = images.shape[2], images.shape[3]
    padding = cfg.data.crop_padding if cfg.data.crop_padding is not None else round(WEAK_SHIFT_FRACTION * min(height, width))
    hflip = cfg.data.hflip if cfg.data.hflip is not None else True
    strong = RandAugment(params.num_ops, cutout=params.cutout) if cls.needs_strong else None
    views = Views(padding, hflip, data.train.mean, data.train.std, strong)
    labeled = RawBatches(images, data.train.labels, data.train_indices, cfg.batch_size, device)
    unlabeled = RawBatches(images, data.train.labels, data.unlabeled_indices, cfg.batch_size * params.mu, device)
    return cls(labeled, unlabeled, views, cfg.epochs, params)


def run_semi_supervised(
    cfg: TrainConfig,
    resume: bool = False,
    progress: bool = True,
    *,
    restart: bool = False,
    resume_from: str = "last",
    resume_strict: bool = False,
    model: nn.Module | None = None,
    pair: DataPair | None = None,
) -> RunOutcome:
    """Train ``cfg.model`` with the ``cfg.semi`` method, recorded in ``cfg.out``.

    Arguments as :func:`kdlens.train.run.run_training`.  The labeled set is ``data.budget``
    balanced examples (fold ``data.fold``), the unlabeled pool the rest of the training split
    (capped by ``data.unlabeled_limit``); its labels are never read."""
    if cfg.semi is None:
        raise KdlensError("run_semi_supervised needs cfg.semi: one of " + ", ".join(SEMI_LOOPS.names()))
    resume = resume or resume_from != "last"
    data = prepare_data(cfg.data, pair, log=progress)
    device = resolve_device(cfg.device)
    student = build_student(cfg, data, device, model)
    check_trackers(cfg.log)
    loop = build_semi_loop(cfg, data, device)  # bad options fail here, before a run is recorded
    log_precision(cfg, progress)

    def body(run_dir: RunDir) -> dict[str, Any]:
        for split_name, idx in data.splits.items():
            run_dir.save_split(split_name, idx)
        save_model_card(run_dir, cfg, student, data)
        eval_set = data.eval_set(device) if cfg.eval_split == "test" else data.val_set()
        with run_trackers(cfg, run_dir) as tracked:
            trainer = Trainer(
                student, loop, cfg.optim, cfg.epochs, eval_set=eval_set, run_dir=run_dir, seed=cfg.seed,
                device=device, bf16=cfg.bf16, channels_last=cfg.channels_last, eval_every=cfg.eval_every,
                progress=progress, description=f"{cfg.semi}: {cfg.model.name} on {cfg.data.name}",
                trackers=tracked.trackers,
            )
            loop.bind(trainer.model, trainer.optimizer)
            metrics = trainer.fit(resume=resume).metrics()
            if loop.ema is not None and eval_set is not None:
                scores = evaluate(loop.ema.model, eval_set, device, bf16=cfg.bf16, channels_last=cfg.channels_last)
                metrics["ema_final_acc"], metrics["ema_final_acc5"] = scores["acc"], scores["acc5"]
            metrics["semi"] = loop.describe()
            metrics["labeled"] = int(len(data.train_indices))
            metrics["unlabeled"] = int(len(data.unlabeled_indices))
            metrics["data_path"] = data.path
            return tracked.finish(metrics)

    default = f"{cfg.semi}-{short_name(cfg.model.name)}-{short_name(cfg.data.name)}"
    return execute_run(
        "train", run_identity(cfg, student, data), cfg.model_dump(), cfg.out, cfg.name or default, resume, body,
        restart=restart, resume_from=resume_from, resume_strict=resume_strict,
    )


def run_train_config(cfg: TrainConfig, *args: Any, **kwargs: Any) -> RunOutcome:
    """A training config's run: :func:`run_semi_supervised` when ``cfg.semi`` is set, else
    :func:`kdlens.train.run.run_training` (same arguments) — for entry points that take any
    ``kdlens train`` config."""
    if cfg.semi is not None:
        return run_semi_supervised(cfg, *args, **kwargs)
    from kdlens.train.run import run_training

    return run_training(cfg, *args, **kwargs)
