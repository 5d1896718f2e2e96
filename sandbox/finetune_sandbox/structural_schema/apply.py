"""The structural schema's entry point: size check, prune and default, then validate (kube-apiserver's order)."""

from __future__ import annotations

import copy
from typing import Any

from .pruning import normalize
from .validation import Cause, SchemaViolation, Validator
from .values import MISSING

# kube-apiserver refuses request bodies beyond this (3 MiB) before decoding them.
MAX_REQUEST_BYTES = 3 * 1024 * 1024


def apply_structural_schema(
    obj: dict[str, Any],
    schema: dict[str, Any],
    old: dict[str, Any] | None = None,
    *,
    strict: bool = False,
) -> dict[str, Any]:
    """Return a new object: unknown fields pruned (apiVersion/kind/metadata kept at the root), defaults
    applied, then validated against `schema` (a CRD version's openAPIV3Schema). `old` is the stored object
    on updates: rules that use `oldSelf` (transition rules) run only where the old object has the node.
    `strict` is `fieldValidation=Strict` (kubectl's default): unknown fields are errors, not pruned.
    Raise SchemaViolation listing every violation."""
    size = _json_size(obj, MAX_REQUEST_BYTES)
    if size > MAX_REQUEST_BYTES:
        raise SchemaViolation([Cause("", f"Request entity too large: limit is {MAX_REQUEST_BYTES} bytes", "TooLarge")])
    unknown: list[str] = []
    result = normalize(copy.deepcopy(obj), schema, "", unknown, root=True)
    causes = [Cause(path, f'strict decoding error: unknown field "{path}"') for path in unknown] if strict else []
    Validator(causes).check(result, schema, "", MISSING if old is None else old, root=True)
    if causes:
        raise SchemaViolation(causes)
    return result


def _json_size(value: Any, limit: int) -> int:
    """Approximate JSON size in bytes, counting shared (YAML-aliased) subtrees each time, stopping past `limit`."""
    total, stack = 0, [value]
    while stack and total <= limit:
        item = stack.pop()
        if isinstance(item, dict):
            total += 2 + sum(len(str(key)) + 4 for key in item)
            stack.extend(item.values())
        elif isinstance(item, list):
            total += 2 + len(item)
            stack.extend(item)
        elif isinstance(item, str):
            total += len(item.encode("utf-8", "replace")) + 2
        else:
            total += len(str(item))
    return total


def version_schema(crd: dict[str, Any], version: str) -> dict[str, Any]:
    """The openAPIV3Schema of one served version of a CRD manifest; KeyError names what is missing."""
    for entry in crd["spec"]["versions"]:
        if entry["name"] == version:
            return entry["schema"]["openAPIV3Schema"]
    raise KeyError(f"CRD {crd['metadata']['name']} has no version {version!r}")
