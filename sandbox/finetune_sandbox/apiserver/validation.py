"""Validation shared by all kinds (names), the built-in kinds' own few checks, and the bridge to the CRD
structural-schema validator."""

from __future__ import annotations

import re
from typing import Any

from .resources import JOB_KEY, POD_KEY, ResourceType

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def name_problems(name: str, label: bool = False) -> list[str]:
    """Messages like the real server's for a name that is not a DNS subdomain (or label)."""
    if label:
        if len(name) > 63 or not _DNS_LABEL.match(name):
            return [
                f"Invalid value: {name!r}: a lowercase RFC 1123 label must consist of lower case "
                f"alphanumeric characters or '-', and must start and end with an alphanumeric character "
                f"(e.g. 'my-name',  or '123-abc'), at most 63 characters"
            ]
        return []
    if len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
        return [
            f"Invalid value: {name!r}: a lowercase RFC 1123 subdomain must consist of lower case "
            f"alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character "
            f"(e.g. 'example.com'), at most 253 characters"
        ]
    return []


def builtin_problems(rt: ResourceType, obj: dict[str, Any]) -> list[tuple[str, str]]:
    """(field, message) for what the real server refuses in a pod or a Job that clients here could send."""
    causes = []
    if rt.key == POD_KEY:
        containers = (obj.get("spec") or {}).get("containers") or []
        if not containers:
            causes.append(("spec.containers", "Required value"))
        for n, container in enumerate(containers):
            for field in ("name", "image"):
                if not (container or {}).get(field):
                    causes.append((f"spec.containers[{n}].{field}", "Required value"))
    elif rt.key == JOB_KEY:
        policy = (((obj.get("spec") or {}).get("template") or {}).get("spec") or {}).get("restartPolicy")
        if policy not in ("Never", "OnFailure"):
            causes.append(
                (
                    "spec.template.spec.restartPolicy",
                    f'Unsupported value: {policy!r}: supported values: "OnFailure", "Never"',
                )
            )
    return causes


def validate_custom_resource(
    obj: dict[str, Any], schema: dict[str, Any] | None, old: dict[str, Any] | None, strict: bool = False
) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """Prune, default and validate a custom resource with its CRD version's schema; return (object, causes).

    The validator is imported lazily: it pulls in the CEL interpreter, which built-in-only servers never need.
    """
    if not schema:
        return obj, []
    from finetune_sandbox.structural_schema import SchemaViolation, apply_structural_schema

    try:
        return apply_structural_schema(obj, schema, old, strict=strict), []
    except SchemaViolation as exc:
        return obj, exc.status_causes()
