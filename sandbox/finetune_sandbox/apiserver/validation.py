"""Validation shared by all kinds (names), the built-in kinds' own checks, and the bridge to the CRD
structural-schema validator.

Built-in kinds, with upstream's messages (pkg/apis/*/validation): a Pod's spec and a Job's pod template
(podspec.py), a Job's restart policy, a ResourceQuota's `spec.hard` and scopes, a PriorityClass's value and
preemption policy. Each check returns causes `(field, message, reason)` (fielderrors.py).
"""

from __future__ import annotations

from typing import Any

from .fielderrors import Cause, forbidden, invalid, not_supported, required
from .identifiers import is_dns1123_label, is_dns1123_subdomain, is_qualified_name
from .podspec import labels_causes, pod_spec_causes, pod_template_causes
from .quantity import parse_quantity
from .resources import JOB_KEY, POD_KEY, PRIORITY_CLASS_KEY, QUOTA_KEY, ResourceType

# pkg/apis/core/helper: the quota resources a name without a '/' must be one of.
STANDARD_QUOTA_RESOURCES = frozenset(
    {
        "pods",
        "services",
        "replicationcontrollers",
        "resourcequotas",
        "secrets",
        "configmaps",
        "persistentvolumeclaims",
        "services.nodeports",
        "services.loadbalancers",
        "cpu",
        "memory",
        "ephemeral-storage",
        "requests.cpu",
        "requests.memory",
        "requests.storage",
        "requests.ephemeral-storage",
        "limits.cpu",
        "limits.memory",
        "limits.ephemeral-storage",
    }
)
QUOTA_SCOPES = (
    "Terminating",
    "NotTerminating",
    "BestEffort",
    "NotBestEffort",
    "PriorityClass",
    "CrossNamespacePodAffinity",
)
PREEMPTION_POLICIES = ("PreemptLowerPriority", "Never")
HIGHEST_USER_DEFINABLE_PRIORITY = 1_000_000_000
SYSTEM_PRIORITY_CLASS_PREFIX = "system-"
# pkg/apis/scheduling: created by the API server at start; name -> (value, description).
SYSTEM_PRIORITY_CLASSES = {
    "system-node-critical": (
        2_000_001_000,
        "Used for system critical pods that must not be moved from their current node.",
    ),
    "system-cluster-critical": (
        2_000_000_000,
        "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary.",
    ),
}


def name_causes(name: str, label: bool = False) -> list[Cause]:
    """`metadata.name` as the real server checks it: a DNS-1123 subdomain (a label for namespaces)."""
    problems = is_dns1123_label(name) if label else is_dns1123_subdomain(name)
    return [invalid("metadata.name", name, problem) for problem in problems]


def builtin_causes(rt: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None) -> list[Cause]:
    """What the real server refuses in the built-in kinds clients here send (new objects and updates)."""
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    if rt.key == POD_KEY:
        return labels_causes((obj.get("metadata") or {}).get("labels"), "metadata.labels") + pod_spec_causes(
            spec, "spec"
        )
    if rt.key == JOB_KEY:
        return pod_template_causes(spec.get("template"), "spec.template") + _job_restart_policy(spec)
    if rt.key == QUOTA_KEY:
        return _quota_spec_causes(spec)
    if rt.key == PRIORITY_CLASS_KEY:
        return _priority_class_causes(obj, old)
    return []


def _job_restart_policy(spec: dict[str, Any]) -> list[Cause]:
    policy = ((spec.get("template") or {}).get("spec") or {}).get("restartPolicy") or ""
    path = "spec.template.spec.restartPolicy"
    if policy in ("Always", ""):
        return [required(path, 'valid values: "OnFailure", "Never"')]
    if policy not in ("OnFailure", "Never"):
        return [not_supported(path, policy, ("OnFailure", "Never"))]
    if spec.get("podFailurePolicy") and policy != "Never":
        return [invalid(path, policy, 'only "Never" is supported when podFailurePolicy is specified')]
    return []


def _quota_spec_causes(spec: dict[str, Any]) -> list[Cause]:
    causes: list[Cause] = []
    for name, value in sorted((spec.get("hard") or {}).items()):
        path = f"spec.hard[{name}]"
        problems = is_qualified_name(name)
        causes += [invalid(path, name, problem) for problem in problems]
        if not problems and "/" not in name and not _standard_quota_resource(name):
            causes.append(invalid(path, name, "must be a standard resource for quota"))
        try:
            if parse_quantity(value).value < 0:
                causes.append(invalid(path, str(value), "must be greater than or equal to 0"))
        except ValueError:
            continue  # refused before validation, when the request is decoded (admission's canonical form)
    scopes = spec.get("scopes") or []
    if any(scope not in QUOTA_SCOPES for scope in scopes):
        causes.append(invalid("spec.scopes", scopes, "unsupported scope"))
    return causes


def _standard_quota_resource(name: str) -> bool:
    return name in STANDARD_QUOTA_RESOURCES or name.startswith(("hugepages-", "requests.hugepages-"))


def _priority_class_causes(obj: dict[str, Any], old: dict[str, Any] | None) -> list[Cause]:
    causes: list[Cause] = []
    name = (obj.get("metadata") or {}).get("name", "")
    value = obj.get("value", 0)
    if not isinstance(value, int) or isinstance(value, bool):
        causes.append(invalid("value", value, "must be an integer"))
        value = 0
    if name.startswith(SYSTEM_PRIORITY_CLASS_PREFIX):
        problem = _unknown_system_class(name, value, bool(obj.get("globalDefault")))
        if problem:
            causes.append(
                forbidden(
                    "metadata.name",
                    f"priority class names with '{SYSTEM_PRIORITY_CLASS_PREFIX}' prefix are reserved for system use "
                    f"only. error: {problem}",
                )
            )
    elif value > HIGHEST_USER_DEFINABLE_PRIORITY and not name.startswith(SYSTEM_PRIORITY_CLASS_PREFIX):
        causes.append(
            forbidden("value", f"maximum allowed value of a user defined priority is {HIGHEST_USER_DEFINABLE_PRIORITY}")
        )
    policy = obj.get("preemptionPolicy")
    if policy is not None and policy not in PREEMPTION_POLICIES:
        causes.append(not_supported("preemptionPolicy", policy, PREEMPTION_POLICIES))
    if old is not None:
        if old.get("value", 0) != obj.get("value", 0):
            causes.append(forbidden("value", "may not be changed in an update."))
        if old.get("preemptionPolicy") != policy:
            causes.append(invalid("preemptionPolicy", policy, "field is immutable"))
    return causes


def _unknown_system_class(name: str, value: int, global_default: bool) -> str:
    """`IsKnownSystemPriorityClass`'s error, or "" for one of the system classes as they are defined."""
    if name not in SYSTEM_PRIORITY_CLASSES:
        return f"{name} is not a known system priority class"
    if value != SYSTEM_PRIORITY_CLASSES[name][0]:
        return f"value of {name} PriorityClass must be {SYSTEM_PRIORITY_CLASSES[name][0]}"
    if global_default:
        return f"globalDefault of {name} PriorityClass must be false"
    return ""


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
