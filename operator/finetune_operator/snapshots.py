"""What the operator keeps of the objects it watches: the fields it reads, and nothing else (pure).

At 10,000 jobs the operator holds every FineTuneJob, Job and trainer pod it watches; what each copy
carries is most of its memory (docs/scaling.md). A Job's pod template and a pod's spec are the
operator's own output, never read back except `spec.suspend` and `spec.nodeName`. On a real cluster
every object also carries `metadata.managedFields` (server-side apply bookkeeping, often larger than the
status) and, when a user ran `kubectl apply`, the whole applied manifest again in an annotation: the
operator reads neither.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
# The only spec fields the plan reads of a child: a Job's suspension (children.suspension_change,
# status, pod_creation) and the node a pod ran on (failure.pod_failure names it).
CHILD_SPEC_FIELDS = ("suspend", "nodeName")


def _metadata(meta: Mapping[str, Any]) -> dict[str, Any]:
    kept = {key: copy.deepcopy(value) for key, value in meta.items() if key != "managedFields"}
    annotations = kept.get("annotations")
    if annotations and LAST_APPLIED in annotations:
        kept["annotations"] = {k: v for k, v in annotations.items() if k != LAST_APPLIED}
    return kept


def strip_unread_metadata(obj: dict[str, Any]) -> dict[str, Any]:
    """`obj` itself, without the metadata the operator never reads: for an object just decoded, owned by the caller."""
    meta = obj.get("metadata") or {}
    meta.pop("managedFields", None)
    annotations = meta.get("annotations")
    if annotations:
        annotations.pop(LAST_APPLIED, None)
    return obj


def child_snapshot(body: Mapping[str, Any]) -> dict[str, Any]:
    """A Job or pod as the indexes keep it: identity, metadata, the two spec fields read, and the status."""
    spec = body.get("spec") or {}
    snapshot: dict[str, Any] = {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": _metadata(body.get("metadata") or {}),
        "spec": {key: spec[key] for key in CHILD_SPEC_FIELDS if key in spec},
    }
    if "status" in body:
        snapshot["status"] = copy.deepcopy(body["status"])
    return snapshot


def finetunejob_snapshot(body: Mapping[str, Any]) -> dict[str, Any]:
    """A FineTuneJob as the operator keeps it: all of it (the plan reads spec and status) but the metadata it never reads.

    A copy: Kopf's bodies are live views that change under our feet.
    """
    snapshot = {key: copy.deepcopy(value) for key, value in body.items() if key != "metadata"}
    snapshot["metadata"] = _metadata(body.get("metadata") or {})
    return snapshot
