"""Reading and writing IDX files (the MNIST / Fashion-MNIST file format).

Format (LeCun, Cortes & Burges, "THE MNIST DATABASE", http://yann.lecun.com/exdb/mnist/):
a 4-byte magic number ``0x00 0x00 <type> <ndim>``, then ``ndim`` big-endian
uint32 sizes, then the data in C order, big-endian.  Type codes: ``0x08`` uint8,
``0x09`` int8, ``0x0B`` int16, ``0x0C`` int32, ``0x0D`` float32, ``0x0E`` float64.
Images are ``idx3`` (N×rows×cols, uint8, magic 2051), labels ``idx1`` (N, uint8,
magic 2049).  Files may be gzip-compressed (detected from the content, not the name).

Every problem with a file (unreadable, bad gzip stream, wrong magic, truncated or
over-long data) is a :class:`~kdlens.errors.KdlensError` that names the file.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from kdlens.errors import KdlensError

#: IDX type code -> numpy dtype (big-endian as stored).
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {dt.newbyteorder("="): code for code, dt in IDX_DTYPES.items()}
_GZIP_MAGIC = b"\x1f\x8b"
_MAX_NDIM = 16  # no real IDX file comes close; guards against garbage headers


class IdxFormatError(KdlensError):
    """An IDX file is corrupt, truncated or not an IDX file."""


def _read_bytes(path: Path) -> bytes:
    try:
        with open(path, "rb") as raw:
            head = raw.read(2)
            raw.seek(0)
            if head == _GZIP_MAGIC:
                with gzip.GzipFile(fileobj=raw, mode="rb") as gz:
                    return gz.read()
            return raw.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise IdxFormatError(f"{path}: corrupt or truncated gzip stream ({exc}); re-download the file") from None
    except OSError as exc:
        raise IdxFormatError(f"{path}: cannot read ({exc.strerror or exc})") from None


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decode IDX bytes (already decompressed) into a native-endian numpy array."""
    if len(data) < 4:
        raise IdxFormatError(f"{source}: not an IDX file (only {len(data)} bytes)")
    zero, code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or code not in IDX_DTYPES or not 1 <= ndim <= _MAX_NDIM:
        raise IdxFormatError(
            f"{source}: not an IDX file (magic number 0x{data[:4].hex()}; expected 0x0000 "
            f"followed by a type code in {sorted(hex(c) for c in IDX_DTYPES)} and 1..{_MAX_NDIM} dimensions)"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IdxFormatError(f"{source}: truncated IDX header ({len(data)} of {header} bytes)")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = IDX_DTYPES[code]
    expected = math.prod(dims) * dtype.itemsize
    found = len(data) - header
    if found != expected:
        problem = "truncated" if found < expected else "has trailing bytes"
        raise IdxFormatError(
            f"{source}: {problem}: header says shape {dims} of {dtype.name} = {expected} data bytes, "
            f"file has {found}"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True)  # writable, native byte order


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed) into a numpy array."""
    path = Path(path)
    return parse_idx(_read_bytes(path), source=str(path))


def encode_idx(array: np.ndarray) -> bytes:
    """The IDX bytes (uncompressed) of ``array``."""
    array = np.asarray(array)
    code = _CODES.get(array.dtype.newbyteorder("="))
    if code is None:
        raise KdlensError(f"IDX cannot store dtype {array.dtype}; use one of {sorted(_CODES, key=str)}")
    if not 1 <= array.ndim <= _MAX_NDIM:
        raise KdlensError(f"IDX stores 1..{_MAX_NDIM} dimensions, got {array.ndim}")
    header = struct.pack(">HBB", 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=IDX_DTYPES[code]).tobytes()


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> Path:
    """Write ``array`` as an IDX file, gzip-compressed when ``path`` ends in ``.gz``."""
    path = Path(path)
    data = encode_idx(array)
    if path.suffix == ".gz":
        data = gzip.compress(data, mtime=0)
    path.write_bytes(data)
    return path
