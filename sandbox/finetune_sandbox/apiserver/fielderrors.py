"""Field errors as apimachinery's `field.Error` words them, and the 422 causes they become.

A cause is `(field, message, reason)`: the message is the error's body without the field (`Unsupported value:
"Sometimes": supported values: "Equal", "Exists"`), the reason its `details.causes[].reason` (`FieldValueNotSupported`).
Values are quoted the way Go's `%q` / `%v` print them, so messages match the real server's byte for byte for the
strings, numbers and booleans that the validators here report.
"""

from __future__ import annotations

import json
from typing import Any

Cause = tuple[str, str, str]


def go_value(value: Any) -> str:
    """A bad value as `field.Error.ErrorBody` prints it: strings quoted, numbers and booleans bare, nil as null."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def invalid(field: str, value: Any, detail: str) -> Cause:
    return field, f"Invalid value: {go_value(value)}" + (f": {detail}" if detail else ""), "FieldValueInvalid"


def not_supported(field: str, value: Any, supported: list[str] | tuple[str, ...]) -> Cause:
    allowed = ", ".join(json.dumps(v) for v in supported)
    return field, f"Unsupported value: {go_value(value)}: supported values: {allowed}", "FieldValueNotSupported"


def required(field: str, detail: str = "") -> Cause:
    return field, "Required value" + (f": {detail}" if detail else ""), "FieldValueRequired"


def forbidden(field: str, detail: str) -> Cause:
    return field, "Forbidden" + (f": {detail}" if detail else ""), "FieldValueForbidden"
