"""ShuffleNet V1 (Zhang et al. 2018, *ShuffleNet: an extremely efficient CNN for mobile
devices*, CVPR), in the CIFAR configuration of the CRD zoo (Tian et al. 2020): a 1×1 stem
to 24 channels, stages of 4, 8, 4 units with 240, 480, 960 output channels, 3 groups.

A unit is grouped 1×1 conv → BN-ReLU → channel shuffle → 3×3 depthwise conv (stride s) →
BN → grouped 1×1 conv → BN, then ``relu(out + x)`` (stride 1) or
``relu(cat(out, avgpool3x3(x)))`` (stride 2, the first unit of each stage). The first
pointwise conv of the first unit is not grouped (its input has only 24 channels).
``preact`` sits on the sum/concatenation before the final ReLU.

949.26K parameters at 32×32×3 with 100 classes (PURSUhInT Table 7).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdlens.models.basic_block import add_pooled_classifier, stage_names
from kdlens.models.registry import register_model


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """Interleave channels across ``groups`` (Zhang et al. 2018, Fig. 1c)."""
    n, c, h, w = x.shape
    return x.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleUnit(nn.Module):
    """One ShuffleNet unit producing ``out_planes`` channels (see the module docstring)."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, groups: int, first_grouped: bool) -> None:
        super().__init__()
        self.stride = stride
        branch = out_planes - in_planes if stride == 2 else out_planes
        mid = branch // 4
        g1 = groups if first_grouped else 1
        self.conv1 = nn.Conv2d(in_planes, mid, 1, groups=g1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride=stride, padding=1, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, branch, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(branch)
        self.shuffle_groups = g1
        self.preact = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = channel_shuffle(out, self.shuffle_groups)
        out = self.bn2(self.conv2(out))
        out = self.bn3(self.conv3(out))
        if self.stride == 2:
            out = torch.cat([out, F.avg_pool2d(x, 3, stride=2, padding=1)], dim=1)
        else:
            out = out + x
        return F.relu(self.preact(out))


class ShuffleNetV1(nn.Module):
    """ShuffleNet V1 for CIFAR-sized inputs (any size ≥ 8×8)."""

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        out_planes: tuple[int, int, int] = (240, 480, 960),
        num_blocks: tuple[int, int, int] = (4, 8, 4),
        groups: int = 3,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 24, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        in_planes = 24
        for s, (planes, blocks) in enumerate(zip(out_planes, num_blocks, strict=True)):
            units = [ShuffleUnit(in_planes, planes, 2, groups, first_grouped=in_planes != 24)]
            units += [ShuffleUnit(planes, planes, 1, groups, True) for _ in range(blocks - 1)]
            setattr(self, f"layer{s + 1}", nn.Sequential(*units))
            in_planes = planes
        add_pooled_classifier(self, in_planes, num_classes, stage_names("layer", list(num_blocks)))

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.penultimate(self.avgpool(x)))


@register_model("shufflenetv1")
def shufflenetv1(num_classes: int, in_channels: int = 3, groups: int = 3) -> ShuffleNetV1:
    """ShuffleNet V1, CIFAR configuration of the CRD zoo (Zhang et al. 2018; Tian et al. 2020)."""
    return ShuffleNetV1(num_classes, in_channels, groups=groups)
