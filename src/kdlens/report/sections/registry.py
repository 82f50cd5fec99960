"""All sections, built: importing the three paper modules (soft-label, PURSUhInT, Lee &
Wallraven, in that order) fills :data:`SECTIONS` in report order, and :func:`build_sections`
runs each one on a :class:`ReportData` (figures drawn in the print style of
:func:`kdlens.figures.style.paper_style`), turning a failure or an empty result into a section
that says so.
"""

from __future__ import annotations

# the paper modules register their sections on import: this order is the order of the report
# isort: off
import kdlens.report.sections.softlabel  # noqa: F401
import kdlens.report.sections.softlabel_noise  # noqa: F401
import kdlens.report.sections.hints  # noqa: F401
import kdlens.report.sections.embedding  # noqa: F401
# isort: on
from kdlens.figures.style import paper_style
from kdlens.report.sections.access import ReportData
from kdlens.report.sections.content import SECTIONS, Section


def build_sections(data: ReportData) -> list[Section]:
    out = []
    for spec in SECTIONS:
        sec = Section(spec.id, spec.paper, spec.title, spec.caption)
        try:
            with paper_style():
                spec.build(data, sec)
        except Exception as exc:  # a broken artefact must not take the whole report down
            sec.tables, sec.figures = [], []
            sec.missing = f"could not be built: {type(exc).__name__}: {exc}"
        if sec.missing is None and not (sec.tables or sec.figures):
            sec.missing = "not run yet: nothing recorded for this section"
        out.append(sec)
    return out
