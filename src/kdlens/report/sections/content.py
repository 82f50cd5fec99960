"""What a report section holds and how sections are declared: the :class:`Table` /
:class:`FigureItem` / :class:`Section` a section function fills, and the :func:`section`
decorator that registers a function in :data:`SECTIONS` (in import order, which is the order
of the report), plus :func:`fmt` for mean ± std cells and :func:`values_by` to gather the
per-fold values a table cell and its figure both show.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from kdlens.studies.summary import mean_std

#: every tidy row of a table's numbers (its CSV) has these columns, first; empty where a number
#: comes from no single run (e.g. a table built from a step that read several)
PROVENANCE = ("run", "fold", "seed")


@dataclass
class Table:
    name: str  # file stem of its CSV
    columns: list[str]
    rows: list[list[Any]]
    title: str | None = None
    numbers: list[dict[str, Any]] = field(default_factory=list)  # tidy rows of the raw numbers

    def add_numbers(self, rows: Iterable[dict[str, Any]]) -> None:
        """Adds tidy rows, with the :data:`PROVENANCE` columns first (``None`` where unknown)."""
        for r in rows:
            self.numbers.append({"study": r.get("study"), **{k: r.get(k) for k in PROVENANCE},
                                 **{k: v for k, v in r.items() if k not in ("study", *PROVENANCE)}})


@dataclass
class FigureItem:
    """One figure of a section: a matplotlib Figure drawn from the numbers (written as PNG,
    SVG and PDF), or — when the report cannot redraw it — the PNG a step wrote."""

    title: str
    name: str  # file stem in report_figures/ (the section id is prefixed)
    figure: Any = None
    png: bytes | None = None  # the step's PNG; once the report is written, the PNG shown inline
    files: list[str] = field(default_factory=list)  # the figure's files, once written


@dataclass
class Section:
    id: str
    paper: str
    title: str
    caption: str
    tables: list[Table] = field(default_factory=list)
    figures: list[FigureItem] = field(default_factory=list)
    missing: str | None = None  # "not run yet …" when there is nothing to show
    notes: list[str] = field(default_factory=list)

    @property
    def filled(self) -> bool:
        return self.missing is None and bool(self.tables or self.figures)


@dataclass
class SectionSpec:
    id: str
    paper: str
    title: str
    caption: str
    build: Callable[..., None]  # (ReportData, Section) -> None


SECTIONS: list[SectionSpec] = []


def section(id: str, paper: str, title: str, caption: str):
    def register(fn: Callable[..., None]):
        SECTIONS.append(SectionSpec(id, paper, title, caption, fn))
        return fn

    return register


def fmt(values: Sequence[float | None], digits: int = 2) -> str:
    """``mean ± std`` (sample std, n − 1) of the values, the mean alone for one value, — for none."""
    values = [v for v in values if v is not None]
    if not values:
        return "—"
    m, s = mean_std(values)
    return f"{m:.{digits}f} ± {s:.{digits}f}" if len(values) > 1 else f"{m:.{digits}f}"


def values_by(rows: Iterable[dict[str, Any]], keys: Sequence[str], value: str) -> dict[tuple[Hashable, ...], list[float]]:
    """The non-missing ``value`` of the rows grouped by their ``keys`` (in order of appearance):
    the per-fold numbers behind one table cell and one figure mark."""
    out: dict[tuple[Hashable, ...], list[float]] = {}
    for r in rows:
        v = r.get(value)
        if v is None:
            continue
        try:
            x = float(v)
        except (TypeError, ValueError):
            continue
        if x == x:
            out.setdefault(tuple(r.get(k) for k in keys), []).append(x)
    return out
