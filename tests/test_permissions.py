"""Permissions and early checks (issue 15): one line and exit 2, nothing written."""

from __future__ import annotations

import os

import pytest
from typer.testing import CliRunner

from kdlens.cli.main import app

needs_non_root = pytest.mark.skipif(os.geteuid() == 0, reason="root writes read-only directories")


def test_permission_error_is_one_line_exit_2(tmp_path, monkeypatch):
    """Simulated for root too: the run store's directory cannot be created."""
    import kdlens.store.index as index_module

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "locked" / "runs.sqlite"))

    monkeypatch.setattr(index_module.RunIndex, "__init__", refuse)
    result = CliRunner().invoke(app, ["train", "--model", "resnet8", "--epochs", "1", "--out", str(tmp_path / "locked"),
                                      "--quiet"])
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "permission denied" in text and "Traceback" not in result.output
    assert result.output.count("error:") == 1  # one message (rich wraps it at the console width)


@needs_non_root
def test_unwritable_out_directory_really(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    result = CliRunner().invoke(app, ["train", "--model", "resnet8", "--epochs", "1", "--out", str(locked / "runs")])
    assert result.exit_code == 2 and "permission denied" in result.output


def test_tune_with_a_bad_teacher_writes_nothing(tmp_path):
    config = tmp_path / "tune.yaml"
    config.write_text(
        f"base: {{teacher: {{run: {tmp_path / 'no-such-run'}}}, model: {{name: resnet8}}, "
        f"data: {{name: digits, val_fraction: 0.2}}, epochs: 1, out: {tmp_path / 'out'}}}\ntrials: 1\n"
    )
    result = CliRunner().invoke(app, ["tune", str(config)])
    assert result.exit_code == 2, result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX only")
def test_study_status_reads_a_store_this_user_cannot_write(tmp_path):
    """A colleague's finished study, read-only: status rows come back, nothing is written."""
    import shutil
    import tempfile
    from pathlib import Path

    import yaml

    from kdlens.studies.grid import load_study, open_study, run_study, status_rows

    doc = {"name": "tiny", "defaults": {"data": {"name": "digits"}, "model": {"name": "baseline_student"}, "epochs": 1},
           "groups": {"teacher": {"kind": "train", "grid": {"seed": [0]}}}}
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(doc))
    run_study(load_study(tmp_path / "study.yaml", out=tmp_path / "s"), workers=1, progress=False)
    shared = Path(tempfile.mkdtemp(prefix="kdlens-ro-study-"))  # outside pytest's private tmp
    try:
        ro = shared / "s"
        shutil.copytree(tmp_path / "s", ro)
        for extra in ro.rglob("*.sqlite-*"):
            extra.unlink()
        before = sorted(str(p) for p in ro.rglob("*"))
        for p in [*ro.rglob("*"), ro]:
            p.chmod(0o555 if p.is_dir() else 0o444)
        shared.chmod(0o755)
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child, as another user when we are root
            try:
                if os.geteuid() == 0:
                    os.setgid(65534)
                    os.setuid(65534)
                rows = status_rows(open_study(ro))
                os.write(write, ",".join(r["status"] for r in rows).encode())
            except BaseException as exc:
                os.write(write, f"{type(exc).__name__}: {exc}".encode())
            os._exit(0)
        os.close(write)
        os.waitpid(pid, 0)
        with os.fdopen(read) as f:
            said = f.read()
        assert said == "done", said
        assert sorted(str(p) for p in ro.rglob("*")) == before  # nothing written
    finally:
        for p in [shared, *shared.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)
        shutil.rmtree(shared)
