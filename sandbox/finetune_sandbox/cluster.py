"""A whole sandbox cluster on one machine: API server, scheduler, Job controller, kubelet, the FineTuneJob
CRD and (optionally) the real operator as a subprocess.

The kubelet runs containers as processes of this Python environment (runtime "process", the default) or from
their images with buildah (runtime "image": `Sandbox(runtime="image")` or FINETUNE_SANDBOX_RUNTIME=image).

`Sandbox` runs on an asyncio loop; `SandboxThread` runs one on a background thread for synchronous
callers (the `ftjob` CLI, pytest fixtures).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from .apiserver import ApiServer
from .client import ApiError, SandboxClient
from .jobs import JobController
from .kubelet import ProcessKubelet
from .kubelet.volumes import pod_dir
from .operator_pod import deployment_manifest, kubeconfig_secret, operator_pod
from .scheduler import Scheduler

REPO_ROOT = Path(__file__).resolve().parents[2]
# The sandbox is local tooling, run from a checkout (the development install): it reads the CRD, the operator's
# Deployment and the samples from the checkout's manifests/, or from FINETUNE_MANIFESTS.
MANIFESTS = Path(os.environ.get("FINETUNE_MANIFESTS") or REPO_ROOT / "manifests")
CRD_FILE = MANIFESTS / "crd" / "finetunejobs.yaml"
# The image recorded on sandbox pods: the kubelet runs the trainer from this Python environment instead.
SANDBOX_TRAINER_IMAGE = "finetune-operator/trainer:sandbox"
# The image runtime's default trainer image: what `make images` builds (CPU variant), in buildah's storage.
IMAGE_TRAINER_IMAGE = "localhost/finetune-trainer:0.1.0-cpu"
# The operator image `make images` builds, and the name of the pod the sandbox runs it in.
IMAGE_OPERATOR_IMAGE = "localhost/finetune-operator:0.1.0"
OPERATOR_POD = "finetune-operator-0"
# Where the operator keeps its progress TLS Secret (CA and serving certificate): the Deployment's namespace, so
# the operator as a process and as a pod (POD_NAMESPACE) find the same one, and restarts keep trainers' trust.
OPERATOR_NAMESPACE = "finetune-system"
PROGRESS_TLS_SECRET = "finetune-operator-progress-tls"
RUNTIME_ENV = "FINETUNE_SANDBOX_RUNTIME"


def default_runtime() -> str:
    return os.environ.get(RUNTIME_ENV) or "process"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def operator_environment(
    kubeconfig: Path,
    *,
    progress_port: int,
    metrics_port: int,
    progress_key: str,
    extra: dict[str, str] | None = None,
    default_image: str = SANDBOX_TRAINER_IMAGE,
    inherit: bool = True,
) -> dict[str, str]:
    """The operator's settings in the sandbox; with `inherit`, on top of this process's environment."""
    env = dict(os.environ) if inherit else {}
    # HTTPS unless the caller opts out (extra FINETUNE_PROGRESS_TLS=disabled): the certificate names 127.0.0.1.
    scheme = "http" if (extra or {}).get("FINETUNE_PROGRESS_TLS", "").strip().lower() == "disabled" else "https"
    env.update(
        KUBECONFIG=str(kubeconfig),
        # Progress reports and metrics on loopback; one signing key per sandbox, kept across operator restarts.
        FINETUNE_PROGRESS_KEY=progress_key,
        FINETUNE_PROGRESS_PORT=str(progress_port),
        FINETUNE_PROGRESS_BASE_URL=f"{scheme}://127.0.0.1:{progress_port}",
        # The progress CA and certificate in a Secret of the sandbox's API server, like a cluster's operator keeps
        # them: a restarted operator serves the same CA, so running trainers keep reporting.
        FINETUNE_PROGRESS_TLS_NAMESPACE=OPERATOR_NAMESPACE,
        FINETUNE_METRICS_PORT=str(metrics_port),
        # A sandbox is for watching things move: report and write status often.
        FINETUNE_PROGRESS_INTERVAL_SECONDS="2",
        FINETUNE_STATUS_INTERVAL_SECONDS="2",
        # Trainer pods share this machine's ports: they do not serve their own /metrics here.
        FINETUNE_TRAINER_METRICS_PORT="0",
        FINETUNE_DEFAULT_IMAGE=default_image,
        # Laptop-sized defaults; the sandbox's scheduler does not block on CPU or memory anyway.
        FINETUNE_DEFAULT_CPU="1",
        FINETUNE_DEFAULT_MEMORY="4Gi",
        FINETUNE_RECONCILE_INTERVAL_SECONDS="5",
        FINETUNE_WATCH_SERVER_TIMEOUT="60",
        FINETUNE_WATCH_CLIENT_TIMEOUT="75",
        # No hub here: the trainer must only ever read local models.
        FINETUNE_TRAINER_ENV="HF_HUB_OFFLINE=1,TRANSFORMERS_OFFLINE=1,HF_DATASETS_OFFLINE=1",
    )
    env.update(extra or {})
    return env


class Sandbox:
    def __init__(
        self,
        data_dir: Path | str,
        *,
        port: int = 0,
        gpus: int = 0,
        gpu_resource_name: str = "nvidia.com/gpu",
        run_operator: bool = True,
        operator_env: dict[str, str] | None = None,
        crd: dict[str, Any] | None = None,
        metrics_port: int = 0,
        controllers: bool = True,
        runtime: str | None = None,
        trainer_image: str | None = None,
        operator_image: str | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        # How the kubelet runs containers: "process" (this Python environment) or "image" (buildah).
        self.runtime = runtime or default_runtime()
        if self.runtime not in ("process", "image"):
            raise ValueError(f"sandbox runtime {self.runtime!r} ({RUNTIME_ENV}): use process or image")
        # The operator's FINETUNE_DEFAULT_IMAGE (operator_env may still override it).
        default_image = IMAGE_TRAINER_IMAGE if self.runtime == "image" else SANDBOX_TRAINER_IMAGE
        self.trainer_image = trainer_image or default_image
        # With an image, the operator runs as the pod of its Deployment, from that image (image runtime only).
        self.operator_image = operator_image
        if operator_image and self.runtime != "image":
            raise ValueError("an operator image needs the image runtime: Sandbox(runtime='image', operator_image=...)")
        self.port = port
        self.gpus = gpus
        self.gpu_resource_name = gpu_resource_name
        self.run_operator = run_operator
        self.operator_env = operator_env or {}
        # Without the scheduler, Job controller and kubelet no pod ever runs: benchmarks play those parts.
        self.controllers = controllers
        # Tests may install a different CRD (e.g. a stale, looser one) to exercise the operator's own checks.
        self.crd = crd
        self.kubeconfig = self.data_dir / "kubeconfig"
        self.progress_port = free_port()
        self.progress_key = secrets.token_hex(32)
        self.metrics_port = metrics_port or free_port()
        self.operator_log = self.data_dir / "operator.log"
        self.url = ""
        self.server: ApiServer | None = None
        self.client: SandboxClient | None = None
        self.kubelet: ProcessKubelet | None = None
        self.operator: subprocess.Popen[bytes] | None = None
        self._controllers: list[Any] = []
        self._tasks: list[asyncio.Task[Any]] = []

    async def start(self) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.server = ApiServer(host="127.0.0.1", port=self.port, graceful_pod_deletion=True)
        self.url = await self.server.start()
        self.server.write_kubeconfig(self.kubeconfig)
        self.client = SandboxClient(self.url)
        capacity = {
            "cpu": str(os.cpu_count() or 2),
            "memory": "64Gi",
            "pods": "110",
            self.gpu_resource_name: str(self.gpus),
        }
        self.kubelet = ProcessKubelet(
            self.client,
            self.data_dir,
            node_name="sandbox",
            python=sys.executable,
            register_log=self.server.set_log_path,
            runtime=self.runtime,
        )
        self._controllers = (
            [
                Scheduler(self.client, node_name="sandbox", capacity=capacity),
                JobController(self.client),
                self.kubelet,
            ]
            if self.controllers
            else []
        )
        self._tasks = [asyncio.create_task(c.run(), name=type(c).__name__) for c in self._controllers]
        await self.install_crd()
        # The operator's own namespace: its progress TLS Secret lives there (and, as a pod, the operator itself).
        with contextlib.suppress(ApiError):
            await self.client.create(
                "v1",
                "namespaces",
                None,
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OPERATOR_NAMESPACE}},
            )
        if self.run_operator and self.operator_image:
            await self._create_operator_pod()
        elif self.run_operator:
            self.start_operator()
        return self.url

    async def install_crd(self) -> None:
        assert self.client is not None
        if self.crd is None and not CRD_FILE.exists():
            raise FileNotFoundError(
                f"the sandbox needs the project's manifests: {CRD_FILE} does not exist (run it from a "
                f"checkout, pip install -e '.[sandbox]', or set FINETUNE_MANIFESTS to a manifests/ folder)"
            )
        crd = self.crd or yaml.safe_load(CRD_FILE.read_text())
        with contextlib.suppress(ApiError):
            await self.client.create("apiextensions.k8s.io/v1", "customresourcedefinitions", None, crd)
        # Wait until the API serves the new resource (a real server takes a moment too).
        for _ in range(100):
            try:
                await self.client.list("finetune.dev/v1alpha1", "finetunejobs", "default")
                return
            except ApiError:
                await asyncio.sleep(0.05)
        raise RuntimeError("the sandbox API server never served finetunejobs after the CRD was created")

    def start_operator(self) -> None:
        self.operator = self.spawn_operator(
            ["--standalone"],
            log_path=self.operator_log,
            metrics_port=self.metrics_port,
            progress_port=self.progress_port,
        )

    def spawn_operator(
        self,
        args: list[str],
        *,
        log_path: Path,
        metrics_port: int | None = None,
        progress_port: int | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """One more operator process (e.g. a second replica with `--peering NAME`); the caller owns and stops it.

        Replicas share the API server and the progress-signing key; each needs its own ports on this machine.
        """
        log = open(log_path, "ab")  # noqa: SIM115 (owned by the subprocess for its lifetime)
        process = subprocess.Popen(
            [sys.executable, "-m", "finetune_operator", "--all-namespaces", *args, "--liveness", ""],
            env=operator_environment(
                self.kubeconfig,
                progress_port=progress_port or free_port(),
                metrics_port=metrics_port or free_port(),
                progress_key=self.progress_key,
                extra={**self.operator_env, **(env or {})},
                default_image=self.trainer_image,
            ),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        return process

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    async def _create_operator_pod(self) -> None:
        """The operator's Deployment pod, from its image: the kubeconfig Secret first, as on a cluster."""
        assert self.client is not None and self.operator_image
        deployment = deployment_manifest(MANIFESTS / "operator" / "deployment.yaml")
        namespace = deployment["metadata"]["namespace"]
        settings = operator_environment(
            self.kubeconfig,
            progress_port=self.progress_port,
            metrics_port=self.metrics_port,
            progress_key="",
            extra=self.operator_env,
            default_image=self.trainer_image,
            inherit=False,
        )
        # What the pod has of its own: its kubeconfig (from the Secret), its progress key and TLS Secret (Secrets that
        # the operator makes in its namespace, found through POD_NAMESPACE).
        for key in ("KUBECONFIG", "FINETUNE_PROGRESS_KEY", "FINETUNE_PROGRESS_TLS_NAMESPACE"):
            settings.pop(key)
        with contextlib.suppress(ApiError):
            await self.client.create(
                "v1", "namespaces", None, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
            )
        await self.client.create("v1", "secrets", namespace, kubeconfig_secret(namespace, self.kubeconfig.read_text()))
        pod = operator_pod(
            deployment,
            image=self.operator_image,
            name=OPERATOR_POD,
            settings=settings,
            args=["--all-namespaces", "--standalone", "--liveness", ""],
        )
        await self.client.create("v1", "pods", namespace, pod)
        self.operator_log = (
            pod_dir(self.data_dir, namespace, OPERATOR_POD) / f"{pod['spec']['containers'][0]['name']}.log"
        )

    def stop_operator(self, timeout: float = 10.0) -> None:
        if self.operator is None:
            return
        self.operator.terminate()
        try:
            self.operator.wait(timeout)
        except subprocess.TimeoutExpired:
            self.operator.kill()
            self.operator.wait()
        self.operator = None

    async def stop(self) -> None:
        await asyncio.to_thread(self.stop_operator)
        for controller in reversed(self._controllers):
            with contextlib.suppress(Exception):
                await controller.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.client is not None:
            await self.client.close()
        if self.server is not None:
            await self.server.stop()


class SandboxThread:
    """A Sandbox on its own event loop in a daemon thread, driven from synchronous code."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="sandbox", daemon=True)

    def start(self, timeout: float = 60.0) -> str:
        self._thread.start()
        return self.call(self.sandbox.start(), timeout)

    def call(self, coroutine: Any, timeout: float = 60.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def stop(self, timeout: float = 60.0) -> None:
        try:
            self.call(self.sandbox.stop(), timeout)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout)

    def __enter__(self) -> SandboxThread:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def wait_for(predicate: Any, timeout: float, interval: float = 0.2, message: str = "condition") -> Any:
    """Poll `predicate` until it returns something truthy (tests and the demo use it)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {message}")
        time.sleep(interval)
