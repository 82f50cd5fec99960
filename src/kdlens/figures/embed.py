"""Figures of the embedding-space explanation (Lee & Wallraven 2021).

* :func:`plot_embedding_grid` — scatter per extraction point A–E coloured by class; one row
  per model (undistilled vs distilled side by side when given two), as the paper's Figs. 3–4.
* :func:`plot_class_area_boxplots` — class-area ratios per layer, one box per model (Fig. 8).
* :func:`plot_class_density` — one class's KDE and its highest-density region against the
  region of all points (Fig. 7).
* :func:`plot_ivis_loss` — converged Ivis loss per layer and model (Table 2 as bars).
* :func:`plot_toy_check` — the Fig. 1 quadrant toy: the plane and each method's re-embedding.

All figures use the Agg canvas directly (no pyplot state) and return the Figure; ``path``
also saves it (format from the suffix).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kdlens.errors import KdlensError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "plot_class_area_boxplots",
    "plot_class_density",
    "plot_embedding_grid",
    "plot_ivis_loss",
    "plot_toy_check",
]


def _figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | Path | None) -> Figure:
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, bbox_inches="tight")
    return fig


def _per_point_axes(
    by_model: Mapping[str, Mapping[str, Any]], what: str, inch_per_item: float, margin: float, height: float
) -> tuple[Figure, Any, list[str], list[str]]:
    """Figure and axes for one group per extraction point, one item per model; also the models and points."""
    if not by_model:
        raise KdlensError(f"no {what} to plot")
    models = list(by_model)
    points = list(dict.fromkeys(p for m in models for p in by_model[m]))
    fig = _figure(inch_per_item * len(points) * max(1, len(models)) + margin, height)
    return fig, fig.add_subplot(1, 1, 1), models, points


def _finish_per_point(fig: Figure, ax: Any, points: list[str], ylabel: str, title: str | None,
                      path: str | Path | None) -> Figure:
    ax.set_xticks(range(len(points)))
    ax.set_xticklabels(points)
    ax.set_xlabel("extraction point")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend(frameon=False)
    return _save(fig, path)


def _class_colors(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20" if n <= 20 else "turbo"]
    return [cmap(i / max(n - 1, 1)) if n > 20 else cmap(i) for i in range(n)]


def _scatter(ax: Any, emb: np.ndarray, labels: np.ndarray, classes: Sequence[str] | None, size: float) -> None:
    uniq = np.unique(labels)
    colors = _class_colors(int(uniq.max()) + 1 if uniq.size and uniq.min() >= 0 else len(uniq))
    for c in uniq:
        m = labels == c
        name = classes[int(c)] if classes is not None and 0 <= int(c) < len(classes) else str(c)
        ax.scatter(emb[m, 0], emb[m, 1], s=size, color=colors[int(c) % len(colors)], label=name, linewidths=0, alpha=0.8)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_embedding_grid(
    embeddings: Mapping[str, Mapping[str, Any]],
    labels: Any,
    classes: Sequence[str] | None = None,
    titles: Mapping[str, Mapping[str, str]] | None = None,
    point_size: float = 3.0,
    path: str | Path | None = None,
) -> Figure:
    """Grid of 2-D scatter plots: rows = models (e.g. ``{"UD": {...}, "D": {...}}``), columns =
    extraction points (``{"A": n×2, …}``), coloured by ``labels`` (one label array for all, or a
    mapping model → labels). ``titles[model][point]`` adds e.g. the layer name or a metric."""
    if not embeddings:
        raise KdlensError("no embeddings to plot")
    models = list(embeddings)
    points = list(dict.fromkeys(p for m in models for p in embeddings[m]))
    fig = _figure(2.6 * len(points) + 1.0, 2.6 * len(models))
    axes = fig.subplots(len(models), len(points), squeeze=False)
    for r, model in enumerate(models):
        lab = np.asarray(labels[model] if isinstance(labels, Mapping) else labels)
        for c, point in enumerate(points):
            ax = axes[r][c]
            if point not in embeddings[model]:
                ax.set_axis_off()
                continue
            emb = np.asarray(embeddings[model][point])
            if emb.ndim != 2 or emb.shape[1] < 2 or emb.shape[0] != lab.shape[0]:
                raise KdlensError(f"embedding {model}/{point} has shape {emb.shape}; expected ({lab.shape[0]}, 2)")
            _scatter(ax, emb, lab, classes, point_size)
            title = point if titles is None else titles.get(model, {}).get(point, point)
            ax.set_title(title, fontsize=9)
            if c == 0:
                ax.set_ylabel(model)
    handles, names = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, names, loc="center right", fontsize=7, markerscale=3, frameon=False)
        fig.subplots_adjust(right=1 - 1.5 / fig.get_figwidth())
    return _save(fig, path)


def plot_class_area_boxplots(
    ratios: Mapping[str, Mapping[str, Sequence[float]]],
    title: str | None = "Class-area ratio per layer",
    path: str | Path | None = None,
) -> Figure:
    """Box plots of class-area ratios: ``ratios[model][point]`` = the per-class ratios (e.g. of all
    folds); one group per point, one box per model (Lee & Wallraven Fig. 8)."""
    fig, ax, models, points = _per_point_axes(ratios, "class-area ratios", 1.3, 1.5, 3.6)
    width = 0.8 / len(models)
    colors = _class_colors(max(len(models), 2))
    for i, model in enumerate(models):
        data, pos = [], []
        for j, point in enumerate(points):
            vals = np.asarray(ratios[model].get(point, []), dtype=float)
            data.append(vals[np.isfinite(vals)])
            pos.append(j + (i - (len(models) - 1) / 2) * width)
        bp = ax.boxplot(data, positions=pos, widths=width * 0.9, patch_artist=True, showfliers=True)
        for patch in bp["boxes"]:
            patch.set_facecolor(colors[i])
            patch.set_alpha(0.7)
        ax.plot([], [], color=colors[i], lw=6, alpha=0.7, label=model)
    return _finish_per_point(fig, ax, points, "class area / area of all points", title, path)


def plot_class_density(
    embedding: Any,
    density: Any,
    class_name: str | None = None,
    path: str | Path | None = None,
) -> Figure:
    """One class's KDE in an embedding (Fig. 7): all points in grey, the density image of the
    class, its HDR contour (solid) and the HDR of all points (dashed), the ratio in the title.

    ``density``: a ``ClassDensity`` (``kdlens.explain.embed.class_density``), read by its fields
    ``cls``, ``mass``, ``xs``, ``ys``, ``density``, ``region``, ``all_region``, ``ratio``.
    """
    y = np.asarray(embedding, dtype=float)
    if y.ndim != 2 or y.shape[1] != 2:
        raise KdlensError(f"plot_class_density needs a 2-D embedding (n × 2); got shape {y.shape}")
    d_cls, xs, ys = np.asarray(density.density), np.asarray(density.xs), np.asarray(density.ys)
    fig = _figure(4.6, 4.2)
    ax = fig.add_subplot(1, 1, 1)
    extent = (xs[0], xs[-1], ys[0], ys[-1])
    ax.scatter(y[:, 0], y[:, 1], s=1, color="0.75", linewidths=0)
    ax.imshow(np.ma.masked_where(d_cls <= 0, d_cls), origin="lower", extent=extent, aspect="auto", cmap="magma_r", alpha=0.75)
    ax.contour(xs, ys, np.asarray(density.region, dtype=float), levels=[0.5], colors="C3", linewidths=1.5)
    ax.contour(xs, ys, np.asarray(density.all_region, dtype=float), levels=[0.5], colors="k", linewidths=1,
               linestyles="--")
    name = class_name if class_name is not None else f"class {density.cls}"
    ax.set_title(f"{name}: {int(density.mass * 100)}% region, area ratio {density.ratio:.3f}", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    return _save(fig, path)


def plot_ivis_loss(
    losses: Mapping[str, Mapping[str, float | Sequence[float]]],
    title: str | None = "Converged Ivis loss",
    path: str | Path | None = None,
) -> Figure:
    """Bars of the converged Ivis loss per point (x) and model (colour); a sequence of values
    (folds) is drawn as its mean with a min–max error bar. Lee & Wallraven Table 2 as a figure."""
    fig, ax, models, points = _per_point_axes(losses, "Ivis losses", 1.0, 2.0, 3.4)
    width = 0.8 / len(models)
    colors = _class_colors(max(len(models), 2))
    for i, model in enumerate(models):
        xs, means, lo, hi = [], [], [], []
        for j, point in enumerate(points):
            if point not in losses[model]:
                continue
            vals = np.atleast_1d(np.asarray(losses[model][point], dtype=float))
            xs.append(j + (i - (len(models) - 1) / 2) * width)
            means.append(vals.mean())
            lo.append(vals.mean() - vals.min())
            hi.append(vals.max() - vals.mean())
        ax.bar(xs, means, width=width * 0.9, color=colors[i], label=model, yerr=[lo, hi], capsize=2)
    return _finish_per_point(fig, ax, points, "Ivis loss (best epoch)", title, path)


def plot_toy_check(results: Mapping[str, Any], xy: Any, quadrant: Any, path: str | Path | None = None) -> Figure:
    """The Fig. 1 check: the coloured plane, then each method's re-embedding with its scores
    (``results``: method → :class:`~kdlens.explain.embed.toy.ToyResult`)."""
    xy, q = np.asarray(xy), np.asarray(quadrant)
    fig = _figure(3.0 * (1 + len(results)), 3.2)
    axes = fig.subplots(1, 1 + len(results), squeeze=False)[0]
    _scatter(axes[0], xy, q, None, 3)
    axes[0].set_title("original 2-D plane", fontsize=9)
    for ax, (method, res) in zip(axes[1:], results.items(), strict=True):
        _scatter(ax, np.asarray(res.embedding), q, None, 3)
        keep = "kept" if res.layout_preserved else "lost"
        ax.set_title(f"{method}: ρ={res.global_structure:.3f}, layout {keep}", fontsize=9)
    return _save(fig, path)
