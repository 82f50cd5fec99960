"""Training engine and loops (supervised now; distillation/semi-supervised plug in as loops)."""

from kdlens.train.evaluate import EvalSet, evaluate, predict_logits
from kdlens.train.loop import Batch, Loop, StepOutput, SupervisedLoop
from kdlens.train.trainer import Trainer, TrainResult, resolve_device

import kdlens

kdlens.make_callable(__name__)  # kdlens.train(...) is the Python API's function (kdlens/__init__.py)

__all__ = [
    "Batch",
    "EvalSet",
    "Loop",
    "StepOutput",
    "SupervisedLoop",
    "TrainResult",
    "Trainer",
    "evaluate",
    "predict_logits",
    "resolve_device",
]
