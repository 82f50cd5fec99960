"""Checking and converting representations before any similarity is computed.

Every public similarity function goes through :func:`as_representation` so that the
same mistakes (a 4-D activation map, NaNs, mismatched example counts) get the same
readable :class:`~kdlens.errors.KdlensError` everywhere.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kdlens.errors import KdlensError


def _to_numpy(a: Any) -> np.ndarray:
    """numpy view/copy of ``a``; torch tensors are detached and moved to the CPU."""
    if hasattr(a, "detach") and hasattr(a, "cpu"):  # torch.Tensor, without importing torch
        a = a.detach().cpu()
        if str(a.dtype) in ("torch.bfloat16", "torch.float16"):
            a = a.float()
        a = a.numpy()
    return np.asarray(a)


def as_representation(a: Any, name: str = "x") -> np.ndarray:
    """``a`` as a finite float64 N×C array, or a :class:`KdlensError` saying what is wrong.

    Accepts numpy arrays, anything ``np.asarray`` understands and torch tensors (any
    device/dtype).  The result is always a new or read-only-safe float64 array; callers
    that modify it in place must copy first.
    """
    arr = _to_numpy(a)
    if arr.ndim != 2:
        hint = ""
        if arr.ndim == 4:
            hint = (
                " For a conv feature map N×C×H×W take the spatial mean (x.mean(axis=(2, 3)),"
                " as in PURSUhInT) or flatten it (x.reshape(len(x), -1))."
            )
        elif arr.ndim == 1:
            hint = " For a single feature per example use x.reshape(-1, 1)."
        raise KdlensError(
            f"representation {name!r} must be a 2-D array of shape N×C (examples × features); "
            f"got shape {tuple(arr.shape)}.{hint}"
        )
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise KdlensError(f"representation {name!r} must be numeric; got dtype {arr.dtype}.")
    if np.iscomplexobj(arr):
        raise KdlensError(f"representation {name!r} is complex; similarity needs real features.")
    out = np.asarray(arr, dtype=np.float64)
    if out.shape[0] < 2 or out.shape[1] < 1:
        raise KdlensError(
            f"representation {name!r} has shape {out.shape}; need at least 2 examples and 1 feature."
        )
    check_finite(out, f"representation {name!r}")
    return out


def check_finite(a: np.ndarray, what: str) -> None:
    """Raise a :class:`KdlensError` if ``a`` holds NaN or ±Inf (never return a NaN metric)."""
    if not np.isfinite(a).all():
        n_nan = int(np.isnan(a).sum())
        n_inf = int(np.isinf(a).sum())
        raise KdlensError(
            f"{what} contains non-finite values ({n_nan} NaN, {n_inf} Inf); "
            "remove or impute those examples (e.g. drop rows with ~np.isfinite(x).all(1)) "
            "or check the model for overflow before computing similarity."
        )


def check_same_examples(nx: int, ny: int, xname: str = "x", yname: str = "y") -> None:
    """Both representations must describe the same N examples (rows)."""
    if nx != ny:
        raise KdlensError(
            f"representations {xname!r} and {yname!r} have different numbers of examples "
            f"({nx} vs {ny}); both must be computed on the same N inputs, in the same order."
        )


def centred(x: np.ndarray, name: str | None = None, rescale: bool = True) -> np.ndarray:
    """Column-centred float64 copy of ``x`` (X − 1 meanᵀ = H X with H = I − 11ᵀ/n), divided by
    its largest magnitude when ``rescale``.

    Every similarity of one pair (CKA, R²_CCA, SVCCA, PWCCA) is invariant to scaling a
    representation, and the rescaling keeps their products of sums inside float64's range:
    without it, inputs of magnitude ≳ 1e150 overflowed (linear CKA 0.0 at 1e150, NaN at 1e155)
    and ≲ 1e-150 underflowed.  Sums over mini-batches (:class:`MinibatchCKA`) need the batches
    on one scale: they pass ``rescale=False``.  With ``name`` given, a representation that is
    constant across examples (all centred values below 1e-12 of its largest magnitude, i.e.
    round-off) raises a KdlensError: every similarity of a constant representation is 0/0.
    """
    scale_in = float(np.max(np.abs(x))) if x.size else 0.0
    if rescale and scale_in > 0.0 and np.isfinite(scale_in):
        x = x / scale_in  # centring itself can overflow near float64's limit
    xc = x - x.mean(axis=0, keepdims=True)
    peak = float(np.max(np.abs(xc))) if xc.size else 0.0
    if rescale and peak > 0.0:
        xc = xc / peak
    if name is not None:
        scale = float(np.max(np.abs(x))) if x.size else 0.0
        if scale == 0.0 or peak <= 1e-12 * scale:  # peak: before its own rescaling
            raise KdlensError(
                f"representation {name!r} is constant across examples (zero variance after "
                "centring), so its similarity to anything is undefined; check that the layer "
                "is not dead (all-zero ReLU outputs) or that the right layer was tapped."
            )
    return xc


def as_gram(k: Any, name: str = "K") -> np.ndarray:
    """``k`` as a finite square float64 matrix, or a :class:`KdlensError`."""
    arr = _to_numpy(k)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
        raise KdlensError(
            f"kernel (Gram) matrix {name!r} must be square n×n; got shape {tuple(arr.shape)}. "
            "For features X of shape N×C pass X @ X.T, or use linear_cka(x, y)."
        )
    out = np.asarray(arr, dtype=np.float64)
    check_finite(out, f"kernel matrix {name!r}")
    return out
