"""How many CPU threads torch uses: never more than the cores that are free.

torch's default is one thread per physical core, whatever else the machine runs.  On a busy
machine that oversubscribes the cores and small models slow down many times (measured on a
loaded 2-core machine: resnet8, one epoch on digits, 6.7 s with the default threads vs 0.9 s
with one thread; issue 14).  :func:`choose_threads` therefore takes the cores this process may
use (``os.sched_getaffinity``) minus the load that other processes put on them (the
1-minute load average), at least 1; an explicit ``--threads N`` always wins.
"""

from __future__ import annotations

import os


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def choose_threads(requested: int | None = None) -> tuple[int, str]:
    """``(threads, reason)`` — ``requested`` when given, else the free cores (see module doc)."""
    if requested is not None:
        if requested < 1:
            from kdlens.errors import KdlensError

            raise KdlensError(f"--threads must be at least 1; got {requested}")
        return requested, "as asked (--threads)"
    cores = usable_cores()
    try:
        busy = os.getloadavg()[0]
    except OSError:
        busy = 0.0
    free = max(1, min(cores, int(round(cores - busy))))
    return free, f"{cores} core(s), load {busy:.1f}: {free} free (--threads N to choose)"


def set_threads(requested: int | None = None, log: bool = False) -> int:
    """Set torch's intra-op threads by :func:`choose_threads`; returns the count."""
    import torch

    threads, reason = choose_threads(requested)
    torch.set_num_threads(threads)
    if log:
        print(f"threads: {threads} ({reason})")
    return threads
