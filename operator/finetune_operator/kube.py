"""The one module that talks to the Kubernetes API: a small synchronous client on urllib3, plain dicts in and out.

Not the official `kubernetes` client: it is 126 MB installed (with an asyncio copy of itself) for the ten
calls below, and the operator image must stay small. What this module needs of a client is little: one
thread-safe urllib3 connection pool (handlers call KubeApi from threads, via asyncio.to_thread), JSON
bodies, and the API's `Status` answers turned into `ApiError`s.

Credentials come from Kopf's own rudimentary logins, no kubeconfig parser of ours: the pod's
ServiceAccount first (kopf.login_with_service_account), then $KUBECONFIG or ~/.kube/config
(kopf.login_with_kubeconfig: server, CA, token, client certificate, basic auth). Kubeconfigs whose
user runs an exec plugin (the EKS and GKE auth plugins, `aws eks get-token`, `gke-gcloud-auth-plugin`)
or an auth provider needing a refresh are NOT supported when running the operator outside a cluster:
the operator is meant to run in-cluster with its ServiceAccount (manifests/). Outside a cluster, use a
kubeconfig with a token or a client certificate (the sandbox writes one).

Every call here is one the ClusterRole in manifests/rbac/ must allow; tests/operator/test_rbac.py reads
the `RBAC_CALLS` table below and checks it against the role.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
import ssl
import tempfile
import threading
import time
from typing import Any
from urllib.parse import quote, urlencode

import kopf
import urllib3

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

MERGE_PATCH = "application/merge-patch+json"
# Where the kubelet mounts the pod's ServiceAccount token (the path kopf.login_with_service_account reads).
SERVICE_ACCOUNT_TOKEN_PATH = "/var/run/secrets/kubernetes.io/serviceaccount/token"
# How often a ServiceAccount token is read again from its file (client-go's cached file token source
# uses the same minute). See ApiClient._bearer_token.
TOKEN_REREAD_SECONDS = 60.0
# Every call is short (no watches here). Without a read timeout a connection that dies silently would
# hold a reconcile (and its job's lock) forever; with one, the call fails and the reconcile is retried.
TIMEOUT = urllib3.Timeout(connect=30.0, read=120.0)
# Connections kept per API server: enough for every thread asyncio.to_thread may run at once
# (the default executor has at most 32); beyond that, extra connections are opened and then closed.
POOL_SIZE = 32


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


class ApiError(Exception):
    """An API call answered with an HTTP error: `status` (404, 409 ...), `reason` (the `Status` object's
    reason such as NotFound or AlreadyExists, else the HTTP reason phrase) and `message` (the `Status`
    message, else the start of the body)."""

    def __init__(self, status: int, reason: str, message: str = "", body: Any = None) -> None:
        super().__init__(f"({status}) {reason}: {message}" if message else f"({status}) {reason}")
        self.status = status
        self.reason = reason
        self.message = message
        self.body = body

    @classmethod
    def from_response(cls, response: urllib3.BaseHTTPResponse) -> ApiError:
        data = response.data or b""
        try:
            body: Any = json.loads(data)
        except ValueError:
            body = data.decode(errors="replace")
        if isinstance(body, dict) and body.get("kind") == "Status":
            return cls(response.status, body.get("reason") or response.reason or "", body.get("message") or "", body)
        text = body if isinstance(body, str) else json.dumps(body)
        return cls(response.status, response.reason or "", text[:500], body)


def _pem(data: str | bytes) -> str:
    """A kubeconfig's *-data field (base64 of PEM) or PEM already, as PEM text."""
    text = data.decode("ascii") if isinstance(data, bytes) else data
    return text if text.lstrip().startswith("-----BEGIN ") else base64.b64decode(text).decode("ascii")


def _ssl_context(info: kopf.ConnectionInfo) -> ssl.SSLContext:
    context = ssl.create_default_context(
        cafile=os.fspath(info.ca_path) if info.ca_path else None,
        cadata=_pem(info.ca_data) if info.ca_data else None,
    )
    if info.certificate_path or info.certificate_data:
        # ssl loads client certificates from files only: data goes through a private temporary directory
        # (mode 0700, files 0600), removed as soon as the context holds the certificate and key.
        with tempfile.TemporaryDirectory(prefix="finetune-operator-") as tmp:

            def path(given: Any, data: str | bytes | None, name: str) -> str | None:
                if given:
                    return os.fsdecode(given)
                if not data:
                    return None
                file = os.path.join(tmp, name)
                fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(_pem(data))
                return file

            certfile = path(info.certificate_path, info.certificate_data, "client.crt")
            keyfile = path(info.private_key_path, info.private_key_data, "client.key")
            assert certfile is not None
            context.load_cert_chain(certfile=certfile, keyfile=keyfile)
    if info.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def login(logger: logging.Logger | logging.LoggerAdapter[Any] = log) -> tuple[kopf.ConnectionInfo, str | None]:
    """Credentials from Kopf's own logins: the pod's ServiceAccount, else the kubeconfig.

    Returns them with the token file to read the token from again (the ServiceAccount's), or None.
    """
    settings = kopf.OperatorSettings()
    info = kopf.login_with_service_account(settings=settings, logger=logger)
    if info is not None:
        return info, SERVICE_ACCOUNT_TOKEN_PATH
    info = kopf.login_with_kubeconfig(settings=settings, logger=logger)
    if info is None:
        raise kopf.LoginError(
            "no ServiceAccount token (not running in a cluster?) and no kubeconfig ($KUBECONFIG or ~/.kube/config)"
        )
    if not (info.token or info.certificate_path or info.certificate_data or info.username):
        logger.warning(
            "the kubeconfig's user has no token, client certificate or password: requests go "
            "unauthenticated (exec plugins and auth providers are not supported; run the operator "
            "in-cluster with its ServiceAccount, or use a kubeconfig with a token)"
        )
    return info, None


class ApiClient:
    """JSON over one thread-safe urllib3 pool to one API server, with the credentials of a login."""

    def __init__(
        self,
        info: kopf.ConnectionInfo,
        *,
        token_path: str | None = None,
        timeout: urllib3.Timeout = TIMEOUT,
        retries: int = 3,
    ) -> None:
        self.server = info.server.rstrip("/")
        self.timeout = timeout
        self._scheme = info.scheme or "Bearer"
        self._token = info.token
        self._basic = (
            urllib3.make_headers(basic_auth=f"{info.username}:{info.password}")["authorization"]
            if info.username and info.password and not info.token
            else None
        )
        self._token_path = token_path
        self._token_read_at = time.monotonic()
        self._token_lock = threading.Lock()
        # retries: as the official client's urllib3 default (Retry(3)): failed connects are retried for
        # every method, dropped answers only for idempotent ones (GET, PUT, DELETE): a POST or PATCH that
        # may have reached the server is left to the caller (the reconcile's retry).
        pool_kw: dict[str, Any] = {"maxsize": POOL_SIZE, "retries": urllib3.Retry(retries), "timeout": timeout}
        if self.server.startswith("https:"):
            pool_kw["ssl_context"] = _ssl_context(info)
            pool_kw["cert_reqs"] = "CERT_NONE" if info.insecure else "CERT_REQUIRED"
        if info.proxy_url:
            self.pool: urllib3.PoolManager = urllib3.ProxyManager(info.proxy_url, **pool_kw)
        else:
            self.pool = urllib3.PoolManager(**pool_kw)

    @classmethod
    def from_login(cls, logger: logging.Logger | logging.LoggerAdapter[Any] = log) -> ApiClient:
        info, token_path = login(logger)
        return cls(info, token_path=token_path)

    # -- credentials --------------------------------------------------------------------------------

    # In-cluster ServiceAccount tokens are bound tokens the kubelet rotates (it rewrites the file at 80%
    # of the token's lifetime, about hourly); a token read once at start would stop working once it
    # expires. So, as client-go does, the file is read again every TOKEN_REREAD_SECONDS, and once more
    # right away when a request is refused with 401 (the request is then retried once with the new token).

    def _read_token_file(self) -> str | None:
        assert self._token_path is not None
        try:
            with open(self._token_path, encoding="utf-8") as f:
                token = f.read().strip()
        except OSError:
            log.warning(
                "could not read the ServiceAccount token %s again; keeping the last one",
                self._token_path,
                exc_info=True,
            )
            return self._token
        return token or self._token

    def _authorization(self) -> str | None:
        if self._token_path is not None and time.monotonic() - self._token_read_at >= TOKEN_REREAD_SECONDS:
            with self._token_lock:
                if time.monotonic() - self._token_read_at >= TOKEN_REREAD_SECONDS:
                    self._token = self._read_token_file()
                    self._token_read_at = time.monotonic()
        return self._current_authorization()

    def _current_authorization(self) -> str | None:
        return f"{self._scheme} {self._token}" if self._token else self._basic

    def _token_refreshed(self, used: str | None) -> bool:
        """After a 401: read the token file now; True if it holds another token than the one `used`."""
        if self._token_path is None:
            return False
        with self._token_lock:
            self._token = self._read_token_file()
            self._token_read_at = time.monotonic()
            return self._current_authorization() != used

    # -- requests -----------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        accept: str = "application/json",
    ) -> bytes:
        """One call; the whole answer body, or ApiError for an HTTP error (connection failures raise
        urllib3's exceptions). The body is read in full, so the connection goes back to the pool."""
        data = None if body is None else json.dumps(body).encode()
        fields = {k: v for k, v in (query or {}).items() if v is not None}
        url = self.server + path + ("?" + urlencode(fields) if fields else "")
        for attempt in range(2):
            headers = {"Accept": accept, "User-Agent": "finetune-operator"}
            if data is not None:
                headers["Content-Type"] = content_type
            authorization = self._authorization()
            if authorization:
                headers["Authorization"] = authorization
            response = self.pool.request(method, url, body=data, headers=headers)
            if response.status == 401 and attempt == 0 and self._token_refreshed(authorization):
                log.info("the API server refused the token (401); retrying with the token read again")
                continue
            break
        if response.status >= 400:
            raise ApiError.from_response(response)
        return response.data

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        data = self.request(method, path, **kwargs)
        return json.loads(data) if data else None


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
        self.finetunejobs: dict[tuple[str, str], dict[str, Any]] = {}

    # -- FineTuneJobs -----------------------------------------------------------------------------

    def get_finetunejob(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.remember(self.api_client.json("GET", _objects_path(GROUP, VERSION, namespace, PLURAL, name)))
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
        self.remember(updated)

    def remember(self, finetunejob: dict[str, Any]) -> dict[str, Any]:
        """Keep `finetunejob` unless a newer version is known already; return the newest known."""
        meta = finetunejob["metadata"]
        key = (meta["namespace"], meta["name"])
        known = self.finetunejobs.get(key)
        if (
            known is not None
            and known["metadata"].get("uid") == meta.get("uid")
            and not newer_version(meta.get("resourceVersion"), known["metadata"].get("resourceVersion"))
        ):
            return known
        self.finetunejobs[key] = finetunejob
        return finetunejob

    def forget(self, namespace: str, name: str) -> None:
        self.finetunejobs.pop((namespace, name), None)
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
