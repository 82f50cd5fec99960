"""Every benchmark script imports and parses its arguments (catches a renamed kdlens API before a
long benchmark run does)."""

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(p for p in BENCH.glob("*.py") if p.name != "median_time.py")


def test_the_benchmarks_are_found():
    assert {"missing_class_sweep.py", "student_step_roofline.py", "distill_throughput.py"} <= {p.name for p in SCRIPTS}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_benchmark_help_runs(script):
    out = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120,
                         cwd=BENCH.parent)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "usage:" in out.stdout.lower()
