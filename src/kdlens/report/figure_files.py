"""The figure files of a report: every figure of every section in ``report_figures/`` as
``SECTION__NAME.png`` / ``.svg`` / ``.pdf`` (the formats asked for), and its PNG for the page.

Figures drawn from the numbers are saved in the print style of
:func:`kdlens.figures.style.paper_style` (vector text in SVG and PDF).  A figure the report could
only take from a step's PNG is written as that PNG, and as SVG / PDF holding the PNG as an image
(the note in its section says why it could not be redrawn).  Figure files of an earlier report
in the same folder that this one does not write again are removed, so the folder never mixes
two reports.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kdlens.figures.style import FORMATS, PNG_DPI, figure_bytes, new_figure, parse_formats
from kdlens.report.sections import Section
from kdlens.store import atomic_write_bytes

FIGURE_DIR = "report_figures"


def raster_figure(png: bytes) -> Any:
    """A Figure showing a PNG at its own size (for the SVG / PDF of a figure known only as a PNG)."""
    import matplotlib.image as mpimg

    img = mpimg.imread(io.BytesIO(png), format="png")
    h, w = img.shape[:2]
    fig = new_figure(w / PNG_DPI, h / PNG_DPI, layout=None)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.imshow(img, interpolation="nearest")
    ax.set_axis_off()
    return fig


def _stem(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "-", name).strip("-") or "figure"


def write_figures(sections: Sequence[Section], directory: Path, formats: Sequence[str] | str = ("png",)) -> list[Path]:
    """Writes every figure of ``sections`` into ``directory`` in ``formats``; sets each
    :class:`~kdlens.report.sections.FigureItem`'s ``png`` (for the page) and ``files``.
    Returns the paths written."""
    formats = parse_formats(formats)
    written: list[Path] = []
    for sec in sections:
        used: set[str] = set()
        for item in sec.figures:
            stem = f"{sec.id}__{_stem(item.name)}"
            n = 2
            while stem in used:
                stem, n = f"{sec.id}__{_stem(item.name)}-{n}", n + 1
            used.add(stem)
            if item.figure is not None:
                item.png = figure_bytes(item.figure, "png")
                source = item.figure
            else:
                source = None
            item.files = []
            for fmt in formats:
                if fmt == "png":
                    data = item.png
                else:
                    if source is None:
                        source = raster_figure(item.png)
                    data = figure_bytes(source, fmt)
                path = directory / f"{stem}.{fmt}"
                atomic_write_bytes(path, data)
                path.chmod(0o644)
                item.files.append(str(path))
                written.append(path)
    if directory.is_dir():
        keep = {p.name for p in written}
        for old in directory.iterdir():
            if old.suffix.lstrip(".") in FORMATS and "__" in old.name and old.name not in keep:
                old.unlink(missing_ok=True)
    return written
