"""Decode the few Kubernetes protobuf bodies kubectl's typed commands send.

`kubectl create namespace|configmap|secret|serviceaccount|quota|priorityclass` encode their request bodies as protobuf,
whatever the server prefers. This decodes those kinds (field numbers from k8s.io/api's generated.proto)
into the JSON shape the rest of the server handles; any other kind is answered with 415.
"""

from __future__ import annotations

import base64
from typing import Any

from .errors import ApiError

MAGIC = b"k8s\x00"

# message name -> field number -> (json name, type); types: str, int, bool, bytes, map, map-bytes,
# map-quantity (values are resource.Quantity messages), [str] (repeated string), or another message name
# (prefix "[" when repeated).
_SCHEMAS: dict[str, dict[int, tuple[str, str]]] = {
    "Unknown": {
        1: ("typeMeta", "TypeMeta"),
        2: ("raw", "rawbytes"),
        3: ("contentEncoding", "str"),
        4: ("contentType", "str"),
    },
    "TypeMeta": {1: ("apiVersion", "str"), 2: ("kind", "str")},
    "ObjectMeta": {
        1: ("name", "str"),
        2: ("generateName", "str"),
        3: ("namespace", "str"),
        5: ("uid", "str"),
        6: ("resourceVersion", "str"),
        7: ("generation", "int"),
        11: ("labels", "map"),
        12: ("annotations", "map"),
        13: ("ownerReferences", "[OwnerReference"),
        14: ("finalizers", "[str"),
    },
    "OwnerReference": {
        1: ("kind", "str"),
        3: ("name", "str"),
        4: ("uid", "str"),
        5: ("apiVersion", "str"),
        6: ("controller", "bool"),
        7: ("blockOwnerDeletion", "bool"),
    },
    "Namespace": {1: ("metadata", "ObjectMeta"), 2: ("spec", "NamespaceSpec")},
    "NamespaceSpec": {1: ("finalizers", "[str")},
    "ConfigMap": {
        1: ("metadata", "ObjectMeta"),
        2: ("data", "map"),
        3: ("binaryData", "map-bytes"),
        4: ("immutable", "bool"),
    },
    "Secret": {
        1: ("metadata", "ObjectMeta"),
        2: ("data", "map-bytes"),
        3: ("type", "str"),
        4: ("stringData", "map"),
        5: ("immutable", "bool"),
    },
    "ServiceAccount": {1: ("metadata", "ObjectMeta"), 4: ("automountServiceAccountToken", "bool")},
    "ResourceQuota": {1: ("metadata", "ObjectMeta"), 2: ("spec", "ResourceQuotaSpec")},
    "ResourceQuotaSpec": {
        1: ("hard", "map-quantity"),
        2: ("scopes", "[str"),
        3: ("scopeSelector", "ScopeSelector"),
    },
    "ScopeSelector": {1: ("matchExpressions", "[ScopedResourceSelectorRequirement")},
    "ScopedResourceSelectorRequirement": {1: ("scopeName", "str"), 2: ("operator", "str"), 3: ("values", "[str")},
    "Quantity": {1: ("string", "str")},
    "PriorityClass": {
        1: ("metadata", "ObjectMeta"),
        2: ("value", "int"),
        3: ("globalDefault", "bool"),
        4: ("description", "str"),
        5: ("preemptionPolicy", "str"),
    },
}


# The kinds a request body may be (the rest are parts of them).
_TOP_LEVEL = ("Namespace", "ConfigMap", "Secret", "ServiceAccount", "ResourceQuota", "PriorityClass")


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(data: bytes):
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 2:
            length, pos = _varint(data, pos)
            value, pos = data[pos : pos + length], pos + length
        elif wire == 1:
            value, pos = data[pos : pos + 8], pos + 8
        elif wire == 5:
            value, pos = data[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, value


def _message(data: bytes, schema_name: str) -> dict[str, Any]:
    schema = _SCHEMAS[schema_name]
    result: dict[str, Any] = {}
    for number, value in _fields(data):
        if number not in schema:
            continue
        name, type_ = schema[number]
        if type_ in ("map", "map-bytes", "map-quantity"):
            entry = dict(_fields(value))
            key = entry.get(1, b"").decode()
            raw = entry.get(2, b"")
            if type_ == "map-quantity":
                decoded = _message(raw, "Quantity").get("string", "0")
            else:
                decoded = base64.b64encode(raw).decode() if type_ == "map-bytes" else raw.decode()
            result.setdefault(name, {})[key] = decoded
        elif type_.startswith("["):
            item_type = type_[1:]
            result.setdefault(name, []).append(value.decode() if item_type == "str" else _message(value, item_type))
        elif type_ == "str":
            if value:  # gogo-protobuf writes every non-pointer string, empty or not
                result[name] = value.decode()
        elif type_ == "int":
            if value:
                result[name] = value - (1 << 64) if value >= 1 << 63 else value  # negative int32/int64
        elif type_ == "bool":
            result[name] = bool(value)
        elif type_ == "rawbytes":
            result[name] = value
        else:
            result[name] = _message(value, type_)
    return result


def decode(body: bytes) -> dict[str, Any]:
    """A protobuf-encoded object as JSON; 415 for kinds this server cannot read in protobuf."""
    if not body.startswith(MAGIC):
        raise ApiError(415, "the protobuf body lacks the Kubernetes envelope; send application/json")
    try:
        envelope = _message(body[len(MAGIC) :], "Unknown")
        type_meta = envelope.get("typeMeta") or {}
        kind = type_meta.get("kind", "")
        if kind not in _TOP_LEVEL:
            raise ApiError(
                415,
                f"the sandbox API server reads {kind or 'this kind'} only as JSON: use "
                f"`kubectl apply -f` (or create -f) with a manifest instead",
            )
        obj = _message(envelope.get("raw", b""), kind)
    except (IndexError, UnicodeDecodeError, ValueError) as exc:
        raise ApiError(400, f"the protobuf request body could not be decoded: {exc}") from exc
    return {"apiVersion": type_meta.get("apiVersion", "v1"), "kind": kind, **obj}
