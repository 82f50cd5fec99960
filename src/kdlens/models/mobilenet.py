"""MobileNetV2 (Sandler et al. 2018, *MobileNetV2: inverted residuals and linear
bottlenecks*, CVPR) in the CIFAR configuration of the CRD zoo (Tian et al. 2020), where
"MobileNetV2" is the half-width network (width multiplier 0.5, expansion 6).

kdlens's choice: stem 3×3 conv stride 2 to ``int(32·w)`` channels; inverted-residual
settings (expansion t, channels c, repeats n, stride s) = (1,16,1,1), (6,24,2,1),
(6,32,3,2), (6,64,4,2), (6,96,3,1), (6,160,3,2), (6,320,1,1) with channels ``int(c·w)``;
a 1×1 conv to 1280 channels (``int(1280·w)`` only for w > 1); global average pooling; a
linear classifier. With w = 0.5 and 100 classes this has about 0.81M parameters.

Taps: an inverted-residual block ends linearly (no ReLU), so ``preact`` (the sum, or the
projection when there is no shortcut) and the block output are the same tensor.
Stages for hints are groups of blocks at one resolution.
"""

from __future__ import annotations

from torch import Tensor, nn

from kdlens.models.basic_block import add_pooled_classifier
from kdlens.models.registry import register_model

SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def conv_bn_relu(in_planes: int, out_planes: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """Conv (no bias) → BN → ReLU6."""
    conv = nn.Conv2d(in_planes, out_planes, kernel, stride, kernel // 2, groups=groups, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(out_planes), nn.ReLU6())


class InvertedResidual(nn.Module):
    """1×1 expand (skipped when t = 1) → 3×3 depthwise → linear 1×1 project (+ x when shapes match)."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_planes * expansion
        layers = [conv_bn_relu(in_planes, hidden, 1)] if expansion != 1 else []
        layers += [
            conv_bn_relu(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, out_planes, 1, bias=False),
            nn.BatchNorm2d(out_planes),
        ]
        self.conv = nn.Sequential(*layers)
        self.use_shortcut = stride == 1 and in_planes == out_planes
        self.preact = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv(x)
        return self.preact(out + x if self.use_shortcut else out)


class MobileNetV2(nn.Module):
    """MobileNetV2 for CIFAR-sized inputs (any size ≥ 8×8); see the module docstring."""

    def __init__(
        self, num_classes: int, in_channels: int = 3, width_mult: float = 0.5, expansion: int = 6
    ) -> None:
        super().__init__()
        planes = int(32 * width_mult)
        self.stem = conv_bn_relu(in_channels, planes, 3, stride=2)
        blocks: list[nn.Module] = []
        stages: list[list[str]] = [[]]
        for t, c, n, s in SETTINGS:
            out_planes = int(c * width_mult)
            for i in range(n):
                stride = s if i == 0 else 1
                if stride != 1 and stages[-1]:
                    stages.append([])
                stages[-1].append(f"blocks.{len(blocks)}")
                blocks.append(InvertedResidual(planes, out_planes, stride, expansion if t != 1 else 1))
                planes = out_planes
        self.blocks = nn.Sequential(*blocks)
        last = int(1280 * width_mult) if width_mult > 1.0 else 1280
        self.head = conv_bn_relu(planes, last, 1)
        add_pooled_classifier(self, last, num_classes, tuple(tuple(s) for s in stages))

    def forward(self, x: Tensor) -> Tensor:
        x = self.head(self.blocks(self.stem(x)))
        return self.fc(self.penultimate(self.avgpool(x)))


@register_model("mobilenetv2")
def mobilenetv2(num_classes: int, in_channels: int = 3, width_mult: float = 0.5, expansion: int = 6) -> MobileNetV2:
    """MobileNetV2, CIFAR configuration of the CRD zoo (width 0.5 by default; Sandler et al. 2018)."""
    return MobileNetV2(num_classes, in_channels, width_mult, expansion)
