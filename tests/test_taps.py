"""Named feature taps: naming convention, hooks, hint layers and extraction points."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdlens.errors import KdlensError
from kdlens.models import (
    FeatureTaps,
    conventional_hint_layers,
    create_model,
    extract_features,
    extraction_points,
    list_models,
    list_taps,
)
from kdlens.models.thesis_cnn import DEPRECATED_NAMES
from kdlens.models.vats_thesis import PUBLISHED_PARAMETERS

SIZED = {"cnn_teacher_small", "cnn_teacher_large", "cnn_student", "baseline_student", *PUBLISHED_PARAMETERS}


def small_model(name: str) -> nn.Module:
    kw = {"input_size": 32} if name in SIZED else {}
    torch.manual_seed(0)
    return create_model(name, 10, **kw)


def no_hooks_left(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


PURSUHINT_BLOCKS = [("resnet110", 54), ("resnet32x4", 15), ("wrn_40_2", 18), ("resnet34", 16)]


@pytest.mark.parametrize(("name", "blocks"), PURSUHINT_BLOCKS)
def test_sub_block_counts_match_pursuhint(name: str, blocks: int) -> None:
    model = create_model(name, 100)
    assert len(model.hint_blocks) == blocks
    assert len(list_taps(model)) == blocks + 2
    assert len(list_taps(model, "pre")) == blocks + 2
    assert len(list_taps(model, "all")) == 2 * blocks + 2


def test_resnet34_blocks_are_3_4_6_3() -> None:
    stages = create_model("resnet34", 10).hint_stages
    assert [len(s) for s in stages] == [3, 4, 6, 3]


def test_conventional_hints_of_resnet110_are_blocks_18_36_54() -> None:
    model = create_model("resnet110", 100)
    hints = conventional_hint_layers(model)
    assert [model.hint_blocks.index(h) + 1 for h in hints] == [18, 36, 54]
    assert hints == ["layer1.17", "layer2.17", "layer3.17"]


def test_conventional_hints_sit_before_downsampling() -> None:
    model = small_model("shufflenetv1").eval()
    hints = conventional_hint_layers(model)
    with torch.no_grad():
        feats = extract_features(model, torch.randn(2, 3, 32, 32), list(model.hint_blocks))
    sizes = [feats[b].shape[-1] for b in model.hint_blocks]
    expected = [b for i, b in enumerate(model.hint_blocks) if i + 1 == len(sizes) or sizes[i + 1] < sizes[i]]
    assert hints == expected


SLOW = {"resnet110", "resnet34", "resnet32x4"}


@pytest.mark.parametrize("name", sorted(set(list_models()) - SLOW - set(DEPRECATED_NAMES)))
def test_taps_are_listed_in_forward_order_and_all_resolve(name: str) -> None:
    model = small_model(name)
    taps = list_taps(model, "all")
    assert taps[-2:] == ["penultimate", "logits"]
    modules = dict(model.named_modules())
    assert all(f"{b}.preact" in modules for b in model.hint_blocks)
    order: list[str] = []
    handles = [modules[t].register_forward_hook(lambda m, a, o, t=t: order.append(t)) for t in taps[:-1]]
    x = torch.randn(2, 3, 32, 32)
    logits = model(x)
    for h in handles:
        h.remove()
    assert order == taps[:-1]
    feats = extract_features(model, x, taps)
    assert list(feats) == taps
    assert feats["penultimate"].dim() == 2 and feats["penultimate"].shape[0] == 2
    assert feats["logits"].shape == logits.shape
    assert no_hooks_left(model)


def test_resnet8_taps_equal_a_manual_recomputation() -> None:
    model = small_model("resnet8").eval()
    x = torch.randn(2, 3, 32, 32)
    names = ["layer2.0.preact", "layer2.0", "layer3.0", "penultimate", "logits"]
    with torch.no_grad():
        feats = extract_features(model, x, names)
        logits = model(x)
        block = model.layer2[0]
        a = model.layer1(F.relu(model.bn1(model.conv1(x))))
        pre = block.bn2(block.conv2(F.relu(block.bn1(block.conv1(a))))) + block.downsample(a)
        manual_pool = model.layer3(F.relu(pre)).mean(dim=(2, 3))
    assert list(feats) == names
    torch.testing.assert_close(feats["layer2.0.preact"], pre)
    torch.testing.assert_close(F.relu(feats["layer2.0.preact"]), feats["layer2.0"])
    assert (feats["layer2.0.preact"] < 0).any()  # the pre-activation tap really is before the ReLU
    torch.testing.assert_close(feats["penultimate"], manual_pool)
    torch.testing.assert_close(feats["penultimate"], feats["layer3.0"].mean(dim=(2, 3)))
    torch.testing.assert_close(model.fc(feats["penultimate"]), logits)
    torch.testing.assert_close(feats["logits"], logits)


def test_wrn_pre_and_post_taps_are_the_same_sum() -> None:
    model = small_model("wrn_16_1").eval()
    with torch.no_grad():
        feats = extract_features(model, torch.randn(2, 3, 32, 32), ["layer2.1.preact", "layer2.1"])
    torch.testing.assert_close(feats["layer2.1.preact"], feats["layer2.1"])
    assert (feats["layer2.1"] < 0).any()


def test_feature_taps_keep_gradients_and_remove_hooks() -> None:
    model = small_model("resnet8")
    x = torch.randn(2, 3, 32, 32)
    with FeatureTaps(model, ["layer1.0", "layer2.0.preact", "penultimate"]) as taps:
        logits = model(x)
        assert sum(len(m._forward_hooks) for m in model.modules()) == 3
    assert no_hooks_left(model)
    feats = taps.features
    assert all(f.requires_grad and f.grad_fn is not None for f in feats.values())
    (feats["layer1.0"].pow(2).mean() + logits.sum()).backward()
    assert model.conv1.weight.grad is not None and model.conv1.weight.grad.abs().sum() > 0
    # the hint term alone reaches the stem but not the classifier
    model.zero_grad()
    with FeatureTaps(model, ["layer1.0"]) as taps:
        model(x)
    taps["layer1.0"].sum().backward()
    assert model.conv1.weight.grad.abs().sum() > 0
    assert model.fc.weight.grad is None or model.fc.weight.grad.abs().sum() == 0


def test_hooks_are_removed_when_the_forward_fails() -> None:
    model = small_model("cnn_student")
    with pytest.raises(KdlensError), FeatureTaps(model, ["stage1.0", "logits"]):
        model(torch.randn(2, 3, 28, 28))  # built for 32×32
    assert no_hooks_left(model)


def test_unknown_layer_lists_close_matches_before_any_forward() -> None:
    model = small_model("resnet20")
    calls = []
    model.register_forward_pre_hook(lambda m, a: calls.append(1))
    with pytest.raises(KdlensError, match=r"unknown layer 'layer2\.l'.*Did you mean:.*layer2\.1"):
        extract_features(model, torch.randn(2, 3, 32, 32), ["layer1.0", "layer2.l"])
    with pytest.raises(KdlensError, match="penultimate"):
        FeatureTaps(model, ["penultimat"])
    assert calls == []
    with pytest.raises(KdlensError, match="post"):
        list_taps(model, "posts")


def test_features_before_a_forward_is_a_clear_error() -> None:
    taps = FeatureTaps(small_model("resnet8"), ["layer1.0"])
    with pytest.raises(KdlensError, match="not reached"):
        _ = taps.features


def test_channels_last_features_match() -> None:
    model = small_model("resnet14").eval()
    x = torch.randn(2, 3, 32, 32)
    names = ["layer2.1", "layer3.0.preact", "penultimate"]
    with torch.no_grad():
        ref = extract_features(model, x, names)
        cl = extract_features(model, x.to(memory_format=torch.channels_last), names)
    for n in names:
        torch.testing.assert_close(cl[n], ref[n], atol=1e-5, rtol=1e-4)


def test_extraction_points() -> None:
    assert extraction_points(create_model("resnet20", 10)) == {
        "A": "layer1.2", "B": "layer2.2", "C": "layer3.2", "D": "penultimate", "E": "logits",
    }  # fmt: skip
    assert extraction_points(create_model("wrn_40_2", 10))["A"] == "layer1.5"
    assert list(extraction_points(create_model("resnet18", 10)).values())[:3] == ["layer2.1", "layer3.1", "layer4.1"]
    assert extraction_points(create_model("cnn_teacher_large", 10)) == {
        "A": "stage1.1", "B": "stage2.1", "C": "stage3.1", "D": "penultimate", "E": "logits",
    }  # fmt: skip
    assert extraction_points(create_model("baseline_student", 10)) == {"D": "penultimate", "E": "logits"}
    for name in list_models():
        if name in DEPRECATED_NAMES:
            continue
        model = small_model(name)
        points, taps = extraction_points(model), list_taps(model)
        assert list(points) == sorted(points) and set(points.values()) <= set(taps)
        assert [taps.index(p) for p in points.values()] == sorted(taps.index(p) for p in points.values())


class Foreign(nn.Module):
    """A non-zoo model with an in-place ReLU and no penultimate module."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.act = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.flat = nn.Flatten()
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.flat(self.gap(self.conv2(self.pool(self.act(self.conv(x)))))))


def test_any_module_works_with_fallback_taps() -> None:
    model = Foreign()
    assert list_taps(model) == ["conv", "act", "pool", "conv2", "gap", "flat", "head", "penultimate", "logits"]
    x = torch.randn(2, 1, 8, 8)
    feats = extract_features(model, x, ["conv", "penultimate", "logits"])
    # the in-place ReLU that follows must not overwrite the captured conv output
    torch.testing.assert_close(feats["conv"], model.conv(x))
    assert (feats["conv"] < 0).any()
    pooled = model.gap(model.conv2(model.pool(F.relu(model.conv(x)))))
    torch.testing.assert_close(feats["penultimate"], pooled.flatten(1))
    torch.testing.assert_close(feats["logits"], model(x))
    # two stages (8×8, 4×4): C stays the last stage, as for the zoo models
    assert extraction_points(model, x) == {"B": "act", "C": "conv2", "D": "penultimate", "E": "logits"}


def test_foreign_model_hint_layers_need_an_example_input() -> None:
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.resnet18(weights=None, num_classes=10).train()
    with pytest.raises(KdlensError, match="example_input"):
        conventional_hint_layers(model)
    before = model.bn1.running_mean.clone()
    hints = conventional_hint_layers(model, torch.randn(1, 3, 64, 64))
    assert hints[-4:] == ["layer1", "layer2", "layer3", "layer4"]
    assert model.training and torch.equal(model.bn1.running_mean, before)  # dry run left no trace
    feats = extract_features(model, torch.randn(2, 3, 64, 64), ["layer1.0.bn1", "layer4", "penultimate"])
    assert feats["penultimate"].shape == (2, 512)
    assert (feats["layer1.0.bn1"] < 0).any()  # taken before torchvision's in-place ReLU
