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
  one panel per teacher (Müller et al. 2019);
* :func:`plot_noise_curves` and :func:`plot_pretraining_sweep` — accuracy vs noise scale;
  entropy and student accuracy vs ``T`` per teacher pre-training setting.

Results are read by attribute (the result classes of :mod:`kdlens.explain.softlabels`, or any
object with the same fields); this module computes nothing and imports nothing of kdlens but
its errors.
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
    "plot_entropy_curves",
    "plot_image_grid",
    "plot_missing_class_heatmaps",
    "plot_noise_curves",
    "plot_pretraining_sweep",
    "plot_projections",
    "plot_transfer_set_curves",
]


def _figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


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
    a second panel with the same y scale."""
    if not tables:
        raise KdlensError("plot_entropy_curves: no teachers to plot")
    first = next(iter(tables.values()))
    if ls_curve is not None and len(ls_curve[0]) != len(ls_curve[1]):
        raise KdlensError(f"plot_entropy_curves: ls_curve has {len(ls_curve[0])} α_LS values "
                          f"but {len(ls_curve[1])} entropies")
    panels = 2 if ls_curve is not None and len(ls_curve[0]) else 1
    fig = _figure(5.2 * panels, 4.0)
    ax = fig.add_subplot(1, panels, 1)
    for name, table in tables.items():
        ax.plot(table.temperatures, table.mean, marker="o", ms=3, label=name)
    ax.axhline(first.max_entropy, color="grey", ls="--", lw=1, label=f"log K = {first.max_entropy:.2f}")
    ax.set_xlabel("temperature T")
    ax.set_ylabel("mean entropy of softmax(z/T)")
    ax.set_ylim(0, first.max_entropy * 1.05)
    ax.legend(fontsize=8)
    ax.set_title("teachers")
    if panels == 2:
        ax2 = fig.add_subplot(1, 2, 2, sharey=ax)
        ax2.plot(list(ls_curve[0]), list(ls_curve[1]), marker="o", ms=3, color="black")
        ax2.axhline(first.max_entropy, color="grey", ls="--", lw=1)
        ax2.set_xlabel("α_LS")
        ax2.set_title("label smoothing (no similarity)")
    return _finish(fig, path, title)


def _heatmap(ax: Any, values: np.ndarray, xticks: Sequence[str], yticks: Sequence[str], title: str) -> Any:
    im = ax.imshow(values, vmin=0, vmax=100, cmap="viridis", aspect="auto", interpolation="nearest")
    ax.set_xticks(range(len(xticks)), xticks, fontsize=8)
    ax.set_yticks(range(len(yticks)), yticks, fontsize=8)
    for (i, j), v in np.ndenumerate(values):
        if np.isfinite(v):
            ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=7, color="white" if v < 60 else "black")
    ax.set_title(title, fontsize=10)
    return im


def plot_missing_class_heatmaps(result: Any, title: str | None = None, path: str | Path | None = None) -> Figure:
    """Accuracy (%) on the removed class of a ``MissingClassResult``: rows = removed class,
    columns = T (teachers) or α_LS (label-smoothing control)."""
    panels = [(f"teacher: {n}", result.missing_class_accuracy[n], [f"{t:g}" for t in result.temperatures], "T")
              for n in result.teachers]
    if result.ls_alphas:
        panels.append(("label smoothing (T = 1)", result.ls_missing_class_accuracy,
                       [f"{a:g}" for a in result.ls_alphas], "α_LS"))
    if not panels:
        raise KdlensError("plot_missing_class_heatmaps: the result has no teacher and no LS control")
    fig = _figure(1.8 + 3.2 * len(panels), 1.0 + 0.35 * max(len(result.classes), 4))
    im = None
    for i, (name, values, xt, xlabel) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        im = _heatmap(ax, values, xt, result.class_names if i == 0 else [""] * len(result.classes), name)
        ax.set_xlabel(xlabel)
        if i == 0:
            ax.set_ylabel("removed class")
    fig.colorbar(im, ax=fig.axes, fraction=0.03, pad=0.02, label="accuracy on the missing class (%)")
    return _finish(fig, path, title)


def plot_transfer_set_curves(result: Any, title: str | None = None, path: str | Path | None = None) -> Figure:
    """Test accuracy vs examples per class (log x) of a ``TransferSetResult``: entropy-ranked
    solid, random dashed."""
    fig = _figure(5.6, 4.0)
    ax = fig.add_subplot(1, 1, 1)
    colors: dict[str, Any] = {}
    for (teacher, selection), acc in result.curves.items():
        style = "-" if selection == "entropy" else "--"
        line = ax.plot(result.ns, acc, style, marker="o", ms=3, color=colors.get(teacher),
                       label=f"{teacher}: {'top entropy' if selection == 'entropy' else 'random'}")[0]
        colors.setdefault(teacher, line.get_color())
    ax.set_xscale("log")
    ax.set_xticks(list(result.ns), [str(n) for n in result.ns])
    ax.minorticks_off()
    ax.set_xlabel("examples per class N")
    ax.set_ylabel("student test accuracy (%)")
    ax.set_title(f"entropy-ranked transfer sets (T = {result.T:g})", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _finish(fig, path, title)


def plot_image_grid(
    images: Any,
    indices: np.ndarray,
    class_names: Sequence[str] | None = None,
    title: str | None = None,
    path: str | Path | None = None,
) -> Figure:
    """Rows of images: ``indices`` is ``rows×cols`` (``-1`` = empty), ``images`` ``N×C×H×W``
    (uint8 or float). Row labels from ``class_names``."""
    imgs = images.detach().cpu().numpy() if hasattr(images, "detach") else np.asarray(images)
    idx = np.asarray(indices)
    rows, cols = idx.shape
    fig = _figure(0.9 * cols + 1.2, 0.9 * rows + 0.4)
    for r in range(rows):
        for c in range(cols):
            ax = fig.add_subplot(rows, cols, r * cols + c + 1)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0 and class_names is not None:
                ax.set_ylabel(class_names[r], fontsize=7, rotation=0, ha="right", va="center")
            if idx[r, c] < 0:
                ax.axis("off")
                continue
            img = imgs[idx[r, c]]
            img = img[0] if img.shape[0] == 1 else np.transpose(img, (1, 2, 0))
            if img.dtype != np.uint8:
                img = (img - img.min()) / max(float(img.max() - img.min()), 1e-12)
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None, interpolation="nearest")
    return _finish(fig, path, title)


def plot_projections(
    panels: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
    classes: Sequence[int],
    class_names: Sequence[str] | None = None,
    title: str | None = None,
    path: str | Path | None = None,
) -> Figure:
    """One scatter per teacher: ``panels[name] = (coords N×2, labels N, template_coords 3×2)``;
    points coloured by class, the three templates as black stars."""
    if not panels:
        raise KdlensError("plot_projections: nothing to plot")
    names = class_names or [str(c) for c in range(max(classes) + 1)]
    fig = _figure(4.4 * len(panels), 4.2)
    for i, (teacher, (coords, labels, templates)) in enumerate(panels.items()):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for j, c in enumerate(classes):
            sel = np.asarray(labels) == c
            ax.scatter(coords[sel, 0], coords[sel, 1], s=6, alpha=0.5, color=f"C{j}", label=names[c])
        ax.scatter(templates[:, 0], templates[:, 1], marker="*", s=120, color="black", label="templates", zorder=3)
        ax.set_title(teacher, fontsize=10)
        ax.set_aspect("equal", adjustable="datalim")
        ax.legend(fontsize=7)
    return _finish(fig, path, title)


def plot_noise_curves(result: Any, title: str | None = None, path: str | Path | None = None) -> Figure:
    """Student test accuracy vs noise scale of a ``NoiseResult``, one line per (source, noise type)."""
    fig = _figure(5.4, 4.0)
    ax = fig.add_subplot(1, 1, 1)
    for (source, noise), acc in result.accuracy.items():
        ax.plot(result.scales, acc, marker="o", ms=3, label=f"{source}, {noise}")
    ax.set_xlabel("noise scale")
    ax.set_ylabel("student test accuracy (%)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _finish(fig, path, title)


def plot_pretraining_sweep(result: Any, title: str | None = None, path: str | Path | None = None) -> Figure:
    """A ``PretrainingResult``. Left: mean soft-label entropy vs T per teacher setting; right: the
    student's accuracy vs T."""
    fig = _figure(10.4, 4.0)
    ax1 = fig.add_subplot(1, 2, 1)
    ax2 = fig.add_subplot(1, 2, 2)
    for name in result.teachers:
        ax1.plot(result.temperatures, result.entropy[name], marker="o", ms=3, label=name)
        ax2.plot(result.temperatures, result.student_accuracy[name], marker="o", ms=3, label=name)
    ax1.set_xlabel("temperature T")
    ax1.set_ylabel("mean entropy")
    ax2.set_xlabel("temperature T")
    ax2.set_ylabel("student test accuracy (%)")
    ax1.legend(fontsize=8)
    return _finish(fig, path, title)
