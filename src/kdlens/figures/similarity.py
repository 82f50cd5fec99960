"""Layer-similarity heatmap with PURSUhInT clusters and hint points."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kdlens.errors import KdlensError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["plot_similarity_heatmap"]


def plot_similarity_heatmap(
    similarity: Any,
    selection: Any = None,
    names: Sequence[str] | None = None,
    title: str | None = None,
    path: str | Path | None = None,
    conventional: Sequence[int] | None = None,
) -> Figure:
    """Heatmap of an L×L layer similarity matrix (Agg backend, no pyplot state).

    With a ``selection`` (a ``HintSelection`` from ``select_hint_points``, read by its fields
    ``labels``, ``indices``, ``rule``, ``layer_names``): cluster boundaries are drawn as
    lines between consecutive layers of different clusters, the hint points are marked on
    the diagonal, and the axis ticks sit at the hint points labelled with their 1-based
    indices (as in PURSUhInT's Table 3).  Without one, ticks are 1-based layer indices.
    ``names`` (or ``selection.layer_names``) are added to the hint tick labels.
    ``conventional`` (0-based layer indices, e.g. the ends of the stages) are marked as white
    crosses.  The legend sits below the matrix, never on it.  ``path``: also save there (format
    from the suffix, e.g. .png).  Returns the Figure.
    """
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    from kdlens.figures.style import COLUMN, legend_outside, new_figure

    S = np.asarray(similarity.detach().cpu().numpy() if hasattr(similarity, "detach") else similarity, dtype=float)
    if S.ndim != 2 or S.shape[0] != S.shape[1]:
        raise KdlensError(f"similarity must be a square L×L matrix; got shape {S.shape}.")
    L = S.shape[0]
    if selection is not None and len(selection.labels) != L:
        raise KdlensError(f"the selection covers {len(selection.labels)} layers but the matrix has {L}.")
    if names is None and selection is not None and selection.layer_names is not None:
        names = selection.layer_names
    if names is not None and len(names) != L:
        raise KdlensError(f"names has {len(names)} entries but the matrix has {L} layers.")

    fig = new_figure(COLUMN + 0.6, COLUMN + 0.9)
    ax = fig.add_subplot(1, 1, 1)
    finite = S[np.isfinite(S)]
    vmin = min(0.0, float(finite.min())) if finite.size else 0.0
    vmax = max(1.0, float(finite.max())) if finite.size else 1.0
    im = ax.imshow(S, cmap="viridis", vmin=vmin, vmax=vmax, interpolation="nearest", origin="upper")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03, label="similarity")
    ax.set_xlabel("layer (1-based)")
    ax.set_ylabel("layer (1-based)")

    if selection is None:
        fmt = FuncFormatter(lambda v, _pos: f"{int(round(v)) + 1}")
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_locator(MaxNLocator(nbins=10, integer=True))
            axis.set_major_formatter(fmt)
    else:
        labels = np.asarray(selection.labels)
        for b in np.flatnonzero(labels[1:] != labels[:-1]):
            ax.axhline(b + 0.5, color="white", lw=1.2)
            ax.axvline(b + 0.5, color="white", lw=1.2)
        idx = list(selection.indices)
        ax.scatter(idx, idx, marker="o", s=60, facecolors="none", edgecolors="red", linewidths=2,
                   label=f"proposed hint points ({selection.rule} of each cluster)", zorder=3)
        ticks = [f"{i + 1}" + (f"\n{names[i]}" if names is not None else "") for i in idx]
        ax.set_xticks(idx, ticks, rotation=90 if names is not None and L > 12 else 0)
        ax.set_yticks(idx, [f"{i + 1}" for i in idx])
    if conventional is not None and len(conventional):
        conv = [int(i) for i in conventional]
        if any(not 0 <= i < L for i in conv):
            raise KdlensError(f"conventional points {conv} are outside the {L} layers (0-based indices)")
        ax.scatter(conv, conv, marker="x", s=40, color="white", linewidths=1.5, zorder=4)
    handles, labels_ = ax.get_legend_handles_labels()
    if conventional is not None and len(conventional):
        handles.append(Line2D([], [], ls="none", marker="x", color="0.35", ms=6, mew=1.5))
        labels_.append("conventional points (white ×)")
    if selection is not None:
        handles.append(Line2D([], [], color="0.6", lw=1.2))
        labels_.append("cluster boundaries (white lines)")
    if handles:
        legend_outside(fig, handles, labels_, where="below", ncols=1)
    ax.set_xlim(-0.5, L - 0.5)
    ax.set_ylim(L - 0.5, -0.5)
    if title:
        ax.set_title(title)
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
    return fig
