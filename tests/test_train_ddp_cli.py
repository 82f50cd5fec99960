"""``kdlens train --ddp N``: N local processes under torchrun give the single-process result."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from kdlens.cli.main import app
from kdlens.config import TrainConfig, validate
from kdlens.store import RunIndex, safe_torch_load
from kdlens.train.run import run_training

# as tests/test_ddp.py: batch norm, and a last batch of 157 of 1437 digits (unequal shares)
OVERRIDES = ["model.name=thesis_student", "data.name=digits", "epochs=1", "batch_size=256", "eval_every=1"]


def test_train_ddp_2_matches_one_process(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "kdlens.cli", "train", *OVERRIDES, f"out={tmp_path}", "name=ddp", "--ddp", "2",
           "--quiet"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert done.stdout.count("run ddp-") == 1 and "done" in done.stdout  # only rank 0 reports

    (ddp,) = RunIndex(tmp_path).list("done")
    ddp_path = Path(ddp.path)
    assert (ddp_path / "result.json").is_file() and ddp.metrics["ddp_world_size"] == 2
    assert ddp.metrics["ddp_backend"] == "gloo"
    cfg = validate(TrainConfig, {"model": {"name": "thesis_student"}, "data": {"name": "digits"}, "epochs": 1,
                                 "batch_size": 256, "out": str(tmp_path), "name": "single"})
    single = run_training(cfg, progress=False)
    assert abs(ddp.metrics["final_acc"] - single.metrics["final_acc"]) < 0.5
    a = safe_torch_load(ddp_path / "checkpoints" / "last.pt")["model"]
    b = safe_torch_load(single.path / "checkpoints" / "last.pt")["model"]
    for key in a:
        if a[key].dtype.is_floating_point:
            torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == sorted([ddp_path.name, single.path.name])


@pytest.mark.parametrize(("args", "message"), [
    (["--ddp", "0"], "N ≥ 1"),
    (["--ddp", "3", "batch_size=2"], "smaller than the 3 processes"),
    (["--ddp", "2", "device=cuda:0"], "one GPU"),
])
def test_train_ddp_refuses_what_it_cannot_do(args, message, tmp_path, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    result = CliRunner().invoke(app, ["train", *OVERRIDES, f"out={tmp_path}", *args])
    assert result.exit_code == 2 and message in result.output, result.output
    assert not any(tmp_path.iterdir())  # refused before any work


def test_train_ddp_inside_torchrun_must_match_its_world(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    result = CliRunner().invoke(app, ["train", *OVERRIDES, f"out={tmp_path}", "--ddp", "3"])
    assert result.exit_code == 2 and "leave out --ddp" in result.output, result.output
