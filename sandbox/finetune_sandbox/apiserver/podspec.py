"""Validation of a pod spec (a Pod's, or a Job's `spec.template.spec`), as pkg/apis/core/validation does it.

Covered, with upstream's messages and in upstream's order: containers (names, images, env var names), init
containers, `nodeSelector` (qualified-name keys, label values), `affinity` (node selector terms and operators,
pod (anti-)affinity terms with their label selectors and `topologyKey`), `tolerations` (key, operator and effect
enums, value), `priorityClassName` (a DNS-1123 subdomain), and the template's labels. Everything else in a pod spec
is accepted as it comes. `schedulerName` is not validated: upstream does not validate it either.
"""

from __future__ import annotations

from typing import Any

from .fielderrors import Cause, forbidden, invalid, not_supported, required
from .identifiers import (
    is_dns1123_label,
    is_dns1123_subdomain,
    is_qualified_name,
    is_relaxed_env_var_name,
    is_valid_label_value,
)

TOLERATION_OPERATORS = ("Equal", "Exists")
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
NODE_SELECTOR_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt")


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def label_name_causes(name: Any, path: str) -> list[Cause]:
    return [invalid(path, name, msg) for msg in is_qualified_name(str(name or ""))]


def labels_causes(labels: Any, path: str) -> list[Cause]:
    """`ValidateLabels`: every key a qualified name, every value a label value (reported on the map's path)."""
    causes: list[Cause] = []
    for key, value in sorted(_dict(labels).items()):
        causes += label_name_causes(key, path)
        causes += [invalid(path, value, msg) for msg in is_valid_label_value(str(value or ""))]
    return causes


def pod_template_causes(template: Any, path: str) -> list[Cause]:
    """`ValidatePodTemplateSpec` for what is modelled: the template's labels and its pod spec."""
    template = _dict(template)
    causes = labels_causes(_dict(template.get("metadata")).get("labels"), f"{path}.metadata.labels")
    return causes + pod_spec_causes(template.get("spec"), f"{path}.spec")


def pod_spec_causes(spec: Any, path: str) -> list[Cause]:
    spec = _dict(spec)
    containers = _list(spec.get("containers"))
    causes: list[Cause] = []
    if not containers:
        causes.append(required(f"{path}.containers"))
    causes += _containers_causes(containers, f"{path}.containers")
    causes += _containers_causes(_list(spec.get("initContainers")), f"{path}.initContainers")
    causes += labels_causes(spec.get("nodeSelector"), f"{path}.nodeSelector")
    causes += _affinity_causes(_dict(spec.get("affinity")), f"{path}.affinity")
    causes += _tolerations_causes(_list(spec.get("tolerations")), f"{path}.tolerations")
    priority_class = spec.get("priorityClassName")
    if priority_class:
        causes += [
            invalid(f"{path}.priorityClassName", priority_class, msg) for msg in is_dns1123_subdomain(priority_class)
        ]
    return causes


def _containers_causes(containers: list[Any], path: str) -> list[Cause]:
    causes: list[Cause] = []
    seen: set[str] = set()
    for n, container in enumerate(containers):
        container, at = _dict(container), f"{path}[{n}]"
        name = container.get("name")
        if not name:
            causes.append(required(f"{at}.name"))
        else:
            causes += [invalid(f"{at}.name", name, msg) for msg in is_dns1123_label(str(name))]
            if name in seen:
                causes.append((f"{at}.name", f'Duplicate value: "{name}"', "FieldValueDuplicate"))
            seen.add(name)
        if not container.get("image"):
            causes.append(required(f"{at}.image"))
        for i, variable in enumerate(_list(container.get("env"))):
            var_name = _dict(variable).get("name")
            if not var_name:
                causes.append(required(f"{at}.env[{i}].name"))
            else:
                causes += [invalid(f"{at}.env[{i}].name", var_name, msg) for msg in is_relaxed_env_var_name(var_name)]
    return causes


def _tolerations_causes(tolerations: list[Any], path: str) -> list[Cause]:
    """`ValidateTolerations`."""
    causes: list[Cause] = []
    for i, toleration in enumerate(tolerations):
        toleration, at = _dict(toleration), f"{path}[{i}]"
        key, operator = toleration.get("key") or "", toleration.get("operator") or ""
        value, effect = toleration.get("value") or "", toleration.get("effect") or ""
        if key:
            causes += label_name_causes(key, f"{at}.key")
        if not key and operator != "Exists":
            causes.append(
                invalid(
                    f"{at}.operator",
                    operator,
                    'operator must be Exists when `key` is empty, which means "match all values and all keys"',
                )
            )
        if toleration.get("tolerationSeconds") is not None and effect != "NoExecute":
            causes.append(invalid(f"{at}.effect", effect, "effect must be 'NoExecute' when `tolerationSeconds` is set"))
        if operator in ("Equal", ""):
            problems = is_valid_label_value(value)
            if problems:
                causes.append(invalid(f"{at}.operator", value, ";".join(problems)))
        elif operator == "Exists":
            if value:
                causes.append(invalid(f"{at}.operator", value, "value must be empty when `operator` is 'Exists'"))
        else:
            causes.append(not_supported(f"{at}.operator", operator, TOLERATION_OPERATORS))
        if effect and effect not in TAINT_EFFECTS:
            causes.append(not_supported(f"{at}.effect", effect, TAINT_EFFECTS))
    return causes


def _affinity_causes(affinity: dict[str, Any], path: str) -> list[Cause]:
    causes: list[Cause] = []
    node = affinity.get("nodeAffinity")
    if isinstance(node, dict):
        causes += _node_affinity_causes(node, f"{path}.nodeAffinity")
    for kind in ("podAffinity", "podAntiAffinity"):
        terms = affinity.get(kind)
        if isinstance(terms, dict):
            causes += _pod_affinity_causes(terms, f"{path}.{kind}")
    return causes


def _node_affinity_causes(node: dict[str, Any], path: str) -> list[Cause]:
    causes: list[Cause] = []
    required_terms = node.get("requiredDuringSchedulingIgnoredDuringExecution")
    if isinstance(required_terms, dict):
        at = f"{path}.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms"
        terms = _list(required_terms.get("nodeSelectorTerms"))
        if not terms:
            causes.append(required(at, "must have at least one node selector term"))
        for i, term in enumerate(terms):
            # A new object's required terms have their values checked; preferred terms never do (upstream's options).
            causes += _node_selector_term_causes(_dict(term), f"{at}[{i}]", check_values=True)
    for i, preferred in enumerate(_list(node.get("preferredDuringSchedulingIgnoredDuringExecution"))):
        preferred, at = _dict(preferred), f"{path}.preferredDuringSchedulingIgnoredDuringExecution[{i}]"
        causes += _weight_causes(preferred.get("weight"), f"{at}.weight")
        causes += _node_selector_term_causes(_dict(preferred.get("preference")), f"{at}.preference", check_values=False)
    return causes


def _weight_causes(weight: Any, path: str) -> list[Cause]:
    value = weight if isinstance(weight, int) and not isinstance(weight, bool) else 0
    return [] if 1 <= value <= 100 else [invalid(path, value, "must be in the range 1-100")]


def _set_operator_causes(operator: str, values: list[Any], at: str) -> list[Cause]:
    """A set-based requirement's operator and values (node selector terms and label selectors alike)."""
    if operator in ("In", "NotIn"):
        return [] if values else [required(f"{at}.values", "must be specified when `operator` is 'In' or 'NotIn'")]
    if operator in ("Exists", "DoesNotExist"):
        message = "may not be specified when `operator` is 'Exists' or 'DoesNotExist'"
        return [forbidden(f"{at}.values", message)] if values else []
    return [invalid(f"{at}.operator", operator, "not a valid selector operator")]


def _node_selector_term_causes(term: dict[str, Any], path: str, *, check_values: bool) -> list[Cause]:
    causes: list[Cause] = []
    for j, requirement in enumerate(_list(term.get("matchExpressions"))):
        requirement, at = _dict(requirement), f"{path}.matchExpressions[{j}]"
        operator, values = requirement.get("operator") or "", _list(requirement.get("values"))
        if operator in ("Gt", "Lt"):
            if len(values) != 1:
                causes.append(
                    required(f"{at}.values", "must be specified single value when `operator` is 'Lt' or 'Gt'")
                )
        else:
            causes += _set_operator_causes(operator, values, at)
        causes += label_name_causes(requirement.get("key"), f"{at}.key")
        if check_values:
            for k, value in enumerate(values):
                causes += [invalid(f"{at}.values[{k}]", value, msg) for msg in is_valid_label_value(str(value))]
    for j, requirement in enumerate(_list(term.get("matchFields"))):
        requirement, at = _dict(requirement), f"{path}.matchFields[{j}]"
        operator, values = requirement.get("operator") or "", _list(requirement.get("values"))
        if operator in ("In", "NotIn"):
            if len(values) != 1:
                causes.append(
                    required(
                        f"{at}.values",
                        "must be only one value when `operator` is 'In' or 'NotIn' for node field selector",
                    )
                )
        else:
            causes.append(invalid(f"{at}.operator", operator, "not a valid selector operator"))
        if requirement.get("key") != "metadata.name":
            causes.append(invalid(f"{at}.key", requirement.get("key") or "", "not a valid field selector key"))
    return causes


def _pod_affinity_causes(affinity: dict[str, Any], path: str) -> list[Cause]:
    causes: list[Cause] = []
    for i, term in enumerate(_list(affinity.get("requiredDuringSchedulingIgnoredDuringExecution"))):
        causes += _pod_affinity_term_causes(_dict(term), f"{path}.requiredDuringSchedulingIgnoredDuringExecution[{i}]")
    for j, weighted in enumerate(_list(affinity.get("preferredDuringSchedulingIgnoredDuringExecution"))):
        weighted, at = _dict(weighted), f"{path}.preferredDuringSchedulingIgnoredDuringExecution[{j}]"
        causes += _weight_causes(weighted.get("weight"), f"{at}.weight")
        causes += _pod_affinity_term_causes(_dict(weighted.get("podAffinityTerm")), f"{at}.podAffinityTerm")
    return causes


def _pod_affinity_term_causes(term: dict[str, Any], path: str) -> list[Cause]:
    causes = label_selector_causes(_dict(term.get("labelSelector")), f"{path}.labelSelector")
    causes += label_selector_causes(_dict(term.get("namespaceSelector")), f"{path}.namespaceSelector")
    for namespace in _list(term.get("namespaces")):
        causes += [invalid(f"{path}.namespace", namespace, msg) for msg in is_dns1123_label(str(namespace))]
    topology_key = term.get("topologyKey") or ""
    if not topology_key:
        causes.append(required(f"{path}.topologyKey", "can not be empty"))
    return causes + label_name_causes(topology_key, f"{path}.topologyKey")


def label_selector_causes(selector: dict[str, Any], path: str) -> list[Cause]:
    """`ValidateLabelSelector` (label values checked, as for new objects)."""
    causes = labels_causes(selector.get("matchLabels"), f"{path}.matchLabels")
    for i, requirement in enumerate(_list(selector.get("matchExpressions"))):
        requirement, at = _dict(requirement), f"{path}.matchExpressions[{i}]"
        operator, values = requirement.get("operator") or "", _list(requirement.get("values"))
        causes += _set_operator_causes(operator, values, at)
        causes += label_name_causes(requirement.get("key"), f"{at}.key")
        for k, value in enumerate(values):
            causes += [invalid(f"{at}.values[{k}]", value, msg) for msg in is_valid_label_value(str(value))]
    return causes
