"""The models of Vats 2021 (*Response-based knowledge distillation*, thesis, Appendix A Table A.1
and Appendix B), rebuilt from their published parameter counts.

The thesis gives, per dataset, each model's layer counts (convolutional, dense), whether it has
dropout and batch norm, and its total parameter count, but not its layer shapes. Its models are
Keras models, so the shapes below follow Keras's conventions: every convolution has a bias,
pooling is 2×2 max pooling (floor), ``flatten`` feeds the dense layers, and a count is Keras's
``Total params`` — which for a ``BatchNormalization`` layer of ``C`` units is ``4·C`` (γ, β and
the non-trainable moving mean and variance). :func:`keras_parameter_count` counts that way;
PyTorch's :func:`~kdlens.models.count_parameters` counts ``2·C`` (the buffers are not
parameters), so the two differ only for the CIFAR-10 large teacher, the one model with BN.

How the shapes were found
-------------------------
A search script (not part of kdlens) enumerated, for each model, every stack with exactly the
table's number of conv and dense layers: output channels from {8, 16, 24, 32, 48, 64, 96, 128,
192, 256, 384, 512, 768, 1024}, 3×3 (and, in a second pass, 5×5) kernels, "same" or "valid"
padding, a 2×2 max pool after any subset of the convolutions, hidden dense widths from
{16, 32, 64, 100, 128, 150, 200, 250, 256, 300, 384, 400, 500, 512, 600, 768, 1000, 1024, 2000,
2048, 4096}, and for BN models BN after every conv (and optionally every hidden dense layer)
counted with 2 or 4 numbers per unit and convs with or without bias. It kept the stacks whose
total equals the published one. Where several remain, the choice below is the most regular
one: channels non-decreasing, all kernels 3×3, one padding for the whole stack, round dense
widths that shrink towards the classifier, the same choices across a dataset's models.

* **Students and baselines** have one solution each under the thesis's description (two or
  three convs, a 2×2 pool after each conv for the 28×28 students, one dense classifier).
  For the CIFAR-10 student a pool after conv1 and conv2, after conv1 and conv3, or after conv2
  and conv3 give the same count; we pool after the first two (the layout of the TensorFlow
  CNN tutorial).
* **MNIST small teacher**: 256 → 512 "same" with a pool after each conv is the only solution.
* **MNIST large / Fashion-MNIST small and large teachers**: 3×3 "valid" convs with a pool after
  conv1 and conv3 — the one all-3×3 solution for each that has non-decreasing channels; the
  three share that layout, and the large ones share the ``… → 384 → 256`` dense head.
* **CIFAR-10 small teacher**: no stack with non-decreasing channels and 3×3 kernels reaches
  5,674,634 exactly (the exact ones need e.g. 7×7 then 2×2 kernels). We take the CIFAR-10
  student's layout widened to 64 → 512 → 1024: **5,672,202, 2,432 (0.043 %) fewer**. Close
  alternatives: 64(5×5) → 512 → 1024, +640; 128 → 384 → 512 "valid" without pooling, +2,816.
* **CIFAR-10 large teacher**: no VGG-like stack (blocks of equal width, a pool after each
  block, BN after every conv) reaches 26,902,442 exactly; the exact solutions found have
  irregular widths (e.g. 32, 32, 32, 32, 64, 64, 64, 512). We take two blocks of four 3×3 convs
  (256, then 512), BN after every conv and hidden dense layer, dense 512 → 128:
  **26,896,522 (Keras count), 5,920 (0.022 %) fewer**; 26,889,098 PyTorch parameters.

==========================  =====================================  ===========  ==========  ==========
model                       layers (input)                         dropout, BN      thesis        here
==========================  =====================================  ===========  ==========  ==========
vats_baseline_28            dense 784→10 (28×28×1)                 no, no            7,850       7,850
vats_baseline_32            dense 3,072→10 (32×32×3)               no, no           30,730      30,730
vats_student_mnist          conv 16, 32 same; pool after each      no, no           20,490      20,490
vats_student_fmnist         conv 32, 64 same; pool after each      no, no           50,186      50,186
vats_student_cifar10        conv 64, 128, 256 same; pools 1, 2     no, no          534,666     534,666
vats_teacher_mnist_small    conv 256, 512 same; pool after each    no, no        1,433,610   1,433,610
vats_teacher_mnist_large    conv 128, 256, 256 valid; pools 1, 3;  yes, no       2,560,906   2,560,906
                            dense 384, 256
vats_teacher_fmnist_small   conv 128, 256, 512 valid; pools 1, 3   no, no        1,558,538   1,558,538
vats_teacher_fmnist_large   conv 64, 128, 256, 384 valid;          yes, no       2,339,850   2,339,850
                            pools 1, 3; dense 512, 384, 256
vats_teacher_cifar10_small  conv 64, 512, 1024 same; pools 1, 2    no, no        5,674,634   5,672,202
vats_teacher_cifar10_large  conv 4×256, 4×512 same; pools 4, 8;    yes, yes     26,902,442  26,896,522
                            dense 512, 128
==========================  =====================================  ===========  ==========  ==========

"pools 1, 3" = a 2×2 max pool after conv1 and conv3; every model ends in a dense layer to the
classes. Counts are for 10 classes at the dataset's own input (28×28×1 for MNIST and
Fashion-MNIST, 32×32×3 for CIFAR-10); other inputs change the flattened size and so the count.

The arithmetic (weights + biases; ``k·k·Cin·Cout + Cout`` per conv, ``in·out + out`` per dense)
-----------------------------------------------------------------------------------------------
* baselines: 784·10 + 10 = 7,850; 3,072·10 + 10 = 30,730.
* student MNIST: conv 1→16: 160; conv 16→32: 4,640; 28 → 14 → 7, dense 7·7·32 = 1,568 → 10:
  15,690. Total 20,490.
* student Fashion-MNIST: conv 1→32: 320; conv 32→64: 18,496; dense 3,136 → 10: 31,370.
  Total 50,186.
* student CIFAR-10: conv 3→64: 1,792; conv 64→128: 73,856; conv 128→256: 295,168;
  32 → 16 → 8, dense 8·8·256 = 16,384 → 10: 163,850. Total 534,666.
* teacher MNIST small: conv 1→256: 2,560; conv 256→512: 1,180,160; dense 7·7·512 = 25,088 → 10:
  250,890. Total 1,433,610.
* teacher MNIST large: conv 1→128: 1,280 (28 → 26, pool 13); conv 128→256: 295,168 (11);
  conv 256→256: 590,080 (9, pool 4); dense 4·4·256 = 4,096 → 384: 1,573,248; 384 → 256: 98,560;
  256 → 10: 2,570. Total 2,560,906.
* teacher Fashion-MNIST small: conv 1→128: 1,280 (26, pool 13); conv 128→256: 295,168 (11);
  conv 256→512: 1,180,160 (9, pool 4); dense 4·4·512 = 8,192 → 10: 81,930. Total 1,558,538.
* teacher Fashion-MNIST large: conv 1→64: 640 (26, pool 13); conv 64→128: 73,856 (11);
  conv 128→256: 295,168 (9, pool 4); conv 256→384: 885,120 (2); dense 2·2·384 = 1,536 → 512:
  786,944; 512 → 384: 196,992; 384 → 256: 98,560; 256 → 10: 2,570. Total 2,339,850.
* teacher CIFAR-10 small: conv 3→64: 1,792 (pool 16); conv 64→512: 295,424 (pool 8);
  conv 512→1024: 4,719,616; dense 8·8·1024 = 65,536 → 10: 655,370. Total 5,672,202.
* teacher CIFAR-10 large: conv 3→256: 7,168; 3 × conv 256→256: 3 · 590,080 (pool 16);
  conv 256→512: 1,180,160; 3 × conv 512→512: 3 · 2,359,808 (pool 8) — convs 10,036,992;
  BN 4 · (4·256 + 4·512) = 12,288; dense 8·8·512 = 32,768 → 512: 16,777,728; 512 → 128: 65,664;
  128 → 10: 1,290; BN 4 · (512 + 128) = 2,560. Total 26,896,522 (PyTorch: 26,896,522 − 2·3,712
  = 26,889,098).

Dropout (the large teachers) follows each hidden dense layer, rate ``dropout`` (0.5 by
default, Keras's usual choice; the thesis does not give its rates). Each conv unit is
conv → (BN) → ``preact`` → ReLU, each hidden dense unit linear → (BN) → ``preact`` → ReLU.
Weights start as Keras's defaults: Glorot-uniform kernels, zero biases, BN γ = 1, β = 0.

Taps: the conv units are the hint blocks (``features.conv1``, …), grouped into stages by the
pools; ``penultimate`` is the input of the classifier ``fc`` (the flattened features for the
models without a hidden dense layer); every unit has a ``preact`` tap.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from kdlens.errors import KdlensError
from kdlens.models.registry import register_model
from kdlens.models.thesis_cnn import LinearStudent

#: The published totals (Vats 2021, Appendix A Table A.1 / Appendix B), 10 classes at the
#: dataset's own input shape; ``(total, (in_channels, input_size))``.
PUBLISHED_PARAMETERS: dict[str, tuple[int, tuple[int, int]]] = {
    "vats_baseline_28": (7_850, (1, 28)),
    "vats_baseline_32": (30_730, (3, 32)),
    "vats_student_mnist": (20_490, (1, 28)),
    "vats_student_fmnist": (50_186, (1, 28)),
    "vats_student_cifar10": (534_666, (3, 32)),
    "vats_teacher_mnist_small": (1_433_610, (1, 28)),
    "vats_teacher_mnist_large": (2_560_906, (1, 28)),
    "vats_teacher_fmnist_small": (1_558_538, (1, 28)),
    "vats_teacher_fmnist_large": (2_339_850, (1, 28)),
    "vats_teacher_cifar10_small": (5_674_634, (3, 32)),
    "vats_teacher_cifar10_large": (26_902_442, (3, 32)),
}


def keras_parameter_count(model: nn.Module) -> int:
    """Keras's ``Total params``: the parameters plus every batch norm's moving mean and variance.

    PyTorch keeps those two as buffers (with a ``num_batches_tracked`` counter Keras does not
    have), so a BN layer of ``C`` units counts ``2·C`` in :func:`~kdlens.models.count_parameters`
    and ``4·C`` here. Models without batch norm count the same both ways.
    """
    n = sum(p.numel() for p in model.parameters())
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            assert m.running_mean is not None and m.running_var is not None
            n += m.running_mean.numel() + m.running_var.numel()
    return n


@dataclass(frozen=True)
class KerasLayout:
    """A plain Keras-style stack: convs (with 2×2 max pools after some), flatten, dense layers.

    ``channels[i]``, ``kernels[i]`` and ``pools[i]`` describe conv ``i + 1``; ``hidden`` are the
    hidden dense widths (the classifier to ``num_classes`` comes last).
    """

    channels: tuple[int, ...]
    kernels: tuple[int, ...]
    pools: tuple[bool, ...]
    padding: str = "same"
    hidden: tuple[int, ...] = ()
    batch_norm: bool = False

    def __post_init__(self) -> None:
        if not len(self.channels) == len(self.kernels) == len(self.pools):
            raise ValueError("channels, kernels and pools need one entry per conv")
        if self.padding not in ("same", "valid"):
            raise ValueError(f"padding must be 'same' or 'valid', got {self.padding!r}")

    def side_after(self, input_size: int) -> int | None:
        """Side of the last feature map, or None when some layer would leave nothing."""
        side = input_size
        for k, pool in zip(self.kernels, self.pools, strict=True):
            if self.padding == "valid":
                side -= k - 1
            if side < 1:
                return None
            if pool:
                side //= 2
                if side < 1:
                    return None
        return side

    def min_input_size(self) -> int:
        side = 1
        while self.side_after(side) is None:
            side += 1
        return side


class ConvUnit(nn.Module):
    """conv k×k (bias) → BN (optional) → ``preact`` → ReLU."""

    def __init__(self, in_planes: int, planes: int, kernel: int, padding: str, batch_norm: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_planes, planes, kernel, padding=kernel // 2 if padding == "same" else 0)
        self.bn = nn.BatchNorm2d(planes) if batch_norm else nn.Identity()
        self.preact = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.preact(self.bn(self.conv(x))))


class DenseUnit(nn.Module):
    """linear (bias) → BN (optional) → ``preact`` → ReLU."""

    def __init__(self, in_features: int, features: int, batch_norm: bool) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, features)
        self.bn = nn.BatchNorm1d(features) if batch_norm else nn.Identity()
        self.preact = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.preact(self.bn(self.linear(x))))


class KerasStyleCNN(nn.Module):
    """A :class:`KerasLayout` as a module: ``features`` → ``flatten`` → ``head`` → ``penultimate`` →
    ``dropout`` → ``fc``.

    ``features`` holds ``conv1``, ``pool1``, ``conv2``, … (a pool only where the layout has one),
    ``head`` the hidden dense units ``fc1``, ``drop1``, ``fc2``, … (the dropout after the last
    hidden unit is ``dropout``, after ``penultimate``). Inputs must be ``input_size`` square.
    """

    def __init__(
        self, layout: KerasLayout, num_classes: int, in_channels: int, input_size: int, dropout: float = 0.0
    ) -> None:
        super().__init__()
        side = layout.side_after(input_size)
        if side is None:
            raise KdlensError(
                f"{type(self).__name__} {layout.channels}: input_size must be at least "
                f"{layout.min_input_size()}, got {input_size}"
            )
        self.input_size = input_size
        self.layout = layout
        features: OrderedDict[str, nn.Module] = OrderedDict()
        stages: list[list[str]] = [[]]
        planes = in_channels
        for i, (width, kernel, pool) in enumerate(zip(layout.channels, layout.kernels, layout.pools), 1):
            features[f"conv{i}"] = ConvUnit(planes, width, kernel, layout.padding, layout.batch_norm)
            stages[-1].append(f"features.conv{i}")
            planes = width
            if pool:
                features[f"pool{i}"] = nn.MaxPool2d(2)
                stages.append([])
        self.features = nn.Sequential(features)
        self.flatten = nn.Flatten(1)
        head: OrderedDict[str, nn.Module] = OrderedDict()
        width = planes * side * side
        for j, hidden in enumerate(layout.hidden, 1):
            if j > 1:
                head[f"drop{j - 1}"] = nn.Dropout(dropout)
            head[f"fc{j}"] = DenseUnit(width, hidden, layout.batch_norm)
            width = hidden
        self.head = nn.Sequential(head)
        self.penultimate = nn.Identity()
        self.dropout = nn.Dropout(dropout if layout.hidden else 0.0)
        self.fc = nn.Linear(width, num_classes)
        self.hint_stages = tuple(tuple(s) for s in stages if s)
        self.hint_blocks: tuple[str, ...] = sum(self.hint_stages, ())
        _keras_init(self)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-2:] != (self.input_size, self.input_size):
            raise KdlensError(
                f"{type(self).__name__} was built for {self.input_size}×{self.input_size} inputs but got "
                f"{tuple(x.shape[-2:])}; create it with input_size={x.shape[-1]}"
            )
        h = self.penultimate(self.head(self.flatten(self.features(x))))
        return self.fc(self.dropout(h))


def _keras_init(model: nn.Module) -> None:
    """Keras's defaults: Glorot-uniform kernels, zero biases; BN γ = 1, β = 0."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _convs(channels: Sequence[int], pools: Sequence[int], kernels: Sequence[int] | None = None) -> dict[str, tuple]:
    """Layout fields from channel widths and the 1-based convs followed by a pool."""
    return {
        "channels": tuple(channels),
        "kernels": tuple(kernels or (3,) * len(channels)),
        "pools": tuple(i + 1 in pools for i in range(len(channels))),
    }


#: The layouts of the module docstring's table, by zoo name (baselines are :class:`LinearStudent`).
LAYOUTS: dict[str, KerasLayout] = {
    "vats_student_mnist": KerasLayout(**_convs((16, 32), (1, 2))),
    "vats_student_fmnist": KerasLayout(**_convs((32, 64), (1, 2))),
    "vats_student_cifar10": KerasLayout(**_convs((64, 128, 256), (1, 2))),
    "vats_teacher_mnist_small": KerasLayout(**_convs((256, 512), (1, 2))),
    "vats_teacher_mnist_large": KerasLayout(**_convs((128, 256, 256), (1, 3)), padding="valid", hidden=(384, 256)),
    "vats_teacher_fmnist_small": KerasLayout(**_convs((128, 256, 512), (1, 3)), padding="valid"),
    "vats_teacher_fmnist_large": KerasLayout(
        **_convs((64, 128, 256, 384), (1, 3)), padding="valid", hidden=(512, 384, 256)
    ),
    "vats_teacher_cifar10_small": KerasLayout(**_convs((64, 512, 1024), (1, 2))),
    "vats_teacher_cifar10_large": KerasLayout(
        **_convs((256,) * 4 + (512,) * 4, (4, 8)), hidden=(512, 128), batch_norm=True
    ),
}


@register_model("vats_baseline_28")
def vats_baseline_28(num_classes: int, in_channels: int = 1, input_size: int = 28) -> LinearStudent:
    """Vats 2021 baseline student for 28×28×1 (MNIST, Fashion-MNIST): one dense layer, 7,850 parameters."""
    return LinearStudent(num_classes, in_channels, input_size)


@register_model("vats_baseline_32")
def vats_baseline_32(num_classes: int, in_channels: int = 3, input_size: int = 32) -> LinearStudent:
    """Vats 2021 baseline student for 32×32×3 (CIFAR-10): one dense layer, 30,730 parameters."""
    return LinearStudent(num_classes, in_channels, input_size)


@register_model("vats_student_mnist")
def vats_student_mnist(num_classes: int, in_channels: int = 1, input_size: int = 28) -> KerasStyleCNN:
    """Vats 2021 MNIST student: conv 16, 32 (3×3 same, pool after each), dense; 20,490 parameters."""
    return KerasStyleCNN(LAYOUTS["vats_student_mnist"], num_classes, in_channels, input_size)


@register_model("vats_student_fmnist")
def vats_student_fmnist(num_classes: int, in_channels: int = 1, input_size: int = 28) -> KerasStyleCNN:
    """Vats 2021 Fashion-MNIST student: conv 32, 64 (3×3 same, pool after each), dense; 50,186 parameters."""
    return KerasStyleCNN(LAYOUTS["vats_student_fmnist"], num_classes, in_channels, input_size)


@register_model("vats_student_cifar10")
def vats_student_cifar10(num_classes: int, in_channels: int = 3, input_size: int = 32) -> KerasStyleCNN:
    """Vats 2021 CIFAR-10 "general" student: conv 64, 128, 256 (3×3 same), dense; 534,666 parameters."""
    return KerasStyleCNN(LAYOUTS["vats_student_cifar10"], num_classes, in_channels, input_size)


@register_model("vats_teacher_mnist_small")
def vats_teacher_mnist_small(num_classes: int, in_channels: int = 1, input_size: int = 28) -> KerasStyleCNN:
    """Vats 2021 MNIST small teacher: conv 256, 512 (3×3 same, pool after each), dense; 1,433,610 parameters."""
    return KerasStyleCNN(LAYOUTS["vats_teacher_mnist_small"], num_classes, in_channels, input_size)


@register_model("vats_teacher_mnist_large")
def vats_teacher_mnist_large(
    num_classes: int, in_channels: int = 1, input_size: int = 28, dropout: float = 0.5
) -> KerasStyleCNN:
    """Vats 2021 MNIST large teacher: 3 conv, 3 dense, dropout; 2,560,906 parameters."""
    return KerasStyleCNN(LAYOUTS["vats_teacher_mnist_large"], num_classes, in_channels, input_size, dropout)


@register_model("vats_teacher_fmnist_small")
def vats_teacher_fmnist_small(num_classes: int, in_channels: int = 1, input_size: int = 28) -> KerasStyleCNN:
    """Vats 2021 Fashion-MNIST small teacher: conv 128, 256, 512 (3×3 valid), dense; 1,558,538 parameters."""
    return KerasStyleCNN(LAYOUTS["vats_teacher_fmnist_small"], num_classes, in_channels, input_size)


@register_model("vats_teacher_fmnist_large")
def vats_teacher_fmnist_large(
    num_classes: int, in_channels: int = 1, input_size: int = 28, dropout: float = 0.5
) -> KerasStyleCNN:
    """Vats 2021 Fashion-MNIST large teacher: 4 conv, 4 dense, dropout; 2,339,850 parameters."""
    return KerasStyleCNN(LAYOUTS["vats_teacher_fmnist_large"], num_classes, in_channels, input_size, dropout)


@register_model("vats_teacher_cifar10_small")
def vats_teacher_cifar10_small(num_classes: int, in_channels: int = 3, input_size: int = 32) -> KerasStyleCNN:
    """Vats 2021 CIFAR-10 small teacher: 3 conv, 1 dense; 5,672,202 parameters (thesis: 5,674,634, -0.043 %)."""
    return KerasStyleCNN(LAYOUTS["vats_teacher_cifar10_small"], num_classes, in_channels, input_size)


@register_model("vats_teacher_cifar10_large")
def vats_teacher_cifar10_large(
    num_classes: int, in_channels: int = 3, input_size: int = 32, dropout: float = 0.5
) -> KerasStyleCNN:
    """Vats 2021 CIFAR-10 large teacher: 8 conv, 3 dense, dropout, BN; 26,896,522 Keras parameters
    (thesis: 26,902,442, -0.022 %)."""
    return KerasStyleCNN(LAYOUTS["vats_teacher_cifar10_large"], num_classes, in_channels, input_size, dropout)
