"""Reading the CIFAR-10 / CIFAR-100 "python version" files safely.

Format (Krizhevsky, "The CIFAR-10 and CIFAR-100 datasets",
https://www.cs.toronto.edu/~kriz/cifar.html): each file is a pickled ``dict``
(written by Python 2):

* CIFAR-10 ``cifar-10-batches-py/data_batch_1`` … ``data_batch_5``, ``test_batch``:
  ``data`` uint8 ``N×3072`` (1024 red, 1024 green, 1024 blue values of a 32×32 image,
  row-major), ``labels`` list of N ints in 0..9; ``batches.meta``: ``label_names``.
* CIFAR-100 ``cifar-100-python/train``, ``test``: ``data`` as above, ``fine_labels``
  (0..99), ``coarse_labels`` (0..19); ``meta``: ``fine_label_names``,
  ``coarse_label_names``.

Pickles can run arbitrary code when loaded, so :func:`load_restricted_pickle` uses an
unpickler that only resolves the handful of globals a numpy array needs
(:data:`ALLOWED_GLOBALS`) and refuses everything else with a
:class:`~kdlens.errors.KdlensError`.  (torchvision's own CIFAR classes use plain
``pickle.load``; kdlens never calls them to read files.)
"""

from __future__ import annotations

import codecs
import importlib
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from kdlens.errors import KdlensError

CIFAR_IMAGE_SHAPE = (3, 32, 32)


class UnsafePickleError(KdlensError):
    """A pickle asked for a global that is not on the allow-list."""


class CifarFormatError(KdlensError):
    """A CIFAR file is not a pickle of the expected shape."""


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """Stand-in for ``_codecs.encode`` (used by protocol-2 pickles of ``bytes``):
    only the text codecs that pickle itself emits are allowed, so a pickle cannot
    reach arbitrary codecs."""
    if codecs.lookup(encoding).name not in ("iso8859-1", "utf-8", "ascii"):
        raise UnsafePickleError(f"pickle asked for codec {encoding!r}; only latin-1/utf-8/ascii are allowed")
    return codecs.encode(text, encoding)


def _numpy_attr(modules: tuple[str, ...], attr: str) -> Callable[[], Any]:
    def resolve() -> Any:
        for module in modules:
            try:
                return getattr(importlib.import_module(module), attr)
            except (ImportError, AttributeError):
                continue
        raise UnsafePickleError(f"numpy has no {attr} in {modules}")

    return resolve


_MULTIARRAY = ("numpy._core.multiarray", "numpy.core.multiarray")
_NUMERIC = ("numpy._core.numeric", "numpy.core.numeric")

#: (module, name) pairs a pickle may reference, and how to resolve them.  Python 2
#: era files name ``numpy.core.multiarray``; numpy >= 2 writes ``numpy._core.…``;
#: both map to the same (current) functions without importing deprecated shims.
ALLOWED_GLOBALS: dict[tuple[str, str], Callable[[], Any]] = {
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    **{(m, "_reconstruct"): _numpy_attr(_MULTIARRAY, "_reconstruct") for m in _MULTIARRAY},
    **{(m, "scalar"): _numpy_attr(_MULTIARRAY, "scalar") for m in _MULTIARRAY},
    **{(m, "_frombuffer"): _numpy_attr(_NUMERIC, "_frombuffer") for m in _NUMERIC},
    ("_codecs", "encode"): lambda: _latin1_encode,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :data:`ALLOWED_GLOBALS` (numpy arrays, dtypes,
    scalars) besides pickle's built-in types (dict, list, str, bytes, int, float)."""

    def __init__(self, file: Any, *, source: str = "<pickle>", **kwargs: Any) -> None:
        super().__init__(file, **kwargs)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        resolve = ALLOWED_GLOBALS.get((module, name))
        if resolve is None:
            raise UnsafePickleError(
                f"{self.source}: refusing to load global {module}.{name} from a pickle "
                "(only numpy arrays and plain Python containers are allowed; the file may be "
                "corrupt or malicious)"
            )
        return resolve()

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self.source}: refusing a pickle with persistent ids")


def load_restricted_pickle(path: str | os.PathLike[str]) -> Any:
    """Load a pickle file with :class:`RestrictedUnpickler` (``encoding="latin1"``,
    which is how Python-2 ``str`` data in the CIFAR files must be decoded)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return RestrictedUnpickler(f, source=str(path), encoding="latin1").load()
    except KdlensError:
        raise
    except OSError as exc:
        raise CifarFormatError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except Exception as exc:  # UnpicklingError, EOFError, ValueError, … from a corrupt file
        raise CifarFormatError(f"{path}: not a readable pickle ({type(exc).__name__}: {exc})") from None


def _key(entry: dict, key: str, source: Path) -> Any:
    """``entry[key]`` accepting ``str`` or ``bytes`` keys (both occur in the wild)."""
    if not isinstance(entry, dict):
        raise CifarFormatError(f"{source}: expected a pickled dict, got {type(entry).__name__}")
    for k in (key, key.encode()):
        if k in entry:
            return entry[k]
    keys = sorted(k.decode("latin1") if isinstance(k, bytes) else str(k) for k in entry)
    raise CifarFormatError(f"{source}: missing key {key!r} (found keys: {', '.join(keys)})")


def read_cifar_batch(path: Path, label_keys: tuple[str, ...]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """One CIFAR batch file -> (images uint8 N×3×32×32, {label_key: int64 N})."""
    entry = load_restricted_pickle(path)
    data = np.asarray(_key(entry, "data", path))
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != int(np.prod(CIFAR_IMAGE_SHAPE)):
        raise CifarFormatError(
            f"{path}: 'data' must be uint8 N×3072, got {data.dtype} of shape {data.shape}"
        )
    images = data.reshape(-1, *CIFAR_IMAGE_SHAPE)
    labels = {}
    for key in label_keys:
        values = np.asarray(_key(entry, key, path))
        if values.ndim != 1 or values.shape[0] != images.shape[0] or not np.issubdtype(values.dtype, np.integer):
            raise CifarFormatError(
                f"{path}: {key!r} must hold {images.shape[0]} integers, got {values.dtype} of shape {values.shape}"
            )
        labels[key] = values.astype(np.int64)
    return images, labels


def read_label_names(path: Path, key: str) -> list[str]:
    """Class names from a CIFAR ``batches.meta`` / ``meta`` file."""
    names = _key(load_restricted_pickle(path), key, path)
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, (str, bytes)) for n in names):
        raise CifarFormatError(f"{path}: {key!r} must be a list of names")
    return [n.decode("utf-8") if isinstance(n, bytes) else n for n in names]
