"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Write to a temporary file in the same directory, flush + fsync, then ``os.replace``
(atomic on POSIX).  If writing fails (disk full, kill), the temporary file is removed
and the previous file is untouched; a full disk (or the process's file-size limit, ``ulimit -f``)
is a :class:`~kdlens.errors.DiskFullError` naming the file.
"""

from __future__ import annotations

import errno
import io
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported where it is used: `kdlens --help` and `kdlens runs` stay light
    import torch


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise_if_disk_full(exc, path, len(data), existed=path.exists())
        raise


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.0f} KiB" if n >= 2**10 else f"{n} bytes"


def raise_if_disk_full(exc: OSError, path: Path, nbytes: int, existed: bool = True) -> None:
    """Re-raise a no-space ``OSError`` from writing ``path`` as a :class:`DiskFullError`."""
    from kdlens.errors import DiskFullError

    if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return
    before = f"the previous {path.name} is unchanged" if existed else "nothing was written"
    if exc.errno == errno.EFBIG:
        error = DiskFullError(
            f"the file-size limit of this process ({_file_size_limit()}, `ulimit -f`) stopped writing "
            f"{path.name} in {str(path.parent)!r} ({_size(nbytes)} needed); {before}. Raise the limit "
            "(ulimit -f unlimited) or write elsewhere (--out)."
        )
        error.errno = exc.errno
        raise error from exc
    try:
        free = f", {_size(shutil.disk_usage(path.parent).free)} free"
    except OSError:
        free = ""
    error = DiskFullError(
        f"no space left on the device of {str(path.parent)!r} while writing {path.name} "
        f"({_size(nbytes)} needed{free}); {before}. Free some space or write elsewhere (--out)."
    )
    error.errno = exc.errno
    raise error from exc


def _file_size_limit() -> str:
    try:
        import resource

        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    except (ImportError, OSError, ValueError):
        return "unknown"
    return "unlimited" if limit == resource.RLIM_INFINITY else _size(limit)


def atomic_keep_copy(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Make ``dst`` hold ``src``'s current content, atomically: a hard link (no bytes written,
    so it works on a full disk) renamed over ``dst``; a copy through :func:`atomic_write_bytes`
    where the file system has no hard links.  Replacing ``src`` later leaves ``dst`` as it is."""
    src, dst = Path(src), Path(dst)
    tmp = dst.parent / f".{dst.name}.{uuid.uuid4().hex[:12]}.tmp"
    try:
        os.link(src, tmp)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK,
                             errno.ENOSYS):
            raise
        atomic_write_bytes(dst, src.read_bytes())
        return
    try:
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` through :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, torch_bytes(obj))


def torch_bytes(obj: Any) -> bytes:
    """What ``torch.save(obj)`` writes, in memory."""
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def safe_torch_load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """Load a checkpoint with ``weights_only=True``: tensors and plain containers only.

    A file holding pickled code (arbitrary classes or functions) is refused instead of
    executed.
    """
    import torch

    from kdlens.errors import KdlensError

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise KdlensError(f"checkpoint {str(path)!r} does not exist") from None
    except Exception as exc:  # UnpicklingError, RuntimeError on truncated zip, ...
        raise KdlensError(
            f"cannot load checkpoint {str(path)!r} safely: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}. kdlens only loads tensors and "
            "plain containers (torch.load(weights_only=True)); a truncated file or one with "
            "pickled code is refused."
        ) from None
