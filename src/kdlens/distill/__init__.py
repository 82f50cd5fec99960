"""Distillation: losses (response, feature, relation), the objective and the method table.

>>> from kdlens.distill import build_objective
>>> objective = build_objective("kd")
>>> objective.weights
{'gamma': 0.1, 'alpha': 0.9, 'beta': 0.0}
"""

from kdlens.distill.losses import LOSSES, HintLoss, LogitLoss, create_loss, register_loss
from kdlens.distill.methods import METHODS, MethodSpec, describe_methods, method_spec
from kdlens.distill.objective import Objective, build_objective, labeled_cross_entropy

import kdlens

kdlens.make_callable(__name__)  # kdlens.distill(...) is the Python API's function (kdlens/__init__.py)

__all__ = [
    "LOSSES",
    "METHODS",
    "HintLoss",
    "LogitLoss",
    "MethodSpec",
    "Objective",
    "build_objective",
    "create_loss",
    "describe_methods",
    "labeled_cross_entropy",
    "method_spec",
    "register_loss",
]
