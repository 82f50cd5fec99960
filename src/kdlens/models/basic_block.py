"""The ResNet basic block (He et al. 2016, *Deep residual learning for image recognition*, CVPR, Fig. 2 left).

Shared by the CIFAR ResNets and the ImageNet ResNet-18/34; the initialisation, stage names and
pooled classifier here serve every conv net of the zoo. Parameter names follow the
common convention (``conv1``, ``bn1``, ``conv2``, ``bn2``, ``downsample.0/1``) so that
ImageNet checkpoints in that layout load unchanged.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """3×3 convolution with padding 1 and no bias (a BatchNorm follows)."""
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """``relu(preact(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)))``.

    The shortcut is the identity, or a strided 1×1 convolution + BN (He et al.'s option B)
    when the shape changes. ``preact`` is an ``nn.Identity`` on the residual sum: hooking it
    gives the pre-activation feature, hooking the block gives the post-ReLU feature.
    No operation here is in place, so hooked tensors are never overwritten later.
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )
        self.preact = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(self.preact(out + shortcut))


def make_stage(in_planes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    """``blocks`` basic blocks; the first one carries the stride and the width change."""
    layers = [BasicBlock(in_planes, planes, stride)]
    layers += [BasicBlock(planes, planes) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


def init_weights(model: nn.Module) -> None:
    """He-normal (fan-out) convolutions, BN to (1, 0): the usual ResNet initialisation."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def stage_names(prefix: str, counts: list[int]) -> tuple[tuple[str, ...], ...]:
    """Module names of the blocks in each stage: ``layer1.0, layer1.1, …`` grouped by stage."""
    return tuple(tuple(f"{prefix}{s + 1}.{i}" for i in range(n)) for s, n in enumerate(counts))


def add_pooled_classifier(
    model: nn.Module, features: int, num_classes: int, hint_stages: tuple[tuple[str, ...], ...]
) -> None:
    """Ends a conv net: ``avgpool`` → ``penultimate`` → ``fc``, its hint layers, then :func:`init_weights`."""
    model.avgpool = nn.AdaptiveAvgPool2d(1)
    model.penultimate = nn.Flatten(1)
    model.fc = nn.Linear(features, num_classes)
    model.hint_stages = hint_stages
    model.hint_blocks = sum(hint_stages, ())
    init_weights(model)


__all__ = ["BasicBlock", "add_pooled_classifier", "conv3x3", "init_weights", "make_stage", "stage_names"]
