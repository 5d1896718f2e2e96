"""Validation of a pruned and defaulted object: type, OpenAPI keywords, combinators, object and list rules
(list types, transition rules' old values), then the CEL `x-kubernetes-validations`; every violation a `Cause`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from celpy import celtypes

from .cel import evaluate, to_cel
from .formats import go_regex, valid_date
from .values import MISSING, ROOT_KEPT_FIELDS, child_path, has_type, is_integer, is_number, json_type, show

_INT_RANGES = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}
_OLD_SELF = re.compile(r"\boldSelf\b")


@dataclass(frozen=True)
class Cause:
    """One violation, shaped like a metav1.StatusCause."""

    field: str
    message: str
    reason: str = "FieldValueInvalid"


class SchemaViolation(Exception):
    """The object breaks its schema; `.causes` is [(field path, message)], e.g. ("spec.env[0].name", "...")."""

    def __init__(self, details: list[Cause]) -> None:
        self.details = details
        self.causes = [(cause.field, cause.message) for cause in details]
        super().__init__("; ".join(f"{field}: {message}" if field else message for field, message in self.causes))

    def status_causes(self) -> list[dict[str, str]]:
        """The causes as a 422 Status's `details.causes`."""
        return [{"reason": c.reason, "message": c.message, "field": c.field} for c in self.details]


class Validator:
    """Walks a value with its schema and appends every violation, of the value and its subtree, to `causes`."""

    def __init__(self, causes: list[Cause]) -> None:
        self.causes = causes

    def add(self, path: str, message: str, reason: str = "FieldValueInvalid") -> None:
        self.causes.append(Cause(path, message, reason))

    def check(self, value: Any, schema: dict[str, Any], path: str, old: Any, root: bool = False) -> None:
        before = len(self.causes)
        if self._check_type(value, schema, path):
            self._check_keywords(value, schema, path)
            self._check_combinators(value, schema, path)
            if isinstance(value, dict):
                self._check_object(value, schema, path, old, root)
            elif isinstance(value, list):
                self._check_array(value, schema, path, old)
        self._check_rules(value, schema, path, old, subtree_valid=len(self.causes) == before)

    def _check_type(self, value: Any, schema: dict[str, Any], path: str) -> bool:
        if value is None:
            if schema.get("nullable", False):
                return False
            expected = (
                "integer or string" if schema.get("x-kubernetes-int-or-string") else schema.get("type", "a value")
            )
            self.add(path, f'Invalid value: "null": must be of type {expected}', "FieldValueTypeInvalid")
            return False
        if schema.get("x-kubernetes-int-or-string"):
            if is_integer(value) or isinstance(value, str):
                return True
            self.add(
                path, f'Invalid value: "{json_type(value)}": must be an integer or a string', "FieldValueTypeInvalid"
            )
            return False
        expected = schema.get("type")
        if expected is None or has_type(value, expected):
            return True
        self.add(path, f'Invalid value: "{json_type(value)}": must be of type {expected}', "FieldValueTypeInvalid")
        return False

    def _check_keywords(self, value: Any, schema: dict[str, Any], path: str) -> None:
        if "enum" in schema and value not in schema["enum"]:
            supported = ", ".join(show(option) for option in schema["enum"])
            self.add(path, f"Unsupported value: {show(value)}: supported values: {supported}", "FieldValueNotSupported")
        if is_number(value):
            self._check_number(value, schema, path)
        elif isinstance(value, str):
            self._check_string(value, schema, path)

    def _check_combinators(self, value: Any, schema: dict[str, Any], path: str) -> None:
        # Structural schemas allow value validations (e.g. `required`) inside allOf/anyOf/oneOf/not; like the
        # API server, a failed combinator is one cause at the node, not the branches' own causes.
        shown = json_type(value)
        if "allOf" in schema and not all(_matches(value, branch, path) for branch in schema["allOf"]):
            self.add(path, f'Invalid value: "{shown}": must validate all the schemas (allOf)')
        if "anyOf" in schema and not any(_matches(value, branch, path) for branch in schema["anyOf"]):
            self.add(path, f'Invalid value: "{shown}": must validate at least one schema (anyOf)')
        if "oneOf" in schema:
            valid = sum(_matches(value, branch, path) for branch in schema["oneOf"])
            if valid != 1:
                found = "Found none valid" if valid == 0 else f"Found {valid} valid alternatives"
                self.add(path, f'Invalid value: "{shown}": must validate one and only one schema (oneOf). {found}')
        if "not" in schema and _matches(value, schema["not"], path):
            self.add(path, f'Invalid value: "{shown}": must not validate the schema (not)')

    def _check_number(self, value: int | float, schema: dict[str, Any], path: str) -> None:
        low, high = schema.get("minimum"), schema.get("maximum")
        if low is not None:
            if schema.get("exclusiveMinimum", False) and value <= low:
                self.add(path, f"Invalid value: {show(value)}: must be greater than {low}")
            elif value < low:
                self.add(path, f"Invalid value: {show(value)}: must be greater than or equal to {low}")
        if high is not None:
            if schema.get("exclusiveMaximum", False) and value >= high:
                self.add(path, f"Invalid value: {show(value)}: must be less than {high}")
            elif value > high:
                self.add(path, f"Invalid value: {show(value)}: must be less than or equal to {high}")
        bounds = _INT_RANGES.get(schema.get("format", ""))
        if bounds and is_integer(value) and not bounds[0] <= value <= bounds[1]:
            self.add(path, f"Invalid value: {show(value)}: must be a valid {schema['format']}")

    def _check_string(self, value: str, schema: dict[str, Any], path: str) -> None:
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            self.add(path, f"Too long: may not be longer than {schema['maxLength']}", "FieldValueTooLong")
        if "minLength" in schema and len(value) < schema["minLength"]:
            self.add(path, f"Invalid value: {show(value)}: must be at least {schema['minLength']} chars long")
        if "pattern" in schema and not go_regex(schema["pattern"]).search(value):
            self.add(path, f"Invalid value: {show(value)}: must match '{schema['pattern']}'")
        fmt = schema.get("format")
        if fmt in ("date-time", "date") and not valid_date(value, fmt):
            self.add(path, f"Invalid value: {show(value)}: must be a valid {fmt} (RFC 3339)")

    def _check_object(self, value: dict[str, Any], schema: dict[str, Any], path: str, old: Any, root: bool) -> None:
        for key in schema.get("required", []):
            if key not in value:
                self.add(child_path(path, key), "Required value", "FieldValueRequired")
        count = len(value) - (sum(key in value for key in ROOT_KEPT_FIELDS) if root else 0)
        if "maxProperties" in schema and count > schema["maxProperties"]:
            self.add(path, f"Too many: {count}: must have at most {schema['maxProperties']} items", "FieldValueTooMany")
        if "minProperties" in schema and count < schema["minProperties"]:
            self.add(path, f"Invalid value: {count}: must have at least {schema['minProperties']} items")
        properties = schema.get("properties", {})
        additional = schema.get("additionalProperties")
        for key, item in value.items():
            sub = properties.get(key, additional if isinstance(additional, dict) else None)
            if sub is None or (root and key in ROOT_KEPT_FIELDS and key not in properties):
                continue
            old_item = old.get(key, MISSING) if isinstance(old, dict) else MISSING
            self.check(item, sub, child_path(path, key) if key in properties else f"{path}[{key}]", old_item)

    def _check_array(self, value: list[Any], schema: dict[str, Any], path: str, old: Any) -> None:
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            self.add(path, f"Too many: {len(value)}: must have at most {schema['maxItems']} items", "FieldValueTooMany")
            return  # like the API server: a list this long is not inspected item by item
        if "minItems" in schema and len(value) < schema["minItems"]:
            self.add(path, f"Invalid value: {len(value)}: must have at least {schema['minItems']} items")
        list_type = schema.get("x-kubernetes-list-type", "atomic")
        keys = schema.get("x-kubernetes-list-map-keys", [])
        seen: list[Any] = []
        for index, item in enumerate(value):
            identity = tuple(item.get(k) for k in keys) if list_type == "map" and isinstance(item, dict) else item
            if list_type in ("map", "set"):
                if identity in seen:
                    self.add(f"{path}[{index}]", f"Duplicate value: {show(item)}", "FieldValueDuplicate")
                seen.append(identity)
            if isinstance(schema.get("items"), dict):
                self.check(item, schema["items"], f"{path}[{index}]", _old_item(old, item, list_type, keys))

    def _check_rules(self, value: Any, schema: dict[str, Any], path: str, old: Any, subtree_valid: bool) -> None:
        rules = schema.get("x-kubernetes-validations", [])
        if not rules or value is None:
            return
        try:
            self_value = to_cel(value, schema)
        except ValueError as exc:
            # Beyond CEL's int64 (a real API server refuses such a number when it decodes the body).
            self.add(path, f"Invalid value: {show(value)}: not representable ({exc}); integers must fit in 64 bits")
            return
        for rule in rules:
            expression = rule["rule"]
            activation = {"self": self_value}
            if _OLD_SELF.search(expression):
                if old is MISSING or old is None:
                    continue  # transition rules only run on updates of an existing value
                activation["oldSelf"] = to_cel(old, schema)
            outcome = evaluate(expression, activation)
            target = child_path(path, rule["fieldPath"].lstrip(".")) if rule.get("fieldPath") else path
            if not isinstance(outcome, celtypes.BoolType):
                # An expression that errors on an already-invalid subtree adds noise, not information.
                if subtree_valid:
                    self.add(target, f"Internal error: rule {expression!r} failed to evaluate: {str(outcome)[:200]}")
                continue
            if not outcome:
                self.add(target, _rule_message(rule, activation), rule.get("reason", "FieldValueInvalid"))


def _matches(value: Any, branch: dict[str, Any], path: str) -> bool:
    causes: list[Cause] = []
    Validator(causes).check(value, branch, path, MISSING)
    return not causes


def _old_item(old: Any, item: Any, list_type: str, keys: list[str]) -> Any:
    # Transition rules see an item's old value only where the API server can correlate it: map lists by
    # their keys, sets by value; atomic lists never.
    if not isinstance(old, list):
        return MISSING
    if list_type == "map" and isinstance(item, dict):
        for candidate in old:
            if isinstance(candidate, dict) and all(candidate.get(k) == item.get(k) for k in keys):
                return candidate
    if list_type == "set" and item in old:
        return item
    return MISSING


def _rule_message(rule: dict[str, Any], activation: dict[str, Any]) -> str:
    if "messageExpression" in rule:
        produced = evaluate(rule["messageExpression"], activation)
        if isinstance(produced, str) and produced.strip():
            return str(produced)
    return rule.get("message") or f"failed rule: {rule['rule']}"
