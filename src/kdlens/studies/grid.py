"""A study is a YAML file: a base config plus groups of runs, each a grid of factors.

    name: hints
    out: runs/studies/hints          # the study directory is OUT/SCALE
    defaults:                        # base of every train / distill config
      data: {name: digits}
      epochs: 2
    groups:                          # in dependency order
      teacher:
        kind: train                  # train | distill | a registered step (kdlens.studies.papers)
        config: {model: {name: resnet20}}
      search:
        kind: hint-search
        needs: [teacher]
        params: {k: 3}
      student:
        kind: distill
        needs: [teacher, search]
        config: {teacher: {run: "${teacher}"}}
        grid:                        # cartesian product; keys are dotted config paths
          method: [at+kd, fitnet+kd]
          hints: [conventional, auto]
          seed: [0, 1, 2]
    scales:                          # deep-merged over the document by --scale
      smoke: {defaults: {epochs: 1}, groups: {student: {grid: {seed: [0]}}}}

Grid values are scalars (set at the key's path) or *bundles*: a mapping of dotted paths
set together, named by its ``label`` or by its value at the factor's own key
(``data.budget: [{data.budget: 100, epochs: 200}, …]`` has levels 100, …).  ``each:
[data.budget, data.fold]`` expands a group over the levels its needed groups have.  On a
step, a dotted factor (a run's config path such as ``data.fold``) only selects which tasks it
needs; an undotted one sets the step parameter of that name.

Dependencies: a task of group G that ``needs`` group H depends on the tasks of H whose levels
agree with its own on the factors they share (a student of fold 2 needs the teacher of
fold 2; a step without those factors needs all of them).  ``"${teacher}"`` anywhere in a
config or params is replaced by the directory of the (single) matching ``teacher`` task.

Every task has a hash over its kind, its config and its dependencies' hashes; the task
index (``STUDY_DIR/tasks/runs.sqlite``) records done / failed / why.  Re-running a study
skips tasks done with the same hash, so a killed study resumes with the tasks that were in
flight (themselves resumed from their last checkpoint), and a finished one does nothing.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from kdlens.config import apply_overrides, read_yaml, validate
from kdlens.errors import KdlensError, close_matches
from kdlens.store import RunIndex, atomic_write_text, config_hash

RUN_KINDS = ("train", "distill")
SCALES = ("smoke", "small", "full")
_PLACEHOLDER = re.compile(r"^\$\{([A-Za-z0-9_-]+)(?:\.path)?\}$")


# ------------------------------------------------------------------------------- schema
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GroupSpec(_Strict):
    kind: str = Field(..., description="train | distill | a study step (see `kdlens study steps`)")
    needs: list[str] = Field(default_factory=list, description="groups this one depends on")
    config: dict[str, Any] = Field(default_factory=dict, description="train/distill config over the study defaults")
    params: dict[str, Any] = Field(default_factory=dict, description="parameters of a step")
    grid: dict[str, list[Any]] = Field(default_factory=dict, description="factor (dotted key) → levels")
    each: list[str] = Field(default_factory=list, description="factors taken from the needed groups' levels")
    title: str | None = None


class StudySpec(_Strict):
    name: str
    description: str = ""
    paper: str = ""
    out: str | None = Field(None, description="study root; the study directory is OUT/SCALE")
    default_scale: str = "small"
    defaults: dict[str, Any] = Field(default_factory=dict)
    groups: dict[str, GroupSpec]
    scales: dict[str, dict[str, Any]] = Field(default_factory=dict)
    report: dict[str, Any] = Field(default_factory=dict, description="options of the report sections")


# ------------------------------------------------------------------------------- helpers
def deep_merge(base: Any, over: Any) -> Any:
    """Mappings merge key by key (recursively); anything else in ``over`` replaces ``base``."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for key, value in over.items():
            out[key] = deep_merge(base[key], value) if key in base else copy.deepcopy(value)
        return out
    return copy.deepcopy(over)


def set_path(data: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """A copy of ``data`` with ``value`` at ``a.b.c`` (mappings created as needed)."""
    out = copy.deepcopy(data)
    node = out
    parts = dotted.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        node[part] = child = dict(child) if isinstance(child, dict) else {}
        node = child
    node[parts[-1]] = copy.deepcopy(value)
    return out


def _slug(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        text = ".".join(_slug(v) for v in value)
    elif isinstance(value, float) and value.is_integer():
        text = str(int(value)) if abs(value) < 1e15 else str(value)
    else:
        text = str(value)
    return re.sub(r"[^A-Za-z0-9+.=-]+", "", text.replace("/", "-").replace(" ", "")) or "x"


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


@dataclass(frozen=True)
class Level:
    """One level of a factor: its label and the dotted-path overrides it sets."""

    factor: str
    label: Any
    overrides: tuple[tuple[str, Any], ...]


def factor_levels(factor: str, values: Sequence[Any], where: str) -> list[Level]:
    if not isinstance(values, list) or not values:
        raise KdlensError(f"{where}: grid factor {factor!r} needs a non-empty list of levels")
    levels = []
    for value in values:
        if isinstance(value, dict):
            bundle = dict(value)
            label = bundle.pop("label", bundle.get(factor))
            if label is None:
                raise KdlensError(
                    f"{where}: grid factor {factor!r} level {value!r} is a bundle without a 'label' "
                    f"or a {factor!r} key to name it"
                )
            levels.append(Level(factor, label, tuple(bundle.items())))
        else:
            levels.append(Level(factor, value, ((factor, value),)))
    labels = [json.dumps(lv.label, sort_keys=True, default=str) for lv in levels]
    if len(set(labels)) != len(labels):
        raise KdlensError(f"{where}: grid factor {factor!r} has repeated levels {values!r}")
    return levels


# --------------------------------------------------------------------------------- tasks
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


def _known_kinds() -> list[str]:
    from kdlens.studies.papers import STEPS

    return [*RUN_KINDS, *STEPS.names()]


def _distinguishing(tasks: Sequence[Task]) -> set[str]:
    """Factors with more than one level among ``tasks``: the ones a dependant must match (a
    single teacher with ``seed: [0]`` serves students of every seed)."""
    keys: set[str] = set()
    for t in tasks:
        for k, v in t.levels.items():
            if any(k in o.levels and not _same(o.levels[k], v) for o in tasks):
                keys.add(k)
    return keys


def _placeholders(obj: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(obj, dict):
        for v in obj.values():
            found |= _placeholders(v)
    elif isinstance(obj, list):
        for v in obj:
            found |= _placeholders(v)
    elif isinstance(obj, str):
        m = _PLACEHOLDER.match(obj.strip())
        if m:
            found.add(m.group(1))
        elif "${" in obj:
            raise KdlensError(f"{obj!r}: a reference must be the whole value, like \"${{teacher}}\"")
    return found


def substitute(obj: Any, paths: dict[str, str]) -> Any:
    """Replace ``"${group}"`` strings by the directory of that dependency."""
    if isinstance(obj, dict):
        return {k: substitute(v, paths) for k, v in obj.items()}
    if isinstance(obj, list):
        return [substitute(v, paths) for v in obj]
    if isinstance(obj, str):
        m = _PLACEHOLDER.match(obj.strip())
        if m:
            return paths[m.group(1)]
    return obj


def _group_order(spec: StudySpec) -> list[str]:
    """Groups in dependency order (the written order where it allows); unknown needs and
    cycles are errors."""
    for gname, group in spec.groups.items():
        for need in group.needs:
            if need not in spec.groups:
                hint = close_matches(need, list(spec.groups))
                raise KdlensError(
                    f"study {spec.name!r}, group {gname!r}: needs {need!r}, which is not a group"
                    + (f" (did you mean {', '.join(hint)}?)" if hint else "") + f"; groups: {', '.join(spec.groups)}"
                )
    order: list[str] = []
    left = list(spec.groups)
    while left:
        ready = [g for g in left if all(n in order for n in spec.groups[g].needs)]
        if not ready:
            raise KdlensError(f"study {spec.name!r}: groups {', '.join(left)} need each other (a cycle)")
        order.append(ready[0])
        left.remove(ready[0])
    return order


def expand(spec: StudySpec, scale: str, directory: Path, source: str | None = None) -> Study:
    """Grid → tasks in dependency order, each with its hash (nothing is run or written)."""
    kinds = _known_kinds()
    tasks: list[Task] = []
    by_group: dict[str, list[Task]] = {}
    for gname in _group_order(spec):
        group = spec.groups[gname]
        where = f"study {spec.name!r}, group {gname!r}"
        if not re.fullmatch(r"[A-Za-z0-9_-]+", gname):
            raise KdlensError(f"{where}: group names may use letters, digits, _ and - only")
        if group.kind not in kinds:
            hint = close_matches(group.kind, kinds)
            raise KdlensError(
                f"{where}: unknown kind {group.kind!r}" + (f" (did you mean {', '.join(hint)}?)" if hint else "")
                + f"; known kinds: {', '.join(kinds)}"
            )
        base = spec.defaults if group.kind in RUN_KINDS else {}
        body = deep_merge(base, group.config if group.kind in RUN_KINDS else group.params)
        if group.kind not in RUN_KINDS and group.config:
            raise KdlensError(f"{where}: a {group.kind!r} step takes 'params', not 'config'")
        if group.kind in RUN_KINDS and group.params:
            raise KdlensError(f"{where}: a {group.kind} run takes 'config', not 'params'")
        factors = [factor_levels(k, v, where) for k, v in group.grid.items()]
        for key in group.each:
            seen: list[Any] = []
            for need in group.needs:
                for t in by_group[need]:
                    if key in t.levels and not any(_same(t.levels[key], s) for s in seen):
                        seen.append(t.levels[key])
            if not seen:
                raise KdlensError(f"{where}: each: {key!r} is not a factor of the needed groups {group.needs}")
            factors.append([Level(key, s, ()) for s in seen])
        refs = _placeholders(body) | set().union(*[_placeholders([dict(lv.overrides) for lv in f]) for f in factors])
        bad = refs - set(group.needs)
        if bad:
            raise KdlensError(f"{where}: references {sorted(bad)} are not among its needs {group.needs}")
        group_tasks: list[Task] = []
        for combo in itertools.product(*factors) if factors else [()]:
            levels = {lv.factor: lv.label for lv in combo}
            cfg = copy.deepcopy(body)
            for lv in combo:
                for path, value in lv.overrides:
                    if group.kind not in RUN_KINDS and "." in path:
                        continue  # a run's config path on a step: only selects the tasks it needs
                    cfg = set_path(cfg, path, value)
            needs: list[str] = []
            for need in group.needs:
                keys = _distinguishing(by_group[need])
                match = [t for t in by_group[need]
                         if all(_same(t.levels[k], v) for k, v in levels.items() if k in keys)]
                if not match:
                    raise KdlensError(
                        f"{where}: no task of {need!r} has the levels {({k: v for k, v in levels.items() if k in keys})} "
                        f"(factors that both groups vary must match)"
                    )
                if need in refs and len(match) != 1:
                    raise KdlensError(
                        f"{where}: \"${{{need}}}\" is ambiguous for levels {levels}: {len(match)} tasks of "
                        f"{need!r} match ({', '.join(t.id for t in match[:4])}); give {gname!r} the factors "
                        f"that tell them apart"
                    )
                needs += [t.id for t in match]
            slug = "_".join(f"{k.split('.')[-1]}-{_slug(v)}" for k, v in levels.items())
            task_id = f"{gname}_{slug}" if slug else gname
            if len(task_id) > 120:
                task_id = f"{task_id[:100]}-{config_hash(levels)[:8]}"
            dep_hashes = {tid: next(t.hash for t in tasks if t.id == tid) for tid in needs}
            task = Task(task_id, gname, group.kind, levels, cfg, needs)
            task.hash = config_hash({"kind": group.kind, "config": cfg, "needs": dep_hashes})
            group_tasks.append(task)
        ids = [t.id for t in group_tasks]
        if len(set(ids)) != len(ids):
            raise KdlensError(f"{where}: two tasks get the same name; use simpler level values")
        by_group[gname] = group_tasks
        tasks += group_tasks
    return Study(spec, scale, directory, tasks, source)


def load_study(
    path: str | Path,
    scale: str | None = None,
    out: str | Path | None = None,
    overrides: Sequence[str] = (),
) -> Study:
    """Read a study YAML, apply the ``scale`` preset and ``key=value`` overrides, expand it.

    ``out``: the study directory (default: the spec's ``out`` — or ``runs/studies/NAME`` —
    joined with the scale).
    """
    data = read_yaml(path)
    where = str(path)
    if not isinstance(data.get("scales", {}), dict):
        raise KdlensError(f"{where}: 'scales' must map scale names to overrides")
    scales = data.get("scales", {}) or {}
    scale = scale or data.get("default_scale") or ("small" if "small" in scales else None) or "default"
    if scales and scale not in scales:
        raise KdlensError(f"{where}: no scale {scale!r}; it has {', '.join(scales)}")
    if scale in scales:
        preset = scales[scale] or {}
        if not isinstance(preset, dict):
            raise KdlensError(f"{where}: scale {scale!r} must be a mapping of overrides")
        data = deep_merge(data, preset)
    data = apply_overrides(data, list(overrides))
    groups = data.get("groups")
    if isinstance(groups, dict):  # each group on its own: errors name the group and suggest keys
        for gname, group in groups.items():
            validate(GroupSpec, group if isinstance(group, dict) else {"kind": group}, source=f"{where}, group {gname!r}")
    spec = validate(StudySpec, data, source=where)
    root = Path(out) if out is not None else Path(spec.out or f"runs/studies/{spec.name}") / scale
    return expand(spec, scale, root, source=str(Path(path).resolve()))


def open_study(path: str | Path, scale: str | None = None) -> Study:
    """A study from its YAML (with ``scale``) or from a study directory (its saved plan)."""
    p = Path(path)
    if p.is_dir():
        plan = p / "study.json"
        if not plan.exists():
            raise KdlensError(f"{str(p)!r} is not a study directory (no study.json); run `kdlens study run FILE` first")
        saved = json.loads(plan.read_text())
        spec = validate(StudySpec, yaml.safe_load((p / "study.yaml").read_text()), source=str(p / "study.yaml"))
        tasks = [Task(**t) for t in saved["tasks"]]
        return Study(spec, saved.get("scale", "default"), p, tasks, saved.get("source"))
    return load_study(p, scale)


# --------------------------------------------------------------------------- task state
@dataclass
class TaskState:
    task: Task
    status: str  # pending | running | done | failed | blocked | stale
    reason: str | None = None
    path: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    seconds: float | None = None
    attempts: int = 0


def task_index(study: Study) -> RunIndex:
    return RunIndex(study.directory / "tasks")


def runner_alive(directory: Path) -> bool:
    """Whether a `kdlens study run` holds this study (its lock names a live process)."""
    lock = directory / "study.lock"
    try:
        pid = int(lock.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def task_states(study: Study) -> list[TaskState]:
    """Every task with its recorded status; dependencies of failed tasks are ``blocked``,
    tasks recorded under another hash (the YAML changed) are ``stale`` (they will re-run)."""
    rows = {r.id: r for r in task_index(study).list()} if (study.directory / "tasks" / "runs.sqlite").exists() else {}
    alive = runner_alive(study.directory)
    states: dict[str, TaskState] = {}
    for t in study.tasks:
        row = rows.get(t.id)
        if row is None:
            st = TaskState(t, "pending")
        elif row.metrics.get("task_hash", row.config_hash) != t.hash:  # the row keeps its first hash
            st = TaskState(t, "stale", "its config changed since it ran", row.metrics.get("path"), row.metrics,
                           attempts=row.attempts)
        else:
            status = row.status
            reason = row.reason
            if status == "running" and not alive:
                status, reason = "pending", "interrupted (will resume)"
            st = TaskState(t, status, reason, row.metrics.get("path"), row.metrics, row.metrics.get("task_seconds"),
                           row.attempts)
        if st.status in ("pending", "stale"):
            bad = [d for d in t.needs if states[d].status in ("failed", "blocked")]
            if bad:
                st.status, st.reason = "blocked", f"needs {bad[0]} ({states[bad[0]].status})"
        states[t.id] = st
    return [states[t.id] for t in study.tasks]


# ------------------------------------------------------------------------------ running
@dataclass
class StudySummary:
    directory: Path
    done: int
    failed: int
    blocked: int
    skipped: int
    ran: int
    seconds: float

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.blocked == 0


def _payload(study: Study, task: Task, states: dict[str, TaskState], threads: int | None) -> dict[str, Any]:
    deps = [states[d] for d in task.needs]
    paths: dict[str, str] = {}
    for d in deps:
        paths.setdefault(d.task.group, str(d.path))
    config = substitute(task.config, paths)
    return {
        "id": task.id, "group": task.group, "kind": task.kind, "levels": task.levels, "config": config,
        "study_dir": str(study.directory.resolve()), "threads": threads,
        "deps": [{"id": d.task.id, "group": d.task.group, "kind": d.task.kind, "levels": d.task.levels,
                  "path": d.path, "metrics": d.metrics} for d in deps],
    }


def _output_exists(st: TaskState) -> bool:
    return st.path is not None and Path(st.path).exists()


def run_study(
    study: Study,
    workers: int | None = None,
    executor: str = "local",
    address: str | None = None,
    retry_failed: bool = False,
    progress: bool = True,
    console: Any = None,
    on_event: Callable[[str, TaskState], None] | None = None,
) -> StudySummary:
    """Run every task not yet done, dependencies first, ``workers`` at a time.

    A failing task (an exception, a diverging loss) is recorded failed with its reason and
    the tasks needing it are blocked; the others go on.  Failed tasks of an earlier run are
    retried only with ``retry_failed``; interrupted ones always resume.
    """
    from kdlens.studies.executors import make_executor

    if workers is not None and workers < 1:
        raise KdlensError(f"--workers must be ≥ 1; got {workers}")
    cores = os.cpu_count() or 1
    workers = workers or cores
    make_executor(executor, workers=workers, address=address, check_only=True)
    study.directory.mkdir(parents=True, exist_ok=True)
    lock = study.directory / "study.lock"
    if runner_alive(study.directory) and int(lock.read_text().split()[0]) != os.getpid():
        raise KdlensError(f"study {str(study.directory)!r} is being run by process {lock.read_text().split()[0]}; "
                          "wait for it or stop it first (`kdlens study status` shows its progress; if no such "
                          f"run is going on, delete {lock})")
    lock.write_text(f"{os.getpid()}\n")
    study.write_plan()
    index = task_index(study)
    states = {s.task.id: s for s in task_states(study)}
    skipped = 0
    for st in states.values():
        if st.status == "done" and not _output_exists(st):
            st.status, st.reason = "pending", "output missing"
        if st.status == "done":
            skipped += 1
        elif st.status in ("stale", "running"):
            st.status = "pending"
        elif st.status == "failed" and retry_failed:
            st.status = "pending"
        elif st.status == "blocked":
            st.status = "pending"  # re-evaluated below against this session's outcomes
    threads = max(1, cores // workers) if workers > 1 or executor != "local" else None
    pool: Any = None  # started at the first task to run: a finished study starts no worker
    inflight: dict[Any, str] = {}
    started: dict[str, float] = {}
    warming: set[tuple[str, tuple[str, ...]]] = set()
    warmed: set[tuple[str, tuple[str, ...]]] = set()
    ran = 0
    t0 = time.time()
    display = StudyProgress(study, states, workers, enabled=progress, console=console)

    def emit(event: str, st: TaskState) -> None:
        display.event(event, st)
        if on_event is not None:
            on_event(event, st)

    def cache_key(t: Task) -> tuple[str, tuple[str, ...]]:
        return (t.group, tuple(t.needs))

    interrupted = False
    try:
        with display:
            while True:
                # dependencies that failed block their dependants
                for tid in list(states):
                    st = states[tid]
                    if st.status == "pending":
                        bad = [d for d in st.task.needs if states[d].status in ("failed", "blocked")]
                        if bad:
                            st.status, st.reason = "blocked", f"needs {bad[0]} ({states[bad[0]].status})"
                            emit("blocked", st)
                ready = [s for s in states.values() if s.status == "pending"
                         and all(states[d].status == "done" for d in s.task.needs)]
                for st in ready:
                    if len(inflight) >= workers:
                        break
                    t = st.task
                    key = cache_key(t)
                    if t.kind == "distill" and key in warming and key not in warmed:
                        continue  # the first student of a teacher builds the shared teacher-output cache
                    payload = _payload(study, t, states, threads)
                    index.start(t.id, t.kind, t.hash, payload["study_dir"])
                    index.update_metrics(t.id, {"task_hash": t.hash})
                    st.status, st.reason, st.attempts = "running", None, st.attempts + 1
                    started[t.id] = time.time()
                    if pool is None:
                        pool = make_executor(executor, workers=workers, address=address, threads=threads)
                    future = pool.submit(payload)
                    inflight[future] = t.id
                    if t.kind == "distill":
                        warming.add(key)
                    emit("start", st)
                if not inflight:
                    break
                for future in pool.wait(list(inflight), timeout=0.5):
                    tid = inflight.pop(future)
                    st = states[tid]
                    seconds = time.time() - started[tid]
                    try:
                        result = future.result()
                    except BaseException as exc:  # a worker that died (killed, out of memory)
                        result = {"status": "failed", "reason": f"worker died: {type(exc).__name__}: {exc}"}
                    st.seconds = seconds
                    ran += 1
                    if result.get("status") == "done":
                        st.status, st.path = "done", result["path"]
                        st.metrics = {**result.get("metrics", {}), "task_seconds": round(seconds, 3),
                                      "path": st.path}
                        index.finish(tid, st.metrics)
                        warmed.add(cache_key(st.task))
                        emit("done", st)
                    else:
                        st.status, st.reason = "failed", str(result.get("reason", "unknown error"))
                        st.path = result.get("path")
                        index.update_metrics(tid, {"task_seconds": round(seconds, 3), "path": st.path})
                        index.fail(tid, st.reason[:2000])
                        warmed.add(cache_key(st.task))
                        emit("failed", st)
                display.refresh()
    except KeyboardInterrupt:
        interrupted = True  # tasks in flight stay "running": the next `study run` resumes them
        raise
    finally:
        if pool is not None:
            pool.shutdown(wait=not interrupted)
        if lock.exists() and lock.read_text().split()[:1] == [str(os.getpid())]:
            lock.unlink()
    counts = {s: sum(1 for st in states.values() if st.status == s) for s in ("done", "failed", "blocked")}
    return StudySummary(study.directory, counts["done"], counts["failed"], counts["blocked"], skipped, ran,
                        time.time() - t0)


def status_rows(study: Study) -> list[dict[str, Any]]:
    """One row per task for `kdlens study status` and the report."""
    rows = []
    for st in task_states(study):
        m = st.metrics
        rows.append({
            "task": st.task.id, "group": st.task.group, "kind": st.task.kind, "status": st.status,
            "levels": st.task.levels, "final_acc": m.get("final_acc"), "seconds": m.get("task_seconds"),
            "reason": st.reason or "", "path": st.path,
        })
    return rows


def iter_done(study: Study, group: str | Iterable[str]) -> list[TaskState]:
    groups = {group} if isinstance(group, str) else set(group)
    return [s for s in task_states(study) if s.task.group in groups and s.status == "done"]


# ----------------------------------------------------------------------------- display
class StudyProgress:
    """Live table of a running study: per group done / running / failed / blocked / pending,
    the tasks in flight, the latest failures with their reasons, and an ETA.

    On a terminal it is a :class:`rich.live.Live` display; otherwise one line per finished
    or failed task and the table at the end.
    """

    def __init__(self, study: Study, states: dict[str, TaskState], workers: int, enabled: bool = True,
                 console: Any = None) -> None:
        import sys

        from rich.console import Console

        self.study = study
        self.states = states
        self.workers = workers
        self.enabled = enabled
        self.console = console or Console(file=sys.stderr)
        self.t0 = time.time()
        self.durations: dict[str, list[float]] = {}
        self.started: dict[str, float] = {}
        self._live = None

    def __enter__(self) -> StudyProgress:
        if self.enabled and self.console.is_terminal:
            from rich.live import Live

            self._live = Live(self.render(), console=self.console, refresh_per_second=2, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._live is not None:
            self._live.update(self.render())
            self._live.__exit__(*exc)
        elif self.enabled:
            self.console.print(self.render())

    def event(self, event: str, st: TaskState) -> None:
        if event == "start":
            self.started[st.task.id] = time.time()
            return
        if event == "done" and st.seconds is not None:
            self.durations.setdefault(st.task.kind, []).append(st.seconds)
        if self.enabled and self._live is None:
            acc = st.metrics.get("final_acc")
            extra = f" · acc {acc:.2f}%" if isinstance(acc, (int, float)) else ""
            secs = f" · {st.seconds:.1f} s" if st.seconds is not None else ""
            reason = f": {st.reason}" if event != "done" and st.reason else ""
            self.console.print(f"{event:>7} {st.task.id}{secs}{extra}{reason}", highlight=False, markup=False)
        self.refresh()

    def refresh(self) -> None:
        if self._live is not None:
            self._live.update(self.render())

    def eta_seconds(self) -> float | None:
        every = [d for ds in self.durations.values() for d in ds]
        if not every:
            return None
        overall = sum(every) / len(every)
        now = time.time()
        total = 0.0
        for st in self.states.values():
            if st.status not in ("pending", "running"):
                continue
            ds = self.durations.get(st.task.kind)
            est = sum(ds) / len(ds) if ds else overall
            if st.status == "running":
                est = max(0.0, est - (now - self.started.get(st.task.id, now)))
            total += est
        return total / max(1, self.workers)

    def render(self) -> Any:
        from rich.console import Group
        from rich.markup import escape
        from rich.table import Table

        statuses = ("done", "running", "failed", "blocked", "pending")
        table = Table(title=escape(f"study {self.study.name} ({self.study.scale}) · {self.study.directory}"),
                      title_justify="left")
        table.add_column("group")
        table.add_column("kind")
        for s in statuses:
            table.add_column(s, justify="right")
        totals = dict.fromkeys(statuses, 0)
        for group in self.study.spec.groups:
            counts = dict.fromkeys(statuses, 0)
            for st in self.states.values():
                if st.task.group == group:
                    key = st.status if st.status in counts else "pending"
                    counts[key] += 1
                    totals[key] += 1
            table.add_row(group, self.study.spec.groups[group].kind, *(str(counts[s]) for s in statuses))
        table.add_row("[bold]all", "", *(f"[bold]{totals[s]}" for s in statuses))
        eta = self.eta_seconds()
        elapsed = time.time() - self.t0
        lines = [f"elapsed {_hms(elapsed)} · ETA {'—' if eta is None else _hms(eta)} · workers {self.workers}"]
        now = time.time()
        for st in self.states.values():
            if st.status == "running":
                lines.append(f"  running {escape(st.task.id)} ({_hms(now - self.started.get(st.task.id, now))})")
        failed = [st for st in self.states.values() if st.status == "failed"]
        for st in failed[-5:]:
            lines.append(f"  [red]failed[/] {escape(st.task.id)}: {escape(str(st.reason))}")
        return Group(table, *lines)


def _hms(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
