"""Start-up time of the ``kdlens`` command line against ``python -c "import torch"``.

Times, each as a fresh subprocess (wall clock, output discarded), interleaved over
``--repeats`` rounds (the order rotates every round, so a burst of load elsewhere does not
fall on one command only):

* ``kdlens --help``
* ``kdlens runs --out EMPTY_STORE`` (a store with an index and no runs, made in a temp dir)
* ``kdlens methods`` (needs the loss registry, so torch)
* ``kdlens models`` (builds every zoo model, so torch)
* ``python -c "import torch"`` (the reference)

and prints per command the median, the min–max and the median's ratio to the torch import.
Goal (issue 14): ``--help`` and ``runs`` at most 0.3× the torch import.

    .venv/bin/python benchmarks/cli_startup.py --repeats 5
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL = 0.3
GOAL_COMMANDS = ("kdlens --help", "kdlens runs")


def _kdlens() -> list[str]:
    """The installed console script beside this Python, else ``python -m kdlens.cli``."""
    script = Path(sys.executable).with_name("kdlens")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "kdlens.cli"]


def _machine() -> str:
    model, cores = "unknown CPU", os.cpu_count()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        model = fields.get("Model name", model).strip()
        cores = fields.get("CPU(s)", str(cores)).strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return f"{model}, {cores} CPUs"


def _load() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "unknown"


def _seconds(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {done.returncode}:\n{done.stderr[-2000:]}")
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3, help="rounds; every command runs once a round (≥ 3)")
    ap.add_argument("--skip", nargs="*", default=[], choices=["methods", "models"],
                    help="leave out the commands that need torch")
    args = ap.parse_args()
    if args.repeats < 3:
        ap.error("--repeats must be at least 3")

    store = Path(tempfile.mkdtemp(prefix="kdlens-empty-store-"))
    subprocess.run([sys.executable, "-c", f"from kdlens.store.index import RunIndex; RunIndex({str(store)!r})"],
                   check=True)
    kdlens = _kdlens()
    commands = {
        "import torch": [sys.executable, "-c", "import torch"],
        "kdlens --help": [*kdlens, "--help"],
        "kdlens runs": [*kdlens, "runs", "--out", str(store)],
        "kdlens methods": [*kdlens, "methods"],
        "kdlens models": [*kdlens, "models"],
    }
    for name in args.skip:
        commands.pop(f"kdlens {name}")
    print(f"machine: {_machine()}; load average before: {_load()}")
    print(f"kdlens: {' '.join(kdlens)}; {args.repeats} interleaved rounds, each command a fresh process")
    times: dict[str, list[float]] = {name: [] for name in commands}
    names = list(commands)
    try:
        _seconds(commands["import torch"])  # warm the page cache for every command alike
        _seconds(commands["kdlens --help"])
        for r in range(args.repeats):
            for name in names[r % len(names):] + names[:r % len(names)]:
                times[name].append(_seconds(commands[name]))
    finally:
        shutil.rmtree(store, ignore_errors=True)
    torch_median = statistics.median(times["import torch"])
    print(f"load average after: {_load()}")
    print(f"{'command':<16} {'median s':>9} {'min–max s':>13} {'× import torch':>15}")
    verdict = []
    for name in names:
        t = times[name]
        ratio = statistics.median(t) / torch_median
        print(f"{name:<16} {statistics.median(t):>9.3f} {min(t):>6.3f}–{max(t):<6.3f} {ratio:>15.2f}")
        if name in GOAL_COMMANDS:
            verdict.append(f"{name} {ratio:.2f}× ({'met' if ratio <= GOAL else 'NOT met'})")
    print(f"goal ≤ {GOAL}× the torch import: " + "; ".join(verdict))


if __name__ == "__main__":
    main()
