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
