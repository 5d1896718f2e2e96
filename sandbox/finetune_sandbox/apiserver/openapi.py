"""Just enough OpenAPI for kubectl: v3 documents that announce `fieldValidation` on PATCH (so kubectl
leaves validation to the server) and carry CRD schemas (so `kubectl explain` finds custom kinds)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from .resources import Registry

VERSION = "v1.37.0"


def _gv_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def v3_root(registry: Registry) -> dict[str, Any]:
    paths = {}
    for group, version in sorted({(rt.group, rt.version) for rt in registry.all_types()}):
        doc = v3_group_version(registry, group, version)
        digest = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:32].upper()
        paths[_gv_path(group, version)] = {"serverRelativeURL": f"/openapi/v3/{_gv_path(group, version)}?hash={digest}"}
    return {"paths": paths}


def v3_group_version(registry: Registry, group: str, version: str) -> dict[str, Any] | None:
    types = registry.types_in(group, version)
    if not types:
        return None
    params = [
        {"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": True}}
        for name in ("dryRun", "fieldManager", "fieldValidation", "pretty")
    ]
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    for rt in types:
        prefix = f"/{_gv_path(group, version)}"
        base = f"{prefix}/namespaces/{{namespace}}/{rt.plural}" if rt.namespaced else f"{prefix}/{rt.plural}"
        gvk = {"group": group, "version": version, "kind": rt.kind}
        op = {"x-kubernetes-group-version-kind": gvk, "parameters": params, "responses": {"200": {"description": "OK"}}}
        paths[base] = {"post": {**op, "x-kubernetes-action": "post"}, "get": {**op, "x-kubernetes-action": "list"}}
        paths[f"{base}/{{name}}"] = {
            "patch": {**op, "x-kubernetes-action": "patch"},
            "put": {**op, "x-kubernetes-action": "put"},
            "get": {**op, "x-kubernetes-action": "get"},
        }
        if rt.schema is not None:
            name = ".".join(reversed(group.split("."))) + f".{version}.{rt.kind}"
            schemas[name] = {**rt.schema, "x-kubernetes-group-version-kind": [gvk]}
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": VERSION},
        "paths": paths,
        "components": {"schemas": schemas},
    }


def v2(registry: Registry) -> dict[str, Any]:
    return {"swagger": "2.0", "info": {"title": "Kubernetes", "version": VERSION}, "paths": {}, "definitions": {}}
