"""Load a YAML file into a pydantic model, turning every failure into a UserError
that names the file and the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar, get_args

import yaml
from pydantic import BaseModel, ValidationError

from cases import closest
from harness.errors import UserError

ModelT = TypeVar("ModelT", bound=BaseModel)


def read_mapping(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot read: {exc.strerror}", file=str(path)) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UserError(f"not valid YAML: {exc}", file=str(path)) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"expected a mapping at top level, got {type(data).__name__}", file=str(path))
    return data


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model a field holds: itself, or the first inside list[...], dict[..., ...], X | None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def known_fields(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """The field names (aliases where set) allowed where `loc` points, following
    the model's fields down the path (list indices and mapping keys are passed over)."""
    current = model
    for part in loc[:-1]:
        by_name = {field.alias or name: name for name, field in current.model_fields.items()}
        if isinstance(part, str) and part in by_name:
            inner = _model_in(current.model_fields[by_name[part]].annotation)
            if inner is None:
                return []
            current = inner
    return [field.alias or name for name, field in current.model_fields.items()]


def _unknown_field(model: type[BaseModel] | None, loc: tuple[int | str, ...]) -> str:
    """`unknown field; did you mean 'port'?`, else the fields allowed there."""
    known = known_fields(model, loc) if model is not None and loc else []
    match = closest.closest(str(loc[-1]), known) if known else None
    if match is not None:
        return f"unknown field; did you mean {match!r}?"
    return f"unknown field; expected one of: {', '.join(known)}" if known else "unknown field"


def describe_validation_error(exc: ValidationError, data: Any,
                               model: type[BaseModel] | None = None) -> tuple[str, str]:
    """(field path, message) of the first error, with names instead of list indices
    where the list items have a ``name`` (``hosts.node2.port``); with the model, an
    unknown field gets the closest allowed name."""
    first = exc.errors()[0]
    parts: list[str] = []
    node = data
    for loc in first["loc"]:
        if isinstance(loc, int) and isinstance(node, list) and loc < len(node):
            item = node[loc]
            name = item.get("name") if isinstance(item, dict) else None
            parts.append(str(name) if name else f"[{loc}]")
            node = item
            continue
        parts.append(str(loc))
        node = node.get(loc) if isinstance(node, dict) else None
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = _unknown_field(model, tuple(first["loc"]))
    elif first["type"] == "missing":
        message = "required field is missing"
    elif "input" in first and first["type"] not in ("missing",):
        message = f"{message} (got {first['input']!r})"
    return ".".join(parts), message


def load_model(path: Path, model: type[ModelT], defaults: dict[str, Any] | None = None) -> ModelT:
    data = {**(defaults or {}), **read_mapping(path)}
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        field, message = describe_validation_error(exc, data, model)
        raise UserError(message, file=str(path), field=field) from exc
