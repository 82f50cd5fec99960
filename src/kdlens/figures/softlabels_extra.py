"""More figures of the soft-label hypothesis (Vats 2021, *Response-based knowledge distillation*):

* :func:`plot_class_entropy_curves` — Fig. 4.4: each class's mean soft-label entropy vs ``T``
  as faded lines behind the mean over all examples, one panel per teacher;
* :func:`plot_ls_projection_comparison` — Fig. 4.5: penultimate activations of a model trained
  with label smoothing next to those of a plainly trained one, on the plane of three class
  templates (Müller, Kornblith & Hinton 2019), each panel titled with its class spread;
* :func:`plot_noise_sweep` — §4.8: student accuracy (and accuracy on the removed class) vs the
  scale of the noise added to the soft labels, teacher and label-smoothing sources, uniform
  (solid) and normal (dashed) noise, mean ± std over seeds / removed classes;
* :func:`plot_pretraining` — Figs. 6.2–6.5: soft-label entropy at ``T``, the teacher's test
  accuracy and the distilled student's accuracy vs the teacher's epochs, one line per teacher
  batch size, and the student's accuracy against the entropy of its teacher.

Like :mod:`kdlens.figures.softlabels`: Agg figures without pyplot state, saved to ``path`` when
given, results read by attribute (or plain namespaces with the same fields); nothing is computed
here but where to draw.
"""

from __future__ import annotations

import textwrap

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kdlens.errors import KdlensError
from kdlens.figures.softlabels import _finish
from kdlens.figures.style import COLUMN, PAGE, legend_outside, new_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "class_spread",
    "plot_class_entropy_curves",
    "plot_ls_projection_comparison",
    "plot_noise_sweep",
    "plot_pretraining",
]


# ----------------------------------------------------------------------------------------------
# Fig. 4.4
# ----------------------------------------------------------------------------------------------
def plot_class_entropy_curves(tables: Mapping[str, Any], title: str | None = None,
                              path: str | Path | None = None) -> Figure:
    """Per-class entropy curves (thin, faded, one colour per class) behind the mean curve (black),
    with the ``log K`` limit; one panel per teacher, shared y axis. ``tables[name]``: an
    ``EntropyTable`` (``temperatures``, ``per_class`` ``len(T)×K``, ``mean``, ``max_entropy``,
    ``class_names``)."""
    from matplotlib.lines import Line2D

    if not tables:
        raise KdlensError("plot_class_entropy_curves: no teachers to plot")
    n = len(tables)
    side = min(2.6, (PAGE - 1.3) / n)
    fig = new_figure(side * n + 1.3, 2.5)
    axes = []
    k = 0
    for i, (name, table) in enumerate(tables.items()):
        ax = fig.add_subplot(1, n, i + 1, sharey=axes[0] if axes else None)
        axes.append(ax)
        ts = np.asarray(table.temperatures, dtype=float)
        per_class = np.asarray(table.per_class, dtype=float)
        k = per_class.shape[1]
        for c in range(k):
            ax.plot(ts, per_class[:, c], color=f"C{c % 10}", lw=0.8, alpha=0.35, zorder=2)
        ax.plot(ts, np.asarray(table.mean, dtype=float), color="black", lw=1.8, zorder=3)
        ax.axhline(table.max_entropy, color="grey", ls="--", lw=0.8, zorder=1)
        ax.set_xlabel("temperature T")
        label = f"teacher {name}" if not str(name).startswith("teacher") else str(name)
        ax.set_title("\n".join(textwrap.wrap(label, 26, break_on_hyphens=False) or [label]), fontsize="small")
        ax.grid(alpha=0.25)
        if i == 0:
            ax.set_ylabel("entropy of softmax(z/T) (nats)")
            ax.set_ylim(0, table.max_entropy * 1.05)
        else:
            ax.tick_params(axis="y", labelleft=False)
    first = next(iter(tables.values()))
    names = list(first.class_names or [str(c) for c in range(k)])
    handles = [Line2D([], [], color="black", lw=1.8),
               *[Line2D([], [], color=f"C{c % 10}", lw=0.8, alpha=0.6) for c in range(k)],
               Line2D([], [], color="grey", ls="--", lw=0.8)]
    labels = ["mean over all examples", *[f"class {nm}" for nm in names], f"log K = {first.max_entropy:.2f}"]
    legend_outside(fig, handles, labels)
    return _finish(fig, path, title)


# ----------------------------------------------------------------------------------------------
# Fig. 4.5
# ----------------------------------------------------------------------------------------------
def class_spread(coords: np.ndarray, labels: np.ndarray, classes: Sequence[int]) -> float:
    """How tightly the classes cluster in the plane: mean distance of a point to its class mean
    divided by the mean distance between the class means (smaller = tighter; label smoothing
    is expected to make it smaller, Müller et al. 2019)."""
    coords = np.asarray(coords, dtype=float)
    labels = np.asarray(labels)
    means, within = [], []
    for c in classes:
        pts = coords[labels == c]
        if len(pts):
            m = pts.mean(0)
            means.append(m)
            within.append(np.linalg.norm(pts - m, axis=1).mean())
    if len(means) < 2:
        return float("nan")
    m = np.asarray(means)
    between = np.mean([np.linalg.norm(m[i] - m[j]) for i in range(len(m)) for j in range(i + 1, len(m))])
    return float(np.mean(within) / between) if between > 0 else float("nan")


def plot_ls_projection_comparison(
    plain: tuple[np.ndarray, np.ndarray, np.ndarray],
    smoothed: tuple[np.ndarray, np.ndarray, np.ndarray],
    classes: Sequence[int],
    class_names: Sequence[str] | None = None,
    alpha_ls: float | None = None,
    title: str | None = None,
    path: str | Path | None = None,
) -> Figure:
    """Fig. 4.5: two panels of :func:`kdlens.figures.softlabels.plot_projections`, the plainly
    trained model (``plain = (coords, labels, template_coords)``) left, the label-smoothing one
    right; each title gives :func:`class_spread`."""
    from kdlens.figures.softlabels import plot_projections

    ls_name = "label smoothing" + (f" α={alpha_ls:g}" if alpha_ls is not None else "")
    panels = {"plain (cross-entropy)": plain, ls_name: smoothed}
    fig = plot_projections(panels, classes, class_names)
    for ax, (name, (coords, labels, _)) in zip(fig.axes, panels.items(), strict=False):
        ax.set_title(f"{name}\nspread {class_spread(coords, labels, classes):.2f}")
    return _finish(fig, path, title)


# ----------------------------------------------------------------------------------------------
# §4.8 noise
# ----------------------------------------------------------------------------------------------
def _mean_std(cells: Sequence[Sequence[float]]) -> tuple[np.ndarray, np.ndarray]:
    mean, std = [], []
    for v in cells:
        v = np.asarray([x for x in v if x is not None and np.isfinite(x)], dtype=float)
        mean.append(v.mean() if v.size else np.nan)
        std.append(v.std(ddof=1) if v.size > 1 else 0.0)
    return np.asarray(mean), np.asarray(std)


def _band(ax: Any, x: np.ndarray, cells: Sequence[Any], label: str, color: str, ls: str, marker: str) -> None:
    """A mean line, a ± std band where there are several values, and the values themselves."""
    cells = [np.atleast_1d(np.asarray(c, dtype=float)) for c in cells]
    mean, std = _mean_std(cells)
    ax.plot(x, mean, color=color, ls=ls, marker=marker, ms=3, label=label, zorder=3)
    if any(len(c) > 1 for c in cells):
        ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.12, lw=0, zorder=2)
        for xi, c in zip(x, cells, strict=True):
            if len(c) > 1:
                ax.scatter(np.full(len(c), xi), c, s=6, facecolors="none", edgecolors=color, linewidths=0.5, zorder=4)


def plot_noise_sweep(result: Any, values: Mapping[tuple[str, str], Sequence[Sequence[float]]] | None = None,
                     missing_values: Mapping[tuple[str, str], Sequence[Sequence[float]]] | None = None,
                     title: str | None = None, path: str | Path | None = None) -> Figure:
    """Accuracy vs noise scale of a ``NoiseSweepResult`` (fields ``scales``, ``sources``,
    ``accuracy``, ``missing_class_accuracy``, ``T``): left the student's test accuracy, right
    (when a class was removed) its accuracy on the removed class. One colour per soft-label
    source, solid uniform / dashed normal noise. The scales are evenly spaced (a grid such as
    0, 0.01, …, 0.5 spans orders of magnitude and includes 0). ``values`` / ``missing_values``:
    ``[(source, noise)][scale index]`` = the per-seed / per-class numbers (mean ± std drawn);
    without them the result's means are drawn."""
    scales = [float(s) for s in result.scales]
    acc = values if values is not None else {k: [[v] for v in a] for k, a in result.accuracy.items()}
    mca_src = result.missing_class_accuracy or {}
    mca = missing_values if missing_values is not None else {k: [[v] for v in a] for k, a in mca_src.items()}
    if not acc:
        raise KdlensError("plot_noise_sweep: nothing to plot")
    sources = list(dict.fromkeys([*getattr(result, "sources", []), *(s for s, _ in acc)]))
    panels = [("student test accuracy (%)", acc, "all test images")]
    panels += [("accuracy on the removed class (%)", mca, "the removed class")] if mca else []
    fig = new_figure(COLUMN + 1.6 if len(panels) == 1 else PAGE, 2.5)
    x = np.arange(len(scales), dtype=float)
    for p, (ylabel, series, name) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), p + 1)
        top = 0.0
        for (source, noise), cells in series.items():
            j = sources.index(source) if source in sources else 0
            _band(ax, x, cells, f"{source}, {noise}", f"C{j % 10}", "-" if noise == "uniform" else "--",
                  "o" if noise == "uniform" else "s")
            top = max([top, *(float(np.nanmax(c)) for c in cells if len(c) and np.isfinite(c).any())])
        ax.set_xticks(x, [f"{s:g}" for s in scales])
        ax.set_xlabel("noise scale s")
        ax.set_ylabel(ylabel)
        ax.set_ylim(0, max(10.0, min(100.0, top * 1.08) if top else 10.0))
        ax.grid(alpha=0.3)
        ax.set_title(f"({'ab'[p]}) {name}" if len(panels) > 1 else name)
    handles, labels = fig.axes[0].get_legend_handles_labels()
    T = getattr(result, "T", None)
    note = "ε ~ U(−s, s) (solid) or N(0, s²) (dashed);\nclipped at 0, renormalised, redrawn every step"
    if T is not None:
        note += f";\nteachers at T = {float(T):g}, LS at T = 1"
    legend_outside(fig, handles, labels, title=note)
    return _finish(fig, path, title)


# ----------------------------------------------------------------------------------------------
# ch. 6 teacher pre-training
# ----------------------------------------------------------------------------------------------
def plot_pretraining(result: Any, T: float | None = None, title: str | None = None,
                     path: str | Path | None = None) -> Figure:
    """Figs. 6.2–6.5 from a ``PretrainingSweepResult`` (fields ``batch_sizes``, ``epochs``,
    ``temperatures``, ``entropy`` ``B×E×len(T)``, ``teacher_accuracy`` ``B×E``,
    ``student_accuracy`` ``B×E`` (NaN where no student was trained), ``T``, ``student_T``):
    (a) mean soft-label entropy at ``T`` vs teacher epochs, (b) the teacher's test accuracy,
    (c) the distilled student's test accuracy, one line per batch size (colour from small to
    large), and (d) the student's accuracy against its teacher's entropy; a star marks
    ``result.recommendation`` when present."""
    from matplotlib import colormaps

    bs = [int(b) for b in result.batch_sizes]
    ep = np.asarray(result.epochs, dtype=float)
    T = float(T if T is not None else result.T)
    temps = [float(t) for t in result.temperatures]
    if T not in temps:
        raise KdlensError(f"plot_pretraining: T = {T:g} is not among the measured temperatures {temps}")
    h = np.asarray(result.entropy, dtype=float)[:, :, temps.index(T)]
    t_acc = np.asarray(result.teacher_accuracy, dtype=float)
    s_acc = np.asarray(result.student_accuracy, dtype=float)
    cmap = colormaps["viridis"]
    colors = [cmap(i / max(len(bs) - 1, 1)) for i in range(len(bs))]
    fig = new_figure(PAGE, 4.6)
    axes = [fig.add_subplot(2, 2, i + 1) for i in range(4)]
    panels = [(h, f"mean entropy at T = {T:g} (nats)", "(a) soft-label entropy"),
              (t_acc, "teacher test accuracy (%)", "(b) teacher"),
              (s_acc, "student test accuracy (%)", f"(c) student distilled at T = {float(result.student_T):g}")]
    for ax, (values, ylabel, name) in zip(axes, panels, strict=False):
        for i, b in enumerate(bs):
            ax.plot(ep, values[i], marker="o", ms=3, color=colors[i], label=f"batch {b}")
        ax.set_xlabel("teacher epochs")
        ax.set_xticks(ep, [f"{int(e)}" for e in ep]) if len(ep) <= 12 else None
        ax.set_ylabel(ylabel)
        ax.set_title(name)
        ax.grid(alpha=0.3)
    ax = axes[3]
    for i, b in enumerate(bs):
        ax.scatter(h[i], s_acc[i], s=12, color=colors[i])
    rec = getattr(result, "recommendation", None) or {}
    if rec.get("batch_size") in bs and rec.get("epochs") in list(result.epochs):
        i, j = bs.index(rec["batch_size"]), list(result.epochs).index(rec["epochs"])
        for a, vals in ((axes[0], h), (axes[1], t_acc), (axes[2], s_acc)):
            a.scatter([ep[j]], [vals[i, j]], marker="*", s=110, facecolors="none", edgecolors="red", zorder=5)
        ax.scatter([h[i, j]], [s_acc[i, j]], marker="*", s=110, facecolors="none", edgecolors="red", zorder=5,
                   label="recommended")
    ax.set_xlabel(f"teacher's mean entropy at T = {T:g} (nats)")
    ax.set_ylabel("student test accuracy (%)")
    ax.set_title("(d) student vs its teacher's entropy")
    ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    h4, l4 = ax.get_legend_handles_labels()
    legend_outside(fig, handles + h4, labels + l4)
    return _finish(fig, path, title)
