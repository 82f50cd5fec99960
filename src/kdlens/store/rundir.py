"""A run directory: everything one run produced, findable again.

Layout::

    RUN/config.yaml        resolved configuration
    RUN/versions.json      Python / torch / kdlens versions, git revision
    RUN/splits/NAME.npy    index arrays of every data split used
    RUN/metrics.jsonl      one JSON object per epoch
    RUN/checkpoints/last.pt       the newest training state (model, optimizer, scheduler, RNG, epoch)
    RUN/checkpoints/previous.pt   the one before it, kept when last.pt is replaced
    RUN/checkpoints/best.pt       the training state of the best-scoring epoch
    RUN/result.json        final metrics, written last (the completion marker)
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from kdlens.store.atomic import (
    atomic_keep_copy,
    atomic_write_bytes,
    atomic_write_text,
    raise_if_disk_full,
    torch_bytes,
)


def config_hash(config: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of a resolved config (key order irrelevant)."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def software_versions() -> dict[str, str | None]:
    import torch

    import kdlens

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "kdlens": kdlens.__version__,
        "git_revision": _git_revision(),
        "platform": platform.platform(),
    }


def _git_revision() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


class RunDir:
    """Read and write the files of one run."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        #: called by :meth:`heartbeat` (set by whoever records the run in the store)
        self.on_heartbeat: Callable[[bool], None] | None = None

    def heartbeat(self, force: bool = False) -> None:
        """A sign of life of the process training this run (rate-limited unless ``force``)."""
        if self.on_heartbeat is not None:
            self.on_heartbeat(force)

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoint_dir / "last.pt"

    @property
    def previous_checkpoint(self) -> Path:
        return self.checkpoint_dir / "previous.pt"

    @property
    def best_checkpoint(self) -> Path:
        return self.checkpoint_dir / "best.pt"

    def checkpoint(self, which: str) -> Path:
        """``last``, ``previous`` or ``best``."""
        return self.checkpoint_dir / f"{which}.pt"

    def save_checkpoint(self, state: dict[str, Any], is_best: bool = False) -> None:
        """Write ``state`` as ``last.pt``; the ``last.pt`` it replaces stays as ``previous.pt``
        and, when ``is_best``, ``best.pt`` becomes the new one (hard links where the file
        system has them: no second write).  ``last.pt`` is valid at every moment: a kill or a
        full disk while writing leaves the previous one in place."""
        data = torch_bytes(state)
        if self.last_checkpoint.exists():
            atomic_keep_copy(self.last_checkpoint, self.previous_checkpoint)
        atomic_write_bytes(self.last_checkpoint, data)
        if is_best:
            atomic_keep_copy(self.last_checkpoint, self.best_checkpoint)

    def checkpoint_files(self) -> list[Path]:
        """Every checkpoint of this run, nested phases (a distillation's ``pretrain/``) included."""
        return sorted(p for p in self.path.glob("**/checkpoints/*.pt") if p.is_file())

    def discard_progress(self) -> None:
        """Remove what training wrote — checkpoints, metrics, result, error, TensorBoard events,
        nested phases — keeping config, versions and splits (``--restart``)."""
        for sub in sorted(self.path.iterdir()) if self.path.is_dir() else []:
            nested = sub.is_dir() and ((sub / "checkpoints").exists() or (sub / "metrics.jsonl").exists())
            if sub.name in ("checkpoints", "tensorboard") or nested:
                shutil.rmtree(sub)
        for name in ("metrics.jsonl", "result.json", "error.txt"):
            (self.path / name).unlink(missing_ok=True)

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def result_path(self) -> Path:
        return self.path / "result.json"

    def create(self, config: dict[str, Any]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path / "config.yaml", yaml.safe_dump(config, sort_keys=False))
        atomic_write_text(self.path / "versions.json", json.dumps(software_versions(), indent=2))

    def read_config(self) -> dict[str, Any]:
        return yaml.safe_load((self.path / "config.yaml").read_text())

    def save_split(self, name: str, indices: np.ndarray) -> None:
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(indices, dtype=np.int64), allow_pickle=False)
        atomic_write_bytes(self.path / "splits" / f"{name}.npy", buffer.getvalue())

    def load_split(self, name: str) -> np.ndarray:
        return np.load(self.path / "splits" / f"{name}.npy", allow_pickle=False)

    def append_metrics(self, row: dict[str, Any]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        line = json.dumps(row, sort_keys=True) + "\n"
        try:
            with open(self.metrics_path, "a", encoding="utf-8") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:  # a torn line is dropped when read; resuming truncates to the checkpoint
            raise_if_disk_full(exc, self.metrics_path, len(line))
            raise

    def read_metrics(self) -> list[dict[str, Any]]:
        """Complete JSONL rows; a torn last line (a kill mid-write) is dropped."""
        if not self.metrics_path.exists():
            return []
        rows = []
        for line in self.metrics_path.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break
        return rows

    def truncate_metrics(self, last_epoch: int) -> None:
        """Keep only rows up to ``last_epoch`` (used when resuming from a checkpoint)."""
        rows = [r for r in self.read_metrics() if r.get("epoch", 0) <= last_epoch]
        atomic_write_text(self.metrics_path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))

    def write_result(self, result: dict[str, Any]) -> None:
        atomic_write_text(self.result_path, json.dumps(result, indent=2, sort_keys=True))

    def read_result(self) -> dict[str, Any] | None:
        if not self.result_path.exists():
            return None
        return json.loads(self.result_path.read_text())
