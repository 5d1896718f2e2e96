"""The one module that talks to the Kubernetes API (official `kubernetes` client, plain dicts in and out).

Every call here is one the ClusterRole in manifests/rbac/ must allow; tests/operator/test_rbac.py reads
the `RBAC_CALLS` table below and checks it against the role.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from .names import GROUP, PLURAL, VERSION

log = logging.getLogger(__name__)

# Kopf's peering resources (manifests/crd/kopf-peering.yaml).
KOPF_GROUP = "kopf.dev"
KOPF_VERSION = "v1"

# (apiGroup, resource, verb) for every call below: the least privilege the operator needs.
RBAC_CALLS = {
    (GROUP, "finetunejobs", "get"),
    (GROUP, "finetunejobs", "delete"),
    (GROUP, "finetunejobs/status", "patch"),
    ("", "configmaps", "create"),
    ("", "services", "create"),
    ("", "secrets", "create"),
    ("batch", "jobs", "create"),
    ("batch", "jobs", "patch"),
    ("batch", "jobs", "delete"),
    # The failed trainer's last log lines, read once when its job fails (status.failure.logTail).
    ("", "pods/log", "get"),
    # With --peering: the peering object the replicas coordinate through, created if absent.
    (KOPF_GROUP, "clusterkopfpeerings", "create"),
    (KOPF_GROUP, "kopfpeerings", "create"),
}

# Calls confined to the operator's own namespace (a Role, not the ClusterRole).
OWN_NAMESPACE_CALLS = {
    ("", "secrets", "get"),
    ("", "secrets", "create"),
}

# What Kopf itself calls for the handlers we register, besides list+watch on every resource a handler
# or index names (tests/operator/test_rbac.py reads those from Kopf's registry):
KOPF_CALLS = {
    # kopf.event() and error posting.
    ("", "events", "create"),
    # Resource discovery at start-up and namespace following with -n patterns.
    ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
    ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
    ("", "namespaces", "list"),
    ("", "namespaces", "watch"),
    # Peering (--peering): every replica watches the peering object (ClusterKopfPeering with
    # --all-namespaces, KopfPeering per namespace with -n) and patches its own keep-alive into it.
    (KOPF_GROUP, "clusterkopfpeerings", "list"),
    (KOPF_GROUP, "clusterkopfpeerings", "watch"),
    (KOPF_GROUP, "clusterkopfpeerings", "patch"),
    (KOPF_GROUP, "kopfpeerings", "list"),
    (KOPF_GROUP, "kopfpeerings", "watch"),
    (KOPF_GROUP, "kopfpeerings", "patch"),
}


def newer_version(version: str | None, than: str | None) -> bool:
    """Whether resourceVersion `version` is newer than `than`.

    resourceVersions are opaque by contract; the API server's (etcd's) are increasing integers, and only
    then are they compared by size (otherwise: any different version counts as newer).
    """
    if version is None or than is None:
        return version is not None
    if version.isdigit() and than.isdigit():
        return int(version) > int(than)
    return version != than


def _read(response: Any) -> bytes:
    """The whole body of a raw (`_preload_content=False`) response, its connection back in the pool.

    A raw response left unread keeps its connection: the next request opens a new one (a TCP connect and
    a name lookup per API call, measured as a third of the operator's CPU under a burst of new jobs).
    """
    try:
        return response.data
    finally:
        response.release_conn()


def load_config() -> None:
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()


class PlainJsonApiClient(client.ApiClient):
    """The official client, minus its walk over request bodies that are plain JSON already.

    Every body this module sends is a dict of JSON values (the builders' manifests, patches); the
    client's sanitize_for_serialization copies such a dict recursively for nothing (about 0.6 ms for a
    training Job, paid before the Job reaches the API server). A value that is not JSON still fails,
    loudly, in json.dumps.
    """

    def sanitize_for_serialization(self, obj: Any) -> Any:
        if isinstance(obj, dict):
            return obj
        return super().sanitize_for_serialization(obj)


class KubeApi:
    """Thin, synchronous wrappers; handlers run them in threads."""

    def __init__(self, api_client: client.ApiClient | None = None) -> None:
        self.api_client = api_client or PlainJsonApiClient()
        self.core = client.CoreV1Api(self.api_client)
        self.batch = client.BatchV1Api(self.api_client)
        self.custom = client.CustomObjectsApi(self.api_client)
        # (namespace, name) -> resourceVersion of the FineTuneJob after this client's last status write.
        self.written_versions: dict[tuple[str, str], str] = {}
        # (namespace, name) -> the newest FineTuneJob known here: the API server's answer to this client's
        # own status writes, and what the watch delivered (handlers.job_event). Reconciles triggered by a
        # child's event or the periodic sweep start from it instead of a GET.
        self.finetunejobs: dict[tuple[str, str], dict[str, Any]] = {}

    # -- FineTuneJobs -----------------------------------------------------------------------------

    def get_finetunejob(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.remember(self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name))
        except ApiException as exc:
            if exc.status == 404:
                self.forget(namespace, name)
                return None
            raise

    def patch_finetunejob_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        # A JSON merge patch: lists (conditions) are replaced whole, so callers send complete lists.
        response = self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, name, {"status": status},
            _content_type="application/merge-patch+json", _preload_content=False,
        )
        try:
            updated = json.loads(_read(response))
            version = str(updated["metadata"]["resourceVersion"])
        except (ValueError, KeyError, TypeError):
            return
        # The watch echoes this write back: handlers.job_event recognises (and skips) it by this version.
        self.written_versions[(namespace, name)] = version
        self.remember(updated)

    def remember(self, finetunejob: dict[str, Any]) -> dict[str, Any]:
        """Keep `finetunejob` unless a newer version is known already; return the newest known."""
        meta = finetunejob["metadata"]
        key = (meta["namespace"], meta["name"])
        known = self.finetunejobs.get(key)
        if known is not None and known["metadata"].get("uid") == meta.get("uid") and not newer_version(
                meta.get("resourceVersion"), known["metadata"].get("resourceVersion")):
            return known
        self.finetunejobs[key] = finetunejob
        return finetunejob

    def forget(self, namespace: str, name: str) -> None:
        self.finetunejobs.pop((namespace, name), None)
        self.written_versions.pop((namespace, name), None)

    def delete_finetunejob(self, namespace: str, name: str) -> None:
        try:
            self.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, propagation_policy="Background")
        except ApiException as exc:
            if exc.status != 404:
                raise

    # -- children ---------------------------------------------------------------------------------

    def create_if_absent(self, manifest: dict[str, Any]) -> bool:
        """Create a child; True if created now, False if it already existed (a restart, a retry)."""
        kind = manifest["kind"]
        namespace = manifest["metadata"]["namespace"]
        create = {
            "ConfigMap": self.core.create_namespaced_config_map,
            "Service": self.core.create_namespaced_service,
            "Secret": self.core.create_namespaced_secret,
            # Through the generic endpoint: the typed one turns the dict into a V1Job model and back
            # (validation and projection cost milliseconds per Job under a burst, for a body sent as is).
            "Job": lambda namespace, body, **kwargs: self.custom.create_namespaced_custom_object(
                "batch", "v1", namespace, "jobs", body, **kwargs),
        }[kind]
        try:
            _read(create(namespace, manifest, _preload_content=False))
            return True
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise

    def progress_key(self, namespace: str, name: str) -> bytes:
        """The operator's token-signing key, kept in a Secret of its own namespace (created on first start)."""
        try:
            secret = self.core.read_namespaced_secret(name, namespace)
            return base64.b64decode(secret.data["key"])
        except ApiException as exc:
            if exc.status != 404:
                raise
        key = secrets.token_bytes(32)
        body = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": namespace},
                "data": {"key": base64.b64encode(key).decode()}}
        try:
            _read(self.core.create_namespaced_secret(namespace, body, _preload_content=False))
            return key
        except ApiException as exc:
            if exc.status == 409:  # another replica created it first: use theirs
                return self.progress_key(namespace, name)
            raise

    def read_log_tail(self, namespace: str, pod: str, container: str, *, lines: int, max_bytes: int) -> str | None:
        """The last `lines` lines of a container's log (at most `max_bytes`); None when the pod or its log is gone."""
        try:
            # Raw bytes: with content preloading the client may turn a log that looks like JSON into a dict repr.
            response = self.core.read_namespaced_pod_log(pod, namespace, container=container, tail_lines=lines,
                                                         limit_bytes=max_bytes, _preload_content=False)
            return _read(response).decode(errors="replace")
        except ApiException as exc:
            # 404: the pod was deleted; 400: its container never started (no log to read).
            if exc.status in (400, 404):
                return None
            raise

    def ensure_peering(self, name: str, namespaces: list[str]) -> None:
        """Create the Kopf peering object(s) if absent: cluster-wide, or one per watched namespace."""
        targets = [(ns, "kopfpeerings", "KopfPeering") for ns in namespaces] or [(None, "clusterkopfpeerings", "ClusterKopfPeering")]
        for namespace, plural, kind in targets:
            metadata = {"name": name, **({"namespace": namespace} if namespace else {})}
            body = {"apiVersion": f"{KOPF_GROUP}/{KOPF_VERSION}", "kind": kind, "metadata": metadata}
            try:
                if namespace:
                    self.custom.create_namespaced_custom_object(KOPF_GROUP, KOPF_VERSION, namespace, plural, body)
                else:
                    self.custom.create_cluster_custom_object(KOPF_GROUP, KOPF_VERSION, plural, body)
            except ApiException as exc:
                if exc.status != 409:  # another replica created it first
                    raise

    def set_job_suspended(self, namespace: str, name: str, suspend: bool) -> None:
        _read(self.batch.patch_namespaced_job(name, namespace, {"spec": {"suspend": suspend}}, _preload_content=False))

    def delete_job(self, namespace: str, name: str) -> None:
        try:
            _read(self.batch.delete_namespaced_job(name, namespace, propagation_policy="Background", _preload_content=False))
        except ApiException as exc:
            if exc.status != 404:
                raise
