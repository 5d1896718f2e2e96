"""How a refused spec is reported: the field to blame as a dotted camelCase path, what was given (shortened),
and how to fix it. The operator puts these messages in events and status, so they never echo large values."""

from __future__ import annotations

from typing import Any


class FieldRuleError(ValueError):
    """A cross-field rule broken; `field` is the camelCase path, relative to the model that checks it,
    of the field to blame (the CRD's CEL rule reports the same path through its fieldPath)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class InvalidSpec(ValueError):
    """A spec the operator refuses; `field` is the dotted camelCase path, `message` says how to fix it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"spec.{field}: {message}" if field else f"spec: {message}")
        self.field = field
        self.message = message


def describe(error: dict[str, Any]) -> tuple[str, str]:
    """(dotted field path, message) for one of pydantic's `ValidationError.errors()`."""
    loc = [str(part) for part in error["loc"]]
    rule = error.get("ctx", {}).get("error")
    if isinstance(rule, FieldRuleError) and rule.field:
        loc.append(rule.field)
    path = ".".join(loc)
    given = error.get("input")
    kind = error["type"]
    if kind == "missing":
        return path, "is required"
    if kind == "extra_forbidden":
        return path, "is not a known field (check its spelling and nesting)"
    if kind == "literal_error":
        expected = error.get("ctx", {}).get("expected", "")
        return path, f"must be one of {expected}; got {shorten(given)}"
    if kind == "string_pattern_mismatch":
        return path, f"{shorten(given)} is not valid here; {_pattern_hint(path)}"
    message = error["msg"].removeprefix("Value error, ")
    if given is not None and not isinstance(given, dict | list) and kind != "value_error":
        return path, f"{message}; got {shorten(given)}"
    return path, message


def shorten(value: Any) -> str:
    # Error messages end up in events and status: never echo a megabyte back.
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:60]}... ({len(text)} characters)"


def _pattern_hint(path: str) -> str:
    if path.startswith("model.source"):
        return "use hf://org/name, pvc://claim/path, s3://bucket/prefix or file:///path"
    if path.startswith("output.uri"):
        return "use pvc://claim/path, s3://bucket/prefix or file:///path"
    if path.startswith("dataset."):
        return "use pvc://claim/path/file.csv, s3://bucket/key, hf://org/dataset or file:///path"
    if path.endswith(("cpu", "memory")):
        return "use a Kubernetes quantity such as 8, 500m or 32Gi"
    if path.endswith(("queueName", "name")):
        return "use a DNS label: lowercase letters, digits and '-', e.g. team-a-queue"
    return "see the CRD schema (kubectl explain finetunejob.spec) for the accepted form"
