"""Label and field selectors, parsed once per request and matched against stored objects."""

from __future__ import annotations

import re
from typing import Any, Callable

from .errors import ApiError

Matcher = Callable[[dict[str, Any]], bool]

_SET_RE = re.compile(r"^\s*(!?)\s*([A-Za-z0-9_./-]+)\s*(?:(notin|in)\s*\(([^)]*)\))?\s*$")
_EQ_RE = re.compile(r"^\s*([A-Za-z0-9_./-]+)\s*(==|=|!=)\s*([A-Za-z0-9_.-]*)\s*$")


def _split_requirements(text: str) -> list[str]:
    """Split on commas that are not inside `in (a, b)` parentheses."""
    parts, depth, current = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [p for p in (part.strip() for part in parts) if p]


def parse_label_selector(text: str | None) -> Matcher | None:
    """`a=b, c!=d, e in (f,g), h notin (i), j, !k` -> a predicate on an object's labels."""
    if not text:
        return None
    checks: list[Callable[[dict[str, str]], bool]] = []
    for req in _split_requirements(text):
        eq = _EQ_RE.match(req)
        if eq:
            key, op, value = eq.groups()
            if op == "!=":
                checks.append(lambda labels, k=key, v=value: labels.get(k) != v)
            else:
                checks.append(lambda labels, k=key, v=value: labels.get(k) == v)
            continue
        match = _SET_RE.match(req)
        if not match:
            raise ApiError(400, f"unable to parse requirement: {req!r} in labelSelector {text!r}")
        negated, key, op, values = match.groups()
        if op:
            if negated:
                raise ApiError(400, f"unable to parse requirement: {req!r}")
            vals = {v.strip() for v in values.split(",") if v.strip()}
            if op == "in":
                checks.append(lambda labels, k=key, vs=vals: labels.get(k) in vs)
            else:
                checks.append(lambda labels, k=key, vs=vals: labels.get(k) not in vs)
        elif negated:
            checks.append(lambda labels, k=key: k not in labels)
        else:
            checks.append(lambda labels, k=key: k in labels)

    def matches(obj: dict[str, Any]) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(check(labels) for check in checks)

    return matches


def field_value(obj: dict[str, Any], path: str) -> str:
    node: Any = obj
    for part in path.split("."):
        if not isinstance(node, dict):
            return ""
        node = node.get(part)
    if node is None:
        return ""
    if isinstance(node, bool):
        return "true" if node else "false"
    return str(node)


def parse_field_selector(text: str | None) -> Matcher | None:
    """`metadata.name=x,status.phase!=Running` -> a predicate on the object's fields."""
    if not text:
        return None
    checks = []
    for req in _split_requirements(text):
        match = re.match(r"^\s*([A-Za-z0-9_.]+)\s*(==|=|!=)\s*(.*?)\s*$", req)
        if not match:
            raise ApiError(400, f"invalid field selector: {req!r}")
        path, op, value = match.groups()
        checks.append((path, op == "!=", value))

    def matches(obj: dict[str, Any]) -> bool:
        return all(
            (field_value(obj, path) != value) if neg else (field_value(obj, path) == value)
            for path, neg, value in checks
        )

    return matches


def exact_name(text: str | None) -> str | None:
    """The name a field selector pins (`metadata.name=x`), to look one object up instead of scanning."""
    if not text:
        return None
    for req in _split_requirements(text):
        match = re.match(r"^\s*metadata\.name\s*==?\s*(.*?)\s*$", req)
        if match:
            return match.group(1)
    return None


def combine(*matchers: Matcher | None) -> Matcher | None:
    active = [m for m in matchers if m is not None]
    if not active:
        return None
    if len(active) == 1:
        return active[0]
    return lambda obj: all(m(obj) for m in active)
