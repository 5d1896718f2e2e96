"""Object lifecycle semantics: create, update, patch, status subresource, delete, finalizers, CRDs.

Decided elsewhere, purely: built-in defaults (defaults.py), validation (validation.py, crds.py), what a
DELETE asks for (deletion.py), a CRD's status (crds.py). This module applies them to the store.
"""

from __future__ import annotations

import copy
import datetime
import ipaddress
import uuid
from typing import Any, Callable

from . import patching
from .admission import Admission, system_priority_classes
from .crds import crd_problems, crd_with_status, storage_version
from .defaults import apply_builtin_defaults
from .deletion import check_preconditions, finalizers_for, grace_seconds, propagation_policy
from .errors import ApiError, already_exists, conflict, invalid, not_found
from .metadata import SERVER_SET_ON_CREATE, ensure_name, main_resource_write, metadata_of, place_in_namespace, without
from .resources import CRD_KEY, NS_KEY, POD_KEY, PRIORITY_CLASS_KEY, Registry, ResourceType, resources_from_crd
from .store import ObjKey, Store
from .validation import builtin_causes, name_causes, validate_custom_resource


def now() -> datetime.datetime:
    """The server's clock; patch this in tests that need a fixed time."""
    return datetime.datetime.now(datetime.timezone.utc)


def timestamp(moment: datetime.datetime | None = None) -> str:
    return (moment or now()).strftime("%Y-%m-%dT%H:%M:%SZ")


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
        self.admission = Admission(store, lambda: now())
        for priority_class in system_priority_classes(timestamp()):
            self.store.put((*PRIORITY_CLASS_KEY, "", priority_class["metadata"]["name"]), priority_class)

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
        if metadata_of(ns).get("deletionTimestamp"):
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
        name = metadata_of(obj).get("name", "")
        causes: list[tuple[str, ...]] = list(name_causes(name, label=rt.key == NS_KEY))
        if rt.crd_name is not None:
            obj, schema_causes = validate_custom_resource(obj, rt.schema, old, strict=field_validation == "Strict")
            unknown = [c["message"] for c in schema_causes if c["message"].startswith("strict decoding error")]
            if unknown:
                # Like the real server, unknown fields under Strict are a decoding error (400), not a 422.
                raise ApiError(
                    400, f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: ' + ", ".join(unknown)
                )
            causes.extend((c["field"], c["message"], c.get("reason") or "FieldValueInvalid") for c in schema_causes)
        elif rt.key == CRD_KEY:
            causes.extend(crd_problems(obj))
        else:
            causes.extend(builtin_causes(rt, obj, old))
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
        namespace = place_in_namespace(rt, meta, namespace)
        self._check_namespace(rt, namespace)
        # Mutating admission runs before a generateName is turned into a name: its refusals name the prefix.
        self.admission.mutate(rt, obj, None, meta.get("name") or meta.get("generateName") or "")
        ensure_name(rt, meta)
        key = self.key(rt, namespace, meta["name"])
        if self.store.get(*key) is not None:
            raise already_exists(rt.plural, meta["name"], rt.group)
        obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
        for field in SERVER_SET_ON_CREATE:
            meta.pop(field, None)
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=timestamp(), generation=1)
        if rt.status_subresource and rt.key != CRD_KEY:
            obj.pop("status", None)
        apply_builtin_defaults(rt, obj, lambda: str(next(self._service_ips)))
        obj = self._validate(rt, obj, None, field_validation)
        self.admission.validate(rt, obj, None)
        if rt.key == CRD_KEY:
            obj = crd_with_status(obj, timestamp())
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
        if rv and rv != metadata_of(old).get("resourceVersion"):
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
        if meta.get("resourceVersion") not in (None, metadata_of(old).get("resourceVersion")):
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
        """Store `new` in place of `old` (a write of the main resource or of its status); returns (object,
        removed) where removed means the write let a deleted object go."""
        old_meta = metadata_of(old)
        if subresource == "status":
            obj = {**old, "status": new.get("status")} if "status" in new else without(old, "status")
            obj["metadata"] = dict(old_meta)
        elif subresource:
            raise ApiError(404, f"the server could not find the requested resource ({subresource})")
        else:
            obj = main_resource_write(rt, old, new)
            self.admission.mutate(rt, obj, old, old_meta.get("name", ""))
        obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
        obj["metadata"] = meta = dict(obj["metadata"])
        meta["resourceVersion"] = old_meta.get("resourceVersion")
        obj = self._validate(rt, obj, old, field_validation)
        if not subresource:
            self.admission.validate(rt, obj, old)
        ignored = ("metadata", "status") if (rt.status_subresource or rt.crd_name is None) else ("metadata",)
        if without(obj, *ignored, "apiVersion", "kind") != without(old, *ignored, "apiVersion", "kind"):
            obj["metadata"]["generation"] = int(old_meta.get("generation") or 1) + 1
        if rt.key == CRD_KEY:
            obj = crd_with_status(obj, timestamp())
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
        if metadata_of(pod).get("deletionTimestamp"):
            raise ApiError(409, f"pod {name} is being deleted, cannot be assigned to a host", reason="Conflict")
        conditions = [c for c in (pod.get("status") or {}).get("conditions") or [] if c.get("type") != "PodScheduled"]
        conditions.append(
            {"type": "PodScheduled", "status": "True", "lastProbeTime": None, "lastTransitionTime": timestamp()}
        )
        annotations = {
            **(metadata_of(pod).get("annotations") or {}),
            **((binding.get("metadata") or {}).get("annotations") or {}),
        }
        new = {
            **pod,
            "spec": {**pod.get("spec", {}), "nodeName": node},
            "status": {**(pod.get("status") or {}), "conditions": conditions},
            "metadata": {**metadata_of(pod), **({"annotations": annotations} if annotations else {})},
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
        check_preconditions(metadata_of(obj), options.get("preconditions") or {})
        finalizers = finalizers_for(metadata_of(obj), propagation_policy(rt, options, self.warnings))
        grace = grace_seconds(rt, obj, options, self.graceful_pod_deletion)
        if dry_run:
            return self.present(rt, obj), not finalizers and not grace
        terminating = rt.key in (NS_KEY, CRD_KEY)
        if not finalizers and not grace and not (terminating and not self._removable(rt, obj)):
            return self.present(rt, self._remove(rt, obj)), True
        return self._mark_deleted(rt, self.key(rt, namespace, name), obj, finalizers, grace)

    def _mark_deleted(
        self, rt: ResourceType, key: ObjKey, obj: dict[str, Any], finalizers: list[str], grace: int
    ) -> tuple[dict[str, Any], bool]:
        """Record the deletion (timestamp, grace period, finalizers) on an object something still holds, or
        remove it if the new grace period lets it go; returns (object, removed-now)."""
        meta = metadata_of(obj)
        new_meta = dict(meta, finalizers=finalizers) if finalizers else without(meta, "finalizers")
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
        stored = self.store.put(key, new)
        self.on_terminating()
        return self.present(rt, stored), False

    def _removable(self, rt: ResourceType, obj: dict[str, Any]) -> bool:
        """Namespaces and CRDs go only once their content is gone (the garbage collector empties them)."""
        if rt.key == NS_KEY:
            name = metadata_of(obj)["name"]
            return not any(self.store.count(g, p, name) for (g, p) in self.store.type_keys())
        if rt.key == CRD_KEY:
            spec = obj.get("spec") or {}
            return not self.store.count(spec.get("group", ""), (spec.get("names") or {}).get("plural", ""))
        return True

    def _remove(self, rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        meta = metadata_of(obj)
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
                meta = metadata_of(obj)
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
        meta = metadata_of(obj)
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

    def _register_crd(self, crd: dict[str, Any]) -> None:
        self.registry.set_crd(metadata_of(crd)["name"], resources_from_crd(crd), storage_version(crd))

    def _unregister_crd(self, crd: dict[str, Any]) -> None:
        removed = self.registry.remove_crd(metadata_of(crd)["name"])
        for rt in removed[:1]:
            self.store.close_watchers(rt.key)
