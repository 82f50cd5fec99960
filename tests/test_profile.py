"""`kdlens.models.profile` and `kdlens profile`: FLOPs, parameters, latency, ratios, CLI."""

import json

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from kdlens.cli.main import app
from kdlens.errors import KdlensError
from kdlens.models import count_parameters
from kdlens.models.profile import (
    compression_ratio,
    count_flops,
    latency_summary,
    measure_latency,
    profile_models,
    speed_up,
)
from kdlens.models.reference import build_model


def test_linear_flops_are_two_per_multiply_add():
    # B=4, in=6, out=5: 4·5 outputs, each 6 multiply-adds → 120 MACs → 240 FLOPs
    assert count_flops(nn.Linear(6, 5), torch.randn(4, 6)) == 2 * 4 * 6 * 5 == 240


def test_conv_flops_hand_worked():
    # B=2, Cin=3, Cout=4, k=3, padding=1 on 5×5 → Hout=Wout=5:
    # 2·B·Cout·Hout·Wout·Cin·k·k = 2·2·4·5·5·3·3·3 = 10,800
    conv = nn.Conv2d(3, 4, 3, padding=1)
    assert count_flops(conv, torch.randn(2, 3, 5, 5)) == 2 * 2 * 4 * 5 * 5 * 3 * 3 * 3 == 10_800
    # stride 2, no padding, on 7×7 → Hout=Wout=3
    conv = nn.Conv2d(3, 4, 3, stride=2)
    assert count_flops(conv, torch.randn(1, 3, 7, 7)) == 2 * 1 * 4 * 3 * 3 * 3 * 3 * 3


def _flops_by_formula(model: nn.Module, example: torch.Tensor) -> int:
    """Σ over Conv2d (2·numel(out)·Cin/g·kh·kw) and Linear (2·numel(out)·in) modules,
    output shapes taken with forward hooks."""
    total = 0
    handles = []

    def hook(module, _inputs, output):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            total += 2 * output.numel() * (module.in_channels // module.groups) * kh * kw
        else:
            total += 2 * output.numel() * module.in_features

    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            handles.append(m.register_forward_hook(hook))
    model.eval()
    with torch.no_grad():
        model(example)
    for h in handles:
        h.remove()
    return total


def test_zoo_model_flops_match_layer_formulae():
    model = build_model("resnet8", num_classes=10, in_channels=3)
    x = torch.randn(2, 3, 16, 16)
    expected = _flops_by_formula(model, x)
    assert expected > 0
    assert count_flops(model, x) == expected


def test_count_flops_restores_training_mode():
    model = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.5))
    model.train()
    count_flops(model, torch.randn(1, 3))
    assert model.training


def test_torchvision_resnet18_parameters():
    assert count_parameters(build_model("torchvision:resnet18", num_classes=10)) == 11_181_642


def test_ratios_and_latency_summary():
    assert compression_ratio(1000, 250) == 4.0
    assert speed_up(9.0, 3.0) == 3.0
    s = latency_summary([4.0, 1.0, 3.0, 2.0, 5.0])
    assert s["median_ms"] == 3.0 and s["q1_ms"] == 2.0 and s["q3_ms"] == 4.0 and s["iqr_ms"] == 2.0
    with pytest.raises(KdlensError):
        latency_summary([])


def test_measure_latency_reports_threads_and_batch():
    lat = measure_latency(nn.Linear(4, 2), torch.randn(3, 4), repeats=3, warmup=1)
    assert lat["repeats"] == 3 and lat["batch_size"] == 3 and lat["threads"] == torch.get_num_threads()
    assert lat["median_ms"] > 0 and lat["iqr_ms"] >= 0 and lat["device"] == "cpu"


def test_profile_models_ratios_follow_the_profiles():
    student, teacher = nn.Linear(8, 2), nn.Sequential(nn.Linear(8, 64), nn.Linear(64, 2))
    r = profile_models(student, teacher, example=torch.randn(2, 8), repeats=3, warmup=1)
    assert r.student.flops == 2 * 2 * 8 * 2 and r.student.macs == r.student.flops // 2
    assert r.teacher.flops == 2 * 2 * (8 * 64 + 64 * 2)
    assert r.compression == pytest.approx(r.teacher.params / r.student.params)
    assert r.speed_up == pytest.approx(r.teacher.latency["median_ms"] / r.student.latency["median_ms"])
    assert r.flop_ratio == pytest.approx(r.teacher.flops / r.student.flops)
    d = r.to_dict()
    assert d["input_shape"] == [2, 8] and d["teacher"]["params"] == 8 * 64 + 64 + 64 * 2 + 2
    alone = profile_models(student, example=torch.randn(2, 8), repeats=1, warmup=0)
    assert alone.teacher is None and alone.compression is None and alone.speed_up is None


def test_wrong_input_shape_is_a_user_error():
    with pytest.raises(KdlensError, match="input batch of shape"):
        profile_models(nn.Linear(8, 2), example=torch.randn(1, 5), repeats=1, warmup=0)


def _cli(*args):
    return CliRunner().invoke(app, ["profile", *args])


def test_cli_table_has_student_and_teacher(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing is written without --json
    r = _cli("--model", "resnet8", "--teacher-model", "resnet14", "--input-shape", "1,8,8",
             "--repeats", "3", "--warmup", "1", "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert "student" in r.output and "teacher" in r.output
    assert "resnet8" in r.output and "resnet14" in r.output and "MMACs" in r.output
    assert list(tmp_path.iterdir()) == []


def test_cli_unknown_model_exits_2_with_close_match():
    r = _cli("--model", "resnet9", "--input-shape", "1,8,8", "--repeats", "1")
    assert r.exit_code == 2
    assert "resnet8" in r.output and "Did you mean" in r.output


@pytest.mark.parametrize("args", [["--input-shape", "3,32"], ["--batch-size", "0"], ["--device", "tpu"]])
def test_cli_bad_options_exit_2(args):
    assert _cli("--model", "resnet8", *args).exit_code == 2


def test_cli_json_has_expected_keys(tmp_path):
    path = tmp_path / "sub" / "profile.json"
    r = _cli("--model", "resnet8", "--teacher-model", "resnet14", "--dataset", "digits",
             "--repeats", "3", "--warmup", "1", "--device", "cpu", "--json", str(path))
    assert r.exit_code == 0, r.output
    d = json.loads(path.read_text())
    assert {"student", "teacher", "compression", "speed_up", "flop_ratio", "input_shape", "num_classes"} <= set(d)
    assert d["input_shape"] == [1, 1, 8, 8] and d["num_classes"] == 10
    for role in ("student", "teacher"):
        assert {"params", "flops", "macs", "latency"} <= set(d[role])
        assert {"median_ms", "iqr_ms", "threads"} <= set(d[role]["latency"])
    assert d["compression"] == pytest.approx(d["teacher"]["params"] / d["student"]["params"])
