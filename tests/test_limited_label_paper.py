"""The `paper` scale of `kdlens study limited-label` (Lee & Wallraven 2021, issue 17), run on
tiny files in the real formats: CIFAR-100 python pickles and a torchvision resnet18 state_dict."""

import sys
from pathlib import Path

import pytest
import torch
import torchvision
import yaml
from typer.testing import CliRunner

from kdlens.cli.main import app
from kdlens.models.registry import count_parameters, create_model
from kdlens.studies.limited_label import fmt_mean_range, limited_label_table
from kdlens.studies.limited_label_paper import PAPER_OPTIM, PAPER_SCALE, default_resnet18_weights
from kdlens.train.teacher import init_from

sys.path.insert(0, str(Path(__file__).parent))
from data_fixtures.formats import write_cifar100  # noqa: E402


def _said(res) -> str:
    return " ".join(res.output.replace("│", " ").split())


def _wrn_block(cin: int, cout: int) -> int:
    """Pre-activation block: BN(cin) + 3×3 conv + BN(cout) + 3×3 conv (+ 1×1 shortcut when cin ≠ cout)."""
    return 2 * cin + 9 * cin * cout + 2 * cout + 9 * cout * cout + (cin * cout if cin != cout else 0)


def test_wrn_28_1_parameter_count_by_hand():
    n = (28 - 4) // 6  # 4 blocks per stage, widths 16, 32, 64
    expected = (9 * 3 * 16  # stem 3×3 conv, no bias
                + _wrn_block(16, 16) * n
                + _wrn_block(16, 32) + _wrn_block(32, 32) * (n - 1)
                + _wrn_block(32, 64) + _wrn_block(64, 64) * (n - 1)
                + 2 * 64  # final BN
                + 64 * 100 + 100)  # classifier
    assert expected == 375_348  # "0.37M" (Zagoruyko & Komodakis; PURSUhInT Table 7)
    assert count_parameters(create_model("wrn_28_1", 100)) == expected


def test_resnet18_teacher_matches_torchvision_and_loads_its_state_dict(tmp_path):
    teacher = create_model("resnet18", 100, upsample_to=224)
    # torchvision's 11,689,512 parameters at 1000 classes, minus 900 rows of the 512-wide head
    assert count_parameters(teacher) == 11_689_512 - 900 * 513
    torch.manual_seed(1)
    imagenet = torchvision.models.resnet18()
    torch.save(imagenet.state_dict(), tmp_path / "r18.pth")
    data = type("D", (), {"num_classes": 100, "name": "cifar100"})()
    replaced = init_from(teacher, str(tmp_path / "r18.pth"), data, log=False)
    assert replaced == ["fc.weight", "fc.bias"]  # the 1000-class head is replaced, the rest loaded
    assert torch.equal(teacher.conv1.weight, imagenet.conv1.weight)
    assert torch.equal(teacher.layer4[1].bn2.running_var, imagenet.layer4[1].bn2.running_var)
    assert teacher(torch.zeros(2, 3, 32, 32)).shape == (2, 100)


def test_paper_settings_are_the_papers():
    assert PAPER_SCALE["budgets"] == (400, 2500, 5000, 10000, 20000) and PAPER_SCALE["folds"] == 5
    assert (PAPER_SCALE["teacher"], PAPER_SCALE["student"], PAPER_SCALE["dataset"]) == ("resnet18", "wrn_28_1", "cifar100")
    assert PAPER_SCALE["temperature"] == 4.0 and PAPER_SCALE["augmentation"] == {"crop_padding": 0, "hflip": True}
    assert (PAPER_OPTIM["lr"], PAPER_OPTIM["schedule"], PAPER_OPTIM["gamma"], PAPER_OPTIM["step_size"]) == (0.1, "step", 0.2, 60)
    assert default_resnet18_weights().name == "resnet18-f37072fd.pth"  # torchvision's IMAGENET1K_V1 file


def test_fold_spread_is_max_minus_min():
    assert fmt_mean_range([50.0, 53.0, 51.0]) == "51.33 (max−min 3.00)"
    rows = [{"budget": 400, "fold": f, "teacher": 60.0 + f, "undistilled": 40.0, "distilled": 42.0 + 2 * f} for f in range(3)]
    table = limited_label_table(rows, spread="range")
    assert "| 400 | 40.00 (max−min 0.00) | 44.00 (max−min 4.00) | 61.00 (max−min 2.00) | +4.00 |" in table


def test_missing_files_exit_2_naming_the_paths(tmp_path):
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["study", "limited-label", "--scale", "paper", "--data-root", str(tmp_path / "d"),
                                   "--teacher-weights", str(tmp_path / "w.pth"), "--out", str(out)])
    said = _said(res)
    assert res.exit_code == 2
    assert "cifar-100-python" in said and "train, test, meta" in said and "--data-root" in said
    assert "w.pth" in said and "resnet18 state_dict" in said and "--teacher-weights" in said
    assert not out.exists()


@pytest.fixture()
def paper_files(tmp_path):
    write_cifar100(tmp_path / "data", n_train=400, n_test=100)  # 4 images per class
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "resnet18.pth")
    return tmp_path / "data", tmp_path / "resnet18.pth"


def test_paper_scale_runs_on_tiny_files(paper_files, tmp_path):
    root, weights = paper_files
    out = tmp_path / "ll"
    res = CliRunner().invoke(app, [
        "study", "limited-label", "--scale", "paper", "--data-root", str(root), "--teacher-weights", str(weights),
        "--budgets", "100", "--folds", "2", "--labeled-epochs", "1", "--student-epochs", "1",
        "--unlabeled-limit", "64", "--teacher-upsample", "32", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "| 100 |" in res.output and "max−min" in res.output
    configs = {p.name.split("-")[0] + p.name.split("-")[2]: yaml.safe_load((p / "config.yaml").read_text())
               for p in out.iterdir() if p.is_dir() and (p / "config.yaml").is_file()}
    assert sorted(configs) == ["df0", "df1", "teacherf0", "teacherf1", "udf0", "udf1"]
    for name, cfg in configs.items():
        fold = int(name[-1])
        assert cfg["data"]["name"] == "cifar100" and cfg["data"]["root"] == str(root)
        assert (cfg["data"]["crop_padding"], cfg["data"]["hflip"]) == (0, True)  # flips only
        assert cfg["data"]["split_seed"] == fold  # independent draws per fold
        assert {k: cfg["optim"][k] for k in ("lr", "schedule", "gamma", "step_size")} == {
            "lr": 0.1, "schedule": "step", "gamma": 0.2, "step_size": 60}
        assert cfg["batch_size"] == 64
    teacher = configs["teacherf0"]["model"]
    assert teacher["name"] == "resnet18" and teacher["init"] == str(weights) and teacher["kwargs"] == {"upsample_to": 32}
    assert configs["udf0"]["model"]["name"] == "wrn_28_1" and configs["df0"]["loss"] == {"T": 4.0}


@pytest.mark.parametrize("args, said", [
    (["--teacher-weights", "w.pth"], "belong to the paper scale"),  # cpu scale: a paper-only option
    (["--scale", "paper", "--teacher-init", "runs/T"], "--teacher-init is for the cpu scale"),
    (["--scale", "huge"], "cpu, paper"),
])
def test_options_of_the_other_scale_are_refused(tmp_path, args, said):
    res = CliRunner().invoke(app, ["study", "limited-label", *args, "--out", str(tmp_path / "out")])
    assert res.exit_code == 2 and said in _said(res)
    assert not (tmp_path / "out").exists()
