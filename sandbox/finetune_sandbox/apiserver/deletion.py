"""What a DELETE asks for, decided before the object is touched (pure): its preconditions, the propagation
policy and the finalizers that carry it out, and a pod's grace period."""

from __future__ import annotations

from typing import Any

from .errors import ApiError
from .resources import JOB_KEY, POD_KEY, ResourceType

# The finalizers of the Foreground and Orphan propagation policies; the garbage collector removes them.
FOREGROUND = "foregroundDeletion"
ORPHAN = "orphan"
JOB_DELETION_WARNING = (
    "child pods are preserved by default when jobs are deleted; set propagationPolicy=Background to remove "
    "them or set propagationPolicy=Orphan to suppress this warning"
)


def check_preconditions(meta: dict[str, Any], preconditions: dict[str, Any]) -> None:
    """A 409 when the object is not the one (uid) or not the version (resourceVersion) the caller names."""
    if preconditions.get("uid") and preconditions["uid"] != meta.get("uid"):
        raise ApiError(
            409,
            f"Precondition failed: UID in precondition: {preconditions['uid']}, UID in object meta: {meta.get('uid')}",
            reason="Conflict",
        )
    if preconditions.get("resourceVersion") and preconditions["resourceVersion"] != meta.get("resourceVersion"):
        raise ApiError(
            409,
            f"Precondition failed: ResourceVersion in precondition: {preconditions['resourceVersion']}, "
            f"ResourceVersion in object meta: {meta.get('resourceVersion')}",
            reason="Conflict",
        )


def propagation_policy(rt: ResourceType, options: dict[str, Any], warnings: list[str]) -> str | None:
    """Background, Foreground, Orphan or None (the kind's default); batch/v1 Jobs default to Orphan, with the
    real server's warning appended to `warnings`."""
    policy = options.get("propagationPolicy")
    if policy is None and options.get("orphanDependents") is not None:
        policy = "Orphan" if options["orphanDependents"] else "Background"
    if policy is None and rt.key == JOB_KEY:
        policy = "Orphan"  # batch/v1 keeps its pods by default, like the real server (with its warning)
        warnings.append(JOB_DELETION_WARNING)
    if policy not in (None, "Background", "Foreground", "Orphan"):
        raise ApiError(400, f"unknown propagationPolicy {policy!r}: use Background, Foreground or Orphan")
    return policy


def finalizers_for(meta: dict[str, Any], policy: str | None) -> list[str]:
    """The object's finalizers with the policy's own added."""
    finalizers = list(meta.get("finalizers") or ())
    if policy == "Foreground" and FOREGROUND not in finalizers:
        finalizers.append(FOREGROUND)
    if policy == "Orphan" and ORPHAN not in finalizers:
        finalizers.append(ORPHAN)
    return finalizers


def grace_seconds(rt: ResourceType, obj: dict[str, Any], options: dict[str, Any], graceful_pods: bool) -> int:
    """How long the kubelet gets to stop a pod (0: removed at once); only pods, and only when `graceful_pods`."""
    if rt.key != POD_KEY or not graceful_pods:
        return 0
    grace = options.get("gracePeriodSeconds")
    if grace is None:
        grace = int((obj.get("spec") or {}).get("terminationGracePeriodSeconds", 30))
    phase = (obj.get("status") or {}).get("phase")
    if not (obj.get("spec") or {}).get("nodeName") or phase in ("Succeeded", "Failed"):
        return 0  # nothing runs it: the real server deletes such pods at once
    return grace
