"""The model zoo: registry, published parameter counts, forward shapes, weights loading."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kdlens.errors import KdlensError
from kdlens.models import count_parameters, create_model, list_models
from kdlens.models.thesis_cnn import DEPRECATED_NAMES
from kdlens.models.vats_thesis import LAYOUTS, PUBLISHED_PARAMETERS

REQUIRED = [
    "resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
    "resnet8x4", "resnet32x4", "wrn_16_1", "wrn_16_2", "wrn_28_1", "wrn_40_1", "wrn_40_2",
    "shufflenetv1", "mobilenetv2", "resnet18", "resnet34",
    "cnn_teacher_small", "cnn_teacher_large", "cnn_student", "baseline_student",
    *PUBLISHED_PARAMETERS,  # Vats 2021's models, tested in test_vats_models.py
]  # fmt: skip
SIZED = {"cnn_teacher_small", "cnn_teacher_large", "cnn_student", "baseline_student", *PUBLISHED_PARAMETERS}


def build(name: str, num_classes: int, in_channels: int, size: int) -> nn.Module:
    kw = {"input_size": size} if name in SIZED else {}
    return create_model(name, num_classes, in_channels=in_channels, **kw)


def fits(name: str, size: int) -> bool:
    """Whether ``name`` takes ``size``×``size`` inputs (the thesis's valid-padding teachers need 14 or 22)."""
    return name not in LAYOUTS or LAYOUTS[name].min_input_size() <= size


def test_registry_lists_every_required_model() -> None:
    # the deprecated thesis_* names stay registered (runs and configs that name them still work)
    assert sorted([*REQUIRED, *DEPRECATED_NAMES]) == list_models()


# Published counts: PURSUhInT (Keser et al. 2022) Table 7; Lee & Wallraven 2021 §3.1.
PUBLISHED = [
    ("resnet20", 100, 278_320),
    ("resnet32", 100, 472_760),
    ("resnet110", 100, 1_740_000),
    ("resnet8x4", 100, 1_230_000),
    ("resnet32x4", 100, 7_430_000),
    ("wrn_16_2", 100, 703_280),
    ("wrn_40_2", 100, 2_260_000),
    # "0.37M" has two significant digits: 375,348 with 100 classes, 369,498 with 10 (CIFAR-10);
    # the table's figure fits the 10-class network, see test_wrn_follows_zagoruyko_komodakis.
    ("wrn_28_1", 10, 370_000),
    ("shufflenetv1", 100, 949_260),
    ("resnet18", 1000, 11_690_000),
    ("resnet34", 1000, 21_800_000),
]


@pytest.mark.parametrize(("name", "classes", "published"), PUBLISHED)
def test_parameter_count_matches_published(name: str, classes: int, published: int) -> None:
    n = count_parameters(create_model(name, classes))
    assert abs(n / published - 1) < 0.005, f"{name}: {n} vs published {published}"


def test_wrn_follows_zagoruyko_komodakis() -> None:
    from kdlens.models.wrn import WideResNet

    # Zagoruyko & Komodakis 2016, Table 4: WRN-28-10 36.5M, WRN-40-4 8.9M parameters
    assert round(count_parameters(WideResNet(28, 10, 100)) / 1e6, 1) == 36.5
    assert round(count_parameters(WideResNet(40, 4, 10)) / 1e6, 1) == 8.9
    assert round(count_parameters(create_model("wrn_28_1", 100)) / 1e3) == 375


def test_mobilenetv2_is_the_half_width_crd_variant() -> None:
    # CRD's "MobileNetV2" (width 0.5) has about 0.8M parameters with 100 classes
    assert 0.78e6 < count_parameters(create_model("mobilenetv2", 100)) < 0.84e6
    assert count_parameters(create_model("mobilenetv2", 100, width_mult=1.0)) > 2e6


def test_baseline_student_is_exactly_one_linear_layer() -> None:
    assert count_parameters(create_model("baseline_student", 10, in_channels=1)) == 7_850
    assert count_parameters(create_model("baseline_student", 10, in_channels=3, input_size=32)) == 30_730


@pytest.mark.parametrize(
    ("name", "count"), [("cnn_teacher_small", 1_555_402), ("cnn_teacher_large", 2_330_442), ("cnn_student", 173_690)]
)
def test_cnn_model_counts(name: str, count: int) -> None:
    # kdlens's own CNNs (formerly thesis_*): not the thesis's models, whose counts test_vats_models.py checks
    assert count_parameters(create_model(name, 10, in_channels=1, input_size=28)) == count


def test_cnn_large_teacher_has_dropout_and_small_none() -> None:
    def rates(model: nn.Module) -> set[float]:
        return {m.p for m in model.modules() if isinstance(m, nn.Dropout)}

    assert max(rates(create_model("cnn_teacher_large", 10, in_channels=1))) > 0
    assert rates(create_model("cnn_teacher_small", 10, in_channels=1)) <= {0.0}


CASES = [
    (name, channels, size)
    for channels, size in ((3, 32), (1, 28), (1, 8))
    for name in REQUIRED
    if fits(name, size)
]  # fmt: skip


@pytest.mark.parametrize(("name", "channels", "size"), CASES)
def test_forward_shape(name: str, channels: int, size: int) -> None:
    torch.manual_seed(0)
    model = build(name, 7, channels, size)
    out = model(torch.randn(2, channels, size, size))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", REQUIRED)
def test_channels_last_input_gives_same_logits(name: str) -> None:
    torch.manual_seed(0)
    model = build(name, 5, 3, 32).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
        out = model(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    "name", ["resnet20", "wrn_16_2", "shufflenetv1", "mobilenetv2", "resnet18", "cnn_student", "vats_student_mnist"]
)
def test_in_channels_changes_the_stem(name: str) -> None:
    model = build(name, 10, 1, 28)
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first_conv.in_channels == 1
    with pytest.raises(RuntimeError):
        model(torch.randn(2, 3, 28, 28))


def test_unknown_model_name_lists_close_matches() -> None:
    with pytest.raises(KdlensError, match="resnet20"):
        create_model("resnet2O", 10)


def test_unknown_option_is_a_kdlens_error() -> None:
    with pytest.raises(KdlensError, match="input_size"):
        create_model("cnn_student", 10, input_sise=28)


def test_every_model_accepts_input_size() -> None:
    assert create_model("resnet8", 10, in_channels=1, input_size=28)(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(KdlensError, match="at least 8"):
        create_model("resnet8", 10, input_size=4)


def test_weights_that_do_not_fit_are_a_kdlens_error(tmp_path) -> None:
    path = tmp_path / "r20.pt"
    torch.save(create_model("resnet20", 10).state_dict(), path)
    with pytest.raises(KdlensError, match="do not fit"), pytest.warns(UserWarning, match="classifier"):
        create_model("resnet18", 10, weights=path)


def test_sized_model_refuses_the_wrong_input_size() -> None:
    model = create_model("cnn_student", 10, in_channels=1, input_size=28)
    with pytest.raises(KdlensError, match="input_size=32"):
        model(torch.randn(2, 1, 32, 32))
    with pytest.raises(KdlensError):
        create_model("baseline_student", 10, input_size=4)


def test_models_are_plain_and_logits_are_a_tensor() -> None:
    model = create_model("resnet8", 10)
    assert isinstance(model(torch.randn(2, 3, 32, 32)), torch.Tensor)


def test_resnet_initialisation() -> None:
    model = create_model("resnet20", 10)
    bn = model.layer1[0].bn1
    assert torch.equal(bn.weight, torch.ones_like(bn.weight)) and torch.equal(bn.bias, torch.zeros_like(bn.bias))
    w = model.layer3[0].conv1.weight  # He normal, fan-out: std = sqrt(2 / (64·9))
    assert abs(w.std().item() / (2 / (64 * 9)) ** 0.5 - 1) < 0.1


# --- ImageNet ResNets -------------------------------------------------------------


@pytest.mark.parametrize("name", ["resnet18", "resnet34"])
def test_imagenet_resnet_matches_torchvision_layout_and_outputs(name: str) -> None:
    torchvision = pytest.importorskip("torchvision")
    reference = getattr(torchvision.models, name)(weights=None, num_classes=10).eval()
    model = create_model(name, 10).eval()
    model.load_state_dict(reference.state_dict())  # strict: same names and shapes
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x))


def test_weights_from_a_local_file(tmp_path) -> None:
    source = create_model("resnet18", 10)
    path = tmp_path / "r18.pt"
    torch.save({"state_dict": source.state_dict()}, path)
    loaded = create_model("resnet18", 10, weights=path)
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_weights_with_other_classes_and_channels_adapt(tmp_path) -> None:
    source = create_model("resnet18", 1000)
    path = tmp_path / "r18.pt"
    torch.save(source.state_dict(), path)
    with pytest.warns(UserWarning, match="classifier"):
        model = create_model("resnet18", 10, in_channels=1, weights=str(path))
    assert model.fc.out_features == 10
    torch.testing.assert_close(model.layer4[1].conv2.weight, source.layer4[1].conv2.weight)
    # a grey image replicated to RGB gives the same stem response as the adapted 1-channel stem
    grey = torch.randn(2, 1, 32, 32)
    torch.testing.assert_close(model.conv1(grey), source.conv1(grey.repeat(1, 3, 1, 1)), atol=1e-5, rtol=1e-4)


def test_missing_weights_file_is_a_kdlens_error(tmp_path) -> None:
    with pytest.raises(KdlensError, match="does not exist"):
        create_model("resnet34", 10, weights=tmp_path / "nope.pt")


def test_upsample_adapter_resizes_inputs() -> None:
    model = create_model("resnet18", 10, upsample_to=64)
    seen = []
    model.conv1.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape))
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert seen == [(2, 3, 64, 64)]
    plain = create_model("resnet18", 10)
    assert isinstance(plain.upsample, nn.Identity)
