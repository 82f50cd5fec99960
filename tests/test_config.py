import pytest

from kdlens.config import TrainConfig, apply_overrides, load_config, parse_override
from kdlens.errors import KdlensError


def test_override_values_are_typed():
    assert parse_override("optim.lr=0.1") == (["optim", "lr"], 0.1)
    assert parse_override("data.remove_classes=[1,2]") == (["data", "remove_classes"], [1, 2])
    assert parse_override("name=abc") == (["name"], "abc")
    assert apply_overrides({"optim": {"lr": 1}}, ["optim.momentum=0.5"]) == {"optim": {"lr": 1, "momentum": 0.5}}


def test_yaml_plus_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  name: resnet20\nepochs: 5\n")
    cfg = load_config(TrainConfig, path, ["epochs=7", "data.name=fashion-mnist"])
    assert (cfg.model.name, cfg.epochs, cfg.data.name) == ("resnet20", 7, "fashion-mnist")
    assert cfg.optim.lr == 0.05  # RepDistiller default


@pytest.mark.parametrize(
    "override, expected",
    [
        ("optim.lrr=0.1", r"optim\.lrr: unknown key \(did you mean lr\?\)"),
        ("optim.lr=-1", r"optim\.lr: Input should be greater than 0"),
        ("epochs=abc", r"epochs: .*integer"),
        ("data.fold=2", r"data.fold=2 must be < data.n_folds=1"),
        ("nonsense", r"not of the form key=value"),
    ],
)
def test_bad_config_names_the_key(override, expected):
    with pytest.raises(KdlensError, match=expected):
        load_config(TrainConfig, None, [override])


def test_bad_yaml_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(KdlensError, match="must hold a mapping"):
        load_config(TrainConfig, path)
    with pytest.raises(KdlensError, match="does not exist"):
        load_config(TrainConfig, tmp_path / "missing.yaml")


def test_repeated_key_is_refused_not_silently_dropped(tmp_path):
    # plain yaml.safe_load would keep epochs: 9 and lose epochs: 5 without a word
    path = tmp_path / "dup.yaml"
    path.write_text("model:\n  name: resnet20\nepochs: 5\ndata:\n  name: digits\nepochs: 9\n")
    with pytest.raises(KdlensError, match=r"key 'epochs' appears twice in one mapping \(lines 3 and 6\)"):
        load_config(TrainConfig, path)
    # the same key at different depths is fine
    ok = tmp_path / "ok.yaml"
    ok.write_text("model:\n  name: resnet20\nname: run-a\n")
    assert load_config(TrainConfig, ok).name == "run-a"


def test_example_configs_have_no_repeated_keys():
    from pathlib import Path

    from kdlens.config import read_yaml

    examples = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.yaml"))
    assert len(examples) >= 5
    for path in examples:
        assert isinstance(read_yaml(path), dict), path


def test_example_train_configs_validate():
    from pathlib import Path

    examples = Path(__file__).resolve().parents[1] / "examples"
    teacher = load_config(TrainConfig, examples / "teacher_fmnist.yaml")
    # the recipe that gave the 94.15% teacher of benchmarks/RESULTS.md
    assert (teacher.model.name, teacher.epochs, teacher.optim.schedule) == ("cnn_teacher_small", 40, "cosine")
    # (bf16 on that AVX-512-BF16 machine; precision=auto picks bf16 only where it is native)
    assert (teacher.data.crop_padding, teacher.data.hflip, teacher.precision) == (2, True, "auto")
    assert load_config(TrainConfig, examples / "train.yaml").model.name == "cnn_teacher_small"
