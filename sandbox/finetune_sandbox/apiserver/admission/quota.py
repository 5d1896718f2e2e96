"""ResourceQuota: the admission check on creates and the quota controller's `status` (hard, used).

Upstream: staging/src/k8s.io/apiserver/pkg/admission/plugin/resourcequota (controller.go: `CheckRequest`),
pkg/quota/v1/evaluator/core/pods.go (what a pod uses, and the "must specify" constraints), the generic object
count evaluator (`count/<resource>[.<group>]`, and the legacy `configmaps`, `secrets`, ... names), and
pkg/controller/resourcequota (`status.hard` is `spec.hard`, `status.used` is recomputed from what is stored).

What a pod uses: `pods` (while not terminal), `count/pods` (always), `cpu`/`requests.cpu`, `memory`/
`requests.memory`, `ephemeral-storage`/`requests.ephemeral-storage` from its requests (a container's limits
stand in for requests it does not set, as the API server's defaulting does), `limits.*` from its limits, and
`requests.<extended resource>` such as `requests.nvidia.com/gpu`; containers add up, init containers count
with the largest one. A pod that is Succeeded or Failed, or past its deletion grace period, uses no compute.

Used is recomputed synchronously whenever an object a quota counts is written or removed (upstream: the
admission plugin adds a new object's usage at once, the controller's replenishment takes it back within
seconds), so a `kubectl get quota` right after a create or a pod's end already shows the new numbers.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from ..errors import forbidden
from ..metadata import metadata_of
from ..quantity import ZERO, Quantity, format_quantity, parse_quantity
from ..resources import POD_KEY, QUOTA_KEY, ResourceType
from ..store import Event, Store, TypeKey

Usage = dict[str, Quantity]

POD_RESOURCES = frozenset(
    {
        "count/pods",
        "pods",
        "cpu",
        "memory",
        "ephemeral-storage",
        "requests.cpu",
        "requests.memory",
        "requests.ephemeral-storage",
        "limits.cpu",
        "limits.memory",
        "limits.ephemeral-storage",
    }
)
# "a mistake, but": when a quota limits these, every container must state them (pods.go's validationSet).
MUST_SPECIFY = frozenset({"cpu", "memory", "requests.cpu", "requests.memory", "limits.cpu", "limits.memory"})
# Object counts with a name of their own besides count/<resource>.
LEGACY_COUNTS: dict[str, TypeKey] = {
    "configmaps": ("", "configmaps"),
    "secrets": ("", "secrets"),
    "services": ("", "services"),
    "persistentvolumeclaims": ("", "persistentvolumeclaims"),
    "resourcequotas": ("", "resourcequotas"),
    "replicationcontrollers": ("", "replicationcontrollers"),
}
ONE = parse_quantity("1")


def count_name(type_key: TypeKey) -> str:
    group, plural = type_key
    return f"count/{plural}.{group}" if group else f"count/{plural}"


def counted_type(resource: str) -> TypeKey | None:
    """The (group, plural) a `count/...` or legacy object-count name counts."""
    if resource in LEGACY_COUNTS:
        return LEGACY_COUNTS[resource]
    if resource.startswith("count/"):
        plural, _, group = resource[len("count/") :].partition(".")
        return group, plural
    return None


def _is_native(name: str) -> bool:
    return "/" not in name or "kubernetes.io/" in name


def _extended_for_quota(name: str) -> bool:
    return not _is_native(name) and name.startswith("requests.")


def matching_resources(type_key: TypeKey, names: list[str] | set[str]) -> list[str]:
    """The quota resources among `names` that objects of `type_key` use (`Evaluator.MatchingResources`)."""
    if type_key == POD_KEY:
        return sorted(
            name
            for name in names
            if name in POD_RESOURCES
            or name.startswith(("hugepages-", "requests.hugepages-"))
            or _extended_for_quota(name)
        )
    return sorted(name for name in names if counted_type(name) == type_key)


# --- what a pod uses ---------------------------------------------------------------------------------------


def add(a: Usage, b: Usage) -> Usage:
    """`quota.Add`: a sum per resource, each keeping the format rules of `Quantity.Add`."""
    result = dict(a)
    for name, amount in b.items():
        result[name] = result[name] + amount if name in result else amount
    return result


def _parsed(resources: Any) -> Usage:
    parsed: Usage = {}
    for name, amount in (resources or {}).items() if isinstance(resources, dict) else ():
        try:
            parsed[name] = parse_quantity(amount)
        except ValueError:
            continue
    return parsed


def _requests_and_limits(container: dict[str, Any]) -> tuple[Usage, Usage]:
    resources = container.get("resources") if isinstance(container.get("resources"), dict) else {}
    limits = _parsed(resources.get("limits"))
    return {**limits, **_parsed(resources.get("requests"))}, limits


def _pod_totals(pod: dict[str, Any]) -> tuple[Usage, Usage]:
    """(requests, limits) of a pod: containers summed, then each init container's taken where it is larger."""
    spec = pod.get("spec") if isinstance(pod.get("spec"), dict) else {}
    requests: Usage = {}
    limits: Usage = {}
    for container in spec.get("containers") or []:
        container_requests, container_limits = _requests_and_limits(container or {})
        requests, limits = add(requests, container_requests), add(limits, container_limits)
    for container in spec.get("initContainers") or []:
        for total, own in zip((requests, limits), _requests_and_limits(container or {})):
            for name, amount in own.items():
                if name not in total or amount.value > total[name].value:
                    total[name] = amount
    return requests, limits


def compute_usage(requests: Usage, limits: Usage) -> Usage:
    """`podComputeUsageHelper`: the quota names a set of requests and limits is charged under."""
    usage: Usage = {"pods": ONE}
    for resource in ("cpu", "memory", "ephemeral-storage"):
        if resource in requests:
            usage[resource] = usage[f"requests.{resource}"] = requests[resource]
        if resource in limits:
            usage[f"limits.{resource}"] = limits[resource]
    for name, amount in requests.items():
        if name.startswith("hugepages-"):
            usage[name] = usage[f"requests.{name}"] = amount
        elif not _is_native(name):
            usage[f"requests.{name}"] = amount
    return usage


def pod_counts_for_compute(pod: dict[str, Any], now: dt.datetime) -> bool:
    """`QuotaV1Pod`: not terminal, and not stuck terminating past its grace period."""
    if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
        return False
    meta = metadata_of(pod)
    deleted, grace = meta.get("deletionTimestamp"), meta.get("deletionGracePeriodSeconds")
    if deleted and grace is not None:
        deadline = dt.datetime.fromisoformat(deleted.replace("Z", "+00:00")) + dt.timedelta(seconds=int(grace))
        if now > deadline:
            return False
    return True


def pod_usage(pod: dict[str, Any], now: dt.datetime) -> Usage:
    usage: Usage = {"count/pods": ONE}
    if pod_counts_for_compute(pod, now):
        usage = add(usage, compute_usage(*_pod_totals(pod)))
    return usage


def object_usage(type_key: TypeKey, obj: dict[str, Any], now: dt.datetime) -> Usage:
    if type_key == POD_KEY:
        return pod_usage(obj, now)
    usage: Usage = {count_name(type_key): ONE}
    usage.update({name: ONE for name, counted in LEGACY_COUNTS.items() if counted == type_key})
    return usage


def missing_requests(required: list[str], pod: dict[str, Any]) -> str:
    """`podEvaluator.Constraints`: "" if every container states what the quota needs, else upstream's message."""
    needed = set(required) & MUST_SPECIFY
    missing: dict[str, set[str]] = {}
    spec = pod.get("spec") if isinstance(pod.get("spec"), dict) else {}
    for container in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        stated = set(compute_usage(*_requests_and_limits(container or {})))
        for resource in needed - stated:
            missing.setdefault(resource, set()).add((container or {}).get("name", ""))
    if not missing:
        return ""
    return "must specify " + "; ".join(
        f"{resource} for: {','.join(sorted(missing[resource]))}" for resource in sorted(missing)
    )


# --- scopes ------------------------------------------------------------------------------------------------


def _scope_selectors(quota: dict[str, Any]) -> list[dict[str, Any]]:
    spec = quota.get("spec") or {}
    selectors = [{"scopeName": scope, "operator": "Exists"} for scope in spec.get("scopes") or []]
    return selectors + list((spec.get("scopeSelector") or {}).get("matchExpressions") or [])


def _best_effort(pod: dict[str, Any]) -> bool:
    spec = pod.get("spec") or {}
    for container in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        resources = (container or {}).get("resources") or {}
        for kind in ("requests", "limits"):
            if set(resources.get(kind) or {}) & {"cpu", "memory"}:
                return False
    return True


def _matches_scope(selector: dict[str, Any], pod: dict[str, Any]) -> bool:
    spec = pod.get("spec") or {}
    scope = selector.get("scopeName")
    if scope in ("Terminating", "NotTerminating"):
        terminating = isinstance(spec.get("activeDeadlineSeconds"), int) and spec["activeDeadlineSeconds"] >= 0
        return terminating == (scope == "Terminating")
    if scope in ("BestEffort", "NotBestEffort"):
        return _best_effort(pod) == (scope == "BestEffort")
    if scope == "PriorityClass":
        name, operator = spec.get("priorityClassName") or "", selector.get("operator")
        values = selector.get("values") or []
        return {
            "Exists": bool(name),
            "DoesNotExist": not name,
            "In": bool(name) and name in values,
            "NotIn": not name or name not in values,
        }.get(operator, False)
    if scope == "CrossNamespacePodAffinity":
        affinity = spec.get("affinity") or {}
        for kind in ("podAffinity", "podAntiAffinity"):
            terms = affinity.get(kind) or {}
            listed = list(terms.get("requiredDuringSchedulingIgnoredDuringExecution") or []) + [
                (weighted or {}).get("podAffinityTerm") or {}
                for weighted in terms.get("preferredDuringSchedulingIgnoredDuringExecution") or []
            ]
            if any(
                (term or {}).get("namespaces") or (term or {}).get("namespaceSelector") is not None for term in listed
            ):
                return True
        return False
    return False


def quota_matches(quota: dict[str, Any], type_key: TypeKey, obj: dict[str, Any]) -> bool:
    """Scopes select pods only: a scoped quota never matches other kinds (`MatchesNoScopeFunc`)."""
    selectors = _scope_selectors(quota)
    if not selectors:
        return True
    return type_key == POD_KEY and all(_matches_scope(selector, obj) for selector in selectors)


def pretty(usage: Usage) -> str:
    return ",".join(f"{name}={format_quantity(usage[name])}" for name in sorted(usage))


# --- admission and the controller ---------------------------------------------------------------------------


class ResourceQuotas:
    """Checks creates against the namespace's quotas; keeps every quota's status in step with the store."""

    def __init__(self, store: Store, clock: Callable[[], dt.datetime]) -> None:
        self.store = store
        self.clock = clock
        store.listeners.append(self._on_event)

    def admit_create(self, rt: ResourceType, obj: dict[str, Any]) -> None:
        """Refuse (403) a new object the namespace's quotas have no room for, as `CheckRequest` does."""
        meta = metadata_of(obj)
        quotas = sorted(self.store.list(*QUOTA_KEY, meta.get("namespace") or ""), key=lambda q: q["metadata"]["name"])
        if not quotas:
            return
        name = meta.get("name", "")
        interesting: list[tuple[str, Usage, Usage]] = []
        for quota in quotas:
            quota_name = quota["metadata"]["name"]
            status = quota.get("status") or {}
            hard = _parsed(status.get("hard"))
            restricted = matching_resources(rt.key, set(hard))
            if not restricted or not quota_matches(quota, rt.key, obj):
                continue
            if rt.key == POD_KEY:
                problem = missing_requests(restricted, obj)
                if problem:
                    raise forbidden(rt.plural, name, f"failed quota: {quota_name}: {problem}", rt.group)
            used = _parsed(status.get("used"))
            unknown = [resource for resource in restricted if resource not in used]
            if unknown:
                raise forbidden(
                    rt.plural, name, f"status unknown for quota: {quota_name}, resources: {','.join(unknown)}", rt.group
                )
            interesting.append((quota_name, hard, used))
        delta = {
            resource: amount for resource, amount in object_usage(rt.key, obj, self.clock()).items() if amount.value
        }
        for quota_name, hard, used in interesting:
            requested = {resource: amount for resource, amount in delta.items() if resource in hard}
            total = add(used, requested)
            exceeded = {resource for resource in requested if total[resource].value > hard[resource].value}
            if exceeded:
                raise forbidden(
                    rt.plural,
                    name,
                    f"exceeded quota: {quota_name}, requested: {pretty(_only(requested, exceeded))}, "
                    f"used: {pretty(_only(used, exceeded))}, limited: {pretty(_only(hard, exceeded))}",
                    rt.group,
                )

    def _on_event(self, event: Event) -> None:
        group, plural, namespace, _ = event.key
        if not namespace:
            return
        if (group, plural) == QUOTA_KEY:
            if event.type != "DELETED":
                self.sync(event.obj)
            return
        for quota in list(self.store.list(*QUOTA_KEY, namespace)):
            if matching_resources((group, plural), set((quota.get("spec") or {}).get("hard") or {})):
                self.sync(quota)

    def sync(self, quota: dict[str, Any]) -> None:
        """Write the quota's status if it changed: `hard` from its spec, `used` from what the namespace holds."""
        hard = _parsed((quota.get("spec") or {}).get("hard"))
        status = {
            "hard": {resource: format_quantity(amount) for resource, amount in hard.items()},
            "used": {resource: format_quantity(amount) for resource, amount in self.used(quota, hard).items()},
        }
        if quota.get("status") == status:
            return
        meta = metadata_of(quota)
        self.store.put(
            (*QUOTA_KEY, meta["namespace"], meta["name"]), {**quota, "metadata": dict(meta), "status": status}
        )

    def used(self, quota: dict[str, Any], hard: Usage) -> Usage:
        namespace = metadata_of(quota)["namespace"]
        used: Usage = {resource: ZERO for resource in hard}
        pod_resources = set(matching_resources(POD_KEY, set(hard)))
        if pod_resources:
            now = self.clock()
            for pod in self.store.list(*POD_KEY, namespace):
                if quota_matches(quota, POD_KEY, pod):
                    used = add(used, _only(pod_usage(pod, now), pod_resources))
        for resource in set(hard) - pod_resources:
            counted = counted_type(resource)
            if counted is not None and not _scope_selectors(quota):
                used[resource] = parse_quantity(str(self.store.count(*counted, namespace)))
        return used


def _only(usage: Usage, names: set[str] | list[str]) -> Usage:
    return {name: amount for name, amount in usage.items() if name in names}
