"""A container's environment, resolved as the kubelet does (pure functions)."""

from __future__ import annotations

import hashlib
import math
import re

from ..scheduler import parse_quantity
from .volumes import decode_data

SANDBOX_IP = "127.0.0.1"
# Pod and Service DNS names (NAME.SUBDOMAIN.NS.svc[.cluster.local], SVC.NS.svc): all pods run on this host.
_CLUSTER_DNS = re.compile(
    r"(?<![\w.\-])[a-z0-9]([a-z0-9\-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9\-]*[a-z0-9])?)+\.svc(\.cluster\.local)?(?![\w\-]|\.[\w])"
)
_FIELD_MAP = re.compile(r"^metadata\.(labels|annotations)\['([^']*)'\]$")
_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.\-]*)\)")


class EnvError(Exception):
    """A reference the kubelet cannot resolve (the container waits with CreateContainerConfigError)."""


def field_ref_value(pod: dict, field_path: str) -> str:
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", "default"),
        "status.podIP": SANDBOX_IP,
        "status.hostIP": SANDBOX_IP,
        "status.podIPs": SANDBOX_IP,
        "status.hostIPs": SANDBOX_IP,
    }
    if field_path in simple:
        return simple[field_path]
    match = _FIELD_MAP.match(field_path)
    if match:
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    raise EnvError(
        f"fieldRef {field_path!r} is not supported (use metadata.name, metadata.namespace, metadata.uid, "
        f"metadata.labels['KEY'], metadata.annotations['KEY'], status.podIP, status.hostIP or spec.nodeName)"
    )


def expand_references(text: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: defined variables are substituted, unknown ones left as is, $$ escapes."""

    def substitute(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env[name] if name in env else match.group(0)

    return _VAR_REF.sub(substitute, text)


def rewrite_cluster_dns(value: str) -> str:
    """Point in-cluster DNS names (e.g. MASTER_ADDR=job-0.job.ns.svc) at the sandbox host."""
    return _CLUSTER_DNS.sub(SANDBOX_IP, value)


# Rendezvous (address, port) pairs the torch launchers read (docs/pod-contract.md).
_RENDEZVOUS = (("MASTER_ADDR", "MASTER_PORT"), ("PET_MASTER_ADDR", "PET_MASTER_PORT"))
# Ports a rendezvous moves to on this host: below the Linux ephemeral range (32768+), above the usual services.
_RENDEZVOUS_PORTS = range(20000, 32000)


def sandbox_env(env: dict[str, str]) -> dict[str, str]:
    """The container's env as it must be on this one host: cluster DNS names point here, and a rendezvous
    at a cluster DNS name gets a port of its own.

    On a cluster every pod has its own IP, so two jobs' rank-0 pods both listen on port 29500. Here every pod
    shares 127.0.0.1 (and torch's TCPStore listens on all addresses), so two multi-rank jobs at once would
    meet at each other's store. The port becomes a function of the name and the port: the same for every rank
    of one job, different for two jobs (a 1-in-12000 chance of a clash, per pair)."""
    out = {key: rewrite_cluster_dns(value) for key, value in env.items()}
    for address, port in _RENDEZVOUS:
        name, number = env.get(address, ""), env.get(port, "")
        if _CLUSTER_DNS.fullmatch(name) and number.isdigit():
            digest = int.from_bytes(hashlib.sha256(f"{name}:{number}".encode()).digest()[:4], "big")
            out[port] = str(_RENDEZVOUS_PORTS[digest % len(_RENDEZVOUS_PORTS)])
    return out


def resolve_env(
    container: dict,
    pod: dict,
    configmaps: dict[str, dict | None],
    secrets: dict[str, dict | None],
) -> dict[str, str]:
    """The container's variables from envFrom then env (later wins), with $(VAR) expansion in env values."""
    namespace = (pod.get("metadata") or {}).get("namespace", "default")
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        if "configMapRef" in source:
            ref, kind, objects, secret = source["configMapRef"], "configmap", configmaps, False
        elif "secretRef" in source:
            ref, kind, objects, secret = source["secretRef"], "secret", secrets, True
        else:
            continue
        obj = objects.get(ref.get("name", ""))
        if obj is None:
            if ref.get("optional"):
                continue
            raise EnvError(f'{kind} "{ref.get("name")}" not found (envFrom of container {container.get("name")!r})')
        for key, value in decode_data(obj, secret=secret).items():
            env[prefix + key] = value.decode(errors="replace")
    for variable in container.get("env") or []:
        name = variable["name"]
        if "valueFrom" not in variable:
            env[name] = expand_references(str(variable.get("value", "")), env)
            continue
        value = _value_from(variable["valueFrom"], name, container, pod, namespace, configmaps, secrets)
        if value is not None:
            env[name] = value
    return env


def _value_from(
    value_from: dict,
    name: str,
    container: dict,
    pod: dict,
    namespace: str,
    configmaps: dict[str, dict | None],
    secrets: dict[str, dict | None],
) -> str | None:
    if "fieldRef" in value_from:
        return field_ref_value(pod, value_from["fieldRef"].get("fieldPath", ""))
    if "resourceFieldRef" in value_from:
        return _resource_field(container, value_from["resourceFieldRef"])
    for ref_kind, kind, objects, secret in (
        ("secretKeyRef", "Secret", secrets, True),
        ("configMapKeyRef", "ConfigMap", configmaps, False),
    ):
        if ref_kind not in value_from:
            continue
        ref = value_from[ref_kind]
        obj = objects.get(ref.get("name", ""))
        data = decode_data(obj, secret=secret) if obj is not None else None
        if data is None or ref.get("key") not in data:
            if ref.get("optional"):
                return None
            if data is None:
                raise EnvError(
                    f'{kind.lower()} "{ref.get("name")}" not found (env {name} of container {container.get("name")!r})'
                )
            raise EnvError(
                f"couldn't find key {ref.get('key')} in {kind} {namespace}/{ref.get('name')} "
                f"(env {name} of container {container.get('name')!r})"
            )
        return data[ref["key"]].decode(errors="replace")
    raise EnvError(f"env {name} of container {container.get('name')!r}: unsupported valueFrom {sorted(value_from)}")


def _resource_field(container: dict, ref: dict) -> str:
    # Only limits/requests written in the container are known here; a node-capacity fallback is not modelled.
    kind, _, resource = ref.get("resource", "").partition(".")
    value = ((container.get("resources") or {}).get(kind) or {}).get(resource)
    if value is None:
        return "0"
    # As the kubelet does: the quantity divided by the divisor (default 1), rounded up to an integer.
    amount = parse_quantity(value) / parse_quantity(ref.get("divisor") or "1")
    return str(math.ceil(amount))
