"""The models of Vats 2021 (*Response-based knowledge distillation*, thesis; see also Vats &
Crandall 2021, arXiv:2112.10047): two CNN teachers, a small CNN student and a linear
baseline student, for 28×28 (Fashion-MNIST), 32×32 (CIFAR-10) and 8×8 (digits) inputs.

The thesis's exact layer shapes were not available to us: the CNN layer shapes below are
kdlens's own choice, matched to the published totals at 28×28×1 with 10 classes.
Each CNN is three stages of [conv3×3 (no bias) → BN → ReLU] units, each stage ending in a
2×2 max pool, then flatten → dense → ReLU → ``penultimate`` → (dropout) → linear ``fc``.

=====================  ===========================  =====  =========  ===============
model                  conv units (stage widths)    dense  dropout    params 28×28×1
=====================  ===========================  =====  =========  ===============
thesis_teacher_small   1 per stage, 64/128/256      512    0          1,555,402 (~1.56M)
thesis_teacher_large   2 per stage, 64/128/256      512    0.5 (*)    2,330,442 (~2.34M)
thesis_student         1 per stage, 16/32/64        256    0            173,690
baseline_student       none: one linear layer on the flattened image   7,850
=====================  ===========================  =====  =========  ===============

(*) ``dropout`` before the classifier and ``dropout / 2`` after each pooled stage.
The flattened size depends on ``input_size`` (default 28; any size ≥ 8): 28 → 3×3, 32 → 4×4,
8 → 1×1 after the three pools. The baseline has ``in_channels·input_size² · C + C``
parameters: 7,850 at 28×28×1 and 30,730 at 32×32×3 with 10 classes.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from kdlens.errors import KdlensError
from kdlens.models.basic_block import init_weights
from kdlens.models.registry import register_model


class ConvUnit(nn.Module):
    """conv3×3 → BN → ``preact`` → ReLU (the hook on ``preact`` gives the pre-ReLU feature)."""

    def __init__(self, in_planes: int, planes: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_planes, planes, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(planes)
        self.preact = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.preact(self.bn(self.conv(x))))


def _check_size(name: str, input_size: int) -> None:
    if input_size < 8:
        raise KdlensError(f"{name}: input_size must be at least 8, got {input_size}")


class _SizedModel(nn.Module):
    """Checks that inputs have the ``input_size`` the flattened layer was built for."""

    input_size: int

    def _check_input(self, x: Tensor) -> None:
        if x.shape[-2:] != (self.input_size, self.input_size):
            raise KdlensError(
                f"{type(self).__name__} was built for {self.input_size}×{self.input_size} inputs but got "
                f"{tuple(x.shape[-2:])}; create it with input_size={x.shape[-1]}"
            )


class ThesisCNN(_SizedModel):
    """Three pooled conv stages + one hidden dense layer; see the module docstring."""

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 1,
        input_size: int = 28,
        widths: tuple[int, int, int] = (64, 128, 256),
        units_per_stage: int = 1,
        hidden: int = 512,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        _check_size(type(self).__name__, input_size)
        self.input_size = input_size
        stages: list[tuple[str, ...]] = []
        planes, size = in_channels, input_size
        for s, width in enumerate(widths):
            units: list[nn.Module] = []
            for _ in range(units_per_stage):
                units.append(ConvUnit(planes, width))
                planes = width
            units += [nn.MaxPool2d(2), nn.Dropout(dropout / 2)]
            setattr(self, f"stage{s + 1}", nn.Sequential(*units))
            stages.append(tuple(f"stage{s + 1}.{i}" for i in range(units_per_stage)))
            size //= 2
        self.flatten = nn.Flatten(1)
        self.fc1 = nn.Linear(planes * size * size, hidden)
        self.penultimate = nn.Identity()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(hidden, num_classes)
        self.hint_stages = tuple(stages)
        self.hint_blocks = sum(self.hint_stages, ())
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        x = self.stage3(self.stage2(self.stage1(x)))
        h = self.penultimate(F.relu(self.fc1(self.flatten(x))))
        return self.fc(self.dropout(h))


class LinearStudent(_SizedModel):
    """Logistic regression on the flattened image (``penultimate`` = the flattened input)."""

    def __init__(self, num_classes: int, in_channels: int = 1, input_size: int = 28) -> None:
        super().__init__()
        _check_size(type(self).__name__, input_size)
        self.input_size = input_size
        self.penultimate = nn.Flatten(1)
        self.fc = nn.Linear(in_channels * input_size * input_size, num_classes)
        self.hint_stages: tuple[tuple[str, ...], ...] = ()
        self.hint_blocks: tuple[str, ...] = ()

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        return self.fc(self.penultimate(x))


@register_model("thesis_teacher_small")
def thesis_teacher_small(
    num_classes: int, in_channels: int = 3, input_size: int = 28, dropout: float = 0.0
) -> ThesisCNN:
    """Vats 2021 small teacher (~1.56M parameters at 28×28×1); kdlens's layer shapes."""
    return ThesisCNN(num_classes, in_channels, input_size, (64, 128, 256), 1, 512, dropout)


@register_model("thesis_teacher_large")
def thesis_teacher_large(
    num_classes: int, in_channels: int = 3, input_size: int = 28, dropout: float = 0.5
) -> ThesisCNN:
    """Vats 2021 large teacher with dropout (~2.34M parameters at 28×28×1); kdlens's layer shapes."""
    return ThesisCNN(num_classes, in_channels, input_size, (64, 128, 256), 2, 512, dropout)


@register_model("thesis_student")
def thesis_student(num_classes: int, in_channels: int = 3, input_size: int = 28, dropout: float = 0.0) -> ThesisCNN:
    """Vats 2021 "general CNN student" (173,690 parameters at 28×28×1); kdlens's layer shapes."""
    return ThesisCNN(num_classes, in_channels, input_size, (16, 32, 64), 1, 256, dropout)


@register_model("baseline_student")
def baseline_student(num_classes: int, in_channels: int = 3, input_size: int = 28) -> LinearStudent:
    """Vats 2021 baseline student: one linear layer (7,850 parameters at 28×28×1, 10 classes)."""
    return LinearStudent(num_classes, in_channels, input_size)
