"""The trainer's progress sender over HTTPS: it verifies the operator against the mounted CA bundle (chain and host
name), sends nothing to a server that does not verify, and reads the CA file again when verification fails (the
operator rotates its CA by updating that file). The certificates are the operator's own (progress/tls.py), so these
tests also pin down that what the operator issues, the trainer accepts."""

from __future__ import annotations

import http.server
import logging
import ssl
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from finetune_operator.progress.tls import issue_ca, issue_cert, new_key
from finetune_trainer.reporting.sender import ReportSender

FAST = dict(min_backoff=0.05, max_backoff=0.2, timeout=5.0)
NOW = datetime.now(timezone.utc)
REPORT = {"time": "2026-01-01T00:00:00.000Z", "event": "log", "step": 3, "totalSteps": 10}


def pem(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


class TlsEndpoint:
    """An HTTPS POST sink on 127.0.0.1 with a certificate for `hosts`, issued by a CA of its own."""

    def __init__(self, tmp: Path, hosts: tuple[str, ...] = ("127.0.0.1",)) -> None:
        self.ca_key = new_key()
        self.ca = issue_ca(self.ca_key, NOW, timedelta(days=30))
        key = new_key()
        cert = issue_cert(key, self.ca, self.ca_key, hosts, NOW, timedelta(days=1))
        (tmp / "server.crt").write_bytes(pem(cert))
        (tmp / "server.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tmp / "server.crt", tmp / "server.key")
        self.requests: list[dict] = []
        endpoint = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                endpoint.requests.append({"authorization": self.headers.get("Authorization"), "body": body})
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server.server_address[1]}/progress/v1/namespaces/ns/finetunejobs/job"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint(tmp_path):
    served = TlsEndpoint(tmp_path)
    yield served
    served.close()


def files(tmp_path: Path, ca_pem: bytes) -> tuple[str, str]:
    (tmp_path / "token").write_text("job-token\n")
    (tmp_path / "ca.crt").write_bytes(ca_pem)
    return str(tmp_path / "token"), str(tmp_path / "ca.crt")


def test_a_trainer_with_the_operators_ca_sends_its_report_and_token(endpoint, tmp_path):
    token_file, ca_file = files(tmp_path, pem(endpoint.ca))
    sender = ReportSender(endpoint.url, token_file, ca_file=ca_file, **FAST)

    sender.submit(REPORT)

    assert sender.flush(10)
    assert [r["authorization"] for r in endpoint.requests] == ["Bearer job-token"]


def test_a_trainer_given_the_wrong_ca_refuses_to_send_and_says_why(endpoint, tmp_path, caplog):
    other_ca = issue_ca(new_key(), NOW, timedelta(days=30))
    token_file, ca_file = files(tmp_path, pem(other_ca))
    sender = ReportSender(endpoint.url, token_file, ca_file=ca_file, **FAST)

    with caplog.at_level(logging.ERROR, logger="finetune_trainer"):
        sender.submit(REPORT)
        assert not sender.flush(1.5)  # still retrying: the report is never handed to an unverified server

    assert endpoint.requests == []
    (message,) = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert endpoint.url in message and ca_file in message and "does not verify" in message


def test_a_certificate_for_another_host_is_refused_even_from_the_right_ca(tmp_path, caplog):
    elsewhere = TlsEndpoint(tmp_path, hosts=("finetune-operator.finetune-system.svc",))
    try:
        token_file, ca_file = files(tmp_path, pem(elsewhere.ca))
        sender = ReportSender(elsewhere.url, token_file, ca_file=ca_file, **FAST)
        with caplog.at_level(logging.ERROR, logger="finetune_trainer"):
            sender.submit(REPORT)
            assert not sender.flush(1.5)
        assert elsewhere.requests == []
        assert any("127.0.0.1" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)
    finally:
        elsewhere.close()


def test_the_ca_file_is_read_again_after_a_failed_verification(endpoint, tmp_path):
    # A rotated CA: the trainer's mounted bundle still holds only the old CA when the server changes over.
    old_ca = issue_ca(new_key(), NOW, timedelta(days=30))
    token_file, ca_file = files(tmp_path, pem(old_ca))
    sender = ReportSender(endpoint.url, token_file, ca_file=ca_file, **FAST)
    sender.submit(REPORT)
    assert not sender.flush(1.0)
    assert endpoint.requests == []

    # The kubelet refreshes the mounted Secret with the new bundle (old and new CA).
    Path(ca_file).write_bytes(pem(old_ca) + pem(endpoint.ca))

    assert sender.flush(10)
    assert len(endpoint.requests) == 1


def test_an_unreadable_ca_file_sends_nothing_until_it_appears(endpoint, tmp_path, caplog):
    token_file, _ = files(tmp_path, b"")
    missing = str(tmp_path / "not-yet" / "ca.crt")
    sender = ReportSender(endpoint.url, token_file, ca_file=missing, **FAST)
    with caplog.at_level(logging.ERROR, logger="finetune_trainer"):
        sender.submit(REPORT)
        assert not sender.flush(1.0)
    assert endpoint.requests == []
    assert any(missing in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)

    Path(missing).parent.mkdir()
    Path(missing).write_bytes(pem(endpoint.ca))

    assert sender.flush(10)
    assert len(endpoint.requests) == 1


def test_the_trainer_takes_its_ca_file_from_the_operators_environment():
    from finetune_trainer.reporting.environment import reporting_callbacks

    environ = {
        "FINETUNE_PROGRESS_URL": "https://op.svc:8081/progress/v1/namespaces/ns/finetunejobs/job",
        "FINETUNE_PROGRESS_TOKEN_FILE": "/var/run/secrets/finetune/progress/token",
        "FINETUNE_PROGRESS_CA_FILE": "/var/run/secrets/finetune/progress/ca.crt",
        "FINETUNE_METRICS_PORT": "0",
    }

    _, progress = reporting_callbacks(environ)

    assert progress.sender.ca_file == environ["FINETUNE_PROGRESS_CA_FILE"]
