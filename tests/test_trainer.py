import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from typer.testing import CliRunner

from kdlens.cli.main import app
from kdlens.config import TrainConfig, validate
from kdlens.store import RunIndex, safe_torch_load
from kdlens.train.run import run_training
from kdlens.train.schedules import default_milestones


def _cfg(tmp_path, **kw):
    base = {"model": {"name": "thesis_student"}, "data": {"name": "digits"}, "epochs": 3,
            "out": str(tmp_path / "runs"), "batch_size": 64}
    base.update(kw)
    return validate(TrainConfig, base)


def test_repdistiller_milestones_scale_with_epochs():
    assert default_milestones(240) == [150, 180, 210]
    assert default_milestones(24) == [15, 18, 21]


def test_training_learns_and_is_recorded(tmp_path):
    out = run_training(_cfg(tmp_path), progress=False)
    assert out.metrics["final_acc"] > 80.0  # 10 classes: chance is 10%
    rows = (out.path / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 3
    assert (out.path / "splits" / "train.npy").exists() and (out.path / "versions.json").exists()
    rec = RunIndex(tmp_path / "runs").get(out.run_id)
    assert rec.status == "done" and rec.metrics["final_acc"] == out.metrics["final_acc"]
    again = run_training(_cfg(tmp_path), progress=False)  # same config → skipped
    assert again.skipped and again.metrics == out.metrics


def test_same_seed_same_weights_on_cpu(tmp_path):
    a = run_training(_cfg(tmp_path, name="a", epochs=2), progress=False)
    b = run_training(_cfg(tmp_path, name="b", epochs=2), progress=False)
    wa = safe_torch_load(a.path / "checkpoints" / "last.pt")["model"]
    wb = safe_torch_load(b.path / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_killed_run_resumes_to_identical_weights(tmp_path):
    """kill -9 mid-run, then --resume: same final weights as an uninterrupted run."""
    runs = tmp_path / "runs"
    args = ["--model", "thesis_teacher_small", "--dataset", "digits", "--epochs", "6", "--out", str(runs), "--quiet"]
    ref = CliRunner().invoke(app, ["train", *args, "--name", "ref"])
    assert ref.exit_code == 0, ref.output
    cmd = [sys.executable, "-m", "kdlens.cli", "train", *args, "--name", "killed"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = None
    deadline = time.time() + 120
    while time.time() < deadline:
        found = list(runs.glob("killed-*/metrics.jsonl"))
        if found and len(found[0].read_text().splitlines()) >= 2:
            metrics = found[0]
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert metrics is not None, "run never reached epoch 2"
    assert len(metrics.read_text().splitlines()) < 6, "run finished before it was killed"
    assert RunIndex(runs).list("interrupted"), "killed run should read interrupted (its process is gone)"
    resumed = CliRunner().invoke(app, ["train", *args, "--name", "killed", "--resume"])
    assert resumed.exit_code == 0, resumed.output
    ref_dir = next(runs.glob("ref-*"))
    killed_dir = metrics.parent
    w_ref = safe_torch_load(ref_dir / "checkpoints" / "last.pt")["model"]
    w_res = safe_torch_load(killed_dir / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(w_ref[k], w_res[k]) for k in w_ref)
    assert len(metrics.read_text().splitlines()) == 6


def test_cli_bad_input_exits_2_and_writes_nothing(tmp_path):
    runner = CliRunner()
    runs = tmp_path / "runs"
    cases = [
        ["--model", "resnet21"],
        ["--dataset", "fashion_mnistt"],
        ["optim.lr=-0.1"],
        ["data.remove_classes=[12]"],
        ["--budget", "100000"],
        ["optim.momentun=0.5"],
    ]
    for extra in cases:
        result = runner.invoke(app, ["train", "--out", str(runs), "--epochs", "1", "--quiet", *extra])
        assert result.exit_code == 2, (extra, result.output)
        assert "error" in result.output.lower()
        assert not any(runs.glob("*/checkpoints")), extra


def test_unknown_model_lists_close_matches(tmp_path):
    result = CliRunner().invoke(app, ["train", "--model", "resnet21", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "resnet20" in result.output


def test_runs_and_models_commands(tmp_path):
    run_training(_cfg(tmp_path, epochs=1), progress=False)
    result = CliRunner().invoke(app, ["runs", "--out", str(tmp_path / "runs")])
    assert result.exit_code == 0 and "done" in result.output
    result = CliRunner().invoke(app, ["models"])
    assert result.exit_code == 0 and "resnet110" in result.output
