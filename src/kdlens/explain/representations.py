"""Layer representations for similarity analysis: every candidate layer reduced to N×C.

PURSUhInT (Keser et al. 2022, *PURSUhInT: In search of informative hint points based on
layer clustering for knowledge distillation*, §3.1) represents a layer by its feature map
on N training samples (N = 10,000 in the paper), averaged over the spatial positions: an
N×C×H×W map becomes the N×C matrix of channel means, on which CKA or R²_CCA between
layers is computed.

:func:`layer_representations` streams the samples through the model in batches.  The
spatial mean is taken *inside the forward hook* (:class:`SpatialMeanTaps`), so at any
time only one block's full feature map of one batch exists; the N×C outputs are filled
in place.  For resnet110 at 32×32 and N = 10,000 that is 81 MB (54 layers, 2,016 channel
means per sample in float32) instead of 20.6 GB of full post-activation maps.

Tap forms (see :mod:`kdlens.models.taps`): ``"post"`` taps each block's output (after
its final ReLU), ``"pre"`` the ``<block>.preact`` tensor before it.

Disk cache (``cache_dir``): one folder per key, holding ``reps.npz`` and ``meta.json``.
The key is a SHA-256 over the model weights (:func:`kdlens.distill.cache.weights_hash`),
the data (``data_key``: dataset name, split, transform — or a SHA-256 of the selected
images when not given — plus a SHA-256 of the sample indices), the layer names, the tap
form and the dtype.  ``reps.npz`` is written atomically first; ``meta.json`` (the key
and the SHA-256 of ``reps.npz``) is the completion marker written after it.  A folder
without a valid marker, or whose ``reps.npz`` does not match the recorded SHA-256
(truncated, corrupted), is a miss and is recomputed and rewritten.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from kdlens.errors import KdlensError, unknown_name
from kdlens.models import FeatureTaps, list_taps

__all__ = [
    "REPRESENTATION_FORMS",
    "SpatialMeanTaps",
    "cached_representations",
    "candidate_layers",
    "indices_sha256",
    "layer_representations",
    "representation_cache_key",
    "spatial_mean",
]

#: tap forms accepted by :func:`candidate_layers` / :func:`layer_representations`.
REPRESENTATION_FORMS = ("post", "pre")
_ALIASES = ("penultimate", "logits")
_CACHE_VERSION = 1
_DTYPES = {"float32": np.float32, "float64": np.float64}


def spatial_mean(t: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """N×C×H×W (or N×C×…) → N×C by the mean over all trailing (spatial) dimensions;
    N×C stays as it is.  Detached, in ``dtype``."""
    t = t.detach()
    if t.ndim < 2:
        raise KdlensError(f"a layer representation needs a batch and a channel dimension; got shape {tuple(t.shape)}")
    if t.ndim == 2:
        return t.to(dtype)
    return t.mean(dim=tuple(range(2, t.ndim)), dtype=dtype)  # no copy for channels-last maps


class SpatialMeanTaps(FeatureTaps):
    """:class:`~kdlens.models.FeatureTaps` that keep only the spatial mean (N×C) of each
    captured feature: the reduction runs inside the forward hook, so full feature maps
    are never cloned or kept after the module that produced them has returned."""

    def __init__(self, model: nn.Module, names: Sequence[str], dtype: torch.dtype = torch.float32) -> None:
        super().__init__(model, names)
        self.dtype = dtype

    def _store(self, name: str) -> Any:
        def on_output(module: nn.Module, args: Any, output: Any) -> None:
            self._captured[name] = spatial_mean(output, self.dtype)

        def on_input(module: nn.Module, args: Any) -> None:
            self._captured[name] = spatial_mean(args[0], self.dtype)

        return on_output, on_input

    def take(self) -> dict[str, Tensor]:
        """The captured N×C means of the last forward (in name order), then forget them."""
        feats = self.features
        self._captured.clear()
        return feats


def candidate_layers(model: nn.Module, form: str = "post") -> list[str]:
    """The candidate hint layers (one per sub-block, forward order) in tap ``form``.

    ``"post"``: block outputs (``layer1.0`` …); ``"pre"``: ``<block>.preact``.  These are
    PURSUhInT's candidate hint points (54 for a CIFAR resnet110).  A block without a
    ``preact`` tap makes ``form="pre"`` an error (the two lists must align by index).
    """
    if form not in REPRESENTATION_FORMS:
        raise unknown_name("tap form", form, REPRESENTATION_FORMS)
    post = [t for t in list_taps(model, "post") if t not in _ALIASES]
    if form == "post":
        return post
    pre = [t for t in list_taps(model, "pre") if t not in _ALIASES]
    if len(pre) != len(post):
        missing = [b for b in post if f"{b}.preact" not in pre]
        raise KdlensError(
            f"form='pre' needs a '<block>.preact' tap in every block; {type(model).__name__} lacks it in "
            f"{missing[:5]}{' …' if len(missing) > 5 else ''}. Use form='post'."
        )
    return pre


def indices_sha256(indices: Any) -> str:
    """SHA-256 of a sample's row indices (as little-endian int64)."""
    arr = np.ascontiguousarray(np.asarray(indices, dtype="<i8").reshape(-1))
    return hashlib.sha256(arr.tobytes()).hexdigest()


def _images_sha256(images: Tensor, rows: np.ndarray) -> str:
    digest = hashlib.sha256(f"{tuple(images.shape[1:])}:{images.dtype}".encode())
    for start in range(0, len(rows), 4096):
        chunk = images[torch.from_numpy(rows[start : start + 4096])].detach().cpu().contiguous()
        digest.update(chunk.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def representation_cache_key(
    weights_sha256: str, data: Mapping[str, Any], layers: Sequence[str], form: str, dtype: str
) -> dict[str, Any]:
    """The fields that define a cached set of representations (hashed into the folder name)."""
    return {
        "version": _CACHE_VERSION,
        "weights_sha256": weights_sha256,
        "data": dict(data),
        "layers": list(layers),
        "form": form,
        "dtype": dtype,
    }


def _key_digest(key: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()


def _file_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _load_cached(folder: Path, key: Mapping[str, Any]) -> dict[str, np.ndarray] | None:
    """The cached arrays if ``folder`` holds a complete, intact entry for ``key``; else None."""
    meta_path, npz_path = folder / "meta.json", folder / "reps.npz"
    try:
        meta = json.loads(meta_path.read_text())
        raw = npz_path.read_bytes()
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("key") != json.loads(json.dumps(key, default=str)):
        return None
    if meta.get("reps_sha256") != _file_sha256(raw):
        return None
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
            arrays = [npz[f"arr_{i}"] for i in range(len(key["layers"]))]
    except (OSError, ValueError, KeyError, EOFError):
        return None
    return dict(zip(key["layers"], arrays, strict=True))


def _write_cache(folder: Path, key: Mapping[str, Any], reps: Mapping[str, np.ndarray]) -> None:
    from kdlens.store import atomic_write_bytes, atomic_write_text

    buffer = io.BytesIO()
    np.savez(buffer, *[reps[name] for name in key["layers"]])  # positional: names may contain '/'
    raw = buffer.getvalue()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "meta.json").unlink(missing_ok=True)  # no stale marker while the data is replaced
    atomic_write_bytes(folder / "reps.npz", raw)
    meta = {"key": key, "reps_sha256": _file_sha256(raw), "shapes": {n: list(reps[n].shape) for n in key["layers"]}}
    atomic_write_text(folder / "meta.json", json.dumps(meta, indent=1, default=str))


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def layer_representations(
    model: nn.Module,
    images: Tensor,
    prepare: Callable[[Tensor], Tensor] | None = None,
    *,
    layers: Sequence[str] | None = None,
    form: str = "post",
    indices: Any = None,
    batch_size: int = 250,
    dtype: str = "float32",
    channels_last: bool = True,
    bf16: bool = False,
    cache_dir: str | Path | None = None,
    data_key: Mapping[str, Any] | None = None,
    progress: bool = False,
    info: dict[str, Any] | None = None,
) -> dict[str, np.ndarray]:
    """Spatially averaged activations of ``layers`` on ``images[indices]``: name → N×C array.

    ``model``: any ``nn.Module`` (run in eval mode under ``torch.no_grad``; its mode is
    restored afterwards), on its own device.  ``images``: N_all×C×H×W tensor (e.g. a
    :class:`~kdlens.data.Dataset`'s uint8 images); ``prepare``: batch → model input on the
    model's device (e.g. ``lambda x: normalize(x, ds.mean, ds.std)``; default: float
    conversion only).  ``indices``: rows to use, in that order (default all).
    ``layers``: tap names (default :func:`candidate_layers` in ``form``).
    ``dtype``: "float32" (default) or "float64" for the means and the returned arrays.
    ``channels_last``: feed 4-D batches in channels-last memory format (the model is not
    touched; convolutions then run channels-last — 1.5–2× faster on the CPUs here, same
    values up to float rounding).  ``bf16``: bfloat16 autocast for the forward pass
    (faster again where the CPU has avx512_bf16, ~1e-2 relative error in the means;
    part of the cache key).

    ``cache_dir``: reuse/save the result on disk (see the module docstring);
    ``data_key``: what identifies the data for the cache, e.g. ``{"dataset": "cifar100",
    "split": "train", "transform": "normalize(...)"}`` — without it a SHA-256 of the
    selected images is used.  ``progress``: a rich progress bar over batches.
    ``info``: if a dict is given, ``"cache"`` ("hit" / "miss" / "off") and ``"cache_dir"``
    are written into it.

    PURSUhInT (Keser et al. 2022) §3.1: the layer representation is the spatial mean of
    the feature map over N = 10,000 training samples.
    """
    if dtype not in _DTYPES:
        raise unknown_name("representation dtype", dtype, _DTYPES)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise KdlensError(f"batch_size must be a positive integer; got {batch_size!r}")
    if not isinstance(images, Tensor) or images.ndim < 2:
        raise KdlensError("images must be a tensor N×C×H×W (e.g. Dataset.images)")
    names = list(layers) if layers is not None else candidate_layers(model, form)
    if not names:
        raise KdlensError("no layers to represent: the model has no candidate layers; name them with layers=[…]")
    if layers is not None and form not in REPRESENTATION_FORMS:
        raise unknown_name("tap form", form, REPRESENTATION_FORMS)
    if len(set(names)) != len(names):
        raise KdlensError(f"layer names must be distinct; got duplicates in {names}")
    if indices is None:
        rows = np.arange(len(images), dtype=np.int64)
    else:
        from kdlens.data.dataset import as_index_tensor

        rows = as_index_tensor(indices, len(images), "indices").numpy()
    if rows.size == 0:
        raise KdlensError("no samples: indices is empty")
    taps = SpatialMeanTaps(model, names, dtype=torch.float32 if dtype == "float32" else torch.float64)  # checks names

    return cached_representations(
        model, images, rows, names, form, dtype + ("+bf16" if bf16 else ""), cache_dir, data_key, info,
        lambda: _compute(model, images, prepare, taps, rows, batch_size, _DTYPES[dtype], progress, channels_last, bf16),
    )


def cached_representations(
    model: nn.Module,
    images: Tensor,
    rows: np.ndarray,
    names: list[str],
    form: str,
    dtype_tag: str,
    cache_dir: str | Path | None,
    data_key: Mapping[str, Any] | None,
    info: dict[str, Any] | None,
    compute: Callable[[], dict[str, np.ndarray]],
) -> dict[str, np.ndarray]:
    """``compute()``'s representations through the on-disk cache under ``cache_dir`` (None: no
    cache): the key holds the model's weights hash, the data (``data_key`` or a hash of the
    images), the sample indices, the layer names, the tap form and ``dtype_tag``; ``info`` is
    told ``cache`` = hit | miss | off and the folder.  Shared by every way of computing them
    (:func:`layer_representations`, the batch-parallel workers), whose equal values share entries."""
    folder = key = None
    if cache_dir is not None:
        from kdlens.distill.cache import weights_hash

        data = dict(data_key) if data_key is not None else {"images_sha256": _images_sha256(images, rows)}
        data.update(n=int(rows.size), indices_sha256=indices_sha256(rows))
        key = representation_cache_key(weights_hash(model), data, names, form, dtype_tag)
        folder = Path(cache_dir) / _key_digest(key)[:24]
        cached = _load_cached(folder, key)
        if info is not None:
            info.update(cache="hit" if cached is not None else "miss", cache_dir=str(folder))
        if cached is not None:
            return cached
    elif info is not None:
        info.update(cache="off", cache_dir=None)
    reps = compute()
    if folder is not None and key is not None:
        _write_cache(folder, key, reps)
    return reps


def _compute(
    model: nn.Module,
    images: Tensor,
    prepare: Callable[[Tensor], Tensor] | None,
    taps: SpatialMeanTaps,
    rows: np.ndarray,
    batch_size: int,
    np_dtype: type,
    progress: bool,
    channels_last: bool = True,
    bf16: bool = False,
) -> dict[str, np.ndarray]:
    from kdlens.data import to_float
    from kdlens.train.progress import TrainingProgress

    device = _model_device(model)
    n = int(rows.size)
    n_batches = -(-n // batch_size)
    out: dict[str, np.ndarray] = {}
    was_training = model.training
    model.eval()
    try:
        with (
            torch.no_grad(),
            torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16),
            taps,
            TrainingProgress("layer representations", n, enabled=progress and n_batches > 1) as bar,
        ):
            for start in range(0, n, batch_size):
                idx = torch.from_numpy(rows[start : start + batch_size])
                x = images[idx.to(images.device)].to(device)
                x = prepare(x) if prepare is not None else to_float(x)
                if channels_last and x.ndim == 4:
                    x = x.contiguous(memory_format=torch.channels_last)
                model(x)
                for name, f in taps.take().items():
                    f = f.cpu().numpy()
                    if name not in out:
                        out[name] = np.empty((n, f.shape[1]), dtype=np_dtype)
                    out[name][start : start + f.shape[0]] = f
                bar.advance(len(idx))
    finally:
        model.train(was_training)
    return out
