"""The Priority admission plugin (plugin/pkg/admission/priority) and the system PriorityClasses.

A new pod's `priorityClassName` must name a PriorityClass, or the create is refused (403) with upstream's
words; the class's value becomes `spec.priority` and its preemption policy `spec.preemptionPolicy`. A pod
without a class gets the global default class's value (the lowest, if several claim it), else 0. A pod may not
bring a `spec.priority` of its own that differs. On PriorityClasses: only one may be the global default.

The plugin is a mutating one, so it runs before the name of a `generateName` pod is generated: its refusals
name the prefix (`pods "train-0-" is forbidden: ...`), as on a real cluster.
"""

from __future__ import annotations

import uuid
from typing import Any

from ..errors import forbidden
from ..store import Store
from ..validation import SYSTEM_PRIORITY_CLASSES

GROUP, PLURAL = "scheduling.k8s.io", "priorityclasses"
DEFAULT_PREEMPTION_POLICY = "PreemptLowerPriority"


def system_priority_classes(created: str) -> list[dict[str, Any]]:
    """The classes the API server creates at start (`system-node-critical`, `system-cluster-critical`)."""
    return [
        {
            "apiVersion": f"{GROUP}/v1",
            "kind": "PriorityClass",
            "metadata": {"name": name, "uid": str(uuid.uuid4()), "creationTimestamp": created, "generation": 1},
            "value": value,
            "description": description,
            "preemptionPolicy": DEFAULT_PREEMPTION_POLICY,
        }
        for name, (value, description) in SYSTEM_PRIORITY_CLASSES.items()
    ]


def default_priority_class(obj: dict[str, Any]) -> None:
    """PriorityClass defaults: `preemptionPolicy: PreemptLowerPriority`."""
    obj.setdefault("preemptionPolicy", DEFAULT_PREEMPTION_POLICY)


def admit_pod(store: Store, pod: dict[str, Any], name: str) -> None:
    """Resolve a new pod's priority into its spec, or refuse it; `name` is how the refusal names the pod."""
    spec = pod.setdefault("spec", {})
    if not isinstance(spec, dict):
        return
    class_name = spec.get("priorityClassName") or ""
    if class_name:
        found = store.get(GROUP, PLURAL, "", class_name)
        if found is None:
            raise forbidden("pods", name, f"no PriorityClass with name {class_name} was found")
        priority, policy = int(found.get("value") or 0), found.get("preemptionPolicy") or DEFAULT_PREEMPTION_POLICY
    else:
        default = _global_default(store)
        priority = int(default.get("value") or 0) if default else 0
        policy = (default or {}).get("preemptionPolicy") or DEFAULT_PREEMPTION_POLICY
        if default:
            spec["priorityClassName"] = default["metadata"]["name"]
    given = spec.get("priority")
    if given is not None and given != priority:
        raise forbidden(
            "pods",
            name,
            f"the integer value of priority ({given}) must not be provided in pod spec; priority admission "
            f"controller computed {priority} from the given PriorityClass name",
        )
    spec["priority"] = priority
    given_policy = spec.get("preemptionPolicy")
    if given_policy is not None and given_policy != policy:
        raise forbidden(
            "pods",
            name,
            f"the string value of PreemptionPolicy ({given_policy}) must not be provided in pod spec; priority "
            f"admission controller computed {policy} from the given PriorityClass name",
        )
    spec["preemptionPolicy"] = policy


def validate_priority_class(store: Store, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
    """Only one PriorityClass may be the global default (403 otherwise)."""
    if not obj.get("globalDefault"):
        return
    name = obj["metadata"]["name"]
    default = _global_default(store)
    if default is not None and default["metadata"]["name"] != name:
        raise forbidden(
            PLURAL,
            name,
            f"PriorityClass {default['metadata']['name']} is already marked as default. Only one default can exist",
            GROUP,
        )


def _global_default(store: Store) -> dict[str, Any] | None:
    defaults = [pc for pc in store.list(GROUP, PLURAL) if pc.get("globalDefault")]
    return min(defaults, key=lambda pc: int(pc.get("value") or 0)) if defaults else None
