"""Wide residual networks WRN-d-k (Zagoruyko & Komodakis 2016, *Wide residual networks*, BMVC).

Pre-activation blocks (BN-ReLU-conv ×2, He et al. 2016b), ``n = (d - 4) / 6`` blocks per
stage, widths 16 / 16k, 32k, 64k, strides 1, 2, 2, a final BN-ReLU, global average pooling
and a linear classifier. When the width or stride changes, the shortcut is a 1×1
convolution of the block's BN-ReLU'd input.

Taps: a pre-activation block ends on the bare residual sum; its BN-ReLU belongs to the next
block. So ``preact`` (the sum) and the block output are the same tensor here: pre == post.

Parameter counts at 32×32×3, 100 classes (PURSUhInT Table 7): WRN-16-2 703.28K,
WRN-40-2 2.26M, WRN-28-1 0.37M.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from kdlens.models.basic_block import add_pooled_classifier, conv3x3, stage_names
from kdlens.models.registry import register_model


class PreActBlock(nn.Module):
    """``preact(conv2(drop(relu(bn2(conv1(relu(bn1(x))))))) + shortcut)``; see the module docstring."""

    def __init__(self, in_planes: int, planes: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = conv3x3(planes, planes)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)
        self.preact = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        a = F.relu(self.bn1(x))
        out = self.conv2(self.dropout(F.relu(self.bn2(self.conv1(a)))))
        shortcut = x if self.shortcut is None else self.shortcut(a)
        return self.preact(out + shortcut)


class WideResNet(nn.Module):
    """WRN-``depth``-``widen`` for CIFAR-sized inputs (any size ≥ 8×8)."""

    def __init__(
        self, depth: int, widen: int, num_classes: int, in_channels: int = 3, dropout: float = 0.0
    ) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n+4 with n >= 1, got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv1 = conv3x3(in_channels, widths[0])
        for s, stride in enumerate((1, 2, 2)):
            blocks = [PreActBlock(widths[s], widths[s + 1], stride, dropout)]
            blocks += [PreActBlock(widths[s + 1], widths[s + 1], 1, dropout) for _ in range(n - 1)]
            setattr(self, f"layer{s + 1}", nn.Sequential(*blocks))
        self.bn = nn.BatchNorm2d(widths[3])
        add_pooled_classifier(self, widths[3], num_classes, stage_names("layer", [n, n, n]))

    def forward(self, x: Tensor) -> Tensor:
        x = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        x = F.relu(self.bn(x))
        return self.fc(self.penultimate(self.avgpool(x)))


def _register(depth: int, widen: int) -> None:
    def factory(num_classes: int, in_channels: int = 3, dropout: float = 0.0) -> WideResNet:
        return WideResNet(depth, widen, num_classes, in_channels, dropout)

    factory.__name__ = f"wrn_{depth}_{widen}"
    factory.__doc__ = f"WRN-{depth}-{widen} (Zagoruyko & Komodakis 2016)."
    register_model(factory.__name__)(factory)


for _depth, _widen in ((16, 1), (16, 2), (28, 1), (40, 1), (40, 2)):
    _register(_depth, _widen)
