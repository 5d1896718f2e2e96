"""Object lifecycle semantics: create, update, patch, status subresource, delete, finalizers, CRDs."""

from __future__ import annotations

import copy
import datetime
import ipaddress
import random
import uuid
from typing import Any, Callable

from . import patching
from .errors import ApiError, already_exists, conflict, invalid, not_found
from .resources import Registry, ResourceType, resources_from_crd
from .store import ObjKey, Store
from .validation import name_problems, validate_custom_resource

CRD_KEY = ("apiextensions.k8s.io", "customresourcedefinitions")
NS_KEY = ("", "namespaces")
POD_KEY = ("", "pods")
FOREGROUND = "foregroundDeletion"
ORPHAN = "orphan"
_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"


def now() -> datetime.datetime:
    """The server's clock; patch this in tests that need a fixed time."""
    return datetime.datetime.now(datetime.timezone.utc)


def timestamp(moment: datetime.datetime | None = None) -> str:
    return (moment or now()).strftime("%Y-%m-%dT%H:%M:%SZ")


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    return obj.get("metadata") or {}


def _without(obj: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in keys}


class Objects:
    """API semantics over the store; every method is synchronous, so each call is atomic."""

    def __init__(self, store: Store, registry: Registry, graceful_pod_deletion: bool = True) -> None:
        self.store = store
        self.registry = registry
        self.graceful_pod_deletion = graceful_pod_deletion
        self.warnings: list[str] = []  # per-request warnings, drained by the handler
        self.on_terminating: Callable[[], None] = lambda: None  # wakes the garbage collector
        self._service_ips = ipaddress.ip_network("10.96.0.0/16").hosts()
        next(self._service_ips)

    # --- helpers ------------------------------------------------------------------------------

    def key(self, rt: ResourceType, namespace: str | None, name: str) -> ObjKey:
        return (rt.group, rt.plural, (namespace or "") if rt.namespaced else "", name)

    def require(self, rt: ResourceType, namespace: str | None, name: str) -> dict[str, Any]:
        obj = self.store.get(*self.key(rt, namespace, name))
        if obj is None:
            raise not_found(rt.plural, name, rt.group)
        return obj

    def _check_namespace(self, rt: ResourceType, namespace: str | None) -> None:
        if not rt.namespaced:
            return
        if not namespace:
            raise ApiError(400, "the namespace of the object must be set for a namespaced resource")
        ns = self.store.get("", "namespaces", "", namespace)
        if ns is None:
            raise not_found("namespaces", namespace)
        if _meta(ns).get("deletionTimestamp"):
            raise ApiError(
                403,
                f'{rt.plural} "{rt.kind}" is forbidden: unable to create new content in namespace '
                f"{namespace} because it is being terminated",
                reason="Forbidden",
                details={
                    "name": namespace,
                    "kind": "namespaces",
                    "causes": [{"reason": "NamespaceTerminating", "field": "metadata.namespace"}],
                },
            )

    def _validate(
        self, rt: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None, field_validation: str | None = None
    ) -> dict[str, Any]:
        name = _meta(obj).get("name", "")
        causes = [("metadata.name", p) for p in name_problems(name, label=rt.key == NS_KEY)]
        if rt.crd_name is not None:
            obj, schema_causes = validate_custom_resource(obj, rt.schema, old, strict=field_validation == "Strict")
            unknown = [c["message"] for c in schema_causes if c["message"].startswith("strict decoding error")]
            if unknown:
                # Like the real server, unknown fields under Strict are a decoding error (400), not a 422.
                raise ApiError(
                    400, f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: ' + ", ".join(unknown)
                )
            causes.extend((c["field"], c["message"]) for c in schema_causes)
        elif rt.key == CRD_KEY:
            causes.extend(_crd_problems(obj))
        elif rt.key == POD_KEY:
            containers = (obj.get("spec") or {}).get("containers") or []
            if not containers:
                causes.append(("spec.containers", "Required value"))
            for n, container in enumerate(containers):
                for field in ("name", "image"):
                    if not (container or {}).get(field):
                        causes.append((f"spec.containers[{n}].{field}", "Required value"))
        elif rt.key == ("batch", "jobs"):
            policy = (((obj.get("spec") or {}).get("template") or {}).get("spec") or {}).get("restartPolicy")
            if policy not in ("Never", "OnFailure"):
                causes.append(
                    (
                        "spec.template.spec.restartPolicy",
                        f'Unsupported value: {policy!r}: supported values: "OnFailure", "Never"',
                    )
                )
        if causes:
            raise invalid(rt.kind, name, causes, rt.group)
        return obj

    def present(self, rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        """The object as a client of `rt`'s version sees it."""
        if obj.get("apiVersion") != rt.api_version:
            return {**obj, "apiVersion": rt.api_version}
        return obj

    # --- create -------------------------------------------------------------------------------

    def create(
        self,
        rt: ResourceType,
        namespace: str | None,
        body: dict[str, Any],
        dry_run: bool = False,
        field_validation: str | None = None,
    ) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise ApiError(400, "the request body must be a JSON object")
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise ApiError(400, "metadata must be an object")
        if rt.namespaced:
            body_ns = meta.get("namespace")
            if body_ns and namespace and body_ns != namespace:
                raise ApiError(
                    400, "the namespace of the provided object does not match the namespace sent on the request"
                )
            namespace = namespace or body_ns
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
            namespace = None
        if not meta.get("name"):
            if meta.get("generateName"):
                meta["name"] = meta["generateName"] + "".join(random.choices(_NAME_CHARS, k=5))
            else:
                raise invalid(
                    rt.kind, "", [("metadata.name", "Required value: name or generateName is required")], rt.group
                )
        self._check_namespace(rt, namespace)
        key = self.key(rt, namespace, meta["name"])
        if self.store.get(*key) is not None:
            raise already_exists(rt.plural, meta["name"], rt.group)
        obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
        for field in (
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "managedFields",
            "selfLink",
        ):
            meta.pop(field, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = timestamp()
        meta["generation"] = 1
        if rt.status_subresource and rt.key != CRD_KEY:
            obj.pop("status", None)
        _apply_builtin_defaults(rt, obj, self)
        obj = self._validate(rt, obj, None, field_validation)
        if rt.key == CRD_KEY:
            obj = self._crd_with_status(obj)
        if dry_run:
            return self.present(rt, obj)
        if rt.key == CRD_KEY:
            self._register_crd(obj)
        stored = self.store.put(key, obj)
        if rt.key == NS_KEY:
            self._create_default_service_account(meta["name"])
        return self.present(rt, stored)

    def _create_default_service_account(self, namespace: str) -> None:
        key = ("", "serviceaccounts", namespace, "default")
        if self.store.get(*key) is None:
            self.store.put(
                key,
                {
                    "apiVersion": "v1",
                    "kind": "ServiceAccount",
                    "metadata": {
                        "name": "default",
                        "namespace": namespace,
                        "uid": str(uuid.uuid4()),
                        "creationTimestamp": timestamp(),
                    },
                },
            )

    # --- update / patch -----------------------------------------------------------------------

    def update(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        body: dict[str, Any],
        subresource: str | None = None,
        dry_run: bool = False,
        field_validation: str | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """PUT semantics; returns (object, removed) where removed means the last finalizer went."""
        if not isinstance(body, dict):
            raise ApiError(400, "the request body must be a JSON object")
        old = self.require(rt, namespace, name)
        meta = body.get("metadata") or {}
        if meta.get("name") and meta["name"] != name:
            raise ApiError(400, f"the name of the object ({meta['name']}) does not match the name on the URL ({name})")
        if rt.namespaced and meta.get("namespace") and meta["namespace"] != namespace:
            raise ApiError(400, "the namespace of the provided object does not match the namespace sent on the request")
        rv = meta.get("resourceVersion")
        if rv and rv != _meta(old).get("resourceVersion"):
            raise conflict(rt.plural, name, rt.group)
        return self._write(rt, old, copy.deepcopy(body), subresource, dry_run, field_validation)

    def patch(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        content_type: str,
        patch: Any,
        subresource: str | None = None,
        dry_run: bool = False,
        field_validation: str | None = None,
    ) -> tuple[dict[str, Any], bool]:
        old = self.require(rt, namespace, name)
        patched = patching.apply_patch(content_type, self.present(rt, old), patch)
        meta = patched.get("metadata") if isinstance(patched.get("metadata"), dict) else {}
        if meta.get("resourceVersion") not in (None, _meta(old).get("resourceVersion")):
            raise conflict(rt.plural, name, rt.group)
        if meta.get("name") not in (None, name):
            raise ApiError(400, "the name of an object cannot be changed by a patch")
        return self._write(rt, old, patched, subresource, dry_run, field_validation)

    def _write(
        self,
        rt: ResourceType,
        old: dict[str, Any],
        new: dict[str, Any],
        subresource: str | None,
        dry_run: bool,
        field_validation: str | None = None,
    ) -> tuple[dict[str, Any], bool]:
        old_meta = _meta(old)
        if subresource == "status":
            obj = {**old, "status": new.get("status")} if "status" in new else _without(old, "status")
            obj["metadata"] = dict(old_meta)
        elif subresource:
            raise ApiError(404, f"the server could not find the requested resource ({subresource})")
        else:
            obj = new
            meta = obj.get("metadata")
            meta = dict(meta) if isinstance(meta, dict) else {}
            for field in (
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "namespace",
                "name",
                "generation",
                "generateName",
            ):
                if field in old_meta:
                    meta[field] = old_meta[field]
                else:
                    meta.pop(field, None)
            meta.pop("managedFields", None)
            obj["metadata"] = meta
            if rt.status_subresource:
                if "status" in old:
                    obj["status"] = old["status"]
                else:
                    obj.pop("status", None)
            if old_meta.get("deletionTimestamp"):
                added = set(meta.get("finalizers") or ()) - set(old_meta.get("finalizers") or ())
                if added:
                    raise invalid(
                        rt.kind,
                        old_meta["name"],
                        [
                            (
                                "metadata.finalizers",
                                "Forbidden: no new "
                                "finalizers can be added if the object is being deleted, found new finalizers "
                                + str(sorted(added)),
                            )
                        ],
                        rt.group,
                    )
        obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
        obj["metadata"] = meta = dict(obj["metadata"])
        meta["resourceVersion"] = old_meta.get("resourceVersion")
        obj = self._validate(rt, obj, old, field_validation)
        ignored = ("metadata", "status") if (rt.status_subresource or rt.crd_name is None) else ("metadata",)
        if _without(obj, *ignored, "apiVersion", "kind") != _without(old, *ignored, "apiVersion", "kind"):
            obj["metadata"]["generation"] = int(old_meta.get("generation") or 1) + 1
        if rt.key == CRD_KEY:
            obj = self._crd_with_status(obj)
        comparable_old = self.present(rt, old)
        if obj == comparable_old:
            return comparable_old, False  # a no-op write does not bump resourceVersion
        if dry_run:
            return obj, False
        if self._ready_to_go(rt, obj):
            return self.present(rt, self._remove(rt, obj)), True
        if rt.key == CRD_KEY:
            self._register_crd(obj)
        return self.present(rt, self.store.put(self.key(rt, meta.get("namespace"), meta["name"]), obj)), False

    def bind(self, rt: ResourceType, namespace: str | None, name: str, binding: dict[str, Any]) -> dict[str, Any]:
        """pods/binding: what the scheduler posts to assign a pod to a node."""
        pod = self.require(rt, namespace, name)
        node = (binding.get("target") or {}).get("name") if isinstance(binding, dict) else None
        if not node:
            raise invalid("Binding", name, [("target.name", "Required value")])
        if (pod.get("spec") or {}).get("nodeName"):
            raise ApiError(
                409, f'pod {name} is already assigned to node "{pod["spec"]["nodeName"]}"', reason="Conflict"
            )
        if _meta(pod).get("deletionTimestamp"):
            raise ApiError(409, f"pod {name} is being deleted, cannot be assigned to a host", reason="Conflict")
        conditions = [c for c in (pod.get("status") or {}).get("conditions") or [] if c.get("type") != "PodScheduled"]
        conditions.append(
            {"type": "PodScheduled", "status": "True", "lastProbeTime": None, "lastTransitionTime": timestamp()}
        )
        annotations = {
            **(_meta(pod).get("annotations") or {}),
            **((binding.get("metadata") or {}).get("annotations") or {}),
        }
        new = {
            **pod,
            "spec": {**pod.get("spec", {}), "nodeName": node},
            "status": {**(pod.get("status") or {}), "conditions": conditions},
            "metadata": {**_meta(pod), **({"annotations": annotations} if annotations else {})},
        }
        self.store.put(self.key(rt, namespace, name), new)
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}

    # --- delete -------------------------------------------------------------------------------

    def delete(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        options: dict[str, Any] | None = None,
        dry_run: bool = False,
    ) -> tuple[dict[str, Any], bool]:
        """DELETE semantics; returns (object, removed-now)."""
        options = options or {}
        obj = self.require(rt, namespace, name)
        meta = _meta(obj)
        pre = options.get("preconditions") or {}
        if pre.get("uid") and pre["uid"] != meta.get("uid"):
            raise ApiError(
                409,
                f"Precondition failed: UID in precondition: {pre['uid']}, UID in object meta: {meta.get('uid')}",
                reason="Conflict",
            )
        if pre.get("resourceVersion") and pre["resourceVersion"] != meta.get("resourceVersion"):
            raise ApiError(
                409,
                f"Precondition failed: ResourceVersion in precondition: {pre['resourceVersion']}, "
                f"ResourceVersion in object meta: {meta.get('resourceVersion')}",
                reason="Conflict",
            )
        policy = options.get("propagationPolicy")
        if policy is None and options.get("orphanDependents") is not None:
            policy = "Orphan" if options["orphanDependents"] else "Background"
        if policy is None and rt.key == ("batch", "jobs"):
            policy = "Orphan"  # batch/v1 keeps its pods by default, like the real server (with its warning)
            self.warnings.append(
                "child pods are preserved by default when jobs are deleted; set "
                "propagationPolicy=Background to remove them or set propagationPolicy=Orphan to "
                "suppress this warning"
            )
        if policy not in (None, "Background", "Foreground", "Orphan"):
            raise ApiError(400, f"unknown propagationPolicy {policy!r}: use Background, Foreground or Orphan")
        finalizers = list(meta.get("finalizers") or ())
        if policy == "Foreground" and FOREGROUND not in finalizers:
            finalizers.append(FOREGROUND)
        if policy == "Orphan" and ORPHAN not in finalizers:
            finalizers.append(ORPHAN)

        grace = 0
        if rt.key == POD_KEY and self.graceful_pod_deletion:
            grace = options.get("gracePeriodSeconds")
            if grace is None:
                grace = int((obj.get("spec") or {}).get("terminationGracePeriodSeconds", 30))
            phase = (obj.get("status") or {}).get("phase")
            if not (obj.get("spec") or {}).get("nodeName") or phase in ("Succeeded", "Failed"):
                grace = 0  # nothing runs it: the real server deletes such pods at once
        if dry_run:
            return self.present(rt, obj), not finalizers and not grace
        terminating = rt.key in (NS_KEY, CRD_KEY)
        if not finalizers and not grace and not (terminating and not self._removable(rt, obj)):
            return self.present(rt, self._remove(rt, obj)), True
        new_meta = dict(meta, finalizers=finalizers) if finalizers else _without(meta, "finalizers")
        if not meta.get("deletionTimestamp"):
            new_meta["deletionTimestamp"] = timestamp(now() + datetime.timedelta(seconds=int(grace)))
            new_meta["deletionGracePeriodSeconds"] = int(grace)
        elif grace < int(meta.get("deletionGracePeriodSeconds") or 0):
            new_meta["deletionGracePeriodSeconds"] = int(grace)
        elif not grace and not finalizers and rt.key == POD_KEY:
            return self.present(rt, self._remove(rt, obj)), True
        new = {**obj, "metadata": new_meta}
        if rt.key == NS_KEY:
            new["status"] = {**(obj.get("status") or {}), "phase": "Terminating"}
        if new == obj:
            return self.present(rt, obj), False
        if not grace and not finalizers and self._removable(rt, new):
            return self.present(rt, self._remove(rt, new)), True
        stored = self.store.put(self.key(rt, namespace, name), new)
        self.on_terminating()
        return self.present(rt, stored), False

    def _removable(self, rt: ResourceType, obj: dict[str, Any]) -> bool:
        """Namespaces and CRDs go only once their content is gone (the garbage collector empties them)."""
        if rt.key == NS_KEY:
            name = _meta(obj)["name"]
            return not any(self.store.count(g, p, name) for (g, p) in self.store.type_keys())
        if rt.key == CRD_KEY:
            spec = obj.get("spec") or {}
            return not self.store.count(spec.get("group", ""), (spec.get("names") or {}).get("plural", ""))
        return True

    def _remove(self, rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        meta = _meta(obj)
        final = self.store.remove(self.key(rt, meta.get("namespace"), meta["name"]))
        if rt.key == CRD_KEY:
            self._unregister_crd(final)
        return final

    def delete_collection(
        self, rt: ResourceType, namespace: str | None, matcher, options: dict[str, Any] | None, dry_run: bool = False
    ) -> list[dict[str, Any]]:
        deleted = []
        for obj in list(self.store.list(rt.group, rt.plural, namespace if rt.namespaced else None)):
            if matcher is None or matcher(obj):
                meta = _meta(obj)
                try:
                    result, _ = self.delete(rt, meta.get("namespace"), meta["name"], options, dry_run)
                except ApiError as exc:
                    if exc.code != 404:
                        raise
                    continue
                deleted.append(result)
        return deleted

    def _ready_to_go(self, rt: ResourceType, obj: dict[str, Any]) -> bool:
        """Being deleted, no finalizers left, no content left, and (pods) not waiting for the kubelet."""
        meta = _meta(obj)
        if not meta.get("deletionTimestamp") or meta.get("finalizers") or not self._removable(rt, obj):
            return False
        return rt.key != POD_KEY or not self.graceful_pod_deletion or not meta.get("deletionGracePeriodSeconds")

    def finalize(self, rt: ResourceType, obj: dict[str, Any]) -> bool:
        """Remove `obj` if nothing holds it any more; True if it went."""
        if self._ready_to_go(rt, obj):
            self._remove(rt, obj)
            return True
        return False

    # --- CustomResourceDefinitions -------------------------------------------------------------

    def _crd_with_status(self, crd: dict[str, Any]) -> dict[str, Any]:
        spec = crd.get("spec") or {}
        storage = next((v["name"] for v in spec.get("versions") or [] if v.get("storage")), None)
        status = dict(crd.get("status") or {})
        stamp = timestamp()
        old_conditions = {c.get("type"): c for c in status.get("conditions") or []}
        conditions = []
        for type_, reason, message in (
            ("NamesAccepted", "NoConflicts", "no conflicts found"),
            ("Established", "InitialNamesAccepted", "the initial names have been accepted"),
        ):
            previous = old_conditions.get(type_)
            conditions.append(
                {
                    "type": type_,
                    "status": "True",
                    "reason": reason,
                    "message": message,
                    "lastTransitionTime": previous.get("lastTransitionTime", stamp) if previous else stamp,
                }
            )
        stored = list(status.get("storedVersions") or [])
        if storage and storage not in stored:
            stored.append(storage)
        status.update(conditions=conditions, acceptedNames=spec.get("names") or {}, storedVersions=stored)
        return {**crd, "status": status}

    def _register_crd(self, crd: dict[str, Any]) -> None:
        spec = crd.get("spec") or {}
        storage = next((v["name"] for v in spec.get("versions") or [] if v.get("storage")), None)
        self.registry.set_crd(_meta(crd)["name"], resources_from_crd(crd), storage)

    def _unregister_crd(self, crd: dict[str, Any]) -> None:
        removed = self.registry.remove_crd(_meta(crd)["name"])
        for rt in removed[:1]:
            self.store.close_watchers(rt.key)


def _crd_problems(crd: dict[str, Any]) -> list[tuple[str, str]]:
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    causes = []
    if not spec.get("group"):
        causes.append(("spec.group", "Required value"))
    if not names.get("plural"):
        causes.append(("spec.names.plural", "Required value"))
    if not names.get("kind"):
        causes.append(("spec.names.kind", "Required value"))
    if spec.get("scope") not in ("Namespaced", "Cluster"):
        causes.append(("spec.scope", 'Unsupported value: supported values: "Cluster", "Namespaced"'))
    versions = spec.get("versions") or []
    if not versions:
        causes.append(("spec.versions", "Invalid value: must have exactly one version marked as storage version"))
    elif sum(1 for v in versions if v.get("storage")) != 1:
        causes.append(("spec.versions", "Invalid value: must have exactly one version marked as storage version"))
    expected = f"{names.get('plural')}.{spec.get('group')}"
    if _meta(crd).get("name") != expected:
        causes.append(
            ("metadata.name", f'Invalid value: "{_meta(crd).get("name")}": must be spec.names.plural+"."+spec.group')
        )
    return causes


def _apply_builtin_defaults(rt: ResourceType, obj: dict[str, Any], objects: Objects) -> None:
    """The defaults (and controller-added fields) that clients of the real server rely on."""
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
    elif rt.key == ("batch", "jobs"):
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
            spec["clusterIP"] = str(next(objects._service_ips))
            spec["clusterIPs"] = [spec["clusterIP"]]
        for port in spec.get("ports") or []:
            port.setdefault("protocol", "TCP")
            port.setdefault("targetPort", port.get("port"))
        obj["status"] = {"loadBalancer": {}}
