"""JSON values as a structural schema sees them: their types, their field paths, and how messages show them."""

from __future__ import annotations

import json
from typing import Any

# Kept at an object's root whatever its schema says.
ROOT_KEPT_FIELDS = ("apiVersion", "kind", "metadata")
# "No old value": a create, or a node the old object does not have.
MISSING = object()


def child_path(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def has_type(value: Any, expected: str) -> bool:
    checks = {
        "object": lambda v: isinstance(v, dict),
        "array": lambda v: isinstance(v, list),
        "string": lambda v: isinstance(v, str),
        "boolean": lambda v: isinstance(v, bool),
        "integer": is_integer,
        "number": is_number,
    }
    return checks.get(expected, lambda v: True)(value)


def json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, dict) else type(value).__name__


def show(value: Any) -> str:
    # Messages land in events and kubectl output: never echo a megabyte back.
    text = json.dumps(value, default=str)
    return text if len(text) <= 80 else f"{text[:60]}...({len(text)} chars)"
