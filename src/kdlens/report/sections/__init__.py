"""The sections of the study report: what each paper's experiment shows, built from a study's
recorded runs and step outputs.

A section is a function ``build(data: ReportData) -> Section`` registered for one of the three
papers with a title and a one-line caption of what to look for.  It returns tables (rows of
plain values; every number also goes to CSV/JSON) and figures (PNG bytes, from the steps'
files or drawn here from the aggregated numbers).  When the study it needs has not run (or
not far enough), the section says "not run yet" and how to run it, instead of failing.

Tables aggregate over folds / seeds as mean ± sample standard deviation
(:func:`kdlens.studies.summary.mean_std`).

Modules:

- :mod:`~kdlens.report.sections.content`: the papers, Table / FigureItem / Section, the
  ``section`` decorator and its registry ``SECTIONS``, ``fmt``;
- :mod:`~kdlens.report.sections.access`: ``ReportData`` and the helpers that read a study's
  step files;
- :mod:`~kdlens.report.sections.softlabel`, :mod:`~kdlens.report.sections.hints`,
  :mod:`~kdlens.report.sections.embedding`: the sections of each paper;
- :mod:`~kdlens.report.sections.registry`: ``build_sections`` over all of them, in report order.
"""

from __future__ import annotations

from kdlens.report.sections.registry import build_sections  # imports every section, in report order
from kdlens.report.sections.access import PAPER_KINDS, ReportData
from kdlens.report.sections.content import (PAPERS, SECTIONS, FigureItem, Section, SectionSpec, Table, fmt,
                                            section)
from kdlens.report.sections.hints import HINT_LABELS

__all__ = ["HINT_LABELS", "PAPERS", "PAPER_KINDS", "SECTIONS", "FigureItem", "ReportData", "Section",
           "SectionSpec", "Table", "build_sections", "fmt", "section"]
