"""Server-side printing: `meta.k8s.io/v1` Tables, as `kubectl get` asks for them."""

from __future__ import annotations

import datetime
import json
import re
from typing import Any, Iterable

from .resources import ResourceType

_TOKEN_RE = re.compile(
    r"""\.([A-Za-z0-9_\-/]+)"""
    r"""|\[\?\(@\.([A-Za-z0-9_.\-]+)\s*==\s*(?:"([^"]*)"|'([^']*)'|([^)\s]+))\)\]"""
    r"""|\[(\d+|\*)\]|\.\*"""
)


def jsonpath(obj: Any, path: str) -> list[Any]:
    """Evaluate the JSONPath subset printer columns use: `.a.b`, `[0]`, `[*]`, `[?(@.k=="v")]`."""
    path = path.strip()
    if path.startswith("{") and path.endswith("}"):
        path = path[1:-1]
    if path.startswith("$"):
        path = path[1:]
    nodes = [obj]
    pos = 0
    while pos < len(path):
        match = _TOKEN_RE.match(path, pos)
        if not match:
            return []
        pos = match.end()
        field, flt_key, dq, sq, bare, index = match.groups()
        next_nodes = []
        for node in nodes:
            if field is not None:
                if isinstance(node, dict) and field in node:
                    next_nodes.append(node[field])
            elif flt_key is not None:
                wanted = dq if dq is not None else sq if sq is not None else bare
                for item in node if isinstance(node, list) else []:
                    value = item
                    for part in flt_key.split("."):
                        value = value.get(part) if isinstance(value, dict) else None
                    if value is not None and str(value) == wanted:
                        next_nodes.append(item)
            elif index is not None:
                if isinstance(node, list):
                    if index == "*":
                        next_nodes.extend(node)
                    elif int(index) < len(node):
                        next_nodes.append(node[int(index)])
            else:  # .*
                if isinstance(node, dict):
                    next_nodes.extend(node.values())
                elif isinstance(node, list):
                    next_nodes.extend(node)
        nodes = next_nodes
    return nodes


def human_duration(seconds: float) -> str:
    """Like k8s.io/apimachinery's duration.HumanDuration, which `kubectl get` shows as AGE."""
    s = int(seconds)
    if s < 0:
        return "<invalid>"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    days = hours // 24
    if days < 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    if days < 365 * 2:
        return f"{days}d"
    return f"{days // 365}y"


def parse_time(value: Any) -> datetime.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def age(value: Any, now: datetime.datetime) -> str:
    moment = parse_time(value)
    return human_duration((now - moment).total_seconds()) if moment else "<unknown>"


def _column(name: str, type_: str = "string", fmt: str = "", description: str = "", priority: int = 0):
    return {"name": name, "type": type_, "format": fmt, "description": description, "priority": priority}


def _pod_cells(obj: dict[str, Any], now: datetime.datetime) -> tuple[list[dict], list[Any]]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    statuses = status.get("containerStatuses") or []
    ready = sum(1 for s in statuses if s.get("ready"))
    restarts = sum(int(s.get("restartCount", 0)) for s in statuses)
    phase = status.get("reason") or status.get("phase") or "Pending"
    for s in statuses:
        state = s.get("state") or {}
        reason = (state.get("waiting") or {}).get("reason") or (state.get("terminated") or {}).get("reason")
        if reason and phase not in ("Succeeded", "Failed"):
            phase = reason
    if (obj.get("metadata") or {}).get("deletionTimestamp"):
        phase = "Terminating"
    columns = [
        _column("Ready"),
        _column("Status"),
        _column("Restarts", "string"),
        _column("Age"),
        _column("IP", priority=1),
        _column("Node", priority=1),
    ]
    cells = [
        f"{ready}/{len(spec.get('containers') or [])}",
        phase,
        str(restarts),
        age(obj["metadata"].get("creationTimestamp"), now),
        status.get("podIP") or "<none>",
        spec.get("nodeName") or "<none>",
    ]
    return columns, cells


def _job_cells(obj: dict[str, Any], now: datetime.datetime) -> tuple[list[dict], list[Any]]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    state = (
        "Complete"
        if conditions.get("Complete") == "True"
        else "Failed"
        if conditions.get("Failed") == "True"
        else "Suspended"
        if spec.get("suspend")
        else "Running"
    )
    columns = [_column("Status"), _column("Completions"), _column("Age")]
    cells = [
        state,
        f"{status.get('succeeded', 0)}/{spec.get('completions', 1)}",
        age(obj["metadata"].get("creationTimestamp"), now),
    ]
    return columns, cells


def _namespace_cells(obj, now):
    return (
        [_column("Status"), _column("Age")],
        [(obj.get("status") or {}).get("phase", "Active"), age(obj["metadata"].get("creationTimestamp"), now)],
    )


def _crd_cells(obj, now):
    return [_column("Created At", "date")], [obj["metadata"].get("creationTimestamp", "")]


def _event_cells(obj, now):
    involved = obj.get("involvedObject") or obj.get("regarding") or {}
    last = (
        obj.get("lastTimestamp")
        or obj.get("eventTime")
        or (obj.get("series") or {}).get("lastObservedTime")
        or obj["metadata"].get("creationTimestamp")
    )
    kind = (involved.get("kind") or "").lower()
    return (
        [_column("Last Seen"), _column("Type"), _column("Reason"), _column("Object"), _column("Message")],
        [
            age(last, now),
            obj.get("type", ""),
            obj.get("reason", ""),
            f"{kind}/{involved.get('name', '')}",
            obj.get("message") or obj.get("note") or "",
        ],
    )


def _configmap_cells(obj, now):
    count = len(obj.get("data") or {}) + len(obj.get("binaryData") or {})
    return [_column("Data", "integer"), _column("Age")], [count, age(obj["metadata"].get("creationTimestamp"), now)]


def _secret_cells(obj, now):
    return (
        [_column("Type"), _column("Data", "integer"), _column("Age")],
        [obj.get("type", "Opaque"), len(obj.get("data") or {}), age(obj["metadata"].get("creationTimestamp"), now)],
    )


def _service_cells(obj, now):
    spec = obj.get("spec") or {}
    ports = ",".join(f"{p.get('port')}/{p.get('protocol', 'TCP')}" for p in spec.get("ports") or []) or "<none>"
    return (
        [_column("Type"), _column("Cluster-IP"), _column("External-IP"), _column("Port(s)"), _column("Age")],
        [
            spec.get("type", "ClusterIP"),
            spec.get("clusterIP", "<none>"),
            "<none>",
            ports,
            age(obj["metadata"].get("creationTimestamp"), now),
        ],
    )


def _node_cells(obj, now):
    conditions = {c.get("type"): c.get("status") for c in (obj.get("status") or {}).get("conditions") or []}
    ready = {"True": "Ready", "False": "NotReady"}.get(conditions.get("Ready"), "Unknown")
    return [_column("Status"), _column("Age")], [ready, age(obj["metadata"].get("creationTimestamp"), now)]


def _pvc_cells(obj, now):
    status = obj.get("status") or {}
    return (
        [_column("Status"), _column("Capacity"), _column("Age")],
        [
            status.get("phase", "Pending"),
            (status.get("capacity") or {}).get("storage", ""),
            age(obj["metadata"].get("creationTimestamp"), now),
        ],
    )


def _lease_cells(obj, now):
    return (
        [_column("Holder"), _column("Age")],
        [(obj.get("spec") or {}).get("holderIdentity", ""), age(obj["metadata"].get("creationTimestamp"), now)],
    )


def _deployment_cells(obj, now):
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    return (
        [_column("Ready"), _column("Up-to-date", "integer"), _column("Available", "integer"), _column("Age")],
        [
            f"{status.get('readyReplicas', 0)}/{spec.get('replicas', 1)}",
            status.get("updatedReplicas", 0),
            status.get("availableReplicas", 0),
            age(obj["metadata"].get("creationTimestamp"), now),
        ],
    )


def _quota_cells(obj, now):
    """As upstream's printer: `used/hard` per resource, limits.* in a column of their own."""
    status = obj.get("status") or {}
    hard, used = status.get("hard") or {}, status.get("used") or {}
    request, limit = [], []
    for resource in sorted(hard):
        column = limit if resource.split(".")[0] == "limits" and "." in resource else request
        column.append(f"{resource}: {used.get(resource, '0')}/{hard[resource]}")
    return (
        [_column("Age"), _column("Request"), _column("Limit")],
        [age(obj["metadata"].get("creationTimestamp"), now), ", ".join(request), ", ".join(limit)],
    )


def _priority_class_cells(obj, now):
    return (
        [
            _column("Value", "integer"),
            _column("Global-Default", "boolean"),
            _column("Age"),
            _column("PreemptionPolicy"),
        ],
        [
            obj.get("value", 0),
            bool(obj.get("globalDefault")),
            age(obj["metadata"].get("creationTimestamp"), now),
            obj.get("preemptionPolicy", ""),
        ],
    )


_BUILTIN_CELLS = {
    ("", "resourcequotas"): _quota_cells,
    ("scheduling.k8s.io", "priorityclasses"): _priority_class_cells,
    ("apps", "deployments"): _deployment_cells,
    ("", "events"): _event_cells,
    ("events.k8s.io", "events"): _event_cells,
    ("", "configmaps"): _configmap_cells,
    ("", "secrets"): _secret_cells,
    ("", "services"): _service_cells,
    ("", "nodes"): _node_cells,
    ("", "persistentvolumeclaims"): _pvc_cells,
    ("coordination.k8s.io", "leases"): _lease_cells,
    ("", "pods"): _pod_cells,
    ("batch", "jobs"): _job_cells,
    ("", "namespaces"): _namespace_cells,
    ("apiextensions.k8s.io", "customresourcedefinitions"): _crd_cells,
}


def _custom_cells(rt: ResourceType, obj: dict[str, Any], now: datetime.datetime) -> tuple[list[dict], list[Any]]:
    columns, cells = [], []
    for col in rt.printer_columns or ():
        type_ = col.get("type", "string")
        columns.append(
            _column(
                col.get("name", ""),
                type_,
                col.get("format", ""),
                col.get("description", ""),
                int(col.get("priority", 0)),
            )
        )
        values = jsonpath(obj, col.get("jsonPath", ""))
        if not values:
            cells.append(None)
            continue
        value = values[0]
        if type_ == "date":
            cells.append(age(value, now))
        elif type_ == "integer" and isinstance(value, (int, float)) and not isinstance(value, bool):
            cells.append(int(value))
        elif type_ == "number" and isinstance(value, (int, float)):
            cells.append(value)
        elif type_ == "boolean" and isinstance(value, bool):
            cells.append(value)
        elif isinstance(value, (dict, list)):
            cells.append(json.dumps(value, separators=(",", ":")))
        else:
            cells.append(str(value) if not isinstance(value, bool) else ("true" if value else "false"))
    return columns, cells


def build_table(
    rt: ResourceType,
    objects: Iterable[dict[str, Any]],
    resource_version: str | None,
    include_object: str = "Metadata",
    now: datetime.datetime | None = None,
) -> dict[str, Any]:
    now = now or datetime.datetime.now(datetime.timezone.utc)
    name_col = _column("Name", fmt="name", description="Name must be unique within a namespace.")
    columns: list[dict] | None = None
    rows = []
    for obj in objects:
        if rt.printer_columns is not None:
            cols, cells = _custom_cells(rt, obj, now)
        elif rt.key in _BUILTIN_CELLS:
            cols, cells = _BUILTIN_CELLS[rt.key](obj, now)
        else:
            cols, cells = [_column("Age")], [age(obj["metadata"].get("creationTimestamp"), now)]
        columns = columns or cols
        row: dict[str, Any] = {"cells": [obj["metadata"].get("name", "")] + cells}
        if include_object == "Object":
            row["object"] = obj
        elif include_object != "None":
            row["object"] = {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj.get("metadata", {}),
            }
        rows.append(row)
    if columns is None:
        if rt.printer_columns is not None:
            columns, _ = _custom_cells(rt, {}, now)
        elif rt.key in _BUILTIN_CELLS:
            columns, _ = _BUILTIN_CELLS[rt.key]({"metadata": {}}, now)
        else:
            columns = [_column("Age")]
    meta = {"resourceVersion": resource_version} if resource_version else {}
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": meta,
        "columnDefinitions": [name_col] + columns,
        "rows": rows,
    }
