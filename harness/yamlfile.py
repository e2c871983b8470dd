"""Load a YAML file into a pydantic model, turning every failure into a UserError
that names the file and the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

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


def describe_validation_error(exc: ValidationError, data: Any) -> tuple[str, str]:
    """(field path, message) of the first error, with names instead of list indices
    where the list items have a ``name`` (``hosts.node2.port``)."""
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
        message = "unknown field"
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
        field, message = describe_validation_error(exc, data)
        raise UserError(message, file=str(path), field=field) from exc
