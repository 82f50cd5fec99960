"""The sections of the study report: what each paper's experiment shows, built from a study's
recorded runs and step outputs.

A section is a function ``build(data: ReportData, sec: Section)`` registered for one of the
three papers with a title and a one-line caption of what to look for.  It fills tables (rows of
plain values; every number also goes to CSV/JSON with the run, fold and seed it came from) and
figures (matplotlib Figures drawn from the same numbers as the tables, written as PNG, SVG and
PDF).  When the study it needs has not run (or not far enough), the section says "not run yet"
and how to run it, instead of failing.

Tables aggregate over folds / seeds as mean ± sample standard deviation
(:func:`kdlens.studies.summary.mean_std`); figures draw the same mean and std and each fold.

Modules (imports point one way: papers ← content ← access ← the paper modules ← registry):

- :mod:`~kdlens.report.sections.papers`: the three papers and their step kinds;
- :mod:`~kdlens.report.sections.content`: Table / FigureItem / Section, the ``section``
  decorator and its registry ``SECTIONS``, ``fmt`` and ``values_by``;
- :mod:`~kdlens.report.sections.access`: ``ReportData`` (tasks, run / fold / seed) and the
  readers of a study's step files;
- :mod:`~kdlens.report.sections.softlabel`, :mod:`~kdlens.report.sections.hints`,
  :mod:`~kdlens.report.sections.embedding`: the sections of each paper;
- :mod:`~kdlens.report.sections.registry`: ``build_sections`` over all of them, in report order.
"""

from __future__ import annotations

from kdlens.report.sections.registry import build_sections  # imports every section, in report order
from kdlens.report.sections.access import ReportData
from kdlens.report.sections.content import PROVENANCE, SECTIONS, FigureItem, Section, SectionSpec, Table, fmt, section
from kdlens.report.sections.hints import HINT_LABELS
from kdlens.report.sections.papers import PAPER_KINDS, PAPERS

__all__ = ["HINT_LABELS", "PAPERS", "PAPER_KINDS", "PROVENANCE", "SECTIONS", "FigureItem", "ReportData", "Section",
           "SectionSpec", "Table", "build_sections", "fmt", "section"]
