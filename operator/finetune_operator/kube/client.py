"""A small synchronous Kubernetes API client on urllib3: JSON in and out, credentials from Kopf's logins.

Not the official `kubernetes` client: it is 126 MB installed (with an asyncio copy of itself) for the ten
calls api.py makes, and the operator image must stay small. What those calls need of a client is little:
one thread-safe urllib3 connection pool (handlers call KubeApi from threads, via asyncio.to_thread), JSON
bodies, and the API's `Status` answers turned into `ApiError`s.

Credentials come from Kopf's own rudimentary logins, no kubeconfig parser of ours: the pod's
ServiceAccount first (kopf.login_with_service_account), then $KUBECONFIG or ~/.kube/config
(kopf.login_with_kubeconfig: server, CA, token, client certificate, basic auth). Kubeconfigs whose
user runs an exec plugin (the EKS and GKE auth plugins, `aws eks get-token`, `gke-gcloud-auth-plugin`)
or an auth provider needing a refresh are NOT supported when running the operator outside a cluster:
the operator is meant to run in-cluster with its ServiceAccount (manifests/). Outside a cluster, use a
kubeconfig with a token or a client certificate (the sandbox writes one).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import ssl
import tempfile
import threading
import time
from typing import Any
from urllib.parse import urlencode

import kopf
import urllib3

log = logging.getLogger(__name__)

# Where the kubelet mounts the pod's ServiceAccount token (the path kopf.login_with_service_account reads).
SERVICE_ACCOUNT_TOKEN_PATH = "/var/run/secrets/kubernetes.io/serviceaccount/token"
# How often a ServiceAccount token is read again from its file (client-go's cached file token source
# uses the same minute). See ApiClient._authorization.
TOKEN_REREAD_SECONDS = 60.0
# Every call is short (no watches here). Without a read timeout a connection that dies silently would
# hold a reconcile (and its job's lock) forever; with one, the call fails and the reconcile is retried.
TIMEOUT = urllib3.Timeout(connect=30.0, read=120.0)
# Connections kept per API server: enough for every thread asyncio.to_thread may run at once
# (the default executor has at most 32); beyond that, extra connections are opened and then closed.
POOL_SIZE = 32


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
