"""ImageNet ResNet-18/34 (He et al. 2016, CVPR, Table 1), as used by Lee & Wallraven 2021
(§3.1) and PURSUhInT (Keser et al. 2022): 7×7/2 stem + 3×3/2 max pool, four stages of basic
blocks (2,2,2,2 or 3,4,6,3) with widths 64–512, global average pooling, linear classifier.
11.69M / 21.80M parameters with 1000 classes.

Parameter names follow torchvision's layout, so ``weights="imagenet"`` loads torchvision's
ImageNet checkpoint (needs internet the first time) and ``weights=PATH`` loads a local
state dict (``torch.load(PATH, weights_only=True)``). When ``num_classes`` differs from the
checkpoint's, the classifier keeps its fresh initialisation; when ``in_channels`` differs,
the stem filters are averaged over the RGB channels (and rescaled by 3 / in_channels).

``upsample_to=S`` bilinearly resizes inputs to S×S before the stem. Lee & Wallraven 2021
resized 32×32 CIFAR images up for the ImageNet ResNet; without it a 32×32 input reaches
the last stage at 1×1. Default ``None`` = no resizing. Any input ≥ 8×8 runs either way.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdlens.errors import KdlensError
from kdlens.models.basic_block import add_pooled_classifier, make_stage, stage_names
from kdlens.models.registry import register_model

BLOCKS = {"resnet18": [2, 2, 2, 2], "resnet34": [3, 4, 6, 3]}


class ImageNetResNet(nn.Module):
    """ResNet with the ImageNet stem and basic blocks; see the module docstring."""

    def __init__(
        self, blocks: list[int], num_classes: int, in_channels: int = 3, upsample_to: int | None = None
    ) -> None:
        super().__init__()
        self.upsample: nn.Module = nn.Identity()
        if upsample_to is not None:
            self.upsample = nn.Upsample(size=(upsample_to, upsample_to), mode="bilinear", align_corners=False)
        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        widths = [64, 64, 128, 256, 512]
        for s, n in enumerate(blocks):
            stage = make_stage(widths[s], widths[s + 1], n, stride=1 if s == 0 else 2)
            setattr(self, f"layer{s + 1}", stage)
        add_pooled_classifier(self, 512, num_classes, stage_names("layer", blocks))

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(F.relu(self.bn1(self.conv1(self.upsample(x)))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.penultimate(self.avgpool(x)))


def _imagenet_state_dict(name: str) -> dict[str, Tensor]:
    import torchvision.models as tvm  # imported lazily: only needed for the download

    enum = {"resnet18": tvm.ResNet18_Weights, "resnet34": tvm.ResNet34_Weights}[name]
    try:
        return enum.IMAGENET1K_V1.get_state_dict(progress=False)
    except Exception as exc:  # offline, proxy, …
        raise KdlensError(
            f"could not fetch torchvision's ImageNet weights for {name} ({exc}). "
            "Download them once online, or pass weights=PATH to a local state dict."
        ) from exc


def _file_state_dict(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise KdlensError(f"weights file {str(path)!r} does not exist; pass weights='imagenet', None or a path")
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    return state


def load_weights(model: ImageNetResNet, state: dict[str, Tensor]) -> None:
    """Load ``state`` into ``model``, adapting the stem's input channels and skipping a classifier of another size."""
    state = dict(state)
    conv1 = model.conv1.weight
    w = state.get("conv1.weight")
    if w is not None and w.shape[1] != conv1.shape[1]:
        state["conv1.weight"] = w.mean(1, keepdim=True).repeat(1, conv1.shape[1], 1, 1) * (w.shape[1] / conv1.shape[1])
    fc_w = state.get("fc.weight")
    fresh_fc = fc_w is not None and fc_w.shape != model.fc.weight.shape
    if fresh_fc:
        warnings.warn(
            f"checkpoint classifier has {fc_w.shape[0]} classes, the model {model.fc.out_features}: "
            "keeping a freshly initialised classifier",
            stacklevel=3,
        )
        state.pop("fc.weight")
        state.pop("fc.bias", None)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise KdlensError(f"weights do not fit this ResNet: {exc}") from None
    missing = [k for k in missing if not (fresh_fc and k.startswith("fc."))]
    if missing or unexpected:
        raise KdlensError(f"weights do not fit this ResNet: missing {missing[:5]}, unexpected {unexpected[:5]}")


def _register(name: str) -> None:
    def factory(
        num_classes: int,
        in_channels: int = 3,
        weights: str | Path | None = None,
        upsample_to: int | None = None,
    ) -> ImageNetResNet:
        model = ImageNetResNet(BLOCKS[name], num_classes, in_channels, upsample_to)
        if weights is not None:
            state = _imagenet_state_dict(name) if weights == "imagenet" else _file_state_dict(Path(weights))
            load_weights(model, state)
        return model

    factory.__name__ = name
    factory.__doc__ = f"ImageNet {name} (He et al. 2016); weights=None | 'imagenet' | PATH, upsample_to=None | int."
    register_model(name)(factory)


for _name in BLOCKS:
    _register(_name)
