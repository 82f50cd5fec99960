"""Honest progress (issue 14): phases, and plain lines at least every 10 s without a terminal."""

from __future__ import annotations

import io

from kdlens.train import progress as progress_module
from kdlens.train.progress import TrainingProgress, plain_line


def test_plain_lines_every_interval_and_on_phase_changes(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: clock[0])
    out = io.StringIO()  # not a terminal
    with TrainingProgress("kd", 10, stream=out) as bar:
        for step in range(10):
            clock[0] += 3.0  # 3 s a step → a line every 4th step (≥ 10 s)
            bar.advance(1, loss=0.5)
        bar.phase("evaluating")
        clock[0] += 4.0
        bar.tick()  # < 10 s since the phase line: silent
        clock[0] += 7.0
        bar.tick()  # ≥ 10 s: a line, although no step advanced
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("kd: 0/10 steps (0%) · training")
    assert any("4/10 steps" in line for line in lines) and any("8/10 steps" in line for line in lines)
    assert sum("evaluating" in line for line in lines) == 2
    assert lines[-1].startswith("kd: 10/10 steps (100%) · done")
    gaps = [line for line in lines if "steps" in line]
    assert len(gaps) == 6  # start, 4, 8, phase, tick, done


def test_plain_line_eta():
    assert plain_line("x", 25, 100, "training", "", 30.0) == "x: 25/100 steps (25%) · training · 0:00:30 elapsed, ETA 0:01:30"
