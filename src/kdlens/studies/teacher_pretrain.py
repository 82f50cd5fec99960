"""A teacher with outside knowledge for the limited-label study, offline (issue 17).

``teacher_pretrain="disjoint"``: the teacher is first trained, with all labels, on a
stratified reserve of the training split (:func:`kdlens.data.pretrain_split.pretrain_reserve`)
that lies outside every fold's labeled set and outside the student's unlabeled pool; then
each budget's teacher is fine-tuned from it on that budget's labels, as Lee & Wallraven
fine-tune their ImageNet ResNet-18.  Every run of such a study holds the reserve out
(``data.val_fraction`` = the reserve fraction, same ``split_seed``), so its folds are drawn
from the rest; :func:`check_folds_disjoint` verifies that on the folds' actual splits.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from kdlens.config import DataConfig, TrainConfig, validate
from kdlens.data.pretrain_split import check_disjoint, pretrain_reserve
from kdlens.data.reference import DataPair
from kdlens.errors import KdlensError
from kdlens.store import RunDir
from kdlens.train.data_setup import prepare_data, resolve_config_data
from kdlens.train.run import RunHook, run_training

#: pre-training sources of ``--teacher-pretrain`` (besides ``none``)
PRETRAIN_SOURCES = ("disjoint",)
#: reserve fraction by default: 12,000 of Fashion-MNIST's 60,000 training images
DEFAULT_FRACTION = 0.2


@dataclass(frozen=True)
class PretrainPlan:
    """The reserve and the data options every run of the study takes to hold it out."""

    fraction: float
    split_seed: int
    reserve: np.ndarray

    @property
    def data_options(self) -> dict[str, Any]:
        return {"val_fraction": self.fraction, "split_seed": self.split_seed}


def check_pretrain_source(source: str | None) -> str | None:
    """``None``/``"none"`` → ``None``; a known source → itself; else a KdlensError."""
    if source in (None, "none"):
        return None
    if source not in PRETRAIN_SOURCES:
        raise KdlensError(f"unknown teacher pre-training source {source!r}; use one of: none, {', '.join(PRETRAIN_SOURCES)}")
    return source


def plan_reserve(pair: DataPair, fraction: float, split_seed: int = 0) -> PretrainPlan:
    """The reserve of ``pair``'s training split (see the module docstring)."""
    reserve, _ = pretrain_reserve(pair.train.labels.numpy(), fraction, split_seed)
    return PretrainPlan(float(fraction), split_seed, reserve)


def check_folds_disjoint(plan: PretrainPlan, pair: DataPair, fold_data: Sequence[dict[str, Any]]) -> None:
    """Each fold's labeled set and unlabeled pool (as its runs will draw them) avoid the reserve."""
    for data in fold_data:
        prepared = prepare_data(validate(DataConfig, data), pair)
        where = f"budget {data.get('budget')}, fold {data.get('fold')}"
        check_disjoint(plan.reserve, **{f"labeled ({where})": prepared.train_indices,
                                        f"unlabeled ({where})": prepared.unlabeled_indices})


class _KeepReserve(RunHook):
    """Saves the reserve's indices into the full training split with the run."""

    def __init__(self, reserve: np.ndarray) -> None:
        self.reserve = reserve

    def start(self, run_dir: RunDir, resume: bool) -> None:
        run_dir.save_split("pretrain_reserve", self.reserve)


def pretrain_teacher(plan: PretrainPlan, pair: DataPair, config: dict[str, Any], progress: bool = False) -> str:
    """Train ``config`` (a TrainConfig mapping without ``data`` budget) on the reserve with all
    its labels; returns the run directory (the fine-tuning runs' ``model.init``)."""
    train = pair.train.subset(plan.reserve)
    digest = hashlib.sha256(f"{pair.train.name}:{pair.fingerprint}:".encode() + plan.reserve.tobytes()).hexdigest()
    reserve_pair = DataPair(train, pair.test, pair.path, fingerprint=f"pretrain-reserve:{digest}",
                            reason=f"pre-training reserve: {len(train)} of {len(pair.train)} training examples")
    cfg = validate(TrainConfig, config)
    return str(run_training(cfg, resume=True, progress=progress, pair=reserve_pair, hook=_KeepReserve(plan.reserve)).path)


def load_pair(data: dict[str, Any]) -> DataPair:
    """The train/test pair a study's runs read (``data``: a DataConfig mapping)."""
    return resolve_config_data(validate(DataConfig, data))
