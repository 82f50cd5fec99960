"""Run directories and the SQLite run index."""

from kdlens.store.atomic import (
    atomic_keep_copy,
    atomic_torch_save,
    atomic_write_bytes,
    atomic_write_text,
    safe_torch_load,
)
from kdlens.store.index import Heartbeat, RunIndex, RunRecord
from kdlens.store.rundir import RunDir, config_hash, software_versions

__all__ = [
    "Heartbeat",
    "RunDir",
    "RunIndex",
    "RunRecord",
    "atomic_keep_copy",
    "atomic_torch_save",
    "atomic_write_bytes",
    "atomic_write_text",
    "config_hash",
    "safe_torch_load",
    "software_versions",
]
