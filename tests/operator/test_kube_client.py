"""kube/api.py and its own HTTP client, kube/client.py (urllib3, no `kubernetes` package), against the
sandbox API server: every KubeApi call, its 404/409/400 handling, the content types and query parameters it
sends, ServiceAccount token refresh after a 401, and an operator that imports without the official client."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any
from unittest import mock

import kopf
import pytest
import urllib3
import yaml
from finetune_operator.kube import KubeApi, newer_version
from finetune_operator.kube import client as kube_client
from finetune_operator.kube.client import ApiClient, ApiError
from finetune_operator.names import GROUP, PLURAL, VERSION
from finetune_sandbox.client import ApiError as SandboxApiError
from finetune_sandbox.cluster import MANIFESTS, Sandbox, SandboxThread

NS = "default"
FINETUNEJOB = yaml.safe_load((MANIFESTS / "samples" / "sentiment-minilm.yaml").read_text())


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory):
    """The API server with the FineTuneJob CRD, and nothing else (no controllers, no operator)."""
    box = Sandbox(tmp_path_factory.mktemp("kube-client"), run_operator=False, controllers=False)
    runner = SandboxThread(box)
    runner.start()
    try:
        yield runner
    finally:
        runner.stop()


class Spy:
    """Records what the client sends through its urllib3 pool: (method, url, headers, body)."""

    def __init__(self, pool: urllib3.PoolManager) -> None:
        self.pool = pool
        self.calls: list[tuple[str, str, dict[str, str], Any]] = []

    def request(self, method: str, url: str, **kwargs: Any) -> urllib3.BaseHTTPResponse:
        body = kwargs.get("body")
        self.calls.append((method, url, dict(kwargs.get("headers") or {}), json.loads(body) if body else None))
        return self.pool.request(method, url, **kwargs)


@pytest.fixture()
def api(sandbox: SandboxThread) -> KubeApi:
    with mock.patch.dict(os.environ, {"KUBECONFIG": str(sandbox.sandbox.kubeconfig)}):
        info = kopf.login_with_kubeconfig(settings=kopf.OperatorSettings())
    assert info is not None
    client = ApiClient(info)
    client.pool = Spy(client.pool)  # type: ignore[assignment]
    return KubeApi(client)


def sent(api: KubeApi) -> list[tuple[str, str, dict[str, str], Any]]:
    return api.api_client.pool.calls  # type: ignore[attr-defined]


def server_get(sandbox: SandboxThread, api_version: str, plural: str, name: str) -> dict[str, Any] | None:
    try:
        return sandbox.call(sandbox.sandbox.client.get(api_version, plural, NS, name))
    except SandboxApiError as exc:
        if exc.status == 404:
            return None
        raise


def new_finetunejob(sandbox: SandboxThread, name: str) -> dict[str, Any]:
    body = {**FINETUNEJOB, "metadata": {"name": name, "namespace": NS}}
    return sandbox.call(sandbox.sandbox.client.create(f"{GROUP}/{VERSION}", PLURAL, NS, body))


def child(kind: str, name: str) -> dict[str, Any]:
    meta = {"name": name, "namespace": NS, "labels": {"app": "kube-client-test"}}
    specs = {
        "ConfigMap": {"data": {"config.json": "{}"}},
        "Secret": {"type": "Opaque", "data": {"token": base64.b64encode(b"t").decode()}},
        "Service": {"spec": {"clusterIP": "None", "selector": {"app": name}, "ports": [{"name": "p", "port": 29500}]}},
        "Job": {
            "spec": {
                "suspend": True,
                "backoffLimit": 0,
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [{"name": "trainer", "image": "busybox", "command": ["true"]}],
                    }
                },
            }
        },
    }
    api_version = "batch/v1" if kind == "Job" else "v1"
    return {"apiVersion": api_version, "kind": kind, "metadata": meta, **specs[kind]}


# -- KubeApi against the sandbox ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["ConfigMap", "Service", "Secret", "Job"])
def test_create_if_absent_creates_once_then_reports_the_conflict(
    api: KubeApi, sandbox: SandboxThread, kind: str
) -> None:
    manifest = child(kind, f"child-{kind.lower()}")
    assert api.create_if_absent(manifest) is True
    assert api.create_if_absent(manifest) is False  # 409 AlreadyExists
    plural = {"ConfigMap": "configmaps", "Service": "services", "Secret": "secrets", "Job": "jobs"}[kind]
    stored = server_get(sandbox, manifest["apiVersion"], plural, manifest["metadata"]["name"])
    assert stored is not None and stored["metadata"]["labels"] == {"app": "kube-client-test"}
    method, url, headers, body = sent(api)[0]
    assert method == "POST" and headers["Content-Type"] == "application/json" and body == manifest
    assert url.endswith(f"/namespaces/{NS}/{plural}")


def test_create_if_absent_raises_other_errors_with_the_status_message(api: KubeApi) -> None:
    bad = child("ConfigMap", "Not_A_Valid_Name")
    with pytest.raises(ApiError) as err:
        api.create_if_absent(bad)
    assert err.value.status == 422
    assert err.value.reason == "Invalid"
    assert "Not_A_Valid_Name" in err.value.message and "Not_A_Valid_Name" in str(err.value)


def test_get_finetunejob_and_none_once_it_is_gone(api: KubeApi, sandbox: SandboxThread) -> None:
    created = new_finetunejob(sandbox, "get-me")
    got = api.get_finetunejob(NS, "get-me")
    assert got is not None and got["metadata"]["uid"] == created["metadata"]["uid"]
    assert got["spec"]["task"] == "text-classification"
    assert api.finetunejobs[(NS, "get-me")] == got
    assert api.get_finetunejob(NS, "no-such-job") is None
    api.delete_finetunejob(NS, "get-me")
    assert api.get_finetunejob(NS, "get-me") is None
    assert (NS, "get-me") not in api.finetunejobs  # forgotten on 404


def test_patch_finetunejob_status_is_a_merge_patch_and_records_the_written_version(
    api: KubeApi, sandbox: SandboxThread
) -> None:
    created = new_finetunejob(sandbox, "patch-me")
    api.patch_finetunejob_status(NS, "patch-me", {"phase": "Pending", "message": "waiting"})
    method, url, headers, body = sent(api)[-1]
    assert (method, headers["Content-Type"], body) == (
        "PATCH",
        "application/merge-patch+json",
        {"status": {"phase": "Pending", "message": "waiting"}},
    )
    assert url.endswith(f"/apis/{GROUP}/{VERSION}/namespaces/{NS}/{PLURAL}/patch-me/status")
    stored = server_get(sandbox, f"{GROUP}/{VERSION}", PLURAL, "patch-me")
    assert stored is not None and stored["status"]["phase"] == "Pending"
    version = api.written_versions[(NS, "patch-me")]
    assert version == stored["metadata"]["resourceVersion"]
    assert newer_version(version, created["metadata"]["resourceVersion"])
    assert api.finetunejobs[(NS, "patch-me")]["status"]["message"] == "waiting"
    with pytest.raises(ApiError) as err:
        api.patch_finetunejob_status(NS, "no-such-job", {"phase": "Pending"})
    assert err.value.status == 404


def test_deletes_run_in_the_background_and_ignore_what_is_gone(api: KubeApi, sandbox: SandboxThread) -> None:
    new_finetunejob(sandbox, "delete-me")
    api.create_if_absent(child("Job", "delete-me-job"))
    api.delete_finetunejob(NS, "delete-me")
    api.delete_finetunejob(NS, "delete-me")  # 404: nothing to do
    api.delete_job(NS, "delete-me-job")
    api.delete_job(NS, "delete-me-job")
    deletes = [(url, body) for method, url, _, body in sent(api) if method == "DELETE"]
    assert len(deletes) == 4
    assert all(url.endswith("?propagationPolicy=Background") and body is None for url, body in deletes)
    assert server_get(sandbox, f"{GROUP}/{VERSION}", PLURAL, "delete-me") is None
    assert server_get(sandbox, "batch/v1", "jobs", "delete-me-job") is None


def test_set_job_suspended_merge_patches_the_job(api: KubeApi, sandbox: SandboxThread) -> None:
    api.create_if_absent(child("Job", "suspend-me"))
    api.set_job_suspended(NS, "suspend-me", False)
    stored = server_get(sandbox, "batch/v1", "jobs", "suspend-me")
    assert stored is not None and stored["spec"]["suspend"] is False
    api.set_job_suspended(NS, "suspend-me", True)
    stored = server_get(sandbox, "batch/v1", "jobs", "suspend-me")
    assert stored is not None and stored["spec"]["suspend"] is True
    method, _, headers, body = sent(api)[-1]
    assert (method, headers["Content-Type"], body) == (
        "PATCH",
        "application/merge-patch+json",
        {"spec": {"suspend": True}},
    )
    with pytest.raises(ApiError) as err:
        api.set_job_suspended(NS, "no-such-job", True)
    assert err.value.status == 404


def test_progress_key_is_created_once_then_read(api: KubeApi, sandbox: SandboxThread) -> None:
    key = api.progress_key(NS, "progress-key")
    assert len(key) == 32
    stored = server_get(sandbox, "v1", "secrets", "progress-key")
    assert stored is not None and base64.b64decode(stored["data"]["key"]) == key
    assert api.progress_key(NS, "progress-key") == key
    assert KubeApi(api.api_client).progress_key(NS, "progress-key") == key  # another replica reads the same


def test_read_log_tail(api: KubeApi, sandbox: SandboxThread, tmp_path: Path) -> None:
    assert api.read_log_tail(NS, "no-such-pod", "trainer", lines=5, max_bytes=1000) is None  # 404
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "logged", "namespace": NS},
        "spec": {"containers": [{"name": "trainer", "image": "busybox"}]},
    }
    sandbox.call(sandbox.sandbox.client.create("v1", "pods", NS, pod))
    assert api.read_log_tail(NS, "logged", "trainer", lines=5, max_bytes=1000) is None  # 400: never started
    log_file = tmp_path / "trainer.log"
    # A line that looks like JSON stays text.
    log_file.write_text("".join(f"line {i}\n" for i in range(10)) + '{"error": "oom"}\n')
    sandbox.sandbox.server.set_log_path(NS, "logged", "trainer", log_file)
    assert api.read_log_tail(NS, "logged", "trainer", lines=3, max_bytes=1000) == 'line 8\nline 9\n{"error": "oom"}\n'
    assert api.read_log_tail(NS, "logged", "trainer", lines=3, max_bytes=9) == "line 8\nli"
    _, url, _, _ = sent(api)[-1]
    assert url.endswith("/api/v1/namespaces/default/pods/logged/log?container=trainer&tailLines=3&limitBytes=9")
    assert api.read_log_tail(NS, "logged", "sidecar", lines=3, max_bytes=9) is None  # 400: no such container


def test_ensure_peering_creates_the_objects_once(api: KubeApi, sandbox: SandboxThread) -> None:
    for crd in yaml.safe_load_all((MANIFESTS / "crd" / "kopf-peering.yaml").read_text()):
        sandbox.call(sandbox.sandbox.client.create("apiextensions.k8s.io/v1", "customresourcedefinitions", None, crd))
    for _ in range(100):  # until the API serves the new resources
        try:
            api.ensure_peering("ops", [])
            api.ensure_peering("ops", [NS])
            break
        except ApiError as exc:
            assert exc.status == 404
            time.sleep(0.05)
    api.ensure_peering("ops", [])  # 409: already there
    api.ensure_peering("ops", [NS])
    cluster_peering = sandbox.call(sandbox.sandbox.client.get("kopf.dev/v1", "clusterkopfpeerings", None, "ops"))
    assert cluster_peering["kind"] == "ClusterKopfPeering"
    assert sandbox.call(sandbox.sandbox.client.get("kopf.dev/v1", "kopfpeerings", NS, "ops"))["kind"] == "KopfPeering"


def test_login_uses_the_kubeconfig_outside_a_cluster(sandbox: SandboxThread) -> None:
    if os.path.exists(kube_client.SERVICE_ACCOUNT_TOKEN_PATH):
        pytest.skip("running in a pod: the ServiceAccount wins")
    with mock.patch.dict(os.environ, {"KUBECONFIG": str(sandbox.sandbox.kubeconfig)}):
        info, token_path = kube_client.login()
        client = ApiClient.from_login()
    assert (info.server, info.token, token_path) == (sandbox.sandbox.url, "sandbox", None)
    assert KubeApi(client).get_finetunejob(NS, "nothing-here") is None


# -- credentials, without a server -------------------------------------------------------------------


class FakePool:
    """Answers 401 to every token but `valid`, and records the Authorization header of each request."""

    def __init__(self, valid: str) -> None:
        self.valid = valid
        self.seen: list[str | None] = []

    def request(self, method: str, url: str, **kwargs: Any) -> urllib3.HTTPResponse:
        authorization = kwargs["headers"].get("Authorization")
        self.seen.append(authorization)
        if authorization == f"Bearer {self.valid}":
            return urllib3.HTTPResponse(body=b'{"kind": "Namespace"}', status=200, preload_content=True)
        status = {
            "kind": "Status",
            "status": "Failure",
            "reason": "Unauthorized",
            "message": "Unauthorized",
            "code": 401,
        }
        return urllib3.HTTPResponse(
            body=json.dumps(status).encode(), status=401, reason="Unauthorized", preload_content=True
        )


def service_account_client(tmp_path: Path, token: str, valid: str) -> tuple[ApiClient, FakePool, Path]:
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    client = ApiClient(
        kopf.ConnectionInfo(server="https://kubernetes.default.svc", token=token), token_path=str(token_file)
    )
    pool = FakePool(valid)
    client.pool = pool  # type: ignore[assignment]
    return client, pool, token_file


def test_a_401_reads_the_rotated_token_and_retries_once(tmp_path: Path) -> None:
    client, pool, token_file = service_account_client(tmp_path, "old", valid="new")
    token_file.write_text("new\n")  # the kubelet rotated it
    assert client.json("GET", "/api/v1/namespaces/default") == {"kind": "Namespace"}
    assert pool.seen == ["Bearer old", "Bearer new"]
    assert client.json("GET", "/api/v1/namespaces/default") == {"kind": "Namespace"}
    assert pool.seen[-1] == "Bearer new"


def test_a_401_with_the_same_token_is_not_retried(tmp_path: Path) -> None:
    client, pool, _ = service_account_client(tmp_path, "revoked", valid="other")
    with pytest.raises(ApiError) as err:
        client.request("GET", "/api/v1/namespaces/default")
    assert (err.value.status, err.value.reason, err.value.message) == (401, "Unauthorized", "Unauthorized")
    assert pool.seen == ["Bearer revoked"]


def test_a_401_without_a_token_file_is_not_retried(tmp_path: Path) -> None:
    client = ApiClient(kopf.ConnectionInfo(server="https://example.invalid", token="static"))
    pool = FakePool(valid="other")
    client.pool = pool  # type: ignore[assignment]
    with pytest.raises(ApiError):
        client.request("GET", "/version")
    assert pool.seen == ["Bearer static"]


def test_the_token_file_is_read_again_every_minute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    client, pool, token_file = service_account_client(tmp_path, "first", valid="first")
    token_file.write_text("second\n")
    client.request("GET", "/version")
    assert pool.seen == ["Bearer first"]  # read less than a minute ago
    pool.valid = "second"
    clock = time.monotonic()
    monkeypatch.setattr(kube_client.time, "monotonic", lambda: clock + kube_client.TOKEN_REREAD_SECONDS + 1)
    client.request("GET", "/version")
    assert pool.seen == ["Bearer first", "Bearer second"]  # no 401 needed


def test_basic_auth_and_insecure_connection_info() -> None:
    client = ApiClient(kopf.ConnectionInfo(server="https://127.0.0.1:6443", username="u", password="p", insecure=True))
    assert client._authorization() == "Basic " + base64.b64encode(b"u:p").decode()
    context = kube_client._ssl_context(kopf.ConnectionInfo(server="https://127.0.0.1:6443", insecure=True))
    assert context.verify_mode.name == "CERT_NONE" and not context.check_hostname


def test_ssl_context_from_kubeconfig_data(tmp_path: Path) -> None:
    """CA, client certificate and key given as base64 data (a kubeconfig's *-data fields)."""
    key, cert = tmp_path / "k.pem", tmp_path / "c.pem"
    made = subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=test",
        ],
        capture_output=True,
        check=False,
    )
    if made.returncode != 0:
        pytest.skip(f"openssl could not make a certificate: {made.stderr[-200:]!r}")

    def b64(path: Path) -> str:
        return base64.b64encode(path.read_bytes()).decode()

    info = kopf.ConnectionInfo(
        server="https://127.0.0.1:6443", ca_data=b64(cert), certificate_data=b64(cert), private_key_data=b64(key)
    )
    context = kube_client._ssl_context(info)
    assert context.verify_mode.name == "CERT_REQUIRED" and context.check_hostname
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "test"),),)]
    # PEM given as is works as well.
    kube_client._ssl_context(kopf.ConnectionInfo(server="https://127.0.0.1:6443", ca_data=cert.read_text()))


# -- the operator without the official client --------------------------------------------------------


def test_the_operator_never_imports_the_kubernetes_client() -> None:
    """The operator image has no `kubernetes` package: every finetune_operator module imports without it,
    and none of them tries to import it (Kopf alone probes for it, optionally, and copes with its absence)."""
    code = textwrap.dedent("""
        import importlib, importlib.abc, pkgutil, sys, traceback
        attempts = []
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] == 'kubernetes':
                    # The module whose import statement asked: the innermost frame outside the import machinery.
                    frames = [f.filename for f in traceback.extract_stack()[:-1]
                              if not f.filename.startswith('<frozen') and 'importlib' not in f.filename]
                    attempts.append((name, frames[-1]))
                    raise ModuleNotFoundError(f'No module named {name!r} (not in the operator image)', name=name)
                return None
        sys.meta_path.insert(0, Block())
        import finetune_operator
        modules = [m.name for m in pkgutil.walk_packages(finetune_operator.__path__, 'finetune_operator.')]
        for module in modules:
            importlib.import_module(module)
        assert 'finetune_operator.handlers' in sys.modules and 'finetune_operator.kube' in sys.modules
        assert 'kubernetes' not in sys.modules, 'kubernetes was imported'
        ours = [(name, importer) for name, importer in attempts if 'finetune_operator' in importer]
        assert not ours, f'finetune_operator tried to import kubernetes: {ours}'
        assert all('/kopf/' in importer for _, importer in attempts), attempts
        print(len(modules))
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert int(result.stdout.strip()) > 20
