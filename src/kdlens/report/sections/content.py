"""What a report section holds and how sections are declared: the three papers, the
:class:`Table` / :class:`FigureItem` / :class:`Section` a section function fills, and the
:func:`section` decorator that registers a function in :data:`SECTIONS` (in import order,
which is the order of the report), plus :func:`fmt` for mean ± std cells.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kdlens.studies.summary import mean_std

if TYPE_CHECKING:
    from kdlens.report.sections.access import ReportData


PAPERS = {
    "softlabel": ("The soft-label hypothesis", "Vats 2021, Response-based knowledge distillation (thesis)",
                  "examples/softlabel.yaml"),
    "hints": ("Hint points by layer clustering", "Keser et al. 2022, PURSUhInT", "examples/hints.yaml"),
    "embedding": ("The embedding space of distilled students",
                  "Lee & Wallraven 2021, Visualizing the embedding space to explain the effect of knowledge distillation",
                  "examples/embedding.yaml"),
}


@dataclass
class Table:
    name: str  # file stem of its CSV
    columns: list[str]
    rows: list[list[Any]]
    title: str | None = None
    numbers: list[dict[str, Any]] = field(default_factory=list)  # tidy rows of the raw numbers


@dataclass
class FigureItem:
    png: bytes
    title: str
    caption: str | None = None


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
    build: Callable[[ReportData, Section], None]


SECTIONS: list[SectionSpec] = []


def section(id: str, paper: str, title: str, caption: str):
    def register(fn: Callable[[ReportData, Section], None]):
        SECTIONS.append(SectionSpec(id, paper, title, caption, fn))
        return fn

    return register


def fmt(values: Sequence[float], digits: int = 2) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "—"
    m, s = mean_std(values)
    return f"{m:.{digits}f} ± {s:.{digits}f}" if len(values) > 1 else f"{m:.{digits}f}"
