"""CIFAR ResNets (He et al. 2016, CVPR, §4.2) and the wide "×4" variants of the CRD zoo
(Tian et al. 2020, *Contrastive representation distillation*, ICLR).

Depth ``6n + 2``: a 3×3 stem, three stages of ``n`` basic blocks (strides 1, 2, 2), global
average pooling and a linear classifier. Widths are 16/16,32,64 (stem/stages) for
resnet8…resnet110 and 32/64,128,256 for resnet8x4 and resnet32x4. Adaptive pooling lets
any input of at least 8×8 through (e.g. 28×28×1 Fashion-MNIST, 8×8×1 digits).

Parameter counts at 32×32×3 with 100 classes match the published ones (PURSUhInT, Keser
et al. 2022, Table 7): resnet20 278.32K, resnet32 472.76K, resnet110 1.74M,
resnet8x4 1.23M, resnet32x4 7.43M.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from kdlens.models.basic_block import add_pooled_classifier, conv3x3, make_stage, stage_names
from kdlens.models.registry import register_model


class CifarResNet(nn.Module):
    """CIFAR-style ResNet of depth ``6n + 2`` with stem width ``widths[0]`` and stage widths ``widths[1:]``."""

    def __init__(
        self,
        depth: int,
        num_classes: int,
        in_channels: int = 3,
        widths: tuple[int, int, int, int] = (16, 16, 32, 64),
    ) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 with n >= 1, got {depth}")
        n = (depth - 2) // 6
        self.conv1 = conv3x3(in_channels, widths[0])
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.layer1 = make_stage(widths[0], widths[1], n, stride=1)
        self.layer2 = make_stage(widths[1], widths[2], n, stride=2)
        self.layer3 = make_stage(widths[2], widths[3], n, stride=2)
        add_pooled_classifier(self, widths[3], num_classes, stage_names("layer", [n, n, n]))

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.penultimate(self.avgpool(x)))


def _register(name: str, depth: int, widths: tuple[int, int, int, int]) -> None:
    def factory(num_classes: int, in_channels: int = 3) -> CifarResNet:
        return CifarResNet(depth, num_classes, in_channels, widths)

    factory.__name__ = name
    factory.__doc__ = f"CIFAR ResNet-{depth}, widths {widths} (He et al. 2016; CRD zoo)."
    register_model(name)(factory)


for _depth in (8, 14, 20, 32, 44, 56, 110):
    _register(f"resnet{_depth}", _depth, (16, 16, 32, 64))
for _depth in (8, 32):
    _register(f"resnet{_depth}x4", _depth, (32, 64, 128, 256))
