"""The metadata the server owns: set on create, kept on every write; where a new object goes and what it is
called; what a write of the main resource stores (no store access)."""

from __future__ import annotations

import random
from typing import Any

from .errors import ApiError, invalid
from .resources import ResourceType

# generateName's suffix, from the real server's alphabet: no vowels, so no word is spelt by accident.
NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"
# Set by the server on create, never taken from the request.
SERVER_SET_ON_CREATE = (
    "resourceVersion",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
)
# Kept from the stored object on every write of the main resource.
SERVER_OWNED = (
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "namespace",
    "name",
    "generation",
    "generateName",
)


def metadata_of(obj: dict[str, Any]) -> dict[str, Any]:
    return obj.get("metadata") or {}


def without(obj: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in keys}


def place_in_namespace(rt: ResourceType, meta: dict[str, Any], namespace: str | None) -> str | None:
    """The namespace a new object goes to (the URL's or the body's, which must agree); cluster-scoped: None."""
    if not rt.namespaced:
        meta.pop("namespace", None)
        return None
    body_ns = meta.get("namespace")
    if body_ns and namespace and body_ns != namespace:
        raise ApiError(400, "the namespace of the provided object does not match the namespace sent on the request")
    namespace = namespace or body_ns
    meta["namespace"] = namespace
    return namespace


def ensure_name(rt: ResourceType, meta: dict[str, Any]) -> None:
    """A new object's name: given, or generateName plus five random characters."""
    if meta.get("name"):
        return
    if not meta.get("generateName"):
        raise invalid(rt.kind, "", [("metadata.name", "Required value: name or generateName is required")], rt.group)
    meta["name"] = meta["generateName"] + "".join(random.choices(NAME_CHARS, k=5))


def main_resource_write(rt: ResourceType, old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """`new` as a write of the main resource stores it: the server's metadata kept, managedFields dropped, the
    status kept where it is a subresource; no finalizer may be added to an object being deleted."""
    old_meta = metadata_of(old)
    obj = new
    meta = obj.get("metadata")
    meta = dict(meta) if isinstance(meta, dict) else {}
    for field in SERVER_OWNED:
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
            message = (
                "Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers "
                + str(sorted(added))
            )
            raise invalid(rt.kind, old_meta["name"], [("metadata.finalizers", message)], rt.group)
    return obj
