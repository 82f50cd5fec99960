"""Access to the studies a report covers: :class:`ReportData` (finished tasks by paper, kind
and group, report options, and where each number came from: run, fold and seed) and the small
readers the section functions share — a step's JSON / CSV files, numbers and labels, marking a
section not run.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kdlens.report.sections.content import Section
from kdlens.report.sections.papers import PAPER_KINDS, not_run_message
from kdlens.studies.grid import Study, TaskState, task_states

NO_RUN = {"run": None, "fold": None, "seed": None}


class ReportData:
    """The studies a report covers, with their task states; lookups by kind and group, and the
    run / fold / seed of every run directory.  ``states`` (study directory → task states)
    replaces the recorded ones (tests build a study result this way)."""

    def __init__(self, studies: Sequence[Study], states: Mapping[Path, list[TaskState]] | None = None) -> None:
        self.studies = list(studies)
        self.states = {s.directory: (list(states[s.directory]) if states and s.directory in states else task_states(s))
                       for s in self.studies}
        self._configs: dict[str, dict[str, Any]] = {}

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

    def state(self, study: Study, task_id: str) -> TaskState | None:
        return next((st for st in self.states[study.directory] if st.task.id == task_id), None)

    # -- where numbers come from --------------------------------------------------------------

    def run_config(self, path: str | Path | None) -> dict[str, Any]:
        """The resolved ``config.yaml`` of a run directory ({} when there is none)."""
        if path is None:
            return {}
        key = str(path)
        if key not in self._configs:
            import yaml

            try:
                self._configs[key] = yaml.safe_load((Path(path) / "config.yaml").read_text()) or {}
            except (OSError, ValueError, yaml.YAMLError):
                self._configs[key] = {}
        return self._configs[key]

    def run_info(self, path: str | Path | None) -> dict[str, Any]:
        """``{"run": directory name, "fold": data.fold (when the data is split in folds), "seed"}``."""
        if path is None:
            return dict(NO_RUN)
        config = self.run_config(path)
        data = config.get("data") or {}
        fold = data.get("fold") if data.get("n_folds") else None
        return {"run": Path(path).name, "fold": fold, "seed": config.get("seed")}

    def needed_runs(self, study: Study, st: TaskState, groups: Sequence[str] | str | None = None) -> list[TaskState]:
        """The finished run tasks step ``st`` needs (of ``groups`` when given), in its needs order."""
        groups = [groups] if isinstance(groups, str) else groups
        out = []
        for task_id in st.task.needs:
            dep = self.state(study, task_id)
            if dep is not None and dep.task.is_run and dep.path and (groups is None or dep.task.group in groups):
                out.append(dep)
        return out

    def named_run(self, study: Study, name: str) -> Path | None:
        """The run directory in the study directory whose config is named ``name`` (runs a step
        trains itself, e.g. ``ud-b100-f0`` of the limited-label step)."""
        for path in sorted(study.directory.glob(f"{name}-*")):
            if (path / "config.yaml").is_file() and self.run_config(path).get("name") == name:
                return path
        return None

    def model_card(self, path: str | Path | None) -> dict[str, Any]:
        """A run's ``model.json`` (classes, input shape; {} when absent)."""
        return read_json(Path(path) / "model.json") or {} if path else {}


def read_png(path: Path) -> bytes | None:
    return path.read_bytes() if path.is_file() else None


def read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def num(v: Any) -> float | None:
    """A float, or ``None`` for an empty / non-numeric / NaN cell."""
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if x == x else None


def level_label(levels: dict[str, Any], skip: Sequence[str] = ()) -> str:
    return ", ".join(f"{k.split('.')[-1]}={v}" for k, v in levels.items() if k not in skip) or "—"


def mark_not_run(sec: Section, paper: str, what: str) -> None:
    sec.missing = not_run_message(paper, what)


def finished_steps(data: ReportData, sec: Section, paper: str, kind: str, what: str) -> list[tuple[Study, TaskState]]:
    """The paper's finished steps of one kind; with none, marks the section not run."""
    steps = data.steps(paper, kind)
    if not steps:
        mark_not_run(sec, paper, f"no {what} step has finished")
    return steps


def final_accs(states: Sequence[TaskState]) -> list[float]:
    return [v for v in (st.metrics.get("final_acc") for st in states) if v is not None]
