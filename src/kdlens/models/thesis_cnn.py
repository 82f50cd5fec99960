"""kdlens's small pooled CNNs: two CNN teachers, a CNN student and a linear baseline student,
for 28×28 (Fashion-MNIST), 32×32 (CIFAR-10) and 8×8 (digits) inputs.

These are **not** the models of Vats 2021 (*Response-based knowledge distillation*): those are
in :mod:`kdlens.models.vats_thesis` (``vats_student_fmnist``, ``vats_teacher_fmnist_small``, …),
rebuilt from the thesis's published parameter counts. The CNNs here were kdlens's own stand-ins,
sized to the thesis's Fashion-MNIST teachers but with batch norm, which the thesis's small
teachers do not have; the large one has 6 conv + 1 hidden dense layers where the thesis's has
4 + 4, and the student is 3.5× the thesis's 50,186 parameters. They were registered as
``thesis_teacher_small``, ``thesis_teacher_large`` and ``thesis_student``; those names still
build the same models but are deprecated (a :class:`DeprecationWarning`): use the ``cnn_*``
names. The classes keep their names so that existing runs keep their architecture fingerprints.

Each CNN is three stages of [conv3×3 (no bias) → BN → ReLU] units, each stage ending in a
2×2 max pool, then flatten → dense → ReLU → ``penultimate`` → (dropout) → linear ``fc``.

=====================  ===========================  =====  =========  ===============
model                  conv units (stage widths)    dense  dropout    params 28×28×1
=====================  ===========================  =====  =========  ===============
cnn_teacher_small      1 per stage, 64/128/256      512    0          1,555,402 (~1.56M)
cnn_teacher_large      2 per stage, 64/128/256      512    0.5 (*)    2,330,442 (~2.34M)
cnn_student            1 per stage, 16/32/64        256    0            173,690
baseline_student       none: one linear layer on the flattened image   7,850
=====================  ===========================  =====  =========  ===============

(*) ``dropout`` before the classifier and ``dropout / 2`` after each pooled stage.
The flattened size depends on ``input_size`` (default 28; any size ≥ 8): 28 → 3×3, 32 → 4×4,
8 → 1×1 after the three pools. The baseline has ``in_channels·input_size² · C + C``
parameters: 7,850 at 28×28×1 and 30,730 at 32×32×3 with 10 classes — the thesis's baseline
student (also registered as ``vats_baseline_28`` / ``vats_baseline_32``).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable

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


@register_model("cnn_teacher_small")
def cnn_teacher_small(
    num_classes: int, in_channels: int = 3, input_size: int = 28, dropout: float = 0.0
) -> ThesisCNN:
    """kdlens's small CNN teacher with BN (1,555,402 parameters at 28×28×1); not the thesis's."""
    return ThesisCNN(num_classes, in_channels, input_size, (64, 128, 256), 1, 512, dropout)


@register_model("cnn_teacher_large")
def cnn_teacher_large(
    num_classes: int, in_channels: int = 3, input_size: int = 28, dropout: float = 0.5
) -> ThesisCNN:
    """kdlens's large CNN teacher with BN and dropout (2,330,442 parameters at 28×28×1); not the thesis's."""
    return ThesisCNN(num_classes, in_channels, input_size, (64, 128, 256), 2, 512, dropout)


@register_model("cnn_student")
def cnn_student(num_classes: int, in_channels: int = 3, input_size: int = 28, dropout: float = 0.0) -> ThesisCNN:
    """kdlens's CNN student with BN (173,690 parameters at 28×28×1); not the thesis's (``vats_student_*``)."""
    return ThesisCNN(num_classes, in_channels, input_size, (16, 32, 64), 1, 256, dropout)


#: Deprecated names → current names. They claimed to be the thesis's models, which they are not.
DEPRECATED_NAMES = {
    "thesis_teacher_small": "cnn_teacher_small",
    "thesis_teacher_large": "cnn_teacher_large",
    "thesis_student": "cnn_student",
}


def _deprecated_alias(old: str, factory: Callable[..., ThesisCNN]) -> Callable[..., ThesisCNN]:
    @functools.wraps(factory)
    def build(*args: object, **kwargs: object) -> ThesisCNN:
        warnings.warn(
            f"model {old!r} is deprecated: it is not the model of Vats 2021. It builds "
            f"{factory.__name__!r}, the same network; the thesis's models are the vats_* ones",
            DeprecationWarning,
            stacklevel=3,
        )
        return factory(*args, **kwargs)

    build.__doc__ = f"Deprecated name of ``{factory.__name__}`` (the same network)."
    return build


_CURRENT = {"cnn_teacher_small": cnn_teacher_small, "cnn_teacher_large": cnn_teacher_large, "cnn_student": cnn_student}
for _old, _new in DEPRECATED_NAMES.items():
    register_model(_old)(_deprecated_alias(_old, _CURRENT[_new]))


@register_model("baseline_student")
def baseline_student(num_classes: int, in_channels: int = 3, input_size: int = 28) -> LinearStudent:
    """Vats 2021 baseline student: one linear layer (7,850 parameters at 28×28×1, 10 classes)."""
    return LinearStudent(num_classes, in_channels, input_size)
