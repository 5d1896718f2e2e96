"""How a refused spec is reported: the field to blame as a dotted camelCase path, what was given (shortened),
and how to fix it. The operator puts these messages in events and status, so they never echo large values."""

from __future__ import annotations

from typing import Any

from . import schema


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
        pattern = error.get("ctx", {}).get("pattern", "")
        return path, f"{shorten(given)} is not valid here; {_pattern_hint(path, pattern)}"
    message = error["msg"].removeprefix("Value error, ")
    if given is not None and not isinstance(given, dict | list) and kind != "value_error":
        return path, f"{message}; got {shorten(given)}"
    return path, message


def shorten(value: Any) -> str:
    # Error messages end up in events and status: never echo a megabyte back.
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:60]}... ({len(text)} characters)"


# What each of schema.py's Kubernetes name patterns (by constant name) accepts, with an example.
_NAME_HINTS = {
    "DNS_LABEL_PATTERN": "use a DNS label: at most 63 lowercase letters, digits and '-', starting and ending "
    "with a letter or digit, e.g. team-a",
    "DNS_SUBDOMAIN_PATTERN": "use a DNS subdomain: lowercase letters, digits, '-' and '.', each dot-separated "
    "part starting and ending with a letter or digit, e.g. training-high or team-a.gpu",
    "QUALIFIED_NAME_PATTERN": "use a label key: an optional DNS-subdomain prefix and '/', then at most 63 letters, "
    "digits, '-', '_' or '.', starting and ending with a letter or digit, e.g. nvidia.com/gpu.product or disktype",
    "OPTIONAL_QUALIFIED_NAME_PATTERN": "use a label key (or leave it empty with operator: Exists): an optional "
    "DNS-subdomain prefix and '/', then at most 63 letters, digits, '-', '_' or '.', e.g. nvidia.com/gpu",
    "LABEL_VALUE_PATTERN": "use a label value: empty, or at most 63 letters, digits, '-', '_' or '.', starting and "
    "ending with a letter or digit, e.g. NVIDIA-H100-80GB-HBM3",
    "ENV_NAME_PATTERN": "use letters, digits, '_', '-' and '.', not starting with a digit and not '.', '..' or "
    "'..'-prefixed, e.g. NCCL_DEBUG",
    "CONFIG_MAP_KEY_PATTERN": "use a Secret or ConfigMap key: letters, digits, '-', '_' and '.', not '.', '..' or "
    "'..'-prefixed, e.g. api-key",
    "RESOURCE_NAME_PATTERN": "use an extended resource name, a domain and a name, e.g. nvidia.com/gpu or amd.com/gpu",
}


def _pattern_hint(path: str, pattern: str = "") -> str:
    if pattern == schema.FIELD_PATH_PATTERN:
        return (
            "use metadata.name, metadata.namespace, metadata.uid, spec.nodeName, spec.serviceAccountName, "
            "status.hostIP(s), status.podIP(s), metadata.labels['<key>'] or metadata.annotations['<key>']"
        )
    if pattern == schema.RESOURCE_FIELD_PATTERN:
        return "use limits. or requests. and cpu, memory, ephemeral-storage or hugepages-<size>, e.g. limits.cpu"
    for name, hint in _NAME_HINTS.items():
        if pattern and pattern == getattr(schema, name):
            return hint
    if path.startswith("model.source"):
        return "use hf://org/name, pvc://claim/path, s3://bucket/prefix or file:///path"
    if path.startswith("output.uri"):
        return "use pvc://claim/path, s3://bucket/prefix or file:///path"
    if path.startswith("dataset."):
        return "use pvc://claim/path/file.csv, s3://bucket/key, hf://org/dataset or file:///path"
    if path.endswith(("cpu", "memory")):
        return "use a Kubernetes quantity such as 8, 500m or 32Gi"
    return "see the CRD schema (kubectl explain finetunejob.spec) for the accepted form"
