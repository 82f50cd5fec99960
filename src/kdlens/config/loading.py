"""YAML + ``key=value`` overrides → a validated config, or a readable error (exit 2)."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from kdlens.errors import KdlensError, close_matches

M = TypeVar("M", bound=BaseModel)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"optim.lr=0.1"`` → (["optim", "lr"], 0.1); the value is parsed as YAML."""
    if "=" not in text:
        raise KdlensError(f"override {text!r} is not of the form key=value (e.g. optim.lr=0.1)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise KdlensError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    out = dict(data)
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for part in path[:-1]:
            child = node.get(part)
            child = dict(child) if isinstance(child, dict) else {}
            node[part] = child
            node = child
        node[path[-1]] = value
    return out


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a mapping that repeats a key.

    Plain ``yaml.safe_load`` keeps the last of two equal keys and drops the first without a
    word — in a study file that silently loses a whole block of settings."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in one mapping (lines {seen[key]} and {line}); "
                    "merge the two blocks into one", key_node.start_mark)
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def yaml_error_text(exc: yaml.YAMLError, path: Path) -> str:
    """PyYAML's message with ``line L, column C`` of ``path`` first (never ``"<unicode string>"``)."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    where = f"{path}, line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return where + (f"{context}; " if context else "") + str(problem)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML file; :class:`KdlensError` if missing, invalid, not a mapping or
    repeating a key."""
    path = Path(path)
    if not path.exists():
        raise KdlensError(f"config file {str(path)!r} does not exist")
    try:
        with open(path, encoding="utf-8") as stream:  # a named stream: marks carry the file name
            data = yaml.load(stream, Loader=_UniqueKeyLoader)  # noqa: S506 (safe loader)
    except yaml.YAMLError as exc:
        raise KdlensError(f"config file {str(path)!r} is not valid YAML: {yaml_error_text(exc, path)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise KdlensError(f"config file {str(path)!r} must hold a mapping of keys, not {type(data).__name__}")
    return data


def validate(schema: type[M], data: dict[str, Any], source: str = "config") -> M:
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        raise KdlensError(format_validation_error(schema, exc, source)) from None


def load_config(
    schema: type[M], path: str | Path | None = None, overrides: list[str] | None = None
) -> M:
    data = read_yaml(path) if path else {}
    data = apply_overrides(data, overrides or [])
    return validate(schema, data, source=str(path) if path else "config")


def format_validation_error(schema: type[BaseModel], exc: ValidationError, source: str) -> str:
    lines = [f"invalid {source}:"]
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        key = ".".join(loc) or "(root)"
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(schema, loc[:-1])
            hint = close_matches(loc[-1], allowed)
            msg = f"  {key}: unknown key"
            if hint:
                msg += f" (did you mean {', '.join(hint)}?)"
            msg += f"; allowed here: {', '.join(allowed)}"
        else:
            msg = f"  {key}: {err['msg']}"
            if "input" in err and not isinstance(err["input"], dict):
                msg += f" (got {err['input']!r})"
        lines.append(msg)
    return "\n".join(lines)


def _allowed_keys(schema: type[BaseModel], parent: list[str]) -> list[str]:
    model: Any = schema
    for part in parent:
        field = _fields(model).get(part)
        if field is None:
            return []
        model = field.annotation
    return sorted(_fields(model))


def _fields(annotation: Any) -> dict[str, Any]:
    """The fields of a model, or of all models of a union (a tune ``base``: distill | train)."""
    fields: dict[str, Any] = {}
    for member in reversed(typing.get_args(annotation) or (annotation,)):
        fields.update(getattr(member, "model_fields", {}))
    return fields
