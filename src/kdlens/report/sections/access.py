"""Access to the studies a report covers: :class:`ReportData` (finished tasks by paper, kind
and group, report options) and the small helpers the section functions share — reading a
step's PNG / JSON / CSV files, parsing numbers and labels, marking a section not run, and a
new Agg figure for the plots drawn here.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kdlens.report.sections.content import PAPERS, FigureItem, Section
from kdlens.studies.grid import Study, TaskState, task_states


class ReportData:
    """The studies a report covers, with their task states; lookups by kind and group."""

    def __init__(self, studies: Sequence[Study]) -> None:
        self.studies = list(studies)
        self.states = {s.directory: task_states(s) for s in self.studies}

    def for_paper(self, paper: str) -> list[Study]:
        kinds = PAPER_KINDS[paper]
        return [s for s in self.studies if s.name == paper or any(g.kind in kinds for g in s.spec.groups.values())]

    def done(self, study: Study, kind: str | None = None, group: str | None = None) -> list[TaskState]:
        return [st for st in self.states[study.directory] if st.status == "done"
                and (kind is None or st.task.kind == kind) and (group is None or st.task.group == group)]

    def steps(self, paper: str, kind: str) -> list[tuple[Study, TaskState]]:
        return [(s, st) for s in self.for_paper(paper) for st in self.done(s, kind)]

    def option(self, study: Study, key: str, default: Any) -> Any:
        return (study.spec.report or {}).get(key, default)


PAPER_KINDS = {
    "softlabel": {"softlabel-entropy", "missing-class", "transfer-set", "projection"},
    "hints": {"hint-search"},
    "embedding": {"embedding", "limited-label"},
}


def _png(path: Path) -> bytes | None:
    return path.read_bytes() if path.is_file() else None


def _add_png(sec: Section, path: Path, title: str) -> None:
    """Adds a step's PNG file as a figure, when the step wrote it."""
    png = _png(path)
    if png:
        sec.figures.append(FigureItem(png, title))


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def _fig_png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", dpi=90)
    return buf.getvalue()


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _num(v: Any) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if x == x else None


def _label(levels: dict[str, Any], skip: Sequence[str] = ()) -> str:
    return ", ".join(f"{k.split('.')[-1]}={v}" for k, v in levels.items() if k not in skip) or "—"


def _not_run(sec: Section, paper: str, what: str) -> None:
    sec.missing = f"not run yet: {what} (run `kdlens study run {PAPERS[paper][2]}`)"


def _finished_steps(data: ReportData, sec: Section, paper: str, kind: str, what: str) -> list[tuple[Study, TaskState]]:
    """The paper's finished steps of one kind; with none, marks the section not run."""
    steps = data.steps(paper, kind)
    if not steps:
        _not_run(sec, paper, f"no {what} step has finished")
    return steps


def _final_accs(states: Sequence[TaskState]) -> list[float]:
    return [v for v in (st.metrics.get("final_acc") for st in states) if v is not None]


def _axes(width: float, height: float) -> tuple[Any, Any]:
    """A new figure (Agg canvas, 90 dpi) with one axes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=90)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(1, 1, 1)
