"""The models of Vats 2021 rebuilt from the thesis's parameter counts (Appendix A Table A.1, Appendix B)."""

from __future__ import annotations

import functools
import warnings

import pytest
import torch
from torch import nn

from kdlens.errors import KdlensError
from kdlens.models import count_parameters, create_model, extract_features, extraction_points, list_taps
from kdlens.models.fingerprint import architecture_fingerprint
from kdlens.models.vats_thesis import PUBLISHED_PARAMETERS, KerasStyleCNN, keras_parameter_count

NAMES = sorted(PUBLISHED_PARAMETERS)

# Where no plausible shape reaches the thesis's total: the count here and its difference.
CLOSEST = {
    "vats_teacher_cifar10_small": (5_672_202, -2_432),
    "vats_teacher_cifar10_large": (26_896_522, -5_920),
}

# The thesis's table: conv layers, dense layers (the classifier included), dropout, batch norm.
TABLE = {
    "vats_baseline_28": (0, 1, False, False),
    "vats_baseline_32": (0, 1, False, False),
    "vats_student_mnist": (2, 1, False, False),
    "vats_student_fmnist": (2, 1, False, False),
    "vats_student_cifar10": (3, 1, False, False),
    "vats_teacher_mnist_small": (2, 1, False, False),
    "vats_teacher_mnist_large": (3, 3, True, False),
    "vats_teacher_fmnist_small": (3, 1, False, False),
    "vats_teacher_fmnist_large": (4, 4, True, False),
    "vats_teacher_cifar10_small": (3, 1, False, False),
    "vats_teacher_cifar10_large": (8, 3, True, True),
}


@functools.cache
def native(name: str) -> nn.Module:
    """The model at the thesis's input shape with 10 classes, built once (the large CIFAR-10 teacher is 27M)."""
    channels, size = PUBLISHED_PARAMETERS[name][1]
    torch.manual_seed(0)
    return create_model(name, 10, in_channels=channels, input_size=size)


def test_every_thesis_model_is_listed() -> None:
    assert set(TABLE) == set(PUBLISHED_PARAMETERS)


@pytest.mark.parametrize("name", NAMES)
def test_parameter_count_is_the_thesis_total_or_the_stated_closest(name: str) -> None:
    published = PUBLISHED_PARAMETERS[name][0]
    n = keras_parameter_count(native(name))
    if name in CLOSEST:
        here, difference = CLOSEST[name]
        assert (n, n - published) == (here, difference)
        assert abs(difference) / published < 0.001
    else:
        assert n == published


def test_the_published_totals() -> None:
    totals = {name: total for name, (total, _) in PUBLISHED_PARAMETERS.items()}
    assert totals == {
        "vats_baseline_28": 7_850, "vats_baseline_32": 30_730,
        "vats_student_mnist": 20_490, "vats_student_fmnist": 50_186, "vats_student_cifar10": 534_666,
        "vats_teacher_mnist_small": 1_433_610, "vats_teacher_mnist_large": 2_560_906,
        "vats_teacher_fmnist_small": 1_558_538, "vats_teacher_fmnist_large": 2_339_850,
        "vats_teacher_cifar10_small": 5_674_634, "vats_teacher_cifar10_large": 26_902_442,
    }  # fmt: skip


@pytest.mark.parametrize("name", NAMES)
def test_keras_and_pytorch_counts_differ_only_by_batch_norm_statistics(name: str) -> None:
    model = native(name)
    bn_units = sum(m.num_features for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))
    assert keras_parameter_count(model) - count_parameters(model) == 2 * bn_units


def test_large_cifar10_teacher_pytorch_count() -> None:
    # BN after 4×256 + 4×512 conv channels and 512 + 128 dense units: 3,712 units, 2 buffers each
    assert count_parameters(native("vats_teacher_cifar10_large")) == 26_896_522 - 2 * 3_712 == 26_889_098


@pytest.mark.parametrize("name", NAMES)
def test_layer_counts_dropout_and_batch_norm_as_in_the_table(name: str) -> None:
    model = native(name)
    convs, dense, dropout, bn = TABLE[name]
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == convs
    assert sum(isinstance(m, nn.Linear) for m in model.modules()) == dense
    assert any(isinstance(m, nn.Dropout) and m.p > 0 for m in model.modules()) == dropout
    assert any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()) == bn


@pytest.mark.parametrize("name", ["vats_student_mnist", "vats_student_fmnist"])
def test_28x28_students_follow_the_keras_description(name: str) -> None:
    model = native(name)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) and c.bias is not None for c in convs)
    assert [type(m).__name__ for m in model.features] == ["ConvUnit", "MaxPool2d"] * 2
    widths = {"vats_student_mnist": (1, 16, 32), "vats_student_fmnist": (1, 32, 64)}[name]
    assert (convs[0].in_channels, convs[0].out_channels, convs[1].out_channels) == widths
    assert model.fc.in_features == 7 * 7 * widths[-1]


def test_all_kernels_are_3x3() -> None:
    for name in NAMES:
        assert all(m.kernel_size == (3, 3) for m in native(name).modules() if isinstance(m, nn.Conv2d)), name


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(("channels", "size"), [(1, 28), (3, 32)])
def test_forward_shape(name: str, channels: int, size: int) -> None:
    own_shape = (channels, size) == PUBLISHED_PARAMETERS[name][1]
    classes = 10 if own_shape else 7
    model = native(name) if own_shape else create_model(name, classes, in_channels=channels, input_size=size)
    out = model(torch.randn(2, channels, size, size))
    assert out.shape == (2, classes)
    assert torch.isfinite(out).all()


def test_count_depends_on_the_input_shape() -> None:
    # the flattened size follows the input: 3 channels of 32×32 give the student 8×8 maps
    assert count_parameters(create_model("vats_student_fmnist", 10, in_channels=3, input_size=32)) == (
        3 * 9 * 32 + 32 + 9 * 32 * 64 + 64 + 8 * 8 * 64 * 10 + 10
    )


@pytest.mark.parametrize(("name", "minimum"), [("vats_teacher_mnist_large", 14), ("vats_teacher_fmnist_large", 22),
                                               ("vats_student_mnist", 4)])  # fmt: skip
def test_too_small_inputs_say_the_minimum(name: str, minimum: int) -> None:
    create_model(name, 10, in_channels=1, input_size=minimum)
    with pytest.raises(KdlensError, match=f"at least {minimum}"):
        create_model(name, 10, in_channels=1, input_size=minimum - 1)


def test_wrong_input_size_is_a_kdlens_error() -> None:
    with pytest.raises(KdlensError, match="input_size=32"):
        native("vats_student_fmnist")(torch.randn(1, 1, 32, 32))


def test_dropout_follows_each_hidden_dense_layer() -> None:
    model = native("vats_teacher_fmnist_large")
    assert [type(m).__name__ for m in model.head] == ["DenseUnit", "Dropout"] * 2 + ["DenseUnit"]
    assert {m.p for m in model.modules() if isinstance(m, nn.Dropout)} == {0.5}
    lighter = create_model("vats_teacher_mnist_large", 10, in_channels=1, dropout=0.2)
    assert {m.p for m in lighter.modules() if isinstance(m, nn.Dropout)} == {0.2}


def test_keras_initialisation() -> None:
    model = native("vats_teacher_mnist_large")
    assert all(m.bias.abs().sum() == 0 for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear))
    conv = model.features.conv2.conv
    bound = (6 / (9 * 128 + 9 * 256)) ** 0.5  # Glorot uniform
    assert conv.weight.abs().max() <= bound and conv.weight.abs().max() > 0.9 * bound


def test_hint_stages_are_split_by_the_pools() -> None:
    assert native("vats_teacher_fmnist_small").hint_stages == (
        ("features.conv1",), ("features.conv2", "features.conv3"),
    )  # fmt: skip
    large = native("vats_teacher_cifar10_large")
    assert large.hint_stages == (
        tuple(f"features.conv{i}" for i in range(1, 5)), tuple(f"features.conv{i}" for i in range(5, 9)),
    )  # fmt: skip
    assert native("vats_student_cifar10").hint_stages == (("features.conv1",), ("features.conv2",), ("features.conv3",))
    assert extraction_points(native("vats_student_cifar10")) == {
        "A": "features.conv1", "B": "features.conv2", "C": "features.conv3", "D": "penultimate", "E": "logits",
    }  # fmt: skip


@pytest.mark.parametrize("name", NAMES)
def test_taps(name: str) -> None:
    model = native(name).eval()
    channels, size = PUBLISHED_PARAMETERS[name][1]
    x = torch.randn(3, channels, size, size)
    names = list_taps(model, "all")
    with torch.no_grad():
        feats = extract_features(model, x, names)
        logits = model(x)
    torch.testing.assert_close(feats["logits"], logits)
    torch.testing.assert_close(model.fc(feats["penultimate"]), logits)
    assert feats["penultimate"].shape == (3, model.fc.in_features)
    for block in getattr(model, "hint_blocks", ()):
        post, pre = feats[block], feats[f"{block}.preact"]
        assert post.dim() == 4 and post.shape == pre.shape
        torch.testing.assert_close(post, pre.relu())


def test_hidden_dense_units_have_preactivation_taps() -> None:
    model = native("vats_teacher_mnist_large").eval()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        feats = extract_features(model, x, ["head.fc2.preact", "head.fc2", "penultimate"])
    assert feats["head.fc2"].shape == (2, 256)
    torch.testing.assert_close(feats["head.fc2"], feats["head.fc2.preact"].relu())
    torch.testing.assert_close(feats["penultimate"], feats["head.fc2"])


def test_every_model_is_a_keras_style_cnn_or_the_linear_baseline() -> None:
    for name in NAMES:
        model = native(name)
        assert isinstance(model, KerasStyleCNN) == ("baseline" not in name)


@pytest.mark.parametrize(
    ("old", "new"),
    [("thesis_student", "cnn_student"), ("thesis_teacher_small", "cnn_teacher_small"),
     ("thesis_teacher_large", "cnn_teacher_large")],
)  # fmt: skip
def test_old_names_are_deprecated_aliases_of_the_cnn_models(old: str, new: str) -> None:
    with pytest.warns(DeprecationWarning, match="not the model of Vats 2021"):
        torch.manual_seed(0)
        legacy = create_model(old, 10, in_channels=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch.manual_seed(0)
        current = create_model(new, 10, in_channels=1)
    assert architecture_fingerprint(legacy) == architecture_fingerprint(current)
    for a, b in zip(legacy.state_dict().values(), current.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)


def test_old_student_is_not_the_thesis_student() -> None:
    assert count_parameters(create_model("cnn_student", 10, in_channels=1)) == 173_690
    assert count_parameters(native("vats_student_fmnist")) == 50_186
