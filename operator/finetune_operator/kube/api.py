"""The operator's calls to the Kubernetes API (KubeApi), plain dicts in and out, and what it remembers of them:
the newest FineTuneJobs it saw and the versions of its own status writes (so a reconcile need not GET what it
already knows, and the watch's echo of a write can be recognised).

The HTTP client and its credentials are client.py's. Every call here is one the ClusterRole in
manifests/rbac/ must allow; tests/operator/test_rbac.py reads the `RBAC_CALLS` table below and checks it
against the role.
"""

from __future__ import annotations

import base64
import json
import secrets
from typing import Any
from urllib.parse import quote

from ..names import GROUP, PLURAL, VERSION
from ..snapshots import strip_unread_metadata
from .client import ApiClient, ApiError
from .finetunejob_cache import FineTuneJobCache

# Kopf's peering resources (manifests/crd/kopf-peering.yaml).
KOPF_GROUP = "kopf.dev"
KOPF_VERSION = "v1"

# (apiGroup, resource, verb) for every call below: the least privilege the operator needs.
RBAC_CALLS = {
    (GROUP, "finetunejobs", "get"),
    (GROUP, "finetunejobs", "delete"),
    (GROUP, "finetunejobs/status", "patch"),
    ("", "configmaps", "create"),
    # A job whose children the API server refused retries on a spec change: its ConfigMap follows the new spec.
    ("", "configmaps", "patch"),
    ("", "services", "create"),
    ("", "secrets", "create"),
    # A live job's progress Secret gets the new CA bundle (key ca.crt) when the progress CA rotates.
    ("", "secrets", "patch"),
    ("batch", "jobs", "create"),
    ("batch", "jobs", "patch"),
    ("batch", "jobs", "delete"),
    # The failed trainer's last log lines, read once when its job fails (status.failure.logTail).
    ("", "pods/log", "get"),
    # Why a Job has fewer pods than it should: its FailedCreate events (quota, PriorityClass, admission).
    ("", "events", "list"),
    # With --peering: the peering object the replicas coordinate through, created if absent.
    (KOPF_GROUP, "clusterkopfpeerings", "create"),
    (KOPF_GROUP, "kopfpeerings", "create"),
}

# Calls confined to the operator's own namespace (a Role, not the ClusterRole).
OWN_NAMESPACE_CALLS = {
    ("", "secrets", "get"),
    ("", "secrets", "create"),
    # The progress endpoint's TLS Secret, renewed in place (a replace guarded by its resourceVersion).
    ("", "secrets", "update"),
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

MERGE_PATCH = "application/merge-patch+json"


def _path(*segments: str) -> str:
    return "/" + "/".join(quote(s, safe="") for s in segments)


def _objects_path(group: str, version: str, namespace: str | None, plural: str, *rest: str) -> str:
    """The REST path of a resource collection (or, with `rest`, of an object and its subresource)."""
    base = ("api", version) if not group else ("apis", group, version)
    scope = ("namespaces", namespace) if namespace else ()
    return _path(*base, *scope, plural, *rest)


# Kind -> (group, version, plural) of the children create_if_absent makes.
CHILD_KINDS = {
    "ConfigMap": ("", "v1", "configmaps"),
    "Service": ("", "v1", "services"),
    "Secret": ("", "v1", "secrets"),
    "Job": ("batch", "v1", "jobs"),
}


class KubeApi:
    """Thin, synchronous wrappers; handlers run them in threads."""

    def __init__(self, api_client: ApiClient | None = None) -> None:
        self.api_client = api_client or ApiClient.from_login()
        # (namespace, name) -> resourceVersion of the FineTuneJob after this client's last status write.
        self.written_versions: dict[tuple[str, str], str] = {}
        # (namespace, name) -> the newest FineTuneJob known here: the API server's answer to this client's
        # own status writes, and what the watch delivered (handlers.job_event). Reconciles triggered by a
        # child's event or the periodic sweep start from it instead of a GET.
        self.finetunejobs = FineTuneJobCache()

    # -- FineTuneJobs -----------------------------------------------------------------------------

    def get_finetunejob(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            found = self.api_client.json("GET", _objects_path(GROUP, VERSION, namespace, PLURAL, name))
            return self.remember(strip_unread_metadata(found))
        except ApiError as exc:
            if exc.status == 404:
                self.forget(namespace, name)
                return None
            raise

    def patch_finetunejob_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        # A JSON merge patch: lists (conditions) are replaced whole, so callers send complete lists.
        data = self.api_client.request(
            "PATCH",
            _objects_path(GROUP, VERSION, namespace, PLURAL, name, "status"),
            body={"status": status},
            content_type=MERGE_PATCH,
        )
        try:
            updated = json.loads(data)
            version = str(updated["metadata"]["resourceVersion"])
        except (ValueError, KeyError, TypeError):
            return
        # The watch echoes this write back: handlers.job_event recognises (and skips) it by this version.
        self.written_versions[(namespace, name)] = version
        self.remember(strip_unread_metadata(updated))

    def remember(self, finetunejob: dict[str, Any]) -> dict[str, Any]:
        """Keep `finetunejob` unless a newer version is known already; return the newest known."""
        return self.finetunejobs.remember(finetunejob)

    def forget(self, namespace: str, name: str) -> None:
        self.finetunejobs.forget((namespace, name))
        self.written_versions.pop((namespace, name), None)

    def delete_finetunejob(self, namespace: str, name: str) -> None:
        try:
            self.api_client.request(
                "DELETE",
                _objects_path(GROUP, VERSION, namespace, PLURAL, name),
                query={"propagationPolicy": "Background"},
            )
        except ApiError as exc:
            if exc.status != 404:
                raise

    # -- children ---------------------------------------------------------------------------------

    def create_if_absent(self, manifest: dict[str, Any]) -> bool:
        """Create a child; True if created now, False if it already existed (a restart, a retry)."""
        group, version, plural = CHILD_KINDS[manifest["kind"]]
        namespace = manifest["metadata"]["namespace"]
        try:
            self.api_client.request("POST", _objects_path(group, version, namespace, plural), body=manifest)
            return True
        except ApiError as exc:
            if exc.status == 409:
                return False
            raise

    def create_or_update(self, manifest: dict[str, Any]) -> None:
        """Create a ConfigMap, or bring an existing one's data and labels to `manifest` (merge patch)."""
        if self.create_if_absent(manifest):
            return
        group, version, plural = CHILD_KINDS[manifest["kind"]]
        meta = manifest["metadata"]
        self.api_client.request(
            "PATCH",
            _objects_path(group, version, meta["namespace"], plural, meta["name"]),
            body={"metadata": {"labels": meta.get("labels") or {}}, "data": manifest.get("data") or {}},
            content_type=MERGE_PATCH,
        )

    def failed_create_events(self, namespace: str, job_uid: str) -> list[dict[str, Any]]:
        """The Job controller's FailedCreate events on one Job (why it has fewer pods than it should)."""
        answer = self.api_client.request(
            "GET",
            _objects_path("", "v1", namespace, "events"),
            query={"fieldSelector": f"involvedObject.uid={job_uid},reason=FailedCreate"},
        )
        return list(json.loads(answer).get("items") or [])

    def progress_key(self, namespace: str, name: str) -> bytes:
        """The operator's token-signing key, kept in a Secret of its own namespace (created on first start)."""
        try:
            secret = self.api_client.json("GET", _objects_path("", "v1", namespace, "secrets", name))
            return base64.b64decode(secret["data"]["key"])
        except ApiError as exc:
            if exc.status != 404:
                raise
        key = secrets.token_bytes(32)
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace},
            "data": {"key": base64.b64encode(key).decode()},
        }
        try:
            self.api_client.request("POST", _objects_path("", "v1", namespace, "secrets"), body=body)
            return key
        except ApiError as exc:
            if exc.status == 409:  # another replica created it first: use theirs
                return self.progress_key(namespace, name)
            raise

    # -- Secrets (the progress endpoint's TLS material, progress/tls.py) -----------------------------------

    def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.api_client.json("GET", _objects_path("", "v1", namespace, "secrets", name))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def create_secret(self, secret: dict[str, Any]) -> bool:
        """Create a Secret; False when one of that name exists already (another replica was first)."""
        try:
            self.api_client.request(
                "POST", _objects_path("", "v1", secret["metadata"]["namespace"], "secrets"), body=secret
            )
            return True
        except ApiError as exc:
            if exc.status == 409:
                return False
            raise

    def replace_secret(self, secret: dict[str, Any]) -> bool:
        """Replace a Secret whose metadata carries the resourceVersion it was read at; False when it changed since
        (409: another replica wrote first, read it again) or is gone (404)."""
        meta = secret["metadata"]
        try:
            self.api_client.request(
                "PUT", _objects_path("", "v1", meta["namespace"], "secrets", meta["name"]), body=secret
            )
            return True
        except ApiError as exc:
            if exc.status in (404, 409):
                return False
            raise

    def patch_secret_data(self, namespace: str, name: str, data: dict[str, str]) -> bool:
        """Merge base64 `data` keys into a Secret; False when it does not exist (yet)."""
        try:
            self.api_client.request(
                "PATCH",
                _objects_path("", "v1", namespace, "secrets", name),
                body={"data": data},
                content_type=MERGE_PATCH,
            )
            return True
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise

    def read_log_tail(self, namespace: str, pod: str, container: str, *, lines: int, max_bytes: int) -> str | None:
        """The last `lines` lines of a container's log (at most `max_bytes`); None when the pod or its log is gone."""
        try:
            # Raw text, never parsed: a log line may well look like JSON.
            data = self.api_client.request(
                "GET",
                _objects_path("", "v1", namespace, "pods", pod, "log"),
                query={"container": container, "tailLines": lines, "limitBytes": max_bytes},
                accept="*/*",
            )
            return data.decode(errors="replace")
        except ApiError as exc:
            # 404: the pod was deleted; 400: its container never started (no log to read).
            if exc.status in (400, 404):
                return None
            raise

    def ensure_peering(self, name: str, namespaces: list[str]) -> None:
        """Create the Kopf peering object(s) if absent: cluster-wide, or one per watched namespace."""
        targets = [(ns, "kopfpeerings", "KopfPeering") for ns in namespaces] or [
            (None, "clusterkopfpeerings", "ClusterKopfPeering")
        ]
        for namespace, plural, kind in targets:
            metadata = {"name": name, **({"namespace": namespace} if namespace else {})}
            body = {"apiVersion": f"{KOPF_GROUP}/{KOPF_VERSION}", "kind": kind, "metadata": metadata}
            try:
                self.api_client.request("POST", _objects_path(KOPF_GROUP, KOPF_VERSION, namespace, plural), body=body)
            except ApiError as exc:
                if exc.status != 409:  # another replica created it first
                    raise

    def set_job_suspended(self, namespace: str, name: str, suspend: bool) -> None:
        self.api_client.request(
            "PATCH",
            _objects_path("batch", "v1", namespace, "jobs", name),
            body={"spec": {"suspend": suspend}},
            content_type=MERGE_PATCH,
        )

    def delete_job(self, namespace: str, name: str) -> None:
        try:
            self.api_client.request(
                "DELETE",
                _objects_path("batch", "v1", namespace, "jobs", name),
                query={"propagationPolicy": "Background"},
            )
        except ApiError as exc:
            if exc.status != 404:
                raise
