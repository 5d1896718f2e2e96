"""The one module that talks to the Kubernetes API (official `kubernetes` client, plain dicts in and out).

Every call here is one the ClusterRole in manifests/rbac/ must allow; tests/operator/test_rbac.py reads
the `RBAC_CALLS` table below and checks it against the role.
"""

from __future__ import annotations

import base64
import logging
import secrets
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from .names import GROUP, PLURAL, VERSION

log = logging.getLogger(__name__)

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
}

# Calls confined to the operator's own namespace (a Role, not the ClusterRole).
OWN_NAMESPACE_CALLS = {
    ("", "secrets", "get"),
    ("", "secrets", "create"),
}

# What Kopf itself calls for the handlers we register, besides list+watch on every resource a handler
# or index names (tests/operator/test_rbac.py reads those from Kopf's registry):
KOPF_CALLS = {
    # Finalizer and handler-progress annotations on the objects with change handlers.
    (GROUP, "finetunejobs", "patch"),
    # kopf.event() and error posting.
    ("", "events", "create"),
    # Resource discovery at start-up and namespace following with -n patterns.
    ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
    ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
    ("", "namespaces", "list"),
    ("", "namespaces", "watch"),
}


def load_config() -> None:
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()


class KubeApi:
    """Thin, synchronous wrappers; handlers run them in threads."""

    def __init__(self, api_client: client.ApiClient | None = None) -> None:
        self.api_client = api_client or client.ApiClient()
        self.core = client.CoreV1Api(self.api_client)
        self.batch = client.BatchV1Api(self.api_client)
        self.custom = client.CustomObjectsApi(self.api_client)

    # -- FineTuneJobs -----------------------------------------------------------------------------

    def get_finetunejob(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def patch_finetunejob_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        # A JSON merge patch: lists (conditions) are replaced whole, so callers send complete lists.
        self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, name, {"status": status},
            _content_type="application/merge-patch+json", _preload_content=False,
        )

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
            "Job": self.batch.create_namespaced_job,
        }[kind]
        try:
            create(namespace, manifest, _preload_content=False)
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
            self.core.create_namespaced_secret(namespace, body, _preload_content=False)
            return key
        except ApiException as exc:
            if exc.status == 409:  # another replica created it first: use theirs
                return self.progress_key(namespace, name)
            raise

    def set_job_suspended(self, namespace: str, name: str, suspend: bool) -> None:
        self.batch.patch_namespaced_job(name, namespace, {"spec": {"suspend": suspend}}, _preload_content=False)

    def delete_job(self, namespace: str, name: str) -> None:
        try:
            self.batch.delete_namespaced_job(name, namespace, propagation_policy="Background", _preload_content=False)
        except ApiException as exc:
            if exc.status != 404:
                raise
