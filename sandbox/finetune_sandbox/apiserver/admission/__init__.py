"""Admission: what a real API server's default admission plugins do to the kinds the sandbox serves.

Mutating (before the object is named and validated): Priority resolves a new pod's PriorityClass into
`spec.priority` (or refuses the pod); a ResourceQuota's quantities are stored in canonical form; a PriorityClass
gets its default preemption policy. Validating (after validation, before the write): ResourceQuota refuses
creates that would exceed a quota of the namespace; Priority keeps to one global default PriorityClass.
Refusals are 403 Forbidden with upstream's messages (`priority.py`, `quota.py`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from ..errors import ApiError
from ..quantity import format_quantity, parse_quantity
from ..resources import POD_KEY, PRIORITY_CLASS_KEY, QUOTA_KEY, ResourceType
from ..store import Store
from .priority import admit_pod, default_priority_class, system_priority_classes, validate_priority_class
from .quota import ResourceQuotas

__all__ = ["Admission", "system_priority_classes"]


class Admission:
    def __init__(self, store: Store, clock: Callable[[], dt.datetime]) -> None:
        self.store = store
        self.quotas = ResourceQuotas(store, clock)

    def mutate(self, rt: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None, name: str) -> None:
        """Mutating admission on a create (`old` None) or a write of the main resource; `name` is how refusals
        name a new object (its generateName prefix when the server is to generate its name)."""
        if rt.key == POD_KEY and old is None:
            admit_pod(self.store, obj, name)
        elif rt.key == QUOTA_KEY:
            _canonical_hard(rt, obj)
        elif rt.key == PRIORITY_CLASS_KEY and old is None:
            default_priority_class(obj)

    def validate(self, rt: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        """Validating admission, once the object passed validation."""
        if old is None and rt.namespaced:
            self.quotas.admit_create(rt, obj)
        if rt.key == PRIORITY_CLASS_KEY:
            validate_priority_class(self.store, obj, old)


def _canonical_hard(rt: ResourceType, obj: dict[str, Any]) -> None:
    """Quantities come back from a real server in canonical form (`1024Mi` is stored as `1Gi`); one that does not
    parse fails the request's decoding (400)."""
    spec = obj.get("spec")
    if not isinstance(spec, dict) or not isinstance(spec.get("hard"), dict):
        return
    try:
        spec["hard"] = {name: format_quantity(parse_quantity(amount)) for name, amount in spec["hard"].items()}
    except ValueError as error:
        raise ApiError(400, f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: {error}') from None
