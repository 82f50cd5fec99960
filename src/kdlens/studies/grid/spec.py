"""What a study YAML is: the pydantic schema (:class:`StudySpec` and its :class:`GroupSpec`
groups), the run kinds and scale names, and the helpers that combine and expand its values:
:func:`deep_merge` (scale presets over the document), :func:`set_path` (a dotted config key)
and :func:`factor_levels` (a grid factor's list of values → :class:`Level` objects)."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from kdlens.errors import KdlensError

RUN_KINDS = ("train", "distill")
SCALES = ("smoke", "small", "full")


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

