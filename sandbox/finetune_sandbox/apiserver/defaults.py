"""The defaults (and controller-added fields) that clients of the real server rely on, set on create."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .resources import JOB_KEY, NS_KEY, POD_KEY, ResourceType


def apply_builtin_defaults(rt: ResourceType, obj: dict[str, Any], next_service_ip: Callable[[], str]) -> None:
    """Default `obj` (a new object of built-in kind `rt`) in place; `next_service_ip` hands out ClusterIPs."""
    meta = obj["metadata"]
    if rt.key == NS_KEY:
        meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta["name"]
        obj["status"] = {"phase": "Active"}
    elif rt.key == POD_KEY:
        spec = obj.setdefault("spec", {})
        spec.setdefault("restartPolicy", "Always")
        spec.setdefault("terminationGracePeriodSeconds", 30)
        spec.setdefault("schedulerName", "default-scheduler")
        spec.setdefault("serviceAccountName", "default")
        obj["status"] = {"phase": "Pending"}
    elif rt.key == JOB_KEY:
        _default_job(obj)
    elif rt.key == ("apps", "deployments"):
        spec = obj.setdefault("spec", {})
        spec.setdefault("replicas", 1)
        spec.setdefault(
            "strategy", {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}
        )
        spec.setdefault("revisionHistoryLimit", 10)
        obj["status"] = {}
    elif rt.key == ("", "secrets"):
        obj.setdefault("type", "Opaque")
    elif rt.key == ("", "services"):
        spec = obj.setdefault("spec", {})
        spec.setdefault("type", "ClusterIP")
        if spec.get("clusterIP") != "None":
            spec["clusterIP"] = next_service_ip()
            spec["clusterIPs"] = [spec["clusterIP"]]
        for port in spec.get("ports") or []:
            port.setdefault("protocol", "TCP")
            port.setdefault("targetPort", port.get("port"))
        obj["status"] = {"loadBalancer": {}}


def _default_job(obj: dict[str, Any]) -> None:
    """batch/v1 Job defaults, and the selector and labels its controller finds its pods by."""
    meta = obj["metadata"]
    spec = obj.setdefault("spec", {})
    spec.setdefault("parallelism", 1)
    spec.setdefault("completions", 1)
    spec.setdefault("backoffLimit", 6)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    ids = {
        "batch.kubernetes.io/controller-uid": meta["uid"],
        "batch.kubernetes.io/job-name": meta["name"],
        "controller-uid": meta["uid"],
        "job-name": meta["name"],
    }
    if not spec.get("manualSelector"):
        spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": meta["uid"]}}
        template_meta = spec.setdefault("template", {}).setdefault("metadata", {})
        template_meta["labels"] = {**(template_meta.get("labels") or {}), **ids}
    meta["labels"] = {**ids, **(meta.get("labels") or {})} if not meta.get("labels") else meta["labels"]
    obj["status"] = {}
