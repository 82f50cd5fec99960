"""Study steps: the analysis parts of the three papers' experiments, run as study tasks.

A step is a function ``step(ctx: StepContext) -> dict`` registered under a kind name
(``@register_step("hint-search")``).  It receives its parameters, the finished tasks it
depends on (run directories of teachers and students, directories of earlier steps) and its
own output directory, where it writes figures (PNG), tables (CSV) and numbers (JSON) that the
report picks up; the returned dict is its summary metrics (JSON numbers).

* :mod:`.hints` — PURSUhInT (Keser et al. 2022): hint-point search on a teacher.
* :mod:`.embedding` — Lee & Wallraven 2021: embeddings at A–E, Ivis loss, class-area ratio,
  superclass correlation for undistilled vs distilled students; :mod:`.embedding_toy` — its
  Fig. 1 quadrant toy (t-SNE vs Ivis, global layout).
* :mod:`.softlabels` — Vats 2021 (thesis): soft-label entropy vs T, missing-class test,
  entropy-ranked transfer sets, penultimate-layer projection.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdlens.errors import KdlensError
from kdlens.registry import Registry

STEPS: Registry[Callable[[StepContext], dict[str, Any]]] = Registry("study step")


def register_step(name: str):
    return STEPS.register(name)


@dataclass
class Dependency:
    """A finished task this step needs: a run directory or another step's directory."""

    id: str
    group: str
    kind: str
    levels: dict[str, Any]
    path: Path
    metrics: dict[str, Any]

    def config(self) -> dict[str, Any]:
        """The resolved config of a run (``config.yaml``)."""
        from kdlens.store import RunDir

        return RunDir(self.path).read_config()


@dataclass
class StepContext:
    task_id: str
    group: str
    levels: dict[str, Any]
    params: dict[str, Any]
    deps: list[Dependency]
    out_dir: Path
    study_dir: Path

    def needs(self, group: str) -> list[Dependency]:
        found = [d for d in self.deps if d.group == group]
        if not found:
            have = sorted({d.group for d in self.deps})
            raise KdlensError(f"step {self.task_id}: needs a {group!r} group; it depends on {have or 'nothing'}")
        return found

    def need(self, group: str) -> Dependency:
        found = self.needs(group)
        if len(found) != 1:
            raise KdlensError(f"step {self.task_id}: expected one {group!r} task, got {len(found)}")
        return found[0]

    def param(self, name: str, default: Any = None) -> Any:
        return self.params.get(name, default)

    def check_params(self, allowed: Sequence[str]) -> None:
        from kdlens.errors import close_matches

        bad = [k for k in self.params if k not in allowed]
        if bad:
            hint = close_matches(bad[0], allowed)
            raise KdlensError(
                f"step {self.task_id}: unknown parameter {bad[0]!r}"
                + (f" (did you mean {', '.join(hint)}?)" if hint else "")
                + f"; allowed: {', '.join(sorted(allowed))}"
            )

    # -- writing artefacts (atomically) -------------------------------------------------
    def write_json(self, name: str, obj: Any) -> Path:
        from kdlens.store import atomic_write_text

        path = self.out_dir / name
        atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True, default=_json_default))
        return path

    def write_csv(self, name: str, rows: Sequence[dict[str, Any]]) -> Path:
        from kdlens.store import atomic_write_text

        path = self.out_dir / name
        atomic_write_text(path, tidy_csv(rows, _cell))
        return path

    def save_figure(self, name: str, fig: Any) -> Path:
        from kdlens.store import atomic_write_bytes

        buf = io.BytesIO()
        fig.savefig(buf, format="png", bbox_inches="tight", dpi=90)
        path = self.out_dir / name
        atomic_write_bytes(path, buf.getvalue())
        return path


def _json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    return str(o)


def tidy_csv(rows: Sequence[dict[str, Any]], cell: Callable[[Any], Any] = lambda v: v) -> str:
    """CSV text of tidy rows: columns are all keys in order of first appearance, missing cells empty."""
    header: list[str] = []
    for row in rows:
        header += [k for k in row if k not in header]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=header)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: cell(v) for k, v in row.items()})
    return buf.getvalue()


def _cell(v: Any) -> Any:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, (list, tuple, dict)):
        return json.dumps(v, default=_json_default)
    return v


def run_dataset(dep: Dependency, split: str = "test"):
    """The dataset a run was trained on (``split``: train or test)."""
    from kdlens.data import load_dataset

    data = dep.config().get("data", {})
    return load_dataset(data.get("name", "digits"), split, root=data.get("root"))


def load_run_model(dep: Dependency, data: Any):
    """The trained model of a run (frozen, eval mode)."""
    from kdlens.train.teacher import load_teacher

    return load_teacher(str(dep.path), data).model


from kdlens.studies.papers import embedding, embedding_toy, hints, softlabels, softlabels_extra  # noqa: E402,F401  (register the steps)
