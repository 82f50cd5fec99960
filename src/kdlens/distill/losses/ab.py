"""Activation-boundary distillation (Heo et al. 2019)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdlens.distill.losses.adapters import match_spatial
from kdlens.distill.losses.base import HintLoss, register_loss
from kdlens.errors import KdlensError


def _connector(student_shape: tuple[int, ...], teacher_shape: tuple[int, ...]) -> nn.Module:
    if len(student_shape) != len(teacher_shape):
        raise KdlensError(f"ab: cannot connect a student feature {student_shape} to a teacher feature {teacher_shape}")
    if len(teacher_shape) == 3:
        return nn.Sequential(nn.Conv2d(student_shape[0], teacher_shape[0], 1, bias=False), nn.BatchNorm2d(teacher_shape[0]))
    return nn.Sequential(nn.Linear(student_shape[0], teacher_shape[0], bias=False), nn.BatchNorm1d(teacher_shape[0]))


@register_loss("ab")
class ABLoss(HintLoss):
    r"""Heo, Lee, Yun & Choi 2019, *Knowledge Transfer via Distillation of Activation
    Boundaries Formed by Hidden Neurons* (AAAI), §3.

    The student should reproduce which teacher neurons are active (the activation
    boundary), not their values.  With ρ(x) = 1[x > 0], σ = ReLU, margin μ and a
    connector r(·) on the student:

    .. math::
        L = \frac1B\sum_b \big\|\rho(T_b)\odot\sigma(\mu\mathbf 1 - r(S_b))
            + (1-\rho(T_b))\odot\sigma(\mu\mathbf 1 + r(S_b))\big\|_2^2

    T and S are *pre-activation* responses: tap the layers before their ReLU.
    Connector (paper): 1×1 convolution + batch norm from C_s to C_t channels
    (linear + batch norm for vectors); if spatial sizes differ, the connector's
    output is resized to the teacher's (kdlens: pooling / bilinear).  Margin
    μ = 1 (paper).  ``layer_weights`` optionally weights the pairs (equal by
    default).  The paper sums squares over neurons; RepDistiller rescales (÷1000
    and per-layer weights), so β = 1 here is not numerically its β.

    Phases: the paper uses this transfer to *initialise* the student
    (``requires_pretraining``: student + connectors minimise :meth:`pretrain_loss`;
    RepDistiller: 30 epochs), then trains with CE (or KD) alone
    (``active_in_main_phase = False``).
    """

    requires_pretraining = True
    pretrain_trains_student = True
    active_in_main_phase = False

    def __init__(
        self,
        student_shapes: Sequence[Sequence[int]],
        teacher_shapes: Sequence[Sequence[int]],
        margin: float = 1.0,
        layer_weights: Sequence[float] | None = None,
    ) -> None:
        super().__init__(student_shapes, teacher_shapes)
        if layer_weights is not None and len(layer_weights) != self.num_pairs:
            raise KdlensError(f"ab: {len(layer_weights)} layer_weights for {self.num_pairs} layer pairs")
        self.margin = float(margin)
        self.layer_weights = None if layer_weights is None else [float(w) for w in layer_weights]
        self.connectors = nn.ModuleList(_connector(s, t) for s, t in zip(self.student_shapes, self.teacher_shapes))

    def pair_loss(self, i: int, f_s: Tensor, f_t: Tensor, **context) -> Tensor:
        r = self.connectors[i](f_s)
        if r.dim() == 4:
            r = match_spatial(r, f_t.shape[-2:])
        active = f_t > 0
        per_neuron = torch.where(active, F.relu(self.margin - r), F.relu(self.margin + r)).pow(2)
        weight = 1.0 if self.layer_weights is None else self.layer_weights[i]
        return weight * per_neuron.flatten(1).sum(dim=1).mean()

    def pretrain_loss(self, student_feats: Sequence[Tensor], teacher_feats: Sequence[Tensor], **context) -> Tensor:
        """Initialisation phase: the AB loss alone (train student layers + connectors)."""
        return self.forward(student_feats, teacher_feats, **context)

    def pretrain_parameters(self) -> Iterator[nn.Parameter]:
        return self.connectors.parameters()
