"""The Python API (issue 13): README's "Your own model" block and every block of
docs/PYTHON_API.md run as written; identity, weights files and references behave."""

from __future__ import annotations

import importlib
import re
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

import kdlens
from kdlens.errors import KdlensError
from kdlens.models.fingerprint import architecture_fingerprint
from kdlens.models.reference import build_model
from kdlens.models.weights import load_weights

ROOT = Path(__file__).resolve().parents[1]


def python_blocks(markdown: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown, flags=re.S)


def readme_own_model_block() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Your own model", 1)[1].split("\n## ", 1)[0]
    (block,) = python_blocks(section)[:1]
    return block


def test_readme_own_model_block_runs_as_written(tmp_path, monkeypatch, capsys):
    block = readme_own_model_block()
    assert len(block.strip().splitlines()) <= 20
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "readme_example"}
    exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - our own README
    result, hints, views = namespace["result"], namespace["hints"], namespace["views"]
    assert (tmp_path / result.run_dir).is_dir() and result.best_acc > 50.0  # it learned (10 classes)
    assert len(hints.names) == 2 and set(views["embeddings"]) == set("ABCDE")
    assert all(e.shape == (297, 2) for e in views["embeddings"].values())


def test_python_api_doc_blocks_run_in_order(tmp_path, monkeypatch):
    blocks = python_blocks((ROOT / "docs" / "PYTHON_API.md").read_text())
    assert len(blocks) >= 6
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "docs_example"}
    for block in blocks:
        exec(compile(block, "docs/PYTHON_API.md", "exec"), namespace)  # noqa: S102
    assert namespace["run"].metrics["best_acc"] == namespace["result"].best_acc
    assert namespace["student"].metrics["hint_layers"]["teacher"] == ["stage2", "stage3"]
    assert len(namespace["result"].history) == 2
    assert namespace["emb"].shape == (300, 2) and len(namespace["model"].epoch_seconds_) == 5
    assert namespace["reference_loss"] > 0


def tensor_data(n=120, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 8, 8, generator=g)
    y = torch.arange(n) % 4
    x[:, :, :2, :2] += y.view(-1, 1, 1, 1).float()  # learnable
    return torch.utils.data.TensorDataset(x, y)


def write_module(root: Path, name: str, source: str) -> None:
    (root / f"{name}.py").write_text(textwrap.dedent(source))
    sys.modules.pop(name, None)
    importlib.invalidate_caches()


NET = """
from torch import nn
class Net(nn.Module):
    def __init__(self, num_classes=4, in_channels=1):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 4, 3, padding=1)
        self.fc = nn.Linear(4, num_classes)
    def forward(self, x):
        return self.fc(self.conv(x).{act}().mean((2, 3)))
"""


def test_a_changed_model_never_reuses_a_finished_run(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    data = tensor_data()
    write_module(tmp_path, "user_net", NET.format(act="relu"))
    first = kdlens.train(importlib.import_module("user_net").Net(), data, test=data, epochs=1,
                         out=tmp_path / "runs", progress=False)
    again = kdlens.train(importlib.import_module("user_net").Net(), data, test=data, epochs=1,
                         out=tmp_path / "runs", progress=False)
    assert again.skipped and again.run_dir == first.run_dir
    write_module(tmp_path, "user_net", NET.format(act="sigmoid"))  # same names and shapes, new code
    changed = kdlens.train(importlib.import_module("user_net").Net(), data, test=data, epochs=1,
                           out=tmp_path / "runs", progress=False)
    assert not changed.skipped and changed.run_dir != first.run_dir
    # the run of an importable class is rebuilt by reference
    loaded = kdlens.load_run(changed.run_dir)
    assert type(loaded.model).__name__ == "Net" and loaded.config["model"]["name"] == "user_net:Net"


def test_fingerprint_sees_shapes_and_tree_not_weights():
    a, b = build_model("resnet8", 10, 1), build_model("resnet8", 10, 1)
    assert architecture_fingerprint(a) == architecture_fingerprint(b)  # other random weights
    assert architecture_fingerprint(a) != architecture_fingerprint(build_model("resnet8", 100, 1))
    assert architecture_fingerprint(a) != architecture_fingerprint(build_model("resnet14", 10, 1))


def test_weights_files_of_every_common_form(tmp_path):
    src = build_model("resnet8", 10, 1)
    state = src.state_dict()
    forms = {
        "plain.pt": state,
        "lightning.pt": {"state_dict": state, "epoch": 3},
        "kdlens.pt": {"model": state, "optimizer": {}},
        "ddp.pt": {f"module.{k}": v for k, v in state.items()},
    }
    for name, obj in forms.items():
        torch.save(obj, tmp_path / name)
        dst = load_weights(build_model("resnet8", 10, 1), tmp_path / name)
        assert all(torch.equal(dst.state_dict()[k], v) for k, v in state.items()), name
    with pytest.raises(KdlensError, match="does not exist"):
        load_weights(build_model("resnet8", 10, 1), tmp_path / "missing.pt")
    with pytest.raises(KdlensError, match="shape mismatches"):
        load_weights(build_model("resnet8", 100, 1), tmp_path / "plain.pt")
    torch.save(src, tmp_path / "pickled_module.pt")  # a whole module: pickled code, refused
    with pytest.raises(KdlensError, match="safely"):
        load_weights(build_model("resnet8", 10, 1), tmp_path / "pickled_module.pt")


def test_model_references_and_their_errors(tmp_path, monkeypatch):
    from kdlens.models import count_parameters

    assert count_parameters(build_model("torchvision:resnet18", 10)) == 11_181_642  # known count
    timm_model = build_model("timm:resnet18", 10, in_channels=1)
    assert timm_model(torch.zeros(2, 1, 32, 32)).shape == (2, 10)
    with pytest.raises(KdlensError, match="resnet18"):
        build_model("torchvision:resnet19", 10)
    with pytest.raises(KdlensError, match="3-channel"):
        build_model("torchvision:resnet18", 10, in_channels=1)
    with pytest.raises(KdlensError, match="cannot import module 'no_such_pkg.models'"):
        build_model("no_such_pkg.models:Net", 10)
    monkeypatch.syspath_prepend(str(tmp_path))
    write_module(tmp_path, "user_net2", NET.format(act="relu") + "\ndef not_a_model(**kw):\n    return 3\n")
    with pytest.raises(KdlensError, match="Did you mean: Net"):
        build_model("user_net2:Nett", 4, 1)
    with pytest.raises(KdlensError, match="not a torch nn.Module"):
        build_model("user_net2:not_a_model", 4, 1)
    assert build_model("user_net2:Net", 7, 1)(torch.zeros(1, 1, 8, 8)).shape == (1, 7)  # num_classes passed


def test_a_model_with_the_wrong_class_count_is_named_before_any_run(tmp_path):
    data = tensor_data()
    with pytest.raises(KdlensError, match=r"logits of shape \(batch, 4\)"):
        kdlens.train(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), data, test=data, epochs=1,
                     out=tmp_path / "runs", progress=False)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").glob("*/config.yaml"))


def test_python_dataset_reference_and_dataloader_settings(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    write_module(tmp_path, "user_data", """
        import torch
        from torch.utils.data import TensorDataset
        def make():
            g = torch.Generator().manual_seed(1)
            x, y = torch.rand(80, 1, 8, 8, generator=g), torch.arange(80) % 4
            return TensorDataset(x[:60], y[:60]), TensorDataset(x[60:], y[60:])
    """)
    result = kdlens.train("resnet8", "python:user_data:make", epochs=1, out=tmp_path / "runs", progress=False)
    assert result.metrics["data_path"] == "streamed" and len(result.history) == 1
    loader = torch.utils.data.DataLoader(tensor_data(), batch_size=30)
    via_loader = kdlens.train("resnet8", loader, test=tensor_data(seed=1), epochs=1, out=tmp_path / "runs",
                              progress=False)
    config = kdlens.load_run(via_loader.run_dir, model=build_model("resnet8", 4, 1)).config
    assert config["batch_size"] == 30


def test_timm_missing_is_named_with_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm → ImportError
    with pytest.raises(KdlensError, match=r"pip install 'kdlens\[timm\]'"):
        build_model("timm:resnet18", 10)


def test_without_test_a_stratified_tenth_of_train_is_held_out(tmp_path):
    import numpy as np

    result = kdlens.train("resnet8", tensor_data(n=120), epochs=1, out=tmp_path / "runs", progress=False)
    val = np.load(result.run_dir / "splits" / "val.npy")
    train = np.load(result.run_dir / "splits" / "train.npy")
    assert len(val) == 12 and not set(val) & set(train) and result.final_acc is not None
