"""Resource types the server knows (built-ins plus CRD-defined ones) and the discovery documents."""

from __future__ import annotations

import dataclasses
from typing import Any

ALL_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
# The (group, plural) keys of the kinds with semantics of their own.
CRD_KEY = ("apiextensions.k8s.io", "customresourcedefinitions")
NS_KEY = ("", "namespaces")
POD_KEY = ("", "pods")
JOB_KEY = ("batch", "jobs")
QUOTA_KEY = ("", "resourcequotas")
PRIORITY_CLASS_KEY = ("scheduling.k8s.io", "priorityclasses")


@dataclasses.dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    singular: str = ""
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()  # e.g. ("status", "log")
    status_subresource: bool = False  # writes to the main resource ignore `status`
    verbs: tuple[str, ...] = tuple(ALL_VERBS)
    # For CRD-defined resources: the version's openAPIV3Schema and printer columns.
    schema: dict[str, Any] | None = None
    printer_columns: tuple[dict[str, Any], ...] | None = None
    crd_name: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        """Storage key: every version of a resource shares one storage."""
        return (self.group, self.plural)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def list_kind(self) -> str:
        return self.kind + "List"

    def discovery_entries(self) -> list[dict[str, Any]]:
        entries = [
            {
                "name": self.plural,
                "singularName": self.singular or self.kind.lower(),
                "namespaced": self.namespaced,
                "kind": self.kind,
                "verbs": list(self.verbs),
                **({"shortNames": list(self.short_names)} if self.short_names else {}),
                **({"categories": list(self.categories)} if self.categories else {}),
                "storageVersionHash": "",
            }
        ]
        for sub in self.subresources:
            if sub == "log":
                entries.append(
                    {
                        "name": f"{self.plural}/log",
                        "singularName": "",
                        "namespaced": self.namespaced,
                        "kind": "Pod",
                        "verbs": ["get"],
                    }
                )
            elif sub in ("binding", "eviction"):
                entries.append(
                    {
                        "name": f"{self.plural}/{sub}",
                        "singularName": "",
                        "namespaced": self.namespaced,
                        "kind": sub.capitalize(),
                        "verbs": ["create"],
                        **({"group": "policy", "version": "v1"} if sub == "eviction" else {}),
                    }
                )
            else:
                entries.append(
                    {
                        "name": f"{self.plural}/{sub}",
                        "singularName": "",
                        "namespaced": self.namespaced,
                        "kind": self.kind,
                        "verbs": ["get", "patch", "update"],
                    }
                )
        return entries


def _b(group: str, version: str, plural: str, kind: str, namespaced: bool = True, **kw: Any) -> ResourceType:
    return ResourceType(
        group=group,
        version=version,
        plural=plural,
        kind=kind,
        namespaced=namespaced,
        singular=kw.pop("singular", kind.lower()),
        **kw,
    )


BUILTINS: tuple[ResourceType, ...] = (
    _b(
        "",
        "v1",
        "namespaces",
        "Namespace",
        False,
        short_names=("ns",),
        subresources=("status",),
        status_subresource=True,
        verbs=("create", "delete", "get", "list", "patch", "update", "watch"),
    ),
    _b(
        "",
        "v1",
        "pods",
        "Pod",
        short_names=("po",),
        categories=("all",),
        subresources=("status", "log", "binding", "eviction"),
        status_subresource=True,
    ),
    _b(
        "",
        "v1",
        "services",
        "Service",
        short_names=("svc",),
        categories=("all",),
        subresources=("status",),
        status_subresource=True,
    ),
    _b("", "v1", "configmaps", "ConfigMap", short_names=("cm",)),
    _b("", "v1", "secrets", "Secret"),
    _b("", "v1", "events", "Event", short_names=("ev",)),
    _b(
        "",
        "v1",
        "persistentvolumeclaims",
        "PersistentVolumeClaim",
        short_names=("pvc",),
        subresources=("status",),
        status_subresource=True,
    ),
    _b("", "v1", "serviceaccounts", "ServiceAccount", short_names=("sa",)),
    # Enforced at pod creation (admission/quota.py); the quota controller keeps `status` (hard, used).
    _b(
        "",
        "v1",
        "resourcequotas",
        "ResourceQuota",
        short_names=("quota",),
        subresources=("status",),
        status_subresource=True,
    ),
    _b("", "v1", "nodes", "Node", False, short_names=("no",), subresources=("status",), status_subresource=True),
    _b("batch", "v1", "jobs", "Job", categories=("all",), subresources=("status",), status_subresource=True),
    _b("coordination.k8s.io", "v1", "leases", "Lease"),
    # Resolved into a pod's spec.priority at creation (admission/priority.py); no preemption follows from it.
    _b("scheduling.k8s.io", "v1", "priorityclasses", "PriorityClass", False, short_names=("pc",)),
    # Stored only (no controllers act on them), so the project's deploy manifests apply to the sandbox.
    _b(
        "apps",
        "v1",
        "deployments",
        "Deployment",
        short_names=("deploy",),
        categories=("all",),
        subresources=("status",),
        status_subresource=True,
    ),
    _b("rbac.authorization.k8s.io", "v1", "roles", "Role"),
    _b("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding"),
    _b("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False),
    _b("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False),
    _b("events.k8s.io", "v1", "events", "Event", short_names=("ev",)),
    _b(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        False,
        short_names=("crd", "crds"),
        categories=("api-extensions",),
        subresources=("status",),
        status_subresource=True,
    ),
)


def resources_from_crd(crd: dict[str, Any]) -> list[ResourceType]:
    """One ResourceType per served version of a CustomResourceDefinition."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    result = []
    for ver in spec.get("versions") or []:
        if not ver.get("served", True):
            continue
        subs = ver.get("subresources") or {}
        schema = (ver.get("schema") or {}).get("openAPIV3Schema")
        columns = ver.get("additionalPrinterColumns")
        result.append(
            ResourceType(
                group=spec.get("group", ""),
                version=ver["name"],
                plural=names.get("plural", ""),
                kind=names.get("kind", ""),
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                singular=names.get("singular") or names.get("kind", "").lower(),
                short_names=tuple(names.get("shortNames") or ()),
                categories=tuple(names.get("categories") or ()),
                subresources=tuple(s for s in ("status", "scale") if s in subs),
                status_subresource="status" in subs,
                schema=schema,
                printer_columns=tuple(columns) if columns else None,
                crd_name=(crd.get("metadata") or {}).get("name"),
            )
        )
    return result


class Registry:
    """All resource types currently served, indexed for routing and discovery."""

    def __init__(self) -> None:
        self._by_gvr: dict[tuple[str, str, str], ResourceType] = {}
        self._preferred: dict[str, str] = {"": "v1"}
        self._group_versions: dict[str, list[str]] = {}
        for rt in BUILTINS:
            self.add(rt)

    def add(self, rt: ResourceType, preferred: bool = False) -> None:
        self._by_gvr[(rt.group, rt.version, rt.plural)] = rt
        versions = self._group_versions.setdefault(rt.group, [])
        if rt.version not in versions:
            versions.append(rt.version)
        if preferred or rt.group not in self._preferred:
            self._preferred[rt.group] = rt.version

    def set_crd(self, crd_name: str, types: list[ResourceType], storage_version: str | None) -> None:
        self.remove_crd(crd_name)
        for rt in types:
            self.add(rt, preferred=(rt.version == storage_version))

    def remove_crd(self, crd_name: str) -> list[ResourceType]:
        removed = [rt for rt in self._by_gvr.values() if rt.crd_name == crd_name]
        for rt in removed:
            del self._by_gvr[(rt.group, rt.version, rt.plural)]
        groups = {rt.group for rt in removed}
        for group in groups:
            remaining = sorted({v for (g, v, _) in self._by_gvr if g == group})
            if remaining:
                self._group_versions[group] = [v for v in self._group_versions[group] if v in remaining]
                if self._preferred.get(group) not in remaining:
                    self._preferred[group] = self._group_versions[group][0]
            else:
                self._group_versions.pop(group, None)
                self._preferred.pop(group, None)
        return removed

    def get(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._by_gvr.get((group, version, plural))

    def has_group_version(self, group: str, version: str) -> bool:
        return version in self._group_versions.get(group, ())

    def types_in(self, group: str, version: str) -> list[ResourceType]:
        return [rt for (g, v, _), rt in self._by_gvr.items() if g == group and v == version]

    def all_types(self) -> list[ResourceType]:
        return list(self._by_gvr.values())

    def groups(self) -> list[str]:
        return [g for g in self._group_versions if g]

    # --- discovery documents -------------------------------------------------------------------

    def api_versions(self) -> dict[str, Any]:
        return {
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
        }

    def api_group(self, group: str) -> dict[str, Any]:
        versions = [{"groupVersion": f"{group}/{v}", "version": v} for v in self._group_versions.get(group, [])]
        pref = self._preferred.get(group)
        return {
            "kind": "APIGroup",
            "apiVersion": "v1",
            "name": group,
            "versions": versions,
            "preferredVersion": {"groupVersion": f"{group}/{pref}", "version": pref},
        }

    def api_group_list(self) -> dict[str, Any]:
        groups = []
        for group in self.groups():
            doc = self.api_group(group)
            del doc["kind"], doc["apiVersion"]
            groups.append(doc)
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}

    def resource_list(self, group: str, version: str) -> dict[str, Any]:
        entries = []
        for rt in self.types_in(group, version):
            entries.extend(rt.discovery_entries())
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": entries,
        }
