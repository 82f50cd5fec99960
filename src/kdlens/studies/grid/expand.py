"""From a YAML file to a :class:`~kdlens.studies.grid.study.Study`: :func:`load_study` reads it
and applies the scale and overrides, :func:`expand` turns each group's grid into tasks in
dependency order (matching levels, ``"${group}"`` references, hashes), :func:`open_study` also
reopens a study directory from its saved plan, and :func:`substitute` resolves the references."""

from __future__ import annotations

import copy
import itertools
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from kdlens.config import apply_overrides, read_yaml, validate
from kdlens.errors import KdlensError, close_matches
from kdlens.store import config_hash
from kdlens.studies.grid.spec import (
    RUN_KINDS,
    GroupSpec,
    Level,
    StudySpec,
    _same,
    _slug,
    deep_merge,
    factor_levels,
    set_path,
)
from kdlens.studies.grid.study import Study, Task

_PLACEHOLDER = re.compile(r"^\$\{([A-Za-z0-9_-]+)(?:\.path)?\}$")


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
    _check_new_groups(data, data.get("groups"), f"{where}, scale {scale!r}" if scale in scales else where)
    before = data.get("groups")
    data = apply_overrides(data, list(overrides))
    _check_new_groups(data, before, "--set", overrides)
    groups = data.get("groups")
    if isinstance(groups, dict):  # each group on its own: errors name the group and suggest keys
        for gname, group in groups.items():
            validate(GroupSpec, group if isinstance(group, dict) else {"kind": group}, source=f"{where}, group {gname!r}")
    spec = validate(StudySpec, data, source=where)
    root = Path(out) if out is not None else Path(spec.out or f"runs/studies/{spec.name}") / scale
    study = expand(spec, scale, root, source=str(Path(path).resolve()))
    check_task_configs(study)
    return study


def _check_new_groups(data: dict[str, Any], known: Any, where: str, overrides: Sequence[str] = ()) -> None:
    """A group that only an override (a scale preset or ``--set``) mentions and that has no
    ``kind`` is a misspelt group name, not a new group: say so, with close matches."""
    groups = data.get("groups")
    if not isinstance(groups, dict):
        return
    known = list(known) if isinstance(known, dict) else []
    for gname, group in groups.items():
        if gname in known or (isinstance(group, dict) and "kind" in group):
            continue
        hint = close_matches(str(gname), known)
        given = [o for o in overrides if o.strip().startswith((f"groups.{gname}.", f"groups.{gname}="))]
        where = f"{where} {given[0].strip()}" if given else where
        raise KdlensError(
            f"{where}: unknown group {gname!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
            + f"; the study's groups: {', '.join(known) or 'none'}"
        )


def check_task_configs(study: Study) -> None:
    """Validate the train / distill config of every task as its run will see it (dependency
    directories stand in for ``"${group}"``), so a misspelt key fails when the study is loaded,
    before anything trains, naming the group, the task and the key."""
    from kdlens.config import DistillConfig, TrainConfig

    schemas = {"train": TrainConfig, "distill": DistillConfig}
    for task in study.tasks:
        if not task.is_run:
            continue
        config = substitute(task.config, {g: f"{study.directory}/{g}" for g in _placeholders(task.config)})
        config = {**config, "out": str(study.directory), "name": task.id}
        config.pop("kind", None)
        levels = f", levels {task.levels}" if task.levels else ""
        validate(schemas[task.kind], config,
                 source=f"study {study.name!r}, group {task.group!r} (task {task.id}{levels}; its keys come from "
                        f"defaults, groups.{task.group}.config and its grid)")


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
