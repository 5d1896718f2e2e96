"""Progress reports over HTTPS, end to end: the sandbox's operator serves its progress endpoint with a certificate
from its TLS Secret, renews it while a real trainer reports (the certificate lives 12 s here) and across an
operator restart, and refuses reports without the job's token. The Secret is seeded with an expired certificate
before the operator first starts."""

from __future__ import annotations

import base64
import http.client
import json
import shutil
import socket
import ssl
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone

import pytest
from cryptography import x509
from finetune_operator.progress.tls import (
    TlsMaterial,
    issue_ca,
    issue_cert,
    material_from_data,
    material_to_data,
    new_key,
    not_after,
)
from finetune_sandbox.cluster import OPERATOR_NAMESPACE, PROGRESS_TLS_SECRET, Sandbox, SandboxThread, wait_for
from sandbox_support import (
    Cluster,
    finetunejob,
    kill_operator,
    progress_endpoint,
    restart_operator,
    wait_operator_ready,
    write_sentiment_csv,
    write_tiny_text_classifier,
)

pytestmark = pytest.mark.e2e

CERT_SECONDS = 12
# Long enough to outlive several 12-second certificates and an operator restart, however fast the machine.
STEPS = 4000


def tls_secret(cluster: Cluster) -> TlsMaterial:
    data = cluster.core.read_namespaced_secret(PROGRESS_TLS_SECRET, OPERATOR_NAMESPACE).data
    return material_from_data(data)


def served_certificate(cluster: Cluster, ca_pem: str) -> x509.Certificate:
    """The certificate a new handshake gets, verified as a trainer verifies it (chain and host 127.0.0.1)."""
    context = ssl.create_default_context(cadata=ca_pem)
    with socket.create_connection(("127.0.0.1", cluster.sandbox.progress_port), timeout=30) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as conn:
            return x509.load_der_x509_certificate(conn.getpeercert(binary_form=True))


@pytest.fixture(scope="module")
def seeded_ca() -> TlsMaterial:
    """A valid CA with an expired serving certificate: what an operator finds after a long outage."""
    now = datetime.now(timezone.utc)
    ca_key, key = new_key(), new_key()
    ca = issue_ca(ca_key, now - timedelta(days=3), timedelta(days=3650))
    hosts = (
        "127.0.0.1",
        "finetune-operator.finetune-system.svc",
        "finetune-operator.finetune-system.svc.cluster.local",
    )
    expired = issue_cert(key, ca, ca_key, hosts, now - timedelta(days=2), timedelta(days=1))
    return TlsMaterial(cert=expired, key=key, bundle=(ca,), ca_key=ca_key)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, seeded_ca: TlsMaterial) -> Cluster:
    sandbox = Sandbox(
        tmp_path_factory.mktemp("sandbox-tls"),
        run_operator=False,
        operator_env={
            "FINETUNE_PROGRESS_TLS_CERT_SECONDS": str(CERT_SECONDS),
            "FINETUNE_PROGRESS_TLS_CHECK_SECONDS": "0.25",
        },
    )
    runner = SandboxThread(sandbox)
    runner.start()
    try:
        cluster = Cluster(sandbox, runner)
        cluster.core.create_namespaced_secret(
            OPERATOR_NAMESPACE,
            {"metadata": {"name": PROGRESS_TLS_SECRET}, "data": material_to_data(seeded_ca)},
        )
        sandbox.start_operator()
        wait_operator_ready(cluster, 0, timeout=120)
        yield cluster
    finally:
        runner.stop()


@pytest.fixture()
def team(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> str:
    namespace = cluster.namespace()
    model = tmp_path_factory.mktemp("tiny-model")
    write_tiny_text_classifier(model)
    shutil.copytree(model, cluster.pvc_dir(namespace, "models") / "tiny-bert")
    write_sentiment_csv(cluster.pvc_dir(namespace, "datasets") / "sentiment" / "train.csv")
    return namespace


def test_an_expired_certificate_is_renewed_by_the_ca_trainers_already_trust(cluster: Cluster, seeded_ca: TlsMaterial):
    ca_pem = seeded_ca.bundle_pem

    served = served_certificate(cluster, ca_pem)  # verifies against the seeded CA alone

    assert served.serial_number != seeded_ca.cert.serial_number
    assert not_after(served) > datetime.now(timezone.utc)
    assert tls_secret(cluster).bundle == seeded_ca.bundle
    expired_at = f"{not_after(seeded_ca.cert):%Y-%m-%d %H:%M:%S}"
    assert f"the serving certificate expires at {expired_at} UTC: renewed" in cluster.sandbox.operator_log.read_text()


def test_reports_without_the_jobs_token_or_over_plain_http_are_refused(cluster: Cluster, team: str):
    for name in ("guarded", "neighbour"):
        cluster.apply(finetunejob(name, team, runPolicy={"suspend": True}))
    for name in ("guarded", "neighbour"):
        cluster.wait_phase(team, name, "Suspended", timeout=120)
    url, tls, _ = progress_endpoint(cluster, team, "guarded")
    _, _, neighbours_token = progress_endpoint(cluster, team, "neighbour")
    body = json.dumps({"time": "2026-12-01T12:00:00Z", "event": "log", "step": 1, "totalSteps": 2}).encode()

    def post(target: str, headers: dict[str, str], context: ssl.SSLContext | None) -> int:
        request = urllib.request.Request(target, data=body, method="POST", headers=headers)
        try:
            return urllib.request.urlopen(request, timeout=30, context=context).status
        except urllib.error.HTTPError as error:
            return error.code

    assert post(url, {}, tls) == 401
    assert post(url, {"Authorization": f"Bearer {neighbours_token}"}, tls) == 403
    # Plain HTTP to the TLS port gets no answer at all, and neither does a client that cannot verify the server.
    with pytest.raises((OSError, http.client.HTTPException)):
        post(url.replace("https://", "http://"), {"Authorization": f"Bearer {neighbours_token}"}, None)
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        post(url, {}, ssl.create_default_context())
    assert "progress" not in cluster.status(team, "guarded")


def test_a_trainer_reports_over_https_through_renewals_and_an_operator_restart(cluster: Cluster, team: str):
    ca_pem = tls_secret(cluster).bundle_pem
    cluster.apply(finetunejob("secure", team, hyperparameters={"maxSteps": STEPS, "batchSize": 4}))
    served: set[int] = set()

    def step() -> int:
        return (cluster.status(team, "secure").get("progress") or {}).get("step") or 0

    def reporting_since(previous: int) -> bool:
        served.add(served_certificate(cluster, ca_pem).serial_number)
        return step() > previous or cluster.status(team, "secure").get("phase") in ("Succeeded", "Failed")

    wait_for(lambda: reporting_since(0), 300, interval=0.5, message="the first progress report over HTTPS")
    # The operator dies mid-training and comes back: it serves a certificate of the same CA from its Secret.
    kill_operator(cluster)
    restart_operator(cluster)
    before = step()
    wait_for(lambda: reporting_since(before), 300, interval=0.5, message="progress after the operator's restart")
    status = cluster.wait_phase(team, "secure", "Succeeded", "Failed", timeout=600)
    assert status["phase"] == "Succeeded", status

    # No report lost: the last one (step STEPS) reaches the status, certificates renewed under the trainer's feet.
    wait_for(lambda: step() == STEPS, 60, message=f"the final report (step {STEPS}) in status.progress")
    assert len(served) >= 2, f"one certificate served all along ({served}): none was renewed while the job ran"
    assert tls_secret(cluster).bundle_pem == ca_pem
    log = trainer_log(cluster, team, "secure")
    assert f"first progress report delivered to https://127.0.0.1:{cluster.sandbox.progress_port}/" in log
    assert "does not verify" not in log and "report dropped" not in log, log[-3000:]


def trainer_log(cluster: Cluster, namespace: str, name: str) -> str:
    return "\n".join(
        cluster.kubectl("logs", "-n", namespace, pod.metadata.name, check=False).stdout
        for pod in cluster.pods(namespace, name)
    )


def test_the_secret_is_the_operators_own(cluster: Cluster):
    secret = cluster.core.read_namespaced_secret(PROGRESS_TLS_SECRET, OPERATOR_NAMESPACE)

    assert {"tls.crt", "tls.key", "ca.crt", "ca.key"} <= set(secret.data)
    assert base64.b64decode(secret.data["ca.crt"]).startswith(b"-----BEGIN CERTIFICATE-----")
