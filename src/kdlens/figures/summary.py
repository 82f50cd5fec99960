"""Numbers over folds / seeds as a figure: the mean, an error bar of ± one sample standard
deviation (n − 1, the tables' ``mean ± std``) and every fold's own value as a small open
circle, so a figure shows exactly the numbers of its table.

* :func:`plot_grouped_values` — one group per x position (an extraction point, a label
  budget), one series per model side by side, as bars or as dots;
* :func:`plot_mean_curves` — one line per series over a numeric x (label budget, examples per
  class), log x on request.

The legend sits outside the axes (it never covers data).  ``ax`` draws into an existing axes;
otherwise a new figure is made (:func:`kdlens.figures.style.new_figure`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from kdlens.errors import KdlensError
from kdlens.figures.style import COLUMN, legend_outside, new_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["mean_and_std", "plot_grouped_values", "plot_mean_curves"]


def mean_and_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n − 1; 0 for one value) of the finite values: what a
    figure draws for a table cell ``mean ± std``."""
    v = np.asarray([x for x in values if x is not None], dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def _finite(values: Sequence[float] | float | None) -> np.ndarray:
    v = np.atleast_1d(np.asarray([np.nan if x is None else x for x in np.atleast_1d(values)], dtype=float))
    return v[np.isfinite(v)]


def _jitter(n: int, spread: float) -> np.ndarray:
    """Deterministic offsets in [−spread, spread] for ``n`` points (no randomness in figures)."""
    return np.zeros(n) if n <= 1 else np.linspace(-spread, spread, n)


def _colors(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def plot_grouped_values(
    values: Mapping[str, Mapping[str, Sequence[float] | float]],
    kind: str = "dot",
    xlabel: str | None = None,
    ylabel: str | None = None,
    title: str | None = None,
    ax: Any = None,
    colors: Mapping[str, Any] | None = None,
    zero: bool | None = None,
) -> Figure:
    """``values[series][group]`` = the per-fold values (or one number): per group (x), one mark
    per series — a bar (``kind="bar"``) or a dot (``"dot"``, for values far from 0 whose
    differences a bar from 0 would hide) at the mean, ± std error bar, the folds' values as
    open circles.  ``zero``: start the y axis at 0 (default: for bars)."""
    if not values:
        raise KdlensError("plot_grouped_values: nothing to plot")
    if kind not in ("bar", "dot"):
        raise KdlensError(f"plot_grouped_values: kind must be 'bar' or 'dot', not {kind!r}")
    series = list(values)
    groups = list(dict.fromkeys(g for s in series for g in values[s]))
    if ax is None:
        fig = new_figure(min(1.6 + 0.55 * len(groups) * max(1, len(series)), 7.0), 2.4)
        ax = fig.add_subplot(1, 1, 1)
    fig = ax.figure
    palette = _colors(len(series))
    # each group's marks are centred on it: offsets among the series that have values there
    present = {g: [s for s in series if g in values[s] and _finite(values[s][g]).size] for g in groups}
    width = 0.8 / max(1, max(len(v) for v in present.values()))
    folds = False
    for i, name in enumerate(series):
        color = (colors or {}).get(name, palette[i])
        xs, means, stds = [], [], []
        for j, g in enumerate(groups):
            if name not in present[g]:
                continue
            v = _finite(values[name][g])
            k, n = present[g].index(name), len(present[g])
            x = j + (k - (n - 1) / 2) * width
            m, s = mean_and_std(v)
            xs.append(x)
            means.append(m)
            stds.append(s if v.size > 1 else float("nan"))  # no error bar for a single value
            if v.size > 1:
                folds = True
                ax.scatter(x + _jitter(v.size, width * 0.22), v, s=9, facecolors="none", edgecolors="0.15",
                           linewidths=0.6, zorder=4)
        if not xs:
            continue
        if kind == "bar":
            ax.bar(xs, means, width=width * 0.85, color=color, label=name, zorder=2)
            ax.errorbar(xs, means, yerr=stds, fmt="none", ecolor="0.1", elinewidth=0.9, capsize=2.5, zorder=3)
        else:
            ax.errorbar(xs, means, yerr=stds, fmt="o", color=color, ms=5, elinewidth=1.2, capsize=2.5,
                        label=name, zorder=3)
    ax.set_xticks(range(len(groups)), [str(g) for g in groups])
    ax.set_xlim(-0.6, len(groups) - 0.4)
    if zero if zero is not None else kind == "bar":
        ax.set_ylim(bottom=0)
    if xlabel:
        ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(axis="y", alpha=0.3, zorder=0)
    _legend_with_folds(ax, folds)
    return fig


def _legend_with_folds(ax: Any, folds: bool) -> None:
    """The series' legend right of the axes, plus an entry for the per-fold circles when drawn."""
    from matplotlib.lines import Line2D

    handles, labels = ax.get_legend_handles_labels()
    if folds:
        handles.append(Line2D([], [], ls="none", marker="o", mfc="none", mec="0.15", ms=3.5, mew=0.6))
        labels.append("each fold / seed")
    legend_outside(ax, handles, labels)


def plot_mean_curves(
    xs: Sequence[float],
    series: Mapping[str, Sequence[Sequence[float] | float]],
    xlabel: str | None = None,
    ylabel: str | None = None,
    title: str | None = None,
    logx: bool = False,
    styles: Mapping[str, Mapping[str, Any]] | None = None,
    ax: Any = None,
) -> Figure:
    """``series[name][i]`` = the per-fold values at ``xs[i]`` (or one number): a line through the
    means, ± std error bars and the values as open circles. ``styles[name]``: line keywords
    (``color``, ``ls``, ``marker``)."""
    if not series:
        raise KdlensError("plot_mean_curves: nothing to plot")
    if ax is None:
        fig = new_figure(COLUMN + 1.2, 2.4)
        ax = fig.add_subplot(1, 1, 1)
    fig = ax.figure
    x_arr = np.asarray([float(x) for x in xs])
    folds = False
    # series side by side at each x (a small dodge), so their error bars and circles do not overlap
    scale = np.log(x_arr) if logx and (x_arr > 0).all() else x_arr
    gaps = np.diff(np.sort(scale))
    step = 0.06 * (float(gaps[gaps > 0].min()) if (gaps > 0).any() else (1.0 if logx else float(abs(x_arr[0])) or 1.0))
    step = min(step, 0.08) if logx else step
    for i, (name, per_x) in enumerate(series.items()):
        shift = (i - (len(series) - 1) / 2) * step
        if len(per_x) != len(x_arr):
            raise KdlensError(f"plot_mean_curves: series {name!r} has {len(per_x)} entries for {len(x_arr)} x values")
        dodged = x_arr * np.exp(shift) if logx else x_arr + shift
        pts = [(x, _finite(v)) for x, v in zip(dodged, per_x, strict=True)]
        pts = [(x, v) for x, v in pts if v.size]
        if not pts:
            continue
        mx = np.array([x for x, _ in pts])
        stats = [(m, s if v.size > 1 else float("nan")) for (m, s), (_, v) in zip(
            (mean_and_std(v) for _, v in pts), pts, strict=True)]
        style = {"marker": "o", "ms": 4, **dict((styles or {}).get(name, {}))}
        line = ax.errorbar(mx, [m for m, _ in stats], yerr=[s for _, s in stats], capsize=2.5, elinewidth=0.9,
                           label=name, zorder=3, **style)
        color = line.lines[0].get_color()
        for x, v in pts:
            if v.size > 1:
                folds = True
                spread = 0.3 * step
                jx = x * np.exp(_jitter(v.size, spread)) if logx else x + _jitter(v.size, spread)
                ax.scatter(jx, v, s=9, facecolors="none", edgecolors=color, linewidths=0.6, alpha=0.9, zorder=4)
    if logx:
        ax.set_xscale("log")
        ax.set_xticks(x_arr, [f"{x:g}" for x in x_arr])
        ax.minorticks_off()
        if len(x_arr) == 1:
            ax.set_xlim(x_arr[0] / 2, x_arr[0] * 2)
    elif len(x_arr) == 1:
        ax.set_xlim(x_arr[0] - 1, x_arr[0] + 1)
    if xlabel:
        ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3, zorder=0)
    _legend_with_folds(ax, folds)
    return fig
