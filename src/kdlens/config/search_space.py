"""Search spaces of ``kdlens tune``: dotted config keys mapped to search dimensions.

A key is a dotted key of the base config, the same one a ``key=value`` override names
(``optim.lr``, ``batch_size``, ``loss.T``, ``data.crop_padding``); the short name ``T`` still
means ``loss.T``.  A dimension is one of the three kinds Optuna samples (``suggest_float``,
``suggest_int``, ``suggest_categorical``; Akiba et al. 2019, *Optuna*, KDD):

- a float range ``{low, high, log}`` (optional ``step``, not with ``log``);
- an integer range ``{low, high, int: true}`` (optional ``step``);
- a categorical ``{choices: [...]}`` of plain values (null, booleans, numbers, strings).

Checks here run when a tune config loads, before anything trains: a key must exist in the
base's schema (with close matches when it does not) and a range must suit the field's type.
Trial configs are built with the override mechanism of :func:`kdlens.config.apply_overrides`,
so a trial is exactly ``kdlens train|distill BASE key=value ...``.
"""

from __future__ import annotations

import math
import types
import typing
from typing import Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from kdlens.config.loading import apply_overrides, format_validation_error
from kdlens.errors import close_matches

SHORT_KEYS = {"T": "loss.T"}
"""Short names kept from the first ``kdlens tune`` (γ, α, β are top-level keys already)."""

SET_BY_TUNE = ("kind", "name", "out", "eval_split")
"""Keys every trial sets itself: a study runs in ``base.out``, names trials and evaluates on val."""

_PLAIN = (type(None), bool, int, float, str)


class SearchParam(BaseModel):
    """One search dimension: a float range, an integer range (``int: true``) or ``choices``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    low: float | None = None
    high: float | None = None
    log: bool = Field(False, description="sample on a log scale (low > 0)")
    integer: bool = Field(False, alias="int", description="sample integers in [low, high]")
    step: float | None = Field(None, gt=0, description="grid step from low (int ranges: default 1)")
    choices: list[Any] | None = Field(None, description="sample one of these values")

    @model_validator(mode="after")
    def _one_kind(self) -> SearchParam:
        if self.choices is not None:
            if self.low is not None or self.high is not None or self.log or self.integer or self.step is not None:
                raise ValueError("give either choices or a low/high range, not both")
            if not self.choices:
                raise ValueError("choices is empty")
            bad = [c for c in self.choices if not isinstance(c, _PLAIN)]
            if bad:
                raise ValueError(f"choices must be plain values (null, true/false, numbers, strings); got {bad}")
            return self
        if self.low is None or self.high is None:
            raise ValueError("a search dimension needs low and high (a range) or choices")
        if not self.low < self.high:
            raise ValueError(f"low={self.low:g} must be < high={self.high:g}")
        if self.log and self.low <= 0:
            raise ValueError("a log-scale range needs low > 0")
        if self.integer:
            ends = (self.low, self.high, self.step or 1.0)
            if not all(float(v).is_integer() for v in ends):
                raise ValueError("an int range needs whole-number low, high and step")
            if self.log and (self.step or 1) != 1:
                raise ValueError("log: true does not combine with a step other than 1")
        elif self.log and self.step is not None:
            raise ValueError("log: true does not combine with a step")
        return self

    def corners(self) -> list[Any]:
        """The extreme values a trial can take (every choice of a categorical)."""
        if self.choices is not None:
            return list(self.choices)
        assert self.low is not None and self.high is not None
        high = self.high
        if self.step is not None:  # Optuna samples low + k·step ≤ high
            high = self.low + math.floor((self.high - self.low) / self.step + 1e-9) * self.step
        if self.integer:
            return [int(self.low), int(high)]
        return [self.low, high]


def canonical_key(key: str) -> str:
    """``T`` → ``loss.T``; every other key is already a dotted config key."""
    return SHORT_KEYS.get(key, key)


def dotted_keys(schema: type[BaseModel], prefix: str = "") -> list[str]:
    """Every leaf key of ``schema`` as a dotted path (``optim.lr``); free mappings as ``loss.NAME``."""
    keys = []
    for name, field in schema.model_fields.items():
        sub = _model_in(field.annotation)
        if sub is not None:
            keys += dotted_keys(sub, f"{prefix}{name}.")
        elif _is_mapping(field.annotation):
            keys.append(f"{prefix}{name}.NAME")
        else:
            keys.append(f"{prefix}{name}")
    return keys


def key_error(schema: type[BaseModel], key: str) -> str | None:
    """Why ``key`` cannot be searched in a ``schema`` config (close matches), or None if it can."""
    kind = schema.model_fields["kind"].default if "kind" in schema.model_fields else schema.__name__
    full = canonical_key(key)
    if full in SET_BY_TUNE:
        return f"cannot tune {key!r}: kdlens tune sets it for every trial"
    model: type[BaseModel] = schema
    parts = full.split(".")
    for i, part in enumerate(parts):
        field = model.model_fields.get(part)
        rest = parts[i + 1:]
        if field is None:
            break
        sub = _model_in(field.annotation)
        if sub is not None:
            if not rest:
                inside = ", ".join(f"{full}.{k}" for k in dotted_keys(sub))
                return f"cannot tune {key!r}: it is a section; name a key inside it: {inside}"
            model = sub
            continue
        if _is_mapping(field.annotation):
            if len(rest) == 1:
                return None
            return f"cannot tune {key!r}: {'.'.join(parts[:i + 1])} is a mapping; name one entry (e.g. loss.T)"
        if not rest:
            return None
        break
    known = dotted_keys(schema) + list(SHORT_KEYS)
    hint = close_matches(key, known)
    msg = f"cannot tune {key!r}: not a key of a {kind} config"
    return msg + (f" (did you mean {', '.join(hint)}?)" if hint else "")


def field_annotation(schema: type[BaseModel], key: str) -> Any:
    """The type annotation of a valid dotted ``key`` (``Any`` inside a free mapping)."""
    model: type[BaseModel] | None = schema
    annotation: Any = None
    for part in canonical_key(key).split("."):
        if model is None:
            return Any  # an entry of a free mapping (loss.T)
        annotation = model.model_fields[part].annotation
        model = _model_in(annotation)
    return annotation


def type_error(key: str, annotation: Any, dim: SearchParam) -> str | None:
    """Why a range ``dim`` cannot feed a field of type ``annotation``, or None."""
    if dim.choices is not None or annotation is Any:
        return None
    members = set(_members(annotation))
    if float in members or Any in members:
        return None
    if int in members:
        return None if dim.integer else f"{key} takes whole numbers: add int: true to its range"
    literal = [v for m in members if typing.get_origin(m) is Literal for v in typing.get_args(m)]
    if literal:
        return f"{key} takes one of {', '.join(map(str, literal))}: search it with choices"
    names = ", ".join(sorted(getattr(m, "__name__", str(m)) for m in members))
    return f"{key} takes {names}, not a number range: search it with choices"


def override_text(key: str, value: Any) -> str:
    """``key=value`` with ``value`` written as YAML, which :func:`parse_override` reads back exactly.

    (``1e-05`` would come back a string; YAML writes it ``1.0e-05``.)"""
    text = yaml.safe_dump(value, default_flow_style=True, width=1_000_000).strip()
    if text.endswith("\n..."):
        text = text[: -len("\n...")].rstrip()
    return f"{key}={text}"


def apply_params(data: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """``data`` (a config mapping) with each ``key: value`` of ``params`` applied as an override."""
    return apply_overrides(data, [override_text(canonical_key(k), v) for k, v in params.items()])


def lookup(data: dict[str, Any], key: str) -> Any:
    """The value at dotted ``key`` in a config mapping (KeyError if absent)."""
    node: Any = data
    for part in canonical_key(key).split("."):
        node = node[part]
    return node


def _members(annotation: Any) -> tuple[Any, ...]:
    if typing.get_origin(annotation) in (Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    for member in _members(annotation):
        if isinstance(member, type) and issubclass(member, BaseModel):
            return member
    return None


def _is_mapping(annotation: Any) -> bool:
    return any(m is dict or typing.get_origin(m) is dict for m in _members(annotation))


def space_errors(schema: type[BaseModel], space: dict[str, SearchParam]) -> list[tuple[str, str]]:
    """``(key, why)`` for each key of ``space`` that a ``schema`` config cannot search."""
    errors = []
    seen: dict[str, str] = {}
    for key, dim in space.items():
        why = key_error(schema, key)
        if why is None:
            why = type_error(canonical_key(key), field_annotation(schema, key), dim)
        if why is None and canonical_key(key) in seen:
            why = f"{key!r} and {seen[canonical_key(key)]!r} name the same key {canonical_key(key)}"
        seen.setdefault(canonical_key(key), key)
        if why is not None:
            errors.append((key, why))
    return errors


def base_mapping(base: BaseModel) -> dict[str, Any]:
    """The keys a base config was given (its ``kind`` first): what a YAML file of it states."""
    return {"kind": getattr(base, "kind"), **base.model_dump(mode="json", exclude_unset=True)}


def trial_mapping(base: BaseModel, params: dict[str, Any], fixed: dict[str, Any] | None = None) -> dict[str, Any]:
    """``base`` with the sampled ``params`` applied, then ``fixed`` (e.g. ``eval_split: val``)."""
    data = apply_params(base_mapping(base), params)
    return apply_overrides(data, [override_text(k, v) for k, v in (fixed or {}).items()])


def corner_errors(base: BaseModel, space: dict[str, SearchParam], fixed: dict[str, Any]) -> list[tuple[str, str]]:
    """``(key, why)`` for each search dimension whose extreme values make an invalid config.

    Each key is tried alone at its corners (every choice), then all keys at once at their
    lows and at their highs, so a bad value type fails at load time, not in trial 17."""
    schema = type(base)
    kind = getattr(base, "kind", schema.__name__)

    def why(params: dict[str, Any]) -> str | None:
        try:
            schema.model_validate(trial_mapping(base, params, fixed))
        except ValidationError as exc:
            setting = ", ".join(f"{k}={v!r}" for k, v in params.items())
            lines = format_validation_error(schema, exc, setting).splitlines()[1:]
            return f"a trial with {setting} is not a valid {kind} config: " + "; ".join(s.strip() for s in lines)
        return None

    errors = [(key, msg) for key, dim in space.items() for value in dim.corners()
              if (msg := why({key: value})) is not None]
    if not errors and len(space) > 1:
        for end in (0, -1):
            ends = {key: dim.corners()[end] for key, dim in space.items() if dim.choices is None}
            if ends and (msg := why(ends)) is not None:
                errors.append(("", msg))
    return errors
