"""Streamed mini-batches: items read by ``DataLoader`` workers, order drawn like :class:`TensorBatches`.

:class:`LoaderBatches` is the streamed twin of :class:`kdlens.data.batches.TensorBatches`
for datasets too large to hold in memory (an image folder decoded lazily, a user's own
``torch.utils.data.Dataset``).  It yields the same ``(x, y, idx)`` triples with the same
order semantics:

- the epoch order is drawn in the main process, exactly as ``TensorBatches`` draws it
  (one ``torch.randperm(num_samples, generator=generator)``, mapped through ``indices``),
  and nothing else is drawn from ``generator`` — so with the same generator state both
  classes visit the same indices in the same batches, and a resumed epoch replays;
- items are read by a ``DataLoader`` over that fixed list of batches (``batch_sampler``),
  with ``num_workers`` processes; the batches come back in order.

Randomness inside the dataset (a user's random transforms) is made reproducible per
batch: before reading batch ``k`` of an epoch, the reading process seeds ``torch``,
``random`` and ``numpy`` with ``seed_k``, where the ``seed_k`` come from a private
generator seeded with a hash of ``generator``'s state at the start of the epoch (the
user's generator is not advanced).  Items therefore do not depend on ``num_workers`` or
on which worker read them; with ``num_workers=0`` the main process's global RNG states
are restored after each batch.

While workers run, the main process's torch threads are lowered for the epoch
(``main_threads="auto"``: the cores this process may use minus ``num_workers``, at least 1;
restored when the epoch ends or stops).  The caller's per-batch work (batched augmentation,
a CPU model step) then does not fight the workers for the cores: measured here (2 cores, 2
workers, 64×64 JPEGs, ``BatchAugment`` on each batch) 2,106 img/s with one main thread vs
558 img/s with torch's default two, whose parallel regions wait on descheduled threads.

With workers, the main process also hands freed heap memory back to the system every
``TRIM_EVERY_BATCHES`` batches (glibc's ``malloc_trim(0)``; nothing elsewhere).  Measured
here: the per-batch temporaries of ``BatchAugment`` on batches arriving from workers let
glibc's heap keep 100–250 MB of freed memory in the main process (its dynamic mmap
threshold serves them from the heap); trimming holds it at its start-up size for ~5 ms a
call.

Workers are persistent across epochs (their start-up is paid once per ``LoaderBatches``;
keep one object and assign ``.generator`` per epoch to keep them), and are shut down by
:meth:`LoaderBatches.close`, ``with``-exit, garbage collection, or any error raised while
iterating.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
import hashlib
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, get_worker_info

from kdlens.data.dataset import as_index_tensor
from kdlens.errors import KdlensError

TRIM_EVERY_BATCHES = 16


@functools.cache
def _malloc_trim() -> Any:
    """glibc's ``malloc_trim`` (``None`` elsewhere)."""
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


@dataclass(frozen=True)
class _Failure:
    """A user-facing error found while reading a batch (carried back instead of raised, so the
    main process raises a plain :class:`KdlensError` without a worker traceback)."""

    message: str


def _generator_seed(generator: torch.Generator | None) -> int:
    """A 62-bit seed from a hash (BLAKE2b) of the generator's state; does not advance it."""
    gen = generator if generator is not None else torch.default_generator
    state = gen.get_state().numpy().tobytes()
    return int.from_bytes(hashlib.blake2b(state, digest_size=8).digest(), "little") >> 2


def _seed_everything(seed: int) -> None:
    torch.default_generator.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


@contextlib.contextmanager
def _global_rng_preserved() -> Iterator[None]:
    """Restore torch's (CPU), ``random``'s and numpy's global RNG states on exit."""
    t, r, n = torch.get_rng_state(), random.getstate(), np.random.get_state()
    try:
        yield
    finally:
        torch.set_rng_state(t)
        random.setstate(r)
        np.random.set_state(n)


class _EpochBatches:
    """The ``batch_sampler``: this epoch's ``(seed, [index, …])`` batches (set before each epoch)."""

    def __init__(self) -> None:
        self.batches: list[tuple[int, list[int]]] = []

    def __iter__(self) -> Iterator[tuple[int, list[int]]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class _SeededItems(torch.utils.data.Dataset):
    """Wraps the user's dataset: reads one ``(seed, indices)`` batch after seeding the RNGs."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> Any:
        return self.dataset[i]

    def __getitems__(self, batch: tuple[int, list[int]]) -> tuple[list[int], list[Any]] | _Failure:
        seed, indices = batch
        guard = _global_rng_preserved() if get_worker_info() is None else contextlib.nullcontext()
        try:
            with guard:
                _seed_everything(seed)
                return indices, [self.dataset[i] for i in indices]
        except KdlensError as e:
            return _Failure(str(e))


def _describe(value: Any) -> str:
    kind = type(value)
    return f"{kind.__module__}.{kind.__qualname__}" if kind.__module__ != "builtins" else kind.__qualname__


def _label(value: Any, i: int) -> int:
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point():
        return int(value.item())
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    raise KdlensError(
        f"dataset[{i}] returned a label of type {_describe(value)}"
        + (f" with shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) else "")
        + "; kdlens needs an integer class index (int or 0-d integer tensor) as the second element "
        "of each item, e.g. `return image_tensor, int(label)`"
    )


def _image(value: Any, i: int) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        hint = "add torchvision.transforms.ToTensor() (float in [0, 1]) or PILToTensor() (uint8) at the end of " \
            "the dataset's transform"
        if isinstance(value, np.ndarray):
            hint = "return torch.from_numpy(array) laid out C×H×W"
        raise KdlensError(
            f"dataset[{i}] returned a {_describe(value)} as the image, not a torch.Tensor; "
            f"kdlens batches tensors: {hint}"
        )
    if value.dtype != torch.uint8 and not value.is_floating_point():
        raise KdlensError(
            f"dataset[{i}] returned an image tensor of dtype {value.dtype}; kdlens expects uint8 (0..255) "
            "or floating (0..1, or already normalised) images"
        )
    return value


def _collate(fetched: tuple[list[int], list[Any]] | _Failure) -> tuple[Any, ...] | _Failure:
    """Stack the non-``None`` items of one batch: ``(x, y, idx, skipped_indices)``.

    ``x`` is allocated in shared memory when in a worker (as ``default_collate`` does), so it
    travels to the main process without a copy; ``y`` and ``idx`` share one int64 tensor.
    """
    if isinstance(fetched, _Failure):
        return fetched
    indices, items = fetched
    try:
        images, labels, kept, skipped = [], [], [], []
        for i, item in zip(indices, items, strict=True):
            if item is None:
                skipped.append(i)
                continue
            if not isinstance(item, (tuple, list)) or len(item) < 2:
                raise KdlensError(
                    f"dataset[{i}] returned a {_describe(item)}; kdlens needs (image_tensor, label) pairs "
                    "(or None to skip the item)"
                )
            images.append(_image(item[0], i))
            labels.append(_label(item[1], i))
            kept.append(i)
        if not images:
            return None, None, None, skipped
        first = images[0]
        for j, x in enumerate(images):
            if x.shape != first.shape or x.dtype != first.dtype:
                raise KdlensError(
                    f"dataset[{kept[j]}] is a {x.dtype} image of shape {tuple(x.shape)} but dataset[{kept[0]}] "
                    f"is {first.dtype} {tuple(first.shape)}; items of one batch must match: resize or crop to "
                    "one size in the transform (or set data.image_size=N for an image folder)"
                )
        out = torch.empty((len(images), *first.shape), dtype=first.dtype)
        if get_worker_info() is not None:
            out.share_memory_()
        torch.stack(images, out=out)
        meta = torch.tensor([labels, kept], dtype=torch.int64)
        return out, meta[0], meta[1], skipped
    except KdlensError as e:
        return _Failure(str(e))


class LoaderBatches:
    """Iterate ``(x, y, idx)`` mini-batches of a map-style dataset through ``DataLoader`` workers.

    Args:
        dataset: anything with ``__len__`` and ``__getitem__(i) -> (image_tensor, label)`` or
            ``None`` (a skipped item, e.g. an unreadable image with ``on_bad_image="skip"``).
        batch_size: samples per batch (before dropping skipped items).
        shuffle, drop_last, generator, indices: as in :class:`~kdlens.data.batches.TensorBatches`
            (same order for the same generator state).
        num_workers: reading processes (0: read in the main process).
        pin_memory: pin batches (for fast copies to a GPU).
        main_threads: torch threads of the main process during an epoch with workers:
            ``"auto"`` (usable cores − ``num_workers``, at least 1, never more than set),
            an integer, or ``None`` to leave them alone.

    Yields ``(x, y, idx)``: ``x`` the stacked images (uint8 or float, as the dataset returns
    them), ``y`` int64 labels, ``idx`` the int64 dataset indices of the items.  Skipped items
    are left out of their batch (a batch may be smaller, and an all-skipped batch is not
    yielded); :attr:`skipped` counts them in the latest epoch, :attr:`skipped_indices` lists
    them and :attr:`skipped_total` counts them over all epochs.  ``len()`` is the number of
    batches per epoch (before skipping).
    """

    def __init__(
        self,
        dataset: Any,
        batch_size: int,
        *,
        shuffle: bool = True,
        drop_last: bool = False,
        generator: torch.Generator | None = None,
        indices: object = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        main_threads: int | str | None = "auto",
    ) -> None:
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise KdlensError(f"batch_size must be a positive integer, got {batch_size!r}")
        if not isinstance(num_workers, int) or isinstance(num_workers, bool) or num_workers < 0:
            raise KdlensError(f"num_workers must be a non-negative integer, got {num_workers!r}")
        if not (main_threads is None or main_threads == "auto"
                or (isinstance(main_threads, int) and not isinstance(main_threads, bool) and main_threads >= 1)):
            raise KdlensError(f"main_threads must be 'auto', None or a positive integer, got {main_threads!r}")
        try:
            size = len(dataset)
        except TypeError:
            raise KdlensError(
                f"a {_describe(dataset)} has no len(): streamed batches need a map-style dataset "
                "(__len__ and __getitem__), not an iterable-style one"
            ) from None
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.generator = generator
        self.indices = None if indices is None else as_index_tensor(indices, size, "indices")
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.main_threads = main_threads
        self.skipped = 0
        self.skipped_total = 0
        self.skipped_indices: list[int] = []
        self._size = size
        self._sampler = _EpochBatches()
        self._loader: DataLoader | None = None

    @property
    def num_samples(self) -> int:
        """Samples per epoch (before ``drop_last`` and skipping)."""
        return int(self._size if self.indices is None else self.indices.numel())

    def __len__(self) -> int:
        n, b = self.num_samples, self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def _order(self) -> torch.Tensor:
        """Dataset indices in epoch order; the same draw as ``TensorBatches._order``."""
        if not self.shuffle:
            return torch.arange(self._size) if self.indices is None else self.indices
        perm = torch.randperm(self.num_samples, generator=self.generator)
        return perm if self.indices is None else self.indices[perm]

    def _epoch_batches(self) -> list[tuple[int, list[int]]]:
        seed = _generator_seed(self.generator)  # before the randperm: the epoch's state
        order = self._order()
        n, b = self.num_samples, self.batch_size
        stop = n - n % b if self.drop_last else n
        chunks = order[:stop].split(b)
        seeds = torch.randint(0, 2**62, (len(chunks),), generator=torch.Generator().manual_seed(seed))
        return [(int(s), c.tolist()) for s, c in zip(seeds, chunks, strict=True)]

    def _get_loader(self) -> DataLoader:
        if self._loader is None:
            self._loader = DataLoader(
                _SeededItems(self.dataset),
                batch_sampler=self._sampler,
                num_workers=self.num_workers,
                collate_fn=_collate,
                pin_memory=self.pin_memory,
                persistent_workers=self.num_workers > 0,
                generator=torch.Generator().manual_seed(0),  # base seed; items are reseeded per batch
            )
        return self._loader

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        self._sampler.batches = self._epoch_batches()
        self.skipped = 0
        self.skipped_indices = []
        loader = self._get_loader()
        threads = torch.get_num_threads()
        epoch_threads = self._epoch_threads(threads)
        if epoch_threads != threads:
            torch.set_num_threads(epoch_threads)
        trim = _malloc_trim() if self.num_workers else None
        try:
            for k, out in enumerate(self._iterate(loader)):
                if isinstance(out, _Failure):
                    raise KdlensError(out.message)
                if trim is not None and k % TRIM_EVERY_BATCHES == TRIM_EVERY_BATCHES - 1:
                    trim(0)
                x, y, idx, skipped = out
                if skipped:
                    self.skipped += len(skipped)
                    self.skipped_total += len(skipped)
                    self.skipped_indices.extend(skipped)
                if x is not None:
                    yield x, y, idx
        except GeneratorExit:  # the caller stopped early: keep the workers for the next epoch
            raise
        except BaseException:
            self.close()
            raise
        finally:
            if epoch_threads != threads:
                torch.set_num_threads(threads)

    def _epoch_threads(self, current: int) -> int:
        if self.main_threads is None or self.num_workers == 0:
            return current
        if self.main_threads == "auto":
            try:
                cores = len(os.sched_getaffinity(0))
            except AttributeError:  # not on Linux
                cores = os.cpu_count() or 1
            return min(current, max(1, cores - self.num_workers))
        return int(self.main_threads)

    def _iterate(self, loader: DataLoader) -> Any:
        """``iter(loader)``; when that forks the workers, the parent's objects are frozen out of
        the garbage collector during the fork (``gc.freeze``, undone right after in the parent),
        so the workers' collections do not touch — and copy on write — the parent's pages."""
        if self.num_workers == 0 or getattr(loader, "_iterator", None) is not None:
            return iter(loader)
        gc.freeze()
        try:
            return iter(loader)
        finally:
            gc.unfreeze()

    def close(self) -> None:
        """Shut the worker processes down now (they restart on the next iteration)."""
        loader, self._loader = self._loader, None
        iterator = getattr(loader, "_iterator", None) if loader is not None else None
        if iterator is not None:
            shutdown = getattr(iterator, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()
            loader._iterator = None  # type: ignore[union-attr]

    def __enter__(self) -> LoaderBatches:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_loader"] = None  # workers belong to the process that started them
        return state
