"""Figures of the soft-label diagnostics (Vats 2021, *Response-based knowledge distillation*).

Every function builds a matplotlib ``Figure`` with the Agg canvas (no pyplot state), saves it
to ``path`` when given (format from the suffix) and returns it:

* :func:`plot_entropy_curves` — mean soft-label entropy vs ``T`` for several teachers, with the
  ``log K`` limit, next to label smoothing's entropy vs α_LS (thesis Fig. 5.2–5.4, 5.15);
* :func:`plot_missing_class_heatmaps` — class × T accuracy on the missing class, one panel per
  teacher plus the label-smoothing control (class × α_LS);
* :func:`plot_transfer_set_curves` — accuracy vs examples per class, entropy-ranked (solid)
  and random (dashed);
* :func:`plot_image_grid` — e.g. the ten highest-entropy examples of every class;
* :func:`plot_projections` — penultimate activations on the plane of three class templates,
  one panel per teacher (Müller et al. 2019), the templates placed among their classes by
  :func:`template_placement`;
* :func:`plot_noise_curves` and :func:`plot_pretraining_sweep` — accuracy vs noise scale;
  entropy and student accuracy vs ``T`` per teacher pre-training setting.

Results are read by attribute (the result classes of :mod:`kdlens.explain.softlabels`, or any
object with the same fields); this module computes nothing but where to draw things (and a
mean row) and imports nothing of kdlens but its errors and :mod:`kdlens.figures`.  Legends sit
outside the data; draw inside :func:`kdlens.figures.style.paper_style` for print sizes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kdlens.errors import KdlensError
from kdlens.figures.style import COLUMN, PAGE, legend_outside, new_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "plot_entropy_curves",
    "plot_image_grid",
    "plot_missing_class_heatmaps",
    "plot_noise_curves",
    "plot_pretraining_sweep",
    "plot_projections",
    "plot_transfer_set_curves",
    "template_placement",
]


def _figure(width: float, height: float) -> Figure:
    return new_figure(width, height)


def _finish(fig: Figure, path: str | Path | None, title: str | None = None) -> Figure:
    if title:
        fig.suptitle(title)
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
    return fig


def plot_entropy_curves(
    tables: Mapping[str, Any],
    ls_curve: tuple[Sequence[float], Sequence[float]] | None = None,
    title: str | None = None,
    path: str | Path | None = None,
) -> Figure:
    """Mean soft-label entropy vs temperature, one line per teacher (``EntropyTable``s: fields
    ``temperatures``, ``mean``, ``max_entropy``), and (when ``ls_curve = (alphas, entropies)``
    is given, e.g. from ``label_smoothing_entropy_curve``) label smoothing's entropy vs α_LS on
    a second panel with the same y scale.  One legend right of the panels."""
    if not tables:
        raise KdlensError("plot_entropy_curves: no teachers to plot")
    first = next(iter(tables.values()))
    if ls_curve is not None and len(ls_curve[0]) != len(ls_curve[1]):
        raise KdlensError(f"plot_entropy_curves: ls_curve has {len(ls_curve[0])} α_LS values "
                          f"but {len(ls_curve[1])} entropies")
    panels = 2 if ls_curve is not None and len(ls_curve[0]) else 1
    fig = _figure(COLUMN + 1.3 if panels == 1 else PAGE, 2.5)
    ax = fig.add_subplot(1, panels, 1)
    for name, table in tables.items():
        ax.plot(table.temperatures, table.mean, marker="o", ms=3, label=f"teacher {name}")
    ax.axhline(first.max_entropy, color="grey", ls="--", lw=1, label=f"log K = {first.max_entropy:.2f} (uniform)")
    ax.set_xlabel("temperature T")
    ax.set_ylabel("mean entropy of softmax(z/T) (nats)")
    ax.set_ylim(0, first.max_entropy * 1.05)
    ax.set_title("teachers")
    ax.grid(alpha=0.3)
    if panels == 2:
        ax2 = fig.add_subplot(1, 2, 2, sharey=ax)
        ax2.plot(list(ls_curve[0]), list(ls_curve[1]), marker="s", ms=3, color="black",
                 label="label smoothing (no similarity)")
        ax2.axhline(first.max_entropy, color="grey", ls="--", lw=1)
        ax2.set_xlabel("label-smoothing α_LS")
        ax2.set_title("label smoothing")
        ax2.grid(alpha=0.3)
        handles, names = ax.get_legend_handles_labels()
        h2, n2 = ax2.get_legend_handles_labels()
        legend_outside(fig, handles + h2, names + n2)
    else:
        legend_outside(ax)
    return _finish(fig, path, title)


def _text_color(rgba: Any) -> str:
    """Black or white, whichever reads better on ``rgba`` (relative luminance)."""
    r, g, b = rgba[:3]
    return "black" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.45 else "white"


def _heatmap(ax: Any, values: np.ndarray, xticks: Sequence[str], yticks: Sequence[str], title: str,
             mean_row: bool = False) -> Any:
    from matplotlib import colormaps

    values = np.asarray(values, dtype=float)
    cmap = colormaps["viridis"]
    shown = values
    if mean_row and values.shape[0] > 1:
        with np.errstate(all="ignore"):
            shown = np.vstack([values, np.nanmean(values, axis=0, keepdims=True)])
        yticks = [*yticks, "mean"]
    im = ax.imshow(shown, vmin=0, vmax=100, cmap=cmap, aspect="auto", interpolation="nearest")
    ax.set_xticks(range(len(xticks)), xticks)
    ax.set_yticks(range(len(yticks)), yticks)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    for (i, j), v in np.ndenumerate(shown):
        if np.isfinite(v):
            last = shown is not values and i == shown.shape[0] - 1
            ax.text(j, i, f"{v:.1f}" if last else f"{v:.0f}", ha="center", va="center", fontsize=8,
                    fontweight="bold" if last else "normal", color=_text_color(cmap(v / 100.0)))
    if shown is not values:
        ax.axhline(values.shape[0] - 0.5, color="white", lw=2)
    ax.set_title(title)
    return im


def plot_missing_class_heatmaps(result: Any, title: str | None = None, path: str | Path | None = None) -> Figure:
    """Accuracy (%) on the removed class of a ``MissingClassResult``: rows = removed class,
    columns = T (teachers) or α_LS (label-smoothing control); with more than one removed
    class, a last row holds the mean over them (the report table's number)."""
    panels = [(f"teacher: {n}", result.missing_class_accuracy[n], [f"{t:g}" for t in result.temperatures], "T")
              for n in result.teachers]
    if result.ls_alphas:
        panels.append(("label smoothing (T = 1)", result.ls_missing_class_accuracy,
                       [f"{a:g}" for a in result.ls_alphas], "α_LS"))
    if not panels:
        raise KdlensError("plot_missing_class_heatmaps: the result has no teacher and no LS control")
    rows = len(result.classes) + (1 if len(result.classes) > 1 else 0)
    cols = [len(xt) for _, _, xt, _ in panels]
    width = min(PAGE, 1.3 + sum(0.45 * max(c, 2) + 0.35 for c in cols))
    fig = _figure(width, 0.9 + 0.26 * max(rows, 3))
    im = None
    grid = fig.add_gridspec(1, len(panels), width_ratios=[max(c, 2) for c in cols])
    for i, (name, values, xt, xlabel) in enumerate(panels):
        ax = fig.add_subplot(grid[0, i])
        im = _heatmap(ax, values, xt, result.class_names, name, mean_row=True)
        ax.set_xlabel(xlabel)
        if i == 0:
            ax.set_ylabel("removed class")
        else:
            ax.tick_params(axis="y", labelleft=False)
    fig.colorbar(im, ax=fig.axes, fraction=0.05, pad=0.02, aspect=15, label="accuracy on the\nremoved class (%)")
    return _finish(fig, path, title)


def plot_transfer_set_curves(result: Any, title: str | None = None, path: str | Path | None = None,
                             values: Mapping[tuple[str, str], Sequence[Sequence[float]]] | None = None) -> Figure:
    """Test accuracy vs examples per class (log x) of a ``TransferSetResult``: entropy-ranked
    solid, random dashed, one colour per teacher.  ``values[(teacher, selection)][i]`` = the
    accuracies of each seed at ``result.ns[i]`` draws mean ± std with every seed's value;
    without it, ``result.curves`` (one number per N) is drawn."""
    from kdlens.figures.summary import plot_mean_curves

    curves = values if values is not None else result.curves
    teachers = list(dict.fromkeys(t for t, _ in curves))
    series: dict[str, Any] = {}
    styles: dict[str, dict[str, Any]] = {}
    for (teacher, selection), acc in curves.items():
        label = f"{teacher}: {'top entropy' if selection == 'entropy' else 'random'}"
        series[label] = list(acc)
        styles[label] = {"color": f"C{teachers.index(teacher) % 10}", "ls": "-" if selection == "entropy" else "--",
                         "marker": "o" if selection == "entropy" else "s"}
    fig = plot_mean_curves(list(result.ns), series, xlabel="examples per class N", ylabel="student test accuracy (%)",
                           title=f"entropy-ranked transfer sets (T = {result.T:g})", logx=True, styles=styles)
    return _finish(fig, path, title)


def plot_image_grid(
    images: Any,
    indices: np.ndarray,
    class_names: Sequence[str] | None = None,
    title: str | None = None,
    path: str | Path | None = None,
) -> Figure:
    """Rows of images: ``indices`` is ``rows×cols`` (``-1`` = empty), ``images`` ``N×C×H×W``
    (uint8 or float), each scaled to its own range. Row labels from ``class_names``, left of
    each row.  One mosaic image (one axes), so a 10 × 10 grid draws fast and small in SVG/PDF."""
    imgs = images.detach().cpu().numpy() if hasattr(images, "detach") else np.asarray(images)
    idx = np.asarray(indices)
    if idx.ndim != 2:
        raise KdlensError(f"plot_image_grid: indices must be rows × cols, got shape {idx.shape}")
    rows, cols = idx.shape
    c, h, w = imgs.shape[1:4]
    gap = max(1, h // 10)
    mosaic = np.ones(((h + gap) * rows - gap, (w + gap) * cols - gap, 3))
    for r in range(rows):
        for k in range(cols):
            if idx[r, k] < 0:
                continue
            img = np.asarray(imgs[idx[r, k]], dtype=float)
            img = (img - img.min()) / max(float(img.max() - img.min()), 1e-12)
            tile = np.repeat(img[0][..., None], 3, axis=2) if c == 1 else np.transpose(img[:3], (1, 2, 0))
            mosaic[r * (h + gap):r * (h + gap) + h, k * (w + gap):k * (w + gap) + w] = tile
    side = min(0.55, (PAGE - 1.0) / cols)
    fig = _figure(side * cols + 1.0, side * rows + 0.4)
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(mosaic, interpolation="nearest")
    ax.set_xticks([])
    if class_names is not None:
        ax.set_yticks([r * (h + gap) + h / 2 - 0.5 for r in range(rows)], [str(class_names[r]) for r in range(rows)])
        ax.tick_params(axis="y", length=0)
    else:
        ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    return _finish(fig, path, title)


def template_placement(coords: np.ndarray, labels: np.ndarray, classes: Sequence[int],
                       templates: np.ndarray) -> tuple[np.ndarray, float]:
    """Where to draw the three class templates among the activations, and the scale used.

    A template is a classifier row ``w_k``; an activation of class ``k`` points along ``w_k``
    but is many times longer, so the templates' own plane coordinates sit in a small triangle
    near the origin, far from their classes.  The triangle is therefore drawn scaled by one
    factor ``s`` and shifted by one offset ``b`` (its shape and orientation kept), with ``s``
    and ``b`` the least-squares fit of the class means ``m_k ≈ s·τ_k + b``.  Returns the placed
    3×2 coordinates and ``s`` (the unscaled coordinates and 1 when the fit is degenerate or
    ``s ≤ 0``)."""
    tau = np.asarray(templates, dtype=float)
    labels = np.asarray(labels)
    means, used = [], []
    for j, c in enumerate(classes):
        sel = labels == c
        if sel.any():
            means.append(np.asarray(coords, dtype=float)[sel].mean(0))
            used.append(j)
    if len(used) < 2:
        return tau, 1.0
    t, m = tau[used], np.asarray(means)
    tc, mc = t - t.mean(0), m - m.mean(0)
    denom = float((tc * tc).sum())
    if denom <= 1e-24:
        return tau, 1.0
    s = float((tc * mc).sum() / denom)
    if not np.isfinite(s) or s <= 0:
        return tau, 1.0
    b = m.mean(0) - s * t.mean(0)
    return s * tau + b, s


def plot_projections(
    panels: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
    classes: Sequence[int],
    class_names: Sequence[str] | None = None,
    title: str | None = None,
    path: str | Path | None = None,
) -> Figure:
    """One scatter per teacher: ``panels[name] = (coords N×2, labels N, template_coords 3×2)``;
    points coloured by class, each class's template a star of the class's colour (black edge)
    placed by :func:`template_placement` (scale given in the legend).  Axes: ``e₁`` is the
    direction from the first class's template to the second's, ``e₂`` the direction in the
    templates' plane orthogonal to it (Müller et al. 2019; :class:`~kdlens.explain.softlabels.TemplateProjection`)."""
    from matplotlib.lines import Line2D

    if not panels:
        raise KdlensError("plot_projections: nothing to plot")
    names = class_names or [str(c) for c in range(max(classes) + 1)]
    n = len(panels)
    side = min(2.6, (PAGE - 1.4) / n)
    fig = _figure(side * n + 1.4, side + 0.5)
    scales = []
    for i, (teacher, (coords, labels, templates)) in enumerate(panels.items()):
        ax = fig.add_subplot(1, n, i + 1)
        coords = np.asarray(coords, dtype=float)
        for j, c in enumerate(classes):
            sel = np.asarray(labels) == c
            ax.scatter(coords[sel, 0], coords[sel, 1], s=5, alpha=0.5, color=f"C{j}", linewidths=0,
                       label=f"class {names[c]}")
        placed, s = template_placement(coords, labels, classes, templates)
        scales.append(s)
        for j in range(len(classes)):
            ax.scatter(placed[j, 0], placed[j, 1], marker="*", s=150, color=f"C{j}", edgecolors="black",
                       linewidths=0.9, zorder=3)
        ax.set_title(f"teacher {teacher}" if not str(teacher).startswith("teacher") else str(teacher))
        ax.set_aspect("equal", adjustable="datalim")
        ax.set_xlabel(f"e₁: template {names[classes[0]]} → {names[classes[1]]}")
        if i == 0:
            ax.set_ylabel(f"e₂: towards template {names[classes[2]]}")
        ax.grid(alpha=0.25)
    handles = [Line2D([], [], ls="none", marker="o", color=f"C{j}", ms=4, alpha=0.7) for j in range(len(classes))]
    labels_ = [f"class {names[c]}" for c in classes]
    scale_txt = ", ".join(f"×{s:.3g}" for s in scales) if any(s != 1.0 for s in scales) else "unscaled"
    handles.append(Line2D([], [], ls="none", marker="*", ms=9, mfc="0.6", mec="black", mew=0.9))
    labels_.append(f"class templates\n(triangle {scale_txt},\nfitted to the class means)")
    legend_outside(fig, handles, labels_)
    return _finish(fig, path, title)


def plot_noise_curves(result: Any, title: str | None = None, path: str | Path | None = None) -> Figure:
    """Student test accuracy vs noise scale of a ``NoiseResult``, one line per (source, noise type)."""
    fig = _figure(COLUMN + 1.4, 2.5)
    ax = fig.add_subplot(1, 1, 1)
    for (source, noise), acc in result.accuracy.items():
        ax.plot(result.scales, acc, marker="o", ms=3, label=f"{source}, {noise}")
    ax.set_xlabel("noise scale")
    ax.set_ylabel("student test accuracy (%)")
    legend_outside(ax)
    ax.grid(alpha=0.3)
    return _finish(fig, path, title)


def plot_pretraining_sweep(result: Any, title: str | None = None, path: str | Path | None = None) -> Figure:
    """A ``PretrainingResult``. Left: mean soft-label entropy vs T per teacher setting; right: the
    student's accuracy vs T."""
    fig = _figure(PAGE, 2.5)
    ax1 = fig.add_subplot(1, 2, 1)
    ax2 = fig.add_subplot(1, 2, 2)
    for name in result.teachers:
        ax1.plot(result.temperatures, result.entropy[name], marker="o", ms=3, label=name)
        ax2.plot(result.temperatures, result.student_accuracy[name], marker="o", ms=3, label=name)
    ax1.set_xlabel("temperature T")
    ax1.set_ylabel("mean entropy")
    ax2.set_xlabel("temperature T")
    ax2.set_ylabel("student test accuracy (%)")
    legend_outside(fig, *ax1.get_legend_handles_labels())
    return _finish(fig, path, title)
