"""A real S3 API on loopback for tests: the moto server (PyPI `moto[server]`, the server s3fs's own tests
use) in a process of its own.

A separate process on 127.0.0.1 and a free port, not moto's in-process mocks: the trainer talks to it over
HTTP exactly as it talks to S3, MinIO or R2 (through AWS_ENDPOINT_URL), and sandbox pods, which are other
processes on this machine, can reach it too. The helpers that set up and inspect buckets use boto3, not the
trainer's s3fs, so a test never checks the trainer's storage code with itself.

    with s3_server() as s3:
        s3.make_bucket("models")
        env = s3.env()  # AWS_ENDPOINT_URL and credentials for the trainer
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlparse

# moto accepts any credentials until authentication is switched on (S3Server.require_auth).
ACCESS_KEY = "testing"
SECRET_KEY = "testing"
REGION = "us-east-1"
START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 10.0
# Allows everything: require_auth's user is a valid identity, so only the credentials decide.
_ALLOW_ALL = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str

    def env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}


@dataclass
class S3Server:
    """A running moto server: its endpoint, and helpers to arrange and read its buckets."""

    endpoint: str
    process: subprocess.Popen
    log_path: Path
    _clients: dict = field(default_factory=dict)

    def env(self, credentials: Credentials | None = None) -> dict[str, str]:
        """The variables a trainer needs to use this server (what a job's s3Credentials Secret would hold)."""
        credentials = credentials or Credentials(ACCESS_KEY, SECRET_KEY)
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_DEFAULT_REGION": REGION, **credentials.env()}

    def client(self, service: str = "s3", credentials: Credentials | None = None):
        import boto3

        credentials = credentials or Credentials(ACCESS_KEY, SECRET_KEY)
        key = (service, credentials)
        if key not in self._clients:
            self._clients[key] = boto3.client(
                service,
                endpoint_url=self.endpoint,
                region_name=REGION,
                aws_access_key_id=credentials.access_key,
                aws_secret_access_key=credentials.secret_key,
            )
        return self._clients[key]

    def make_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def put_file(self, path: str | os.PathLike, bucket: str, key: str) -> str:
        self.client().upload_file(str(path), bucket, key)
        return f"s3://{bucket}/{key}"

    def put_tree(self, folder: str | os.PathLike, bucket: str, prefix: str) -> str:
        """Upload every file under `folder` to s3://bucket/prefix/..., keeping relative paths."""
        folder = Path(folder)
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            self.put_file(path, bucket, f"{prefix.strip('/')}/{path.relative_to(folder).as_posix()}")
        return f"s3://{bucket}/{prefix.strip('/')}"

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", ()))

    def read(self, bucket: str, key: str) -> bytes:
        return self.client().get_object(Bucket=bucket, Key=key)["Body"].read()

    def require_auth(self) -> Credentials:
        """Switch on moto's IAM authentication and return the keys of a user allowed everything.

        From then on every request is checked: unknown keys get InvalidAccessKeyId, a wrong secret
        SignatureDoesNotMatch, a user without a policy AccessDenied (see user()). allow_anyone() switches it off.
        """
        iam = self.client("iam")
        user = f"trainer-{len(self._clients)}-{time.monotonic_ns()}"
        iam.create_user(UserName=user)
        iam.put_user_policy(UserName=user, PolicyName="all", PolicyDocument=json.dumps(_ALLOW_ALL))
        key = iam.create_access_key(UserName=user)["AccessKey"]
        self._post("/moto-api/reset-auth", b"0")
        return Credentials(key["AccessKeyId"], key["SecretAccessKey"])

    def user(self, admin: Credentials, actions: tuple[str, ...] = ()) -> Credentials:
        """Keys of a new user allowed only `actions` (none: AccessDenied on everything); needs require_auth's
        `admin` keys, since creating a user is itself checked once authentication is on."""
        iam = self.client("iam", admin)
        user = f"user-{time.monotonic_ns()}"
        iam.create_user(UserName=user)
        if actions:
            policy = {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": list(actions), "Resource": "*"}],
            }
            iam.put_user_policy(UserName=user, PolicyName="some", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName=user)["AccessKey"]
        return Credentials(key["AccessKeyId"], key["SecretAccessKey"])

    def allow_anyone(self) -> None:
        self._post("/moto-api/reset-auth", b"inf")

    def _post(self, path: str, body: bytes) -> None:
        # text/plain: as a form body, Flask would hand moto an empty request.data.
        request = urllib.request.Request(
            self.endpoint + path, data=body, method="POST", headers={"Content-Type": "text/plain"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()


def _answers(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(endpoint + "/moto-api/data.json", timeout=1) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def use_only(server: "S3Server", monkeypatch, folder: Path) -> None:
    """This process's AWS settings as a job's s3Credentials Secret makes them for `server`, and nothing of this
    machine's: no AWS_* variables, config or credentials files, nor instance-metadata lookups."""
    for name in [n for n in os.environ if n.startswith("AWS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(folder / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(folder / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name, value in server.env().items():
        monkeypatch.setenv(name, value)


@contextlib.contextmanager
def s3_server(log_dir: str | os.PathLike | None = None) -> Iterator[S3Server]:
    """Start a moto server on 127.0.0.1 and a free port, wait until it answers, and stop it afterwards."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log_path = Path(log_dir or os.environ.get("TMPDIR", "/tmp")) / f"moto-{port}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not _answers(endpoint):
            if process.poll() is not None:
                raise RuntimeError(f"moto server exited with {process.returncode}: {log_path.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"moto server did not answer at {endpoint} within {START_TIMEOUT_SECONDS}s")
            time.sleep(0.1)
        yield S3Server(endpoint, process, log_path)
    finally:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- throttling -----------------------------------------------------------------------------------------

SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message><RequestId>throttled</RequestId></Error>"
)
# Headers that belong to one connection, not to the request: never forwarded.
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "expect",
}


@dataclass
class Seen:
    method: str
    path: str
    status: int


class ThrottlingProxy:
    """An HTTP front for a moto server that answers S3's `503 SlowDown` to the requests `throttle` picks and
    forwards the others: what a throttled bucket answers, as real bytes on a real socket.

    `throttle(method, path, n)` gets each request's method, path and its 0-based number; `seen` records every
    request with the status it got."""

    def __init__(self, upstream: str, throttle: Callable[[str, str, int], bool]) -> None:
        self.upstream = urlparse(upstream)
        self.throttle = throttle
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as botocore's connection pool expects

            def log_message(self, *_args) -> None:
                pass

            def _handle(self) -> None:
                body = self._body()
                with proxy._lock:
                    number = len(proxy.seen)
                    throttled = proxy.throttle(self.command, self.path, number)
                    proxy.seen.append(Seen(self.command, self.path, 503 if throttled else 0))
                if throttled:
                    status, headers, answer = 503, [("Content-Type", "application/xml")], SLOW_DOWN
                else:
                    status, headers, answer = proxy._forward(self.command, self.path, dict(self.headers), body)
                    with proxy._lock:
                        proxy.seen[number].status = status
                self.send_response(status)
                for name, value in headers:
                    if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(answer)

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0], 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass  # trailers
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="throttling-proxy", daemon=True)

    def _forward(self, method: str, path: str, headers: dict, body: bytes):
        connection = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=30)
        try:
            forwarded = {k: v for k, v in headers.items() if k.lower() not in _HOP_BY_HOP}
            forwarded["Content-Length"] = str(len(body))
            connection.request(method, path, body=body, headers=forwarded)
            response = connection.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            connection.close()

    def throttled(self) -> int:
        return sum(1 for request in self.seen if request.status == 503)

    def __enter__(self) -> ThrottlingProxy:
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)
