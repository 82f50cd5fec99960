"""The expanded form of a study: :class:`Task` (one run or step with its config, levels,
dependencies and hash) and :class:`Study` (the spec at one scale, its directory and its tasks
in dependency order), which writes its plan (``study.json``, ``study.yaml``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kdlens.store import atomic_write_text
from kdlens.studies.grid.spec import RUN_KINDS, StudySpec


@dataclass
class Task:
    """One run or step of a study, with everything needed to execute it."""

    id: str
    group: str
    kind: str
    levels: dict[str, Any]
    config: dict[str, Any]  # train/distill config or step params (placeholders unresolved)
    needs: list[str]  # task ids
    hash: str = ""

    @property
    def is_run(self) -> bool:
        return self.kind in RUN_KINDS

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "group": self.group, "kind": self.kind, "levels": self.levels,
                "config": self.config, "needs": self.needs, "hash": self.hash}


@dataclass
class Study:
    """An expanded study: the spec at one scale, its directory and its tasks (dependency order)."""

    spec: StudySpec
    scale: str
    directory: Path
    tasks: list[Task]
    source: str | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    def task(self, task_id: str) -> Task:
        for t in self.tasks:
            if t.id == task_id:
                return t
        raise KeyError(task_id)

    def group_tasks(self, group: str) -> list[Task]:
        return [t for t in self.tasks if t.group == group]

    def plan(self) -> dict[str, Any]:
        return {
            "name": self.name, "scale": self.scale, "source": self.source,
            "description": self.spec.description, "paper": self.spec.paper,
            "groups": {g: {"kind": s.kind, "title": s.title, "needs": s.needs, "factors": list(s.grid) + list(s.each)}
                       for g, s in self.spec.groups.items()},
            "report": self.spec.report,
            "tasks": [t.to_dict() for t in self.tasks],
        }

    def write_plan(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.directory / "study.json", json.dumps(self.plan(), indent=1, default=str))
        atomic_write_text(self.directory / "study.yaml", yaml.safe_dump(self.spec.model_dump(), sort_keys=False))
