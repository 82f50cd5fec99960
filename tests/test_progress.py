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


def test_study_progress_prints_a_status_line_every_interval_off_a_terminal(monkeypatch):
    """A study whose tasks run for minutes is never silent for more than 10 s without a terminal."""
    from types import SimpleNamespace

    from rich.console import Console

    from kdlens.studies.grid import progress as study_progress

    clock = [1000.0]
    monkeypatch.setattr(study_progress.time, "time", lambda: clock[0])
    task = SimpleNamespace(id="teacher_a", kind="train", group="teacher")
    other = SimpleNamespace(id="teacher_b", kind="train", group="teacher")
    states = {"teacher_a": SimpleNamespace(task=task, status="pending", seconds=None, metrics={}, reason=None),
              "teacher_b": SimpleNamespace(task=other, status="pending", seconds=None, metrics={}, reason=None)}
    study = SimpleNamespace(name="s", scale="cpu", directory="d", spec=SimpleNamespace(groups={}))
    out = io.StringIO()
    display = study_progress.StudyProgress(study, states, workers=1, console=Console(file=out, width=200))
    with display:
        states["teacher_a"].status = "running"
        display.event("start", states["teacher_a"])
        for _ in range(50):  # 25 s of polling every 0.5 s
            clock[0] += 0.5
            display.refresh()
    lines = [line for line in out.getvalue().splitlines() if line.startswith("study s:")]
    assert len(lines) == 2  # at 10 s and 20 s
    assert lines[0] == "study s: 0/2 tasks done · running teacher_a (0:10) · elapsed 0:10 · ETA —"
    assert "running teacher_a (0:20)" in lines[1]


def test_study_eta_is_unknown_once_a_running_task_outlasts_its_estimate(monkeypatch):
    """Two train tasks took 10 s each; a third running for 4 s leaves 6 s; at 15 s it has
    outlasted every estimate: the ETA is unknown, not 0:00."""
    from types import SimpleNamespace

    from kdlens.studies.grid import progress as study_progress

    clock = [100.0]
    monkeypatch.setattr(study_progress.time, "time", lambda: clock[0])
    task = SimpleNamespace(id="c", kind="train", group="g")
    states = {"c": SimpleNamespace(task=task, status="running", seconds=None, metrics={}, reason=None)}
    study = SimpleNamespace(name="s", scale="cpu", directory="d", spec=SimpleNamespace(groups={}))
    display = study_progress.StudyProgress(study, states, workers=1, enabled=False)
    display.durations = {"train": [10.0, 10.0]}
    display.started = {"c": 100.0}
    clock[0] = 104.0
    assert display.eta_seconds() == 6.0
    clock[0] = 115.0
    assert display.eta_seconds() is None
