"""The Ray executor gives the same study results as the local one (a local Ray instance of 2 CPUs)."""

from __future__ import annotations

import pytest
import yaml

from kdlens.studies.grid import load_study, run_study, status_rows

ray = pytest.importorskip("ray", reason="Ray is an optional extra (pip install 'kdlens[ray]'); the Ray executor test needs it")

STUDY = {
    "name": "ray",
    "defaults": {"data": {"name": "digits"}, "model": {"name": "baseline_student"}, "epochs": 1},
    "groups": {
        "teacher": {"kind": "train"},
        "student": {"kind": "distill", "needs": ["teacher"], "config": {"teacher": {"run": "${teacher}"}},
                    "grid": {"loss.T": [2, 4]}},
        "entropy": {"kind": "softlabel-entropy", "needs": ["teacher"], "params": {"temperatures": [1, 4]}},
    },
}


def test_ray_matches_local(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(STUDY, sort_keys=False))
    local = load_study(path, out=tmp_path / "local")
    remote = load_study(path, out=tmp_path / "ray")
    run_study(local, workers=1, progress=False)
    summary = run_study(remote, executor="ray", workers=2, progress=False)
    assert summary.ok and summary.ran == 4
    results = lambda s: {r["task"]: (r["status"], r["final_acc"]) for r in status_rows(s)}  # noqa: E731
    assert results(local) == results(remote)
    assert not ray.is_initialized()  # the executor shut down the instance it started
    again = run_study(remote, executor="ray", workers=2, progress=False)  # done: nothing submitted
    assert again.ran == 0
