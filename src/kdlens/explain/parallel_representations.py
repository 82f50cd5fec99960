"""Layer representations with batch-parallel workers instead of intra-op threads.

:func:`kdlens.explain.representations.layer_representations` runs one forward pass at a
time and lets torch split every operator over its intra-op threads; each operator then
ends in a barrier.  On a CPU shared with other busy processes a descheduled thread stalls
the other at every barrier (the same effect as multi-threaded BLAS in step 2, see
:func:`kdlens.explain.similarity.similarity_matrix`).  Here W worker threads each run
*whole batches* with one intra-op thread on their own copy of the model (round-robin over
the batches), so the workers never wait for each other.

The values are those of a one-thread forward pass of each batch (same spatial means,
same batch boundaries), i.e. :func:`layer_representations` with ``torch.set_num_threads(1)``
and the same ``batch_size``.  On the CPUs here they are also bit-identical to the
two-thread intra-op pass (tested; torch does not promise thread-count-independent bits
for every operator and CPU).
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from kdlens.errors import KdlensError
from kdlens.explain.representations import SpatialMeanTaps, cached_representations

__all__ = ["layer_representations_parallel"]


def _device(model: nn.Module) -> torch.device:
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


def layer_representations_parallel(
    model: nn.Module,
    images: Tensor,
    prepare: Callable[[Tensor], Tensor] | None,
    *,
    layers: Sequence[str],
    indices: Any,
    batch_size: int = 250,
    workers: int = 2,
    channels_last: bool = True,
    form: str = "post",
    cache_dir: str | Path | None = None,
    data_key: Mapping[str, Any] | None = None,
    progress: bool = False,
    info: dict[str, Any] | None = None,
) -> dict[str, np.ndarray]:
    """Spatially averaged float32 activations of ``layers`` on ``images[indices]`` (name →
    N×C), computed by ``workers`` threads that each run whole batches single-threaded on a
    copy of ``model`` (``copy.deepcopy``; the model itself serves as the first worker and
    its train/eval mode is restored).  Each worker runs under ``torch.inference_mode()``.
    CPU models only; ``workers=1`` is a plain sequential one-thread pass.

    ``cache_dir``, ``data_key``, ``form``, ``progress``, ``info``: as in
    :func:`~kdlens.explain.representations.layer_representations`, with the same cache key
    (float32), so both functions reuse each other's cached results (their values are equal)."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise KdlensError(f"workers must be a positive integer (e.g. 2, one per core); got {workers!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise KdlensError(f"batch_size must be a positive integer; got {batch_size!r}")
    if _device(model).type != "cpu":
        raise KdlensError("batch-parallel workers are for CPU models; on a GPU use layer_representations")
    names = list(layers)
    rows = np.asarray(indices, dtype=np.int64).reshape(-1)
    if rows.size == 0:
        raise KdlensError("no samples: indices is empty")
    if rows.min() < 0 or rows.max() >= len(images):
        raise KdlensError(f"indices out of range: allowed 0..{len(images) - 1}")
    return cached_representations(
        model, images, rows, names, form, "float32", cache_dir, data_key, info,
        lambda: _compute(model, images, prepare, names, rows, batch_size, workers, channels_last, progress),
    )


def _compute(
    model: nn.Module,
    images: Tensor,
    prepare: Callable[[Tensor], Tensor] | None,
    names: list[str],
    rows: np.ndarray,
    batch_size: int,
    workers: int,
    channels_last: bool,
    progress: bool,
) -> dict[str, np.ndarray]:
    from kdlens.data import to_float
    from kdlens.train.progress import TrainingProgress

    starts = list(range(0, rows.size, batch_size))
    workers = min(workers, len(starts))
    try:
        models = [model] + [copy.deepcopy(model) for _ in range(workers - 1)]
    except Exception as err:  # noqa: BLE001 - any model that cannot be copied
        raise KdlensError(f"cannot copy {type(model).__name__} for parallel workers ({err}); use workers=1") from None
    out: dict[str, np.ndarray] = {}
    lock = threading.Lock()

    bar = TrainingProgress("layer representations", int(rows.size), enabled=progress and len(starts) > 1)

    def run(w: int) -> None:
        torch.set_num_threads(1)  # this thread's intra-op (OpenMP) threads
        m = models[w]
        with torch.inference_mode(), SpatialMeanTaps(m, names) as taps:
            for start in starts[w::workers]:
                idx = torch.from_numpy(rows[start : start + batch_size])
                x = images[idx.to(images.device)]
                x = prepare(x) if prepare is not None else to_float(x)
                if channels_last and x.ndim == 4:
                    x = x.contiguous(memory_format=torch.channels_last)
                m(x)
                for name, f in taps.take().items():
                    f = f.numpy()
                    if name not in out:
                        with lock:
                            if name not in out:
                                out[name] = np.empty((rows.size, f.shape[1]), dtype=np.float32)
                    out[name][start : start + f.shape[0]] = f
                with lock:
                    bar.advance(len(idx))

    before = torch.get_num_threads()
    was_training = model.training
    for m in models:
        m.eval()
    try:
        with bar:
            if workers == 1:
                run(0)
            else:
                with ThreadPoolExecutor(max_workers=workers) as pool:
                    for future in [pool.submit(run, w) for w in range(workers)]:
                        future.result()
    finally:
        torch.set_num_threads(before)
        model.train(was_training)
    return {name: out[name] for name in names}
