"""The three patch formats a Kubernetes API server accepts: JSON merge, JSON patch, strategic merge."""

from __future__ import annotations

import copy
from typing import Any

from .errors import ApiError

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"


def apply_patch(content_type: str, target: dict[str, Any], patch: Any) -> dict[str, Any]:
    """Return a patched copy of `target`; the input is never modified."""
    ctype = content_type.split(";")[0].strip().lower()
    if ctype == MERGE_PATCH:
        if not isinstance(patch, dict):
            raise ApiError(400, "a JSON merge patch must be a JSON object")
        return merge_patch(target, patch)
    if ctype == JSON_PATCH:
        if not isinstance(patch, list):
            raise ApiError(400, "a JSON patch must be a JSON array of operations")
        return json_patch(target, patch)
    if ctype == STRATEGIC_PATCH:
        if not isinstance(patch, dict):
            raise ApiError(400, "a strategic merge patch must be a JSON object")
        return strategic_merge_patch(target, patch)
    if ctype == APPLY_PATCH:
        raise ApiError(
            415,
            "server-side apply is not supported by the sandbox API server; "
            "use client-side `kubectl apply` (the default) instead",
        )
    raise ApiError(
        415,
        f"the body of the request was in an unknown format - accepted media types include: "
        f"{JSON_PATCH}, {MERGE_PATCH}, {STRATEGIC_PATCH}",
    )


# --- RFC 7386 -------------------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# --- RFC 6902 -------------------------------------------------------------------------------------


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ApiError(422, f"invalid JSON pointer {path!r}: it must start with '/'")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _container(doc: Any, parts: list[str], path: str) -> Any:
    node = doc
    for part in parts:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise ApiError(422, f"the JSON patch path {path!r} does not exist in the object")
    return node


def json_patch(target: dict[str, Any], operations: list[Any]) -> dict[str, Any]:
    doc = copy.deepcopy(target)
    for op in operations:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise ApiError(400, f"invalid JSON patch operation: {op!r}")
        name, path = op["op"], op["path"]
        parts = _pointer(path)
        if name == "test":
            actual = _container(doc, parts, path)
            if actual != op.get("value"):
                raise ApiError(422, f"testing value {path} failed: expected {op.get('value')!r}, found {actual!r}")
            continue
        if name in ("move", "copy"):
            source = _pointer(op.get("from", ""))
            value = copy.deepcopy(_container(doc, source, op.get("from", "")))
            if name == "move":
                doc = _remove(doc, source, op.get("from", ""))
            doc = _add(doc, parts, value, path)
        elif name == "add":
            doc = _add(doc, parts, copy.deepcopy(op.get("value")), path)
        elif name == "remove":
            doc = _remove(doc, parts, path)
        elif name == "replace":
            _container(doc, parts, path)  # must exist
            if not parts:
                doc = copy.deepcopy(op.get("value"))
            else:
                parent = _container(doc, parts[:-1], path)
                key = parts[-1]
                parent[int(key) if isinstance(parent, list) else key] = copy.deepcopy(op.get("value"))
        else:
            raise ApiError(400, f"unknown JSON patch operation {name!r}")
    if not isinstance(doc, dict):
        raise ApiError(422, "the JSON patch must leave an object")
    return doc


def _add(doc: Any, parts: list[str], value: Any, path: str) -> Any:
    if not parts:
        return value
    parent = _container(doc, parts[:-1], path)
    key = parts[-1]
    if isinstance(parent, list):
        if key == "-":
            parent.append(value)
        elif key.isdigit() and int(key) <= len(parent):
            parent.insert(int(key), value)
        else:
            raise ApiError(422, f"the JSON patch index in {path!r} is out of range")
    elif isinstance(parent, dict):
        parent[key] = value
    else:
        raise ApiError(422, f"the JSON patch path {path!r} does not point into an object or array")
    return doc


def _remove(doc: Any, parts: list[str], path: str) -> Any:
    if not parts:
        raise ApiError(422, "cannot remove the whole document")
    parent = _container(doc, parts[:-1], path)
    key = parts[-1]
    if isinstance(parent, list) and key.isdigit() and int(key) < len(parent):
        del parent[int(key)]
    elif isinstance(parent, dict) and key in parent:
        del parent[key]
    else:
        raise ApiError(422, f"the JSON patch path {path!r} does not exist in the object")
    return doc


# --- strategic merge patch -------------------------------------------------------------------------

# Merge keys of the built-in types' lists, by field name (the real server reads them from Go struct tags).
_MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "conditions": "type",
    "imagePullSecrets": "name",
    "ownerReferences": "uid",
    "hostAliases": "ip",
    "topologySpreadConstraints": "topologyKey",
    "containerStatuses": "name",
    "initContainerStatuses": "name",
    "taints": "key",
    "addresses": "type",
}
# Lists of scalars merged as sets.
_SET_LISTS = {"finalizers"}


def _merge_key(field: str, items: list[Any]) -> str | None:
    if field == "ports":
        if any(isinstance(i, dict) and "containerPort" in i for i in items):
            return "containerPort"
        if any(isinstance(i, dict) and "port" in i for i in items):
            return "port"
        return "name"
    return _MERGE_KEYS.get(field)


def strategic_merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    return _smp_dict(target if isinstance(target, dict) else {}, patch)


def _smp_dict(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if directive == "delete":
        return {}
    result = dict(target)
    deletions = {}
    for key, value in patch.items():
        if key.startswith("$deleteFromPrimitiveList/"):
            deletions[key.split("/", 1)[1]] = value
            continue
        if key.startswith("$") or key.startswith("$setElementOrder/"):
            continue  # ordering and retainKeys directives: order is not significant here
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            if value.get("$patch") == "delete":
                result.pop(key, None)
            else:
                current = result.get(key)
                result[key] = _smp_dict(current if isinstance(current, dict) else {}, value)
        elif isinstance(value, list):
            result[key] = _smp_list(key, result.get(key), value)
        else:
            result[key] = value
    for key, values in deletions.items():
        if isinstance(result.get(key), list):
            result[key] = [v for v in result[key] if v not in values]
    return result


def _smp_list(field: str, current: Any, patch: list[Any]) -> list[Any]:
    current = current if isinstance(current, list) else []
    if field in _SET_LISTS:
        merged = list(current)
        for item in patch:
            if item not in merged:
                merged.append(item)
        return merged
    key = _merge_key(field, patch + current)
    if key is None or not all(isinstance(i, dict) for i in patch):
        if any(isinstance(i, dict) and i.get("$patch") == "replace" for i in patch):
            return [copy.deepcopy(i) for i in patch if not (isinstance(i, dict) and "$patch" in i)]
        return copy.deepcopy(patch)
    if any(i.get("$patch") == "replace" for i in patch):
        return [copy.deepcopy(i) for i in patch if "$patch" not in i]
    merged = list(current)
    for item in patch:
        if key not in item:
            merged.append(copy.deepcopy(item))
            continue
        index = next((n for n, old in enumerate(merged) if isinstance(old, dict) and old.get(key) == item[key]), None)
        if item.get("$patch") == "delete":
            if index is not None:
                del merged[index]
        elif index is None:
            merged.append(_smp_dict({}, item))
        else:
            merged[index] = _smp_dict(merged[index], item)
    return merged
