"""Figures of the embedding-space explanation (Lee & Wallraven 2021).

* :func:`plot_embedding_grid` — scatter per extraction point A–E coloured by class; one row
  per model (undistilled vs distilled side by side when given two), as the paper's Figs. 3–4.
* :func:`plot_class_area_boxplots` — class-area ratios per layer, one box per model (Fig. 8).
* :func:`plot_class_density` — one class's KDE and its highest-density region against the
  region of all points (Fig. 7).
* :func:`plot_class_density_panels` — several of those side by side (UD vs D) with one legend.
* :func:`plot_ivis_loss` — converged Ivis loss per layer and model, mean ± std over folds with
  each fold's value (Table 2 as a figure).
* :func:`plot_toy_check` — the Fig. 1 quadrant toy: the plane and each method's re-embedding.
* :func:`plot_toy_distances` — the toy's distance correlations: pairwise distances in the plane
  vs in each embedding (Spearman ρ), the six quadrant-centroid distances on top (Pearson r).

All figures use the Agg canvas directly (no pyplot state, constrained layout, legends outside
the data) and return the Figure; ``path`` also saves it (format from the suffix).  Draw them
inside :func:`kdlens.figures.style.paper_style` for print sizes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kdlens.errors import KdlensError
from kdlens.figures.style import COLUMN, PAGE, legend_outside, new_figure
from kdlens.figures.summary import plot_grouped_values

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "plot_class_area_boxplots",
    "plot_class_density",
    "plot_class_density_panels",
    "plot_embedding_grid",
    "plot_ivis_loss",
    "plot_toy_check",
    "plot_toy_distances",
]


def _figure(width: float, height: float) -> Figure:
    return new_figure(width, height)


def _save(fig: Figure, path: str | Path | None) -> Figure:
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, bbox_inches="tight")
    return fig


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
    method: str | None = None,
) -> Figure:
    """Grid of 2-D scatter plots: rows = models (e.g. ``{"UD": {...}, "D": {...}}``), columns =
    extraction points (``{"A": n×2, …}``), coloured by ``labels`` (one label array for all, or a
    mapping model → labels). ``titles[model][point]`` adds e.g. the layer name or a metric.
    The row label (model) sits left of each row, the class legend right of the grid (never on
    a panel); ``method`` (e.g. ``"ivis"``) labels the first panel's axes (``ivis 1``/``ivis 2``)."""
    if not embeddings:
        raise KdlensError("no embeddings to plot")
    models = list(embeddings)
    points = list(dict.fromkeys(p for m in models for p in embeddings[m]))
    side = min(1.55, (PAGE - 1.3) / len(points))
    fig = _figure(side * len(points) + 1.3, side * len(models) + 0.35)
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
            ax.set_aspect("equal", adjustable="datalim")
            for spine in ("top", "right"):
                ax.spines[spine].set_visible(True)
            title = point if titles is None else titles.get(model, {}).get(point, point)
            ax.set_title(title, fontsize="small")
            if c == 0:
                ax.set_ylabel(model, fontsize="large", fontweight="bold", rotation=0, ha="right", va="center",
                              labelpad=6)
    handles, names = axes[0][0].get_legend_handles_labels()
    if handles:
        legend_outside(fig, handles, names, markerscale=max(1.0, 4.0 / max(point_size, 0.5)), title="class",
                       handletextpad=0.2)
    if method:
        fig.supxlabel(f"{method} embedding of each layer's activations (2-D; axes have no units)", fontsize="small")
    return _save(fig, path)


def _box_group(ax: Any, ratios: Mapping[str, Mapping[str, Sequence[float]]], models: list[str], points: list[str]) -> None:
    width = 0.8 / len(models)
    colors = _class_colors(max(len(models), 2))
    for i, model in enumerate(models):
        data, pos = [], []
        for j, point in enumerate(points):
            vals = np.asarray(ratios[model].get(point, []), dtype=float)
            data.append(vals[np.isfinite(vals)])
            pos.append(j + (i - (len(models) - 1) / 2) * width)
        bp = ax.boxplot(data, positions=pos, widths=width * 0.85, patch_artist=True, showfliers=True, showmeans=True,
                        medianprops={"color": "black", "linewidth": 1.6},
                        meanprops={"marker": "D", "markerfacecolor": "white", "markeredgecolor": "black",
                                   "markersize": 3.5},
                        flierprops={"marker": "o", "markersize": 2.5, "markerfacecolor": colors[i],
                                    "markeredgecolor": "0.2", "markeredgewidth": 0.4},
                        boxprops={"linewidth": 0.8}, whiskerprops={"linewidth": 0.8}, capprops={"linewidth": 0.8})
        for patch in bp["boxes"]:
            patch.set_facecolor(colors[i])
            patch.set_alpha(0.55)
        ax.plot([], [], color=colors[i], lw=6, alpha=0.55, label=model)


def plot_class_area_boxplots(
    ratios: Mapping[str, Mapping[str, Sequence[float]]],
    title: str | None = "Class-area ratio per layer",
    path: str | Path | None = None,
) -> Figure:
    """Box plots of class-area ratios: ``ratios[model][point]`` = the per-class ratios (e.g. of all
    folds); one group per point, one box per model (Lee & Wallraven Fig. 8).  The median is a
    black line, the mean (the report table's number) a white diamond."""
    from matplotlib.lines import Line2D

    if not ratios:
        raise KdlensError("no class-area ratios to plot")
    models = list(ratios)
    points = list(dict.fromkeys(p for m in models for p in ratios[m]))
    fig = _figure(min(PAGE, 1.9 + 0.75 * len(points) * max(1, len(models))), 2.5)
    ax = fig.add_subplot(1, 1, 1)
    _box_group(ax, ratios, models, points)
    ax.set_xticks(range(len(points)), points)
    ax.set_xlim(-0.6, len(points) - 0.4)
    ax.set_xlabel("extraction point")
    ax.set_ylabel("class area / area of all points")
    ax.grid(axis="y", alpha=0.3)
    if title:
        ax.set_title(title)
    handles, names = ax.get_legend_handles_labels()
    handles += [Line2D([], [], color="black", lw=1.6),
                Line2D([], [], ls="none", marker="D", mfc="white", mec="black", ms=3.5)]
    names += ["median", "mean"]
    legend_outside(ax, handles, names)
    return _save(fig, path)


def plot_class_density(
    embedding: Any,
    density: Any,
    class_name: str | None = None,
    path: str | Path | None = None,
    ax: Any = None,
    labels: Any = None,
    legend: bool = True,
) -> Figure:
    """One class's KDE in an embedding (Fig. 7): all points in grey, the density of the class
    (filled contours), its highest-density region (solid red) and the same-mass region of all
    points (dashed black); the title names the class and gives the area ratio.  ``labels``
    (per point) marks the class's own points; ``ax`` draws into an existing axes.

    ``density``: a ``ClassDensity`` (``kdlens.explain.embed.class_density``), read by its fields
    ``cls``, ``mass``, ``xs``, ``ys``, ``density``, ``region``, ``all_region``, ``ratio``.
    """
    y = np.asarray(embedding, dtype=float)
    if y.ndim != 2 or y.shape[1] != 2:
        raise KdlensError(f"plot_class_density needs a 2-D embedding (n × 2); got shape {y.shape}")
    d_cls, xs, ys = np.asarray(density.density, dtype=float), np.asarray(density.xs), np.asarray(density.ys)
    if ax is None:
        fig = _figure(COLUMN, COLUMN + (0.55 if legend else 0.0))
        ax = fig.add_subplot(1, 1, 1)
    fig = ax.figure
    name = class_name if class_name is not None else f"class {density.cls}"
    top = float(d_cls.max()) if d_cls.size and np.isfinite(d_cls).any() else 0.0
    if top > 0:
        ax.contourf(xs, ys, d_cls, levels=np.linspace(top * 0.05, top, 8), cmap="Purples", alpha=0.75, zorder=1)
    own = None if labels is None else np.asarray(labels) == density.cls
    rest = y if own is None else y[~own]
    ax.scatter(rest[:, 0], rest[:, 1], s=2, color="0.72", linewidths=0, zorder=2)
    if own is not None:
        ax.scatter(y[own, 0], y[own, 1], s=3, color="#3f007d", linewidths=0, zorder=3)
    ax.contour(xs, ys, np.asarray(density.region, dtype=float), levels=[0.5], colors="#d62728", linewidths=1.4,
               zorder=4)
    ax.contour(xs, ys, np.asarray(density.all_region, dtype=float), levels=[0.5], colors="black", linewidths=1.0,
               linestyles="--", zorder=4)
    pct = int(round(density.mass * 100))
    ax.set_title(f"{name}\n{pct} % region: area ratio {density.ratio:.3f}")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(True)
    ax.set_aspect("equal", adjustable="datalim")
    if legend:
        legend_outside(fig, *_density_legend(pct, name if own is not None else None), where="below", ncols=2)
    return _save(fig, path)


def _density_legend(pct: int, own: str | None) -> tuple[list[Any], list[str]]:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [Patch(facecolor="#9e9ac8", alpha=0.75), Line2D([], [], color="#d62728", lw=1.4),
               Line2D([], [], color="black", lw=1.0, ls="--"),
               Line2D([], [], ls="none", marker="o", color="0.72", ms=2.5)]
    names = ["class density (KDE)", f"{pct} % region of the class", f"{pct} % region of all points", "all points"]
    if own is not None:
        handles.append(Line2D([], [], ls="none", marker="o", color="#3f007d", ms=2.5))
        names[-1] = "other classes' points"
        names.append("the class's points")
    return handles, names


def plot_class_density_panels(
    panels: Mapping[str, tuple[Any, Any]],
    labels: Any = None,
    title: str | None = None,
    path: str | Path | None = None,
) -> Figure:
    """Several :func:`plot_class_density` panels side by side (e.g. UD and D at one point):
    ``panels[panel title] = (embedding, density)``, one legend below them all."""
    if not panels:
        raise KdlensError("no densities to plot")
    n = len(panels)
    side = min(COLUMN, (PAGE - 0.2) / n)
    fig = _figure(side * n, side + 0.75)
    pct = 90
    for i, (name, (emb, dens)) in enumerate(panels.items()):
        ax = fig.add_subplot(1, n, i + 1)
        plot_class_density(emb, dens, class_name=name, ax=ax, labels=labels, legend=False)
        pct = int(round(dens.mass * 100))
    legend_outside(fig, *_density_legend(pct, "class" if labels is not None else None), where="below")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_ivis_loss(
    losses: Mapping[str, Mapping[str, float | Sequence[float]]],
    title: str | None = "Converged Ivis loss",
    path: str | Path | None = None,
) -> Figure:
    """The converged Ivis loss per point (x) and model (colour); a sequence of values (folds)
    is drawn as its mean ± sample std with every fold's value as an open circle (the numbers
    of the report's table; Lee & Wallraven Table 2 as a figure).  Dots, not bars: the losses
    differ by a few percent, which bars from 0 would hide."""
    if not losses:
        raise KdlensError("no Ivis losses to plot")
    fig = plot_grouped_values(losses, kind="dot", xlabel="extraction point", ylabel="converged Ivis loss",
                              title=title)
    return _save(fig, path)


QUADRANT_NAMES = ("Q0: x>0, y>0", "Q1: x<0, y>0", "Q2: x<0, y<0", "Q3: x>0, y<0")


def plot_toy_check(results: Mapping[str, Any], xy: Any, quadrant: Any, path: str | Path | None = None) -> Figure:
    """The Fig. 1 check: the coloured plane, then each method's re-embedding with its scores
    (``results``: method → :class:`~kdlens.explain.embed.toy.ToyResult`); quadrant legend below."""
    xy, q = np.asarray(xy), np.asarray(quadrant)
    fig = _figure(min(PAGE, 2.3 * (1 + len(results))), 2.9)
    axes = fig.subplots(1, 1 + len(results), squeeze=False)[0]
    _scatter(axes[0], xy, q, QUADRANT_NAMES, 3)
    axes[0].set_title("original 2-D plane", fontsize="small")
    for ax, (method, res) in zip(axes[1:], results.items(), strict=True):
        _scatter(ax, np.asarray(res.embedding), q, QUADRANT_NAMES, 3)
        keep = "kept" if res.layout_preserved else "lost"
        ax.set_title(f"{method}: ρ={res.global_structure:.3f}\nr={res.centroid_correlation:.3f}, layout {keep}",
                     fontsize="small")
    for ax in axes:
        ax.set_aspect("equal", adjustable="datalim")
    handles, names = axes[0].get_legend_handles_labels()
    legend_outside(fig, handles, names, where="below", ncols=4, markerscale=2.5)
    return _save(fig, path)


def plot_toy_distances(panels: Mapping[str, Mapping[str, Any]], path: str | Path | None = None) -> Figure:
    """The Fig. 1 distance correlations, one panel per method: point pairs' distance in the plane
    (x) vs in the embedding (y) as a 2-D histogram, the six quadrant-centroid distances on top
    (the two diagonal pairs filled).  A kept layout is a rising band.

    ``panels[method]``: ``d_plane``, ``d_embedding`` (pair distances), ``c_plane``,
    ``c_embedding`` (centroid distances, pairs (0,1), (0,2), (0,3), (1,2), (1,3), (2,3)),
    ``rho``, ``r`` and ``points`` (sampled points), as
    :func:`kdlens.explain.embed.toy.toy_distance_panel` returns them."""
    from matplotlib.lines import Line2D

    if not panels:
        raise KdlensError("no toy embeddings to plot")
    diagonal = np.array([False, True, False, False, True, False])  # pairs (0,2) and (1,3)
    fig = _figure(min(PAGE, 2.6 * len(panels)), 2.9)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    points = 0
    for ax, (method, p) in zip(axes, panels.items(), strict=True):
        ax.hexbin(p["d_plane"], p["d_embedding"], gridsize=40, bins="log", cmap="Greys", mincnt=1, linewidths=0)
        c_xy, c_emb = np.asarray(p["c_plane"]), np.asarray(p["c_embedding"])
        ax.scatter(c_xy[~diagonal], c_emb[~diagonal], s=28, facecolors="white", edgecolors="#d62728", zorder=3)
        ax.scatter(c_xy[diagonal], c_emb[diagonal], s=28, color="#d62728", zorder=3)
        ax.set_title(f"{method}: ρ = {p['rho']:.3f}, r = {p['r']:.3f}", fontsize="small")
        ax.set_xlabel("distance in the plane")
        points = p["points"]
    axes[0].set_ylabel("distance in the embedding")
    handles = [Line2D([], [], ls="none", marker="h", color="0.45", ms=6),
               Line2D([], [], ls="none", marker="o", mfc="white", mec="#d62728", ms=5),
               Line2D([], [], ls="none", marker="o", color="#d62728", ms=5)]
    names = [f"pairs of {points} points (ρ: Spearman)", "quadrant centroids, side by side (r: Pearson)",
             "quadrant centroids, diagonal"]
    legend_outside(fig, handles, names, where="below", ncols=1)
    return _save(fig, path)
