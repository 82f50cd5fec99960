"""DistributedDataParallel: 2 CPU processes (gloo, torchrun) match one process with the same global batch."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
import torch

from kdlens.config import TrainConfig, validate
from kdlens.errors import KdlensError
from kdlens.store import RunIndex, safe_torch_load
from kdlens.train.ddp import main as ddp_main
from kdlens.train.ddp import run_training_ddp
from kdlens.train.run import run_training

# thesis_student has batch norm; 1437 digits / 256 leaves a last batch of 157 (unequal shares)
OVERRIDES = ["model.name=thesis_student", "data.name=digits", "epochs=1", "batch_size=256", "eval_every=1"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_match_one_process(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    for _attempt in range(2):  # a port taken between choosing and binding it: try another once
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(_free_port()), "-m", "kdlens.train.ddp", *OVERRIDES, f"out={tmp_path}",
               "name=ddp", "--quiet"]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
        if done.returncode == 0 or "address already in use" not in done.stderr.lower():
            break
    assert done.returncode == 0, done.stderr[-3000:]
    assert "run ddp-" in done.stdout and "done" in done.stdout

    cfg = validate(TrainConfig, {"model": {"name": "thesis_student"}, "data": {"name": "digits"}, "epochs": 1,
                                 "batch_size": 256, "out": str(tmp_path), "name": "single"})
    single = run_training(cfg, progress=False)
    (ddp,) = [r for r in RunIndex(tmp_path).list("done") if r.id.startswith("ddp-")]
    assert ddp.metrics["ddp_world_size"] == 2 and ddp.metrics["ddp_backend"] == "gloo"
    a = safe_torch_load(f"{ddp.path}/checkpoints/last.pt")["model"]
    b = safe_torch_load(single.path / "checkpoints" / "last.pt")["model"]
    assert a.keys() == b.keys()  # plain layout: no "module." prefix, batch-norm buffers as usual
    for key in a:
        if a[key].dtype.is_floating_point:
            torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)
    assert abs(ddp.metrics["final_acc"] - single.metrics["final_acc"]) < 0.5
    assert ddp.id.split("-")[-1] == single.run_id.split("-")[-1]  # same config hash as `kdlens train`


def test_outside_torchrun_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(KdlensError, match="torchrun"):
        run_training_ddp(validate(TrainConfig, {}))
    assert ddp_main(["epochz=3"]) == 2 and "did you mean epochs" in capsys.readouterr().err
