"""One look for every kdlens figure that goes into a report or a paper, and the files it is
written to.

* :func:`paper_style` — a ``matplotlib.rc_context`` with print sizes: 8 pt text (7 pt ticks and
  legends), thin lines, no top/right spines, and text kept as text in vector files (SVG
  ``<text>`` elements, TrueType fonts in PDF, so a journal's editor can select and edit it).
  Draw *and* save inside it: font sizes are fixed when an artist is made, font embedding when a
  file is written.
* :data:`COLUMN` / :data:`PAGE` — widths (inches) of a one-column and a full-width figure in a
  two-column paper; kdlens figures are never wider than :data:`PAGE`.
* :func:`new_figure` — a Figure on the Agg canvas (no pyplot state), constrained layout.
* :func:`figure_bytes` / :func:`save_figure` — one figure as PNG, SVG or PDF bytes / files.
* :func:`parse_formats` — ``"png,svg,pdf"`` → checked list of formats.
* :func:`legend_outside` — a legend right of (or below) the axes, where it covers no data.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdlens.errors import KdlensError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["COLUMN", "FORMATS", "PAGE", "PAPER_RC", "figure_bytes", "legend_outside", "new_figure",
           "paper_style", "parse_formats", "save_figure"]

COLUMN = 3.4  # inches: one column of a two-column paper
PAGE = 7.0  # inches: the full text width
FORMATS = ("png", "svg", "pdf")
PNG_DPI = 150  # report pages show PNGs at this resolution: 8 pt text ≈ 17 px

PAPER_RC: dict[str, Any] = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "legend.title_fontsize": 7,
    "figure.titlesize": 9,
    "axes.linewidth": 0.7,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "xtick.major.width": 0.7,
    "ytick.major.width": 0.7,
    "lines.linewidth": 1.2,
    "lines.markersize": 4,
    "errorbar.capsize": 2,
    "legend.frameon": False,
    "svg.fonttype": "none",  # text stays <text>, not paths
    "pdf.fonttype": 42,  # TrueType, not Type 3 bitmaps
    "ps.fonttype": 42,
    "savefig.dpi": PNG_DPI,
    "savefig.bbox": "tight",
    "savefig.pad_inches": 0.03,
    "figure.dpi": PNG_DPI,
}


@contextmanager
def paper_style() -> Iterator[None]:
    """Draw and save inside this context for print-sized, editable figures."""
    import matplotlib

    with matplotlib.rc_context(PAPER_RC):
        yield


def new_figure(width: float, height: float, layout: str | None = "constrained") -> Figure:
    """A Figure of ``width`` × ``height`` inches on the Agg canvas, no pyplot state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(min(width, PAGE), height), layout=layout)
    FigureCanvasAgg(fig)
    return fig


def parse_formats(formats: str | Sequence[str] | None) -> list[str]:
    """``"png,svg"`` or ``["png", "svg"]`` → ``["png", "svg"]``; an unknown format is an error
    that names the known ones."""
    if formats is None:
        return ["png"]
    items = formats.split(",") if isinstance(formats, str) else list(formats)
    out: list[str] = []
    for item in items:
        f = item.strip().lower().lstrip(".")
        if not f:
            continue
        if f not in FORMATS:
            raise KdlensError(f"unknown figure format {item.strip()!r}; use any of {', '.join(FORMATS)} "
                              "(comma-separated, e.g. --formats png,svg,pdf)")
        if f not in out:
            out.append(f)
    if not out:
        raise KdlensError(f"no figure format given; use any of {', '.join(FORMATS)}")
    return out


def figure_bytes(fig: Figure, fmt: str = "png", dpi: int = PNG_DPI) -> bytes:
    """``fig`` as PNG / SVG / PDF bytes (in :func:`paper_style`, so vector text stays text)."""
    fmt = parse_formats([fmt])[0]
    buf = io.BytesIO()
    with paper_style():
        kwargs: dict[str, Any] = {"format": fmt, "dpi": dpi, "bbox_inches": "tight", "pad_inches": 0.03}
        if fmt in ("svg", "pdf"):
            kwargs["metadata"] = {"Date": None} if fmt == "svg" else {"CreationDate": None}
        fig.savefig(buf, **kwargs)
    return buf.getvalue()


def save_figure(fig: Figure, stem: str | Path, formats: str | Sequence[str] = ("png",)) -> list[Path]:
    """Write ``fig`` as ``stem.png`` / ``stem.svg`` / ``stem.pdf`` (the ``formats`` asked for);
    returns the paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in parse_formats(formats):
        path = stem.with_name(f"{stem.name}.{fmt}")
        path.write_bytes(figure_bytes(fig, fmt))
        paths.append(path)
    return paths


def legend_outside(target: Any, handles: Sequence[Any] | None = None, labels: Sequence[str] | None = None,
                   where: str = "right", **kwargs: Any) -> Any:
    """A legend outside the data area: right of an axes (``where="right"``) or below it
    (``"below"``); for a Figure, in the figure margin (constrained layout makes room).
    Returns the Legend (``None`` when there is nothing to label)."""
    from matplotlib.figure import Figure

    if handles is None:
        handles, labels = target.get_legend_handles_labels()
    if not handles:
        return None
    args = (handles, labels) if labels is not None else (handles,)
    if isinstance(target, Figure):
        loc = "outside right upper" if where == "right" else "outside lower center"
        extra = {} if where == "right" else {"ncols": min(len(handles), 4)}
        return target.legend(*args, loc=loc, **{**extra, **kwargs})
    if where == "right":
        return target.legend(*args, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, **kwargs)
    return target.legend(*args, loc="upper center", bbox_to_anchor=(0.5, -0.18), borderaxespad=0.0,
                         ncols=min(len(handles), 4), **kwargs)
