"""Activation-boundary distillation (Heo et al. 2019)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdlens.distill.losses.adapters import match_spatial
from kdlens.distill.losses.base import HintLoss, register_loss
from kdlens.distill.losses.fitnet import repdistiller_regressor
from kdlens.errors import KdlensError

FORMS = ("paper", "repdistiller")


def _connector(student_shape: tuple[int, ...], teacher_shape: tuple[int, ...]) -> nn.Module:
    """The paper's connector: 1×1 convolution (no bias) + batch norm (linear + BN for vectors)."""
    if len(student_shape) != len(teacher_shape):
        raise KdlensError(f"ab: cannot connect a student feature {student_shape} to a teacher feature {teacher_shape}")
    if len(teacher_shape) == 3:
        return nn.Sequential(nn.Conv2d(student_shape[0], teacher_shape[0], 1, bias=False), nn.BatchNorm2d(teacher_shape[0]))
    return nn.Sequential(nn.Linear(student_shape[0], teacher_shape[0], bias=False), nn.BatchNorm1d(teacher_shape[0]))


def _repdistiller_connector(student_shape: tuple[int, ...], teacher_shape: tuple[int, ...]) -> nn.Module:
    """RepDistiller's ``Connector``: none when channels and height agree, else its FitNet
    regressor without the ReLU (convolution by the ``ConvReg`` rule + BN)."""
    if len(student_shape) != len(teacher_shape):
        raise KdlensError(f"ab: cannot connect a student feature {student_shape} to a teacher feature {teacher_shape}")
    if student_shape[:2] == teacher_shape[:2]:
        return nn.Identity()
    return repdistiller_regressor(student_shape, teacher_shape, relu=False)


def repdistiller_layer_weights(n: int) -> list[float]:
    """RepDistiller's AB weights: 3/1000 · 2^(i − n + 1) for layer i = 0 … n − 1 (the last
    layer 3/1000, each earlier one half the next)."""
    return [3.0 / 1000.0 * 2.0 ** (i - n + 1) for i in range(n)]


@register_loss("ab")
class ABLoss(HintLoss):
    r"""Heo, Lee, Yun & Choi 2019, *Knowledge Transfer via Distillation of Activation
    Boundaries Formed by Hidden Neurons* (AAAI), §3.

    The student should reproduce which teacher neurons are active (the activation
    boundary), not their values.  With ρ(x) = 1[x > 0], σ = ReLU, margin μ and a
    connector r(·) on the student:

    .. math::
        L = \sum_i w_i\,\frac1B\sum_b \big\|\rho(T_{i,b})\odot\sigma(\mu\mathbf 1 - r_i(S_{i,b}))
            + (1-\rho(T_{i,b}))\odot\sigma(\mu\mathbf 1 + r_i(S_{i,b}))\big\|_2^2

    T and S are *pre-activation* responses: tap the layers before their ReLU.  Margin
    μ = 1 (paper).

    ``form="repdistiller"`` (default; RepDistiller's ``distiller_zoo/AB.py`` and
    ``Connector``): w_i = 3/1000 · 2^(i − n + 1) over the n pairs in order (the last
    pair 0.003), and no connector where student and teacher have the same channels and
    height — otherwise a convolution by RepDistiller's FitNet rule + BN (3×3 stride 2
    when the student map is twice the teacher's, else a "valid" convolution).
    ``form="paper"``: w_i = 1 and always the paper's connector, a 1×1 convolution + BN
    from C_s to C_t (linear + BN for vectors), the output resized to the teacher's H×W
    if they differ (kdlens: pooling / bilinear).  With equal per-pair terms the paper
    form is (1000/3)·n / Σ_i 2^(i−n+1) times RepDistiller's (333× for one pair, 571× for
    three); on the same tensors and three pairs it measured 561× (identity connectors)
    and 515× (its own connectors).  ``layer_weights`` replaces w_i in either form.

    Phases: the paper uses this transfer to *initialise* the student
    (``requires_pretraining``: student + connectors minimise :meth:`pretrain_loss`;
    RepDistiller: 30 epochs at the main learning rate), then trains with CE (or KD)
    alone (``active_in_main_phase = False``).  Because the term exists only there, the
    objective's β weights the pre-training loss (``pretrain_weighted_by_beta``):
    RepDistiller applies no β there, so its scale is β = 1 with ``form="repdistiller"``.
    """

    requires_pretraining = True
    pretrain_trains_student = True
    active_in_main_phase = False
    #: the objective multiplies :meth:`pretrain_loss` by β (the term lives only there)
    pretrain_weighted_by_beta = True

    def __init__(
        self,
        student_shapes: Sequence[Sequence[int]],
        teacher_shapes: Sequence[Sequence[int]],
        form: str = "repdistiller",
        margin: float = 1.0,
        layer_weights: Sequence[float] | None = None,
    ) -> None:
        super().__init__(student_shapes, teacher_shapes)
        if form not in FORMS:
            raise KdlensError(f"ab: form must be 'paper' or 'repdistiller', got {form!r}")
        if layer_weights is not None and len(layer_weights) != self.num_pairs:
            raise KdlensError(f"ab: {len(layer_weights)} layer_weights for {self.num_pairs} layer pairs")
        self.form = form
        self.margin = float(margin)
        self.layer_weights = None if layer_weights is None else [float(w) for w in layer_weights]
        make = _repdistiller_connector if form == "repdistiller" else _connector
        self.connectors = nn.ModuleList(make(s, t) for s, t in zip(self.student_shapes, self.teacher_shapes))

    def weights(self) -> list[float]:
        """w_i of each layer pair (``layer_weights`` if given, else the form's)."""
        if self.layer_weights is not None:
            return list(self.layer_weights)
        if self.form == "repdistiller":
            return repdistiller_layer_weights(self.num_pairs)
        return [1.0] * self.num_pairs

    def pair_loss(self, i: int, f_s: Tensor, f_t: Tensor, **context) -> Tensor:
        r = self.connectors[i](f_s)
        if r.dim() == 4:
            r = match_spatial(r, f_t.shape[-2:])
        active = f_t > 0
        per_neuron = torch.where(active, F.relu(self.margin - r), F.relu(self.margin + r)).pow(2)
        return self.weights()[i] * per_neuron.flatten(1).sum(dim=1).mean()

    def pretrain_loss(self, student_feats: Sequence[Tensor], teacher_feats: Sequence[Tensor], **context) -> Tensor:
        """Initialisation phase: the AB loss alone (train student layers + connectors);
        the objective multiplies it by β."""
        return self.forward(student_feats, teacher_feats, **context)

    def pretrain_parameters(self) -> Iterator[nn.Parameter]:
        return self.connectors.parameters()
