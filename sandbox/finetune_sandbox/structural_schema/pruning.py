"""Pruning and defaulting: unknown fields dropped (or reported, for strict decoding), nulls of non-nullable
fields dropped, defaults applied (recursing into defaulted objects), as kube-apiserver does before validating."""

from __future__ import annotations

import copy
from typing import Any

from .values import ROOT_KEPT_FIELDS, child_path


def normalize(value: Any, schema: dict[str, Any], path: str, unknown: list[str], root: bool = False) -> Any:
    if isinstance(value, dict) and _describes_object(schema):
        return _normalize_object(value, schema, path, unknown, root)
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        items = schema["items"]
        return [
            item if item is None else normalize(item, items, f"{path}[{i}]", unknown) for i, item in enumerate(value)
        ]
    return value


def _normalize_object(
    value: dict[str, Any], schema: dict[str, Any], path: str, unknown: list[str], root: bool
) -> dict[str, Any]:
    properties = schema.get("properties", {})
    additional = schema.get("additionalProperties")
    preserve = schema.get("x-kubernetes-preserve-unknown-fields", False)
    out: dict[str, Any] = {}
    for key, item in value.items():
        child = child_path(path, key)
        if root and key in ROOT_KEPT_FIELDS:
            out[key] = item
            continue
        if key in properties:
            sub = properties[key]
        elif isinstance(additional, dict):
            sub = additional
        elif preserve or additional is True:
            out[key] = item
            continue
        else:
            unknown.append(child)
            continue
        # The API server drops nulls of non-nullable fields before defaulting, so `x: null` means "unset".
        if item is None and not sub.get("nullable", False):
            continue
        out[key] = normalize(item, sub, child, unknown)
    for key, sub in properties.items():
        if key not in out and "default" in sub:
            out[key] = normalize(copy.deepcopy(sub["default"]), sub, child_path(path, key), unknown)
    return out


def _describes_object(schema: dict[str, Any]) -> bool:
    return schema.get("type") == "object" or "properties" in schema or "additionalProperties" in schema
