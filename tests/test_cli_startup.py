"""The command line starts without torch (issue 14): importing ``kdlens.cli.main``, ``kdlens
--help`` and ``kdlens runs`` never import it (torch alone takes seconds to import); the commands
that build models or losses import it when they run.  Behaviour, not timing: the figures are
``benchmarks/cli_startup.py``'s."""

from __future__ import annotations

import subprocess
import sys

from kdlens.store.index import RunIndex


def _modules_after(code: str) -> set[str]:
    """The heavy modules loaded by a fresh interpreter running ``code``."""
    probe = code + "\nimport sys\nprint('LOADED:', *(m for m in ('torch', 'torchvision', 'matplotlib', 'sklearn') " \
                   "if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    (line,) = [ln for ln in out.stdout.splitlines() if ln.startswith("LOADED:")]
    return set(line.split()[1:])


def test_importing_the_cli_imports_no_torch():
    assert _modules_after("import kdlens.cli.main") == set()


def test_help_and_runs_import_no_torch(tmp_path):
    RunIndex(tmp_path / "store").start("r1", "train", "h", tmp_path / "store" / "r1")
    run = ("from kdlens.cli.main import app\n"
           "try:\n    app({args}, standalone_mode=False)\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n")
    assert _modules_after(run.format(args=["--help"])) == set()
    assert _modules_after(run.format(args=["runs", "--out", str(tmp_path / "store")])) == set()
    assert _modules_after(run.format(args=["study", "run", "--help"])) == set()


def test_the_store_imports_no_torch():
    assert _modules_after("import kdlens.store, kdlens.store.listing") == set()
