"""A process-wide glibc allocator setting: :class:`reuse_cpu_memory` keeps large CPU
allocations (a stack's activations, or any big tensor) on the heap instead of fresh ``mmap``
pages while a ``with`` block runs. Nothing in it is specific to stacks."""

from __future__ import annotations


class reuse_cpu_memory:  # noqa: N801  (a context manager used like a function)
    """Keep large CPU allocations on glibc's heap for the duration of a ``with`` block.

    glibc's ``malloc`` serves blocks above its mmap threshold (adaptive, at most 32 MiB on
    64-bit) with fresh ``mmap`` pages and unmaps them on ``free``, so every allocation of such a
    tensor pays page faults on first touch. A stack's activations are ``S`` times a model's and
    easily exceed 32 MiB (thesis student, batch 128, 10 students: 64 MiB per feature map);
    measured here, copying one such tensor took 45 ms with fresh pages and 8 ms from the heap,
    and the page faults made a stack slower per student than single models. (Single models
    suffer too before glibc's threshold adapts: one thesis student's 18-step KD run took 7.9 s in a
    fresh process and 0.45 s inside this block.) Inside the block
    ``mallopt(M_MMAP_MAX=0)`` serves them from the heap and ``M_TRIM_THRESHOLD`` keeps freed
    memory for reuse; on exit the settings become those of a fully adapted glibc (mmap
    threshold 32 MiB, trim threshold 64 MiB) and ``malloc_trim`` returns the freed heap. A no-op
    where glibc's ``mallopt`` is missing. Process-wide while active.
    """

    _M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._mallopt = None

    def __enter__(self) -> reuse_cpu_memory:
        if not self.enabled:
            return self
        try:
            import ctypes

            mallopt = ctypes.CDLL(None).mallopt
        except (OSError, AttributeError):
            return self
        mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        self._mallopt = mallopt
        mallopt(self._M_MMAP_MAX, 0)
        mallopt(self._M_TRIM_THRESHOLD, 1 << 30)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._mallopt is not None:
            self._mallopt(self._M_MMAP_MAX, 65536)
            self._mallopt(self._M_MMAP_THRESHOLD, 32 << 20)
            self._mallopt(self._M_TRIM_THRESHOLD, 64 << 20)
            self._mallopt = None
            try:  # hand the freed heap back to the system
                import ctypes

                ctypes.CDLL(None).malloc_trim(0)
            except (OSError, AttributeError):
                pass
