"""FitNets: hints for thin deep nets (Romero et al. 2015)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from kdlens.distill.losses.adapters import hint_regressor
from kdlens.distill.losses.base import HintLoss, register_loss


@register_loss("fitnet")
class FitNetLoss(HintLoss):
    r"""Romero, Ballas, Kahou, Chassang, Gatta & Bengio 2015, *FitNets: Hints for Thin
    Deep Nets* (ICLR), eq. 3:

    .. math::
        L_{HT} = \tfrac12\,\|u_h(x) - r(v_g(x); W_r)\|^2

    u_h: the teacher's hint layer; v_g: the student's guided layer; r: a regressor
    on the student (adapter, see :func:`~kdlens.distill.losses.adapters.hint_regressor`:
    a "valid" convolution with kernel N_g − N_h + 1, a transposed one if the
    student map is smaller, a linear layer for vectors).  The paper gives r the
    same non-linearity as the hint layer: ``regressor_relu=True`` for post-ReLU
    hints.  kdlens averages the squared error over elements (``F.mse_loss``), as
    the common code does, so that RepDistiller's β = 100 keeps its scale (the
    paper's ½‖·‖² sums over elements).

    ``regressor_bn=True`` (with ``regressor_relu=True``) gives RepDistiller's regressor,
    conv → BN → ReLU, the one its β = 100 was tuned with. With the paper's plain
    regressor, β = 100 diverged within 5 steps from a resnet56 teacher on Fashion-MNIST
    (hint features with mean squares 7.3, 5.9 and 3.4 at its three conventional points;
    benchmarks/RESULTS.md), so kdlens's hint study uses β = 10 there.

    Two-stage training (the paper, §2.2): ``two_stage=True`` sets
    ``requires_pretraining``; stage 1 trains the student up to the guided layer
    together with the regressors on :meth:`pretrain_loss` (= this hint loss);
    stage 2 trains the whole student with KD (the loop builds the stage-2
    objective, e.g. ``"kd"``).  ``two_stage=False`` (RepDistiller) adds the hint
    term to the main objective instead.
    """

    pretrain_trains_student = True

    def __init__(
        self,
        student_shapes: Sequence[Sequence[int]],
        teacher_shapes: Sequence[Sequence[int]],
        two_stage: bool = False,
        regressor_relu: bool = False,
        regressor_bn: bool = False,
    ) -> None:
        super().__init__(student_shapes, teacher_shapes)
        self.two_stage = bool(two_stage)
        self.requires_pretraining = self.two_stage
        # the paper's stage 2 is KD alone: the hint term is initialisation only
        self.active_in_main_phase = not self.two_stage
        self.regressor_relu = bool(regressor_relu)
        self.regressor_bn = bool(regressor_bn)
        self.regressors = nn.ModuleList(
            hint_regressor(s, t, relu=regressor_relu, batch_norm=regressor_bn)
            for s, t in zip(self.student_shapes, self.teacher_shapes)
        )

    def pair_loss(self, i: int, f_s: Tensor, f_t: Tensor, **context) -> Tensor:
        return F.mse_loss(self.regressors[i](f_s), f_t)

    def pretrain_loss(self, student_feats: Sequence[Tensor], teacher_feats: Sequence[Tensor], **context) -> Tensor:
        """Stage 1: the hint loss alone (train the student's lower layers + regressors)."""
        return self.forward(student_feats, teacher_feats, **context)

    def pretrain_parameters(self) -> Iterator[nn.Parameter]:
        return self.regressors.parameters()
