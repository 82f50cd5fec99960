"""Acceptance (issue 13): from the CLI on a generated image folder, a torchvision ResNet-18
(random init, 10 classes) trained for one epoch, then distilled into a student loaded by
import path, logged to TensorBoard and MLflow — both logs read back."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from kdlens.cli.main import app

STUDENT_MODULE = '''
from torch import nn

class TinyNet(nn.Module):
    def __init__(self, num_classes=10, in_channels=3, width=8):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(),
                                      nn.MaxPool2d(2), nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))
'''


def write_folder(root: Path, classes: int = 10, n_train: int = 6, n_test: int = 2, size: int = 32) -> Path:
    """``root/train/<class>/*.png`` and ``root/val/...``: each class a distinct colour + noise."""
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("val", n_test)):
        for c in range(classes):
            folder = root / split / f"class_{c:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            base = rng.integers(0, 256, size=3)
            for i in range(n):
                img = np.clip(base + rng.normal(0, 20, size=(size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(folder / f"{i}.png")
    return root


def run(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


@pytest.fixture
def student_package(tmp_path, monkeypatch):
    pkg = tmp_path / "pkgs" / "my_models"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(textwrap.dedent(STUDENT_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path / "pkgs"))
    return "my_models.nets:TinyNet"


def test_torchvision_teacher_on_a_folder_distilled_into_an_imported_student(tmp_path, student_package):
    folder = write_folder(tmp_path / "images")
    out = tmp_path / "runs"
    run("train", "--model", "torchvision:resnet18", "--dataset", f"folder:{folder}", "--epochs", "1",
        "--batch-size", "16", "--out", str(out), "--name", "teacher", "--quiet")
    (teacher_dir,) = [p for p in out.glob("teacher-*") if p.is_dir()]
    assert json.loads((teacher_dir / "result.json").read_text())["final_acc"] is not None

    run("distill", "--teacher", str(teacher_dir), "--student", student_package, "--method", "kd",
        "--dataset", f"folder:{folder}", "--epochs", "2", "--batch-size", "16", "--out", str(out),
        "--name", "student", "--log", "tensorboard", "--log", "mlflow", "--quiet")
    (student_dir,) = [p for p in out.glob("student-*") if p.is_dir()]
    epochs = [json.loads(line) for line in (student_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in epochs] == [1, 2]

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(student_dir / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    test_acc = [e.value for e in events.Scalars("epoch/test_acc")]
    assert test_acc == pytest.approx([row["test_acc"] for row in epochs], abs=1e-4)
    assert "epoch/test_acc5" in tags and any(t.startswith("step/") for t in tags)

    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{out}/mlflow.db")
    (experiment,) = [e for e in client.search_experiments() if e.name == "kdlens"]
    (mlrun,) = client.search_runs([experiment.experiment_id])
    assert mlrun.data.params["method"] == "kd"
    history = client.get_metric_history(mlrun.info.run_id, [k for k in mlrun.data.metrics if "test_acc" in k
                                                             and "acc5" not in k][0])
    assert [h.value for h in sorted(history, key=lambda h: h.step)] == pytest.approx(
        [row["test_acc"] for row in epochs], abs=1e-4)
    artifacts = [a.path for a in client.list_artifacts(mlrun.info.run_id)]
    assert "result.json" in artifacts
