"""Mean ± standard deviation over folds / seeds, as tables of the papers report them."""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n − 1; 0 for a single value)."""
    values = [float(v) for v in values]
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def fmt_mean_std(values: Sequence[float]) -> str:
    """``"2.00 ± 1.41"``; a single value is ``"2.00 (n = 1)"`` — a spread of one run is not 0."""
    m, s = mean_std(values)
    if len(values) == 1:
        return f"{m:.2f} (n = 1)"
    return f"{m:.2f} ± {s:.2f}"
