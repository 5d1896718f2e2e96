"""CEL for `x-kubernetes-validations`: values converted with the schema's types, as the API server does, and
expressions evaluated with celpy plus the few Kubernetes string extensions that rules commonly use."""

from __future__ import annotations

import functools
from typing import Any

import celpy
from celpy import celtypes


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


def evaluate(expression: str, activation: dict[str, Any]) -> Any:
    try:
        return _program(expression).evaluate(activation)
    except (celpy.CELEvalError, celpy.CELParseError) as exc:
        return exc
    except (TypeError, ValueError, KeyError) as exc:  # celpy leaks some Python errors from overloads
        return exc


def to_cel(value: Any, schema: dict[str, Any]) -> Any:
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
        return celtypes.ListType([to_cel(item, items) for item in value])
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        additional = schema.get("additionalProperties")
        fallback = additional if isinstance(additional, dict) else {}
        return celtypes.MapType(
            {celtypes.StringType(k): to_cel(v, properties.get(k, fallback)) for k, v in value.items()}
        )
    return celpy.jsonto_cel(value)
