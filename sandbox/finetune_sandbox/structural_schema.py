"""What a real API server does to a custom resource with a structural schema, in one pure function.

`apply_structural_schema` prunes unknown fields, applies defaults and validates (OpenAPI keywords and
CEL `x-kubernetes-validations`), in the order kube-apiserver does: prune (nulls of non-nullable fields
too), default (recursing into defaulted objects), then validate. The sandbox API server answers a
`SchemaViolation` with a 422 whose causes come from `.status_causes()`; the agreement tests use the same
function to hold the CRD and `spec.py` to one meaning.

Deliberate limits: CEL cost estimation is not modelled (no cost budget is enforced), `optionalOldSelf`
is not supported, date-time strings reach CEL as strings (not timestamps), and regular expressions run on
Python's engine with Go's meaning of `$` (end of text).
"""

from __future__ import annotations

import copy
import datetime
import functools
import json
import re
from dataclasses import dataclass
from typing import Any

import celpy
from celpy import celtypes

# kube-apiserver refuses request bodies beyond this (3 MiB) before decoding them.
MAX_REQUEST_BYTES = 3 * 1024 * 1024
ROOT_KEPT_FIELDS = ("apiVersion", "kind", "metadata")

_INT_RANGES = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}
_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_OLD_SELF = re.compile(r"\boldSelf\b")
_MISSING = object()


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
    result = _normalize(copy.deepcopy(obj), schema, "", unknown, root=True)
    causes = [Cause(path, f'strict decoding error: unknown field "{path}"') for path in unknown] if strict else []
    _Validator(causes).check(result, schema, "", _MISSING if old is None else old, root=True)
    if causes:
        raise SchemaViolation(causes)
    return result


# --- pruning and defaulting -----------------------------------------------------------------------


def _normalize(value: Any, schema: dict[str, Any], path: str, unknown: list[str], root: bool = False) -> Any:
    if isinstance(value, dict) and _describes_object(schema):
        return _normalize_object(value, schema, path, unknown, root)
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        items = schema["items"]
        return [
            item if item is None else _normalize(item, items, f"{path}[{i}]", unknown) for i, item in enumerate(value)
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
        child = _child(path, key)
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
        out[key] = _normalize(item, sub, child, unknown)
    for key, sub in properties.items():
        if key not in out and "default" in sub:
            out[key] = _normalize(copy.deepcopy(sub["default"]), sub, _child(path, key), unknown)
    return out


def _describes_object(schema: dict[str, Any]) -> bool:
    return schema.get("type") == "object" or "properties" in schema or "additionalProperties" in schema


# --- validation -----------------------------------------------------------------------------------


class _Validator:
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
            if _is_integer(value) or isinstance(value, str):
                return True
            self.add(
                path, f'Invalid value: "{_json_type(value)}": must be an integer or a string', "FieldValueTypeInvalid"
            )
            return False
        expected = schema.get("type")
        if expected is None or _has_type(value, expected):
            return True
        self.add(path, f'Invalid value: "{_json_type(value)}": must be of type {expected}', "FieldValueTypeInvalid")
        return False

    def _check_keywords(self, value: Any, schema: dict[str, Any], path: str) -> None:
        if "enum" in schema and value not in schema["enum"]:
            supported = ", ".join(_show(option) for option in schema["enum"])
            self.add(
                path, f"Unsupported value: {_show(value)}: supported values: {supported}", "FieldValueNotSupported"
            )
        if _is_number(value):
            self._check_number(value, schema, path)
        elif isinstance(value, str):
            self._check_string(value, schema, path)

    def _check_combinators(self, value: Any, schema: dict[str, Any], path: str) -> None:
        # Structural schemas allow value validations (e.g. `required`) inside allOf/anyOf/oneOf/not; like the
        # API server, a failed combinator is one cause at the node, not the branches' own causes.
        shown = _json_type(value)
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
                self.add(path, f"Invalid value: {_show(value)}: must be greater than {low}")
            elif value < low:
                self.add(path, f"Invalid value: {_show(value)}: must be greater than or equal to {low}")
        if high is not None:
            if schema.get("exclusiveMaximum", False) and value >= high:
                self.add(path, f"Invalid value: {_show(value)}: must be less than {high}")
            elif value > high:
                self.add(path, f"Invalid value: {_show(value)}: must be less than or equal to {high}")
        bounds = _INT_RANGES.get(schema.get("format", ""))
        if bounds and _is_integer(value) and not bounds[0] <= value <= bounds[1]:
            self.add(path, f"Invalid value: {_show(value)}: must be a valid {schema['format']}")

    def _check_string(self, value: str, schema: dict[str, Any], path: str) -> None:
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            self.add(path, f"Too long: may not be longer than {schema['maxLength']}", "FieldValueTooLong")
        if "minLength" in schema and len(value) < schema["minLength"]:
            self.add(path, f"Invalid value: {_show(value)}: must be at least {schema['minLength']} chars long")
        if "pattern" in schema and not _go_regex(schema["pattern"]).search(value):
            self.add(path, f"Invalid value: {_show(value)}: must match '{schema['pattern']}'")
        fmt = schema.get("format")
        if fmt in ("date-time", "date") and not _valid_date(value, fmt):
            self.add(path, f"Invalid value: {_show(value)}: must be a valid {fmt} (RFC 3339)")

    def _check_object(self, value: dict[str, Any], schema: dict[str, Any], path: str, old: Any, root: bool) -> None:
        for key in schema.get("required", []):
            if key not in value:
                self.add(_child(path, key), "Required value", "FieldValueRequired")
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
            old_item = old.get(key, _MISSING) if isinstance(old, dict) else _MISSING
            self.check(item, sub, _child(path, key) if key in properties else f"{path}[{key}]", old_item)

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
                    self.add(f"{path}[{index}]", f"Duplicate value: {_show(item)}", "FieldValueDuplicate")
                seen.append(identity)
            if isinstance(schema.get("items"), dict):
                self.check(item, schema["items"], f"{path}[{index}]", _old_item(old, item, list_type, keys))

    def _check_rules(self, value: Any, schema: dict[str, Any], path: str, old: Any, subtree_valid: bool) -> None:
        rules = schema.get("x-kubernetes-validations", [])
        if not rules or value is None:
            return
        try:
            self_value = _to_cel(value, schema)
        except ValueError as exc:
            # Beyond CEL's int64 (a real API server refuses such a number when it decodes the body).
            self.add(path, f"Invalid value: {_show(value)}: not representable ({exc}); integers must fit in 64 bits")
            return
        for rule in rules:
            expression = rule["rule"]
            activation = {"self": self_value}
            if _OLD_SELF.search(expression):
                if old is _MISSING or old is None:
                    continue  # transition rules only run on updates of an existing value
                activation["oldSelf"] = _to_cel(old, schema)
            outcome = _evaluate(expression, activation)
            target = _child(path, rule["fieldPath"].lstrip(".")) if rule.get("fieldPath") else path
            if not isinstance(outcome, celtypes.BoolType):
                # An expression that errors on an already-invalid subtree adds noise, not information.
                if subtree_valid:
                    self.add(target, f"Internal error: rule {expression!r} failed to evaluate: {str(outcome)[:200]}")
                continue
            if not outcome:
                self.add(target, _rule_message(rule, activation), rule.get("reason", "FieldValueInvalid"))


def _matches(value: Any, branch: dict[str, Any], path: str) -> bool:
    causes: list[Cause] = []
    _Validator(causes).check(value, branch, path, _MISSING)
    return not causes


def _old_item(old: Any, item: Any, list_type: str, keys: list[str]) -> Any:
    # Transition rules see an item's old value only where the API server can correlate it: map lists by
    # their keys, sets by value; atomic lists never.
    if not isinstance(old, list):
        return _MISSING
    if list_type == "map" and isinstance(item, dict):
        for candidate in old:
            if isinstance(candidate, dict) and all(candidate.get(k) == item.get(k) for k in keys):
                return candidate
    if list_type == "set" and item in old:
        return item
    return _MISSING


def _rule_message(rule: dict[str, Any], activation: dict[str, Any]) -> str:
    if "messageExpression" in rule:
        produced = _evaluate(rule["messageExpression"], activation)
        if isinstance(produced, str) and produced.strip():
            return str(produced)
    return rule.get("message") or f"failed rule: {rule['rule']}"


# --- CEL ------------------------------------------------------------------------------------------


def _lower_ascii(text: celtypes.StringType) -> celtypes.StringType:
    return celtypes.StringType(text.lower())


def _upper_ascii(text: celtypes.StringType) -> celtypes.StringType:
    return celtypes.StringType(text.upper())


def _trim(text: celtypes.StringType) -> celtypes.StringType:
    return celtypes.StringType(text.strip())


# A few of Kubernetes' CEL string extensions that rules commonly use; celpy has the CEL standard library.
_KUBERNETES_FUNCTIONS = {"lowerAscii": _lower_ascii, "upperAscii": _upper_ascii, "trim": _trim}
_CEL = celpy.Environment()


@functools.lru_cache(maxsize=512)
def _program(expression: str) -> Any:
    return _CEL.program(_CEL.compile(expression), functions=_KUBERNETES_FUNCTIONS)


def _evaluate(expression: str, activation: dict[str, Any]) -> Any:
    try:
        return _program(expression).evaluate(activation)
    except (celpy.CELEvalError, celpy.CELParseError) as exc:
        return exc
    except (TypeError, ValueError, KeyError) as exc:  # celpy leaks some Python errors from overloads
        return exc


def _to_cel(value: Any, schema: dict[str, Any]) -> Any:
    """Convert with the schema's types, as the API server does: a `number` is always a CEL double."""
    if value is None:
        return None
    if isinstance(value, bool):
        return celtypes.BoolType(value)
    if isinstance(value, int | float) and schema.get("type") == "number":
        return celtypes.DoubleType(float(value))
    if isinstance(value, int):
        return celtypes.IntType(value)
    if isinstance(value, float):
        return celtypes.DoubleType(value)
    if isinstance(value, str):
        return celtypes.StringType(value)
    if isinstance(value, list):
        items = schema.get("items") if isinstance(schema.get("items"), dict) else {}
        return celtypes.ListType([_to_cel(item, items) for item in value])
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        additional = schema.get("additionalProperties")
        fallback = additional if isinstance(additional, dict) else {}
        return celtypes.MapType(
            {celtypes.StringType(k): _to_cel(v, properties.get(k, fallback)) for k, v in value.items()}
        )
    return celpy.json_to_cel(value)


# --- helpers --------------------------------------------------------------------------------------


def _child(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _has_type(value: Any, expected: str) -> bool:
    checks = {
        "object": lambda v: isinstance(v, dict),
        "array": lambda v: isinstance(v, list),
        "string": lambda v: isinstance(v, str),
        "boolean": lambda v: isinstance(v, bool),
        "integer": _is_integer,
        "number": _is_number,
    }
    return checks.get(expected, lambda v: True)(value)


def _json_type(value: Any) -> str:
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


def _show(value: Any) -> str:
    # Messages land in events and kubectl output: never echo a megabyte back.
    text = json.dumps(value, default=str)
    return text if len(text) <= 80 else f"{text[:60]}...({len(text)} chars)"


def _valid_date(value: str, fmt: str) -> bool:
    if not (_DATE_TIME if fmt == "date-time" else _DATE).match(value):
        return False
    try:
        datetime.datetime.fromisoformat(value.upper().replace("Z", "+00:00").replace(" ", "T"))
    except ValueError:
        return False
    return True


@functools.lru_cache(maxsize=512)
def _go_regex(pattern: str) -> re.Pattern[str]:
    """Compile an OpenAPI pattern with Go's meaning of `$` (end of text: Python's `\\Z`), so a trailing
    newline cannot sneak past `^...$` as it would with Python's `$`."""
    out, index, in_class = [], 0, False
    while index < len(pattern):
        char = pattern[index]
        if char == "\\":
            out.append(pattern[index : index + 2])
            index += 2
            continue
        if in_class and char == "]":
            in_class = False
        elif not in_class and char == "[":
            in_class = True
        elif not in_class and char == "$":
            char = r"\Z"
        out.append(char)
        index += 1
    return re.compile("".join(out))


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
