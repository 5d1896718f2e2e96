"""What the operator benchmarks share: a sandbox in which the benchmark plays the kubelet.

The sandbox runs without its scheduler, Job controller and kubelet, so no trainer ever runs however
many FineTuneJobs exist; the benchmark creates pods and moves Job and pod statuses itself, in-process,
the way those controllers would (`BenchSandbox.create_pods`/`run_pods` on demand, or `KubeletPlay`,
which follows every Job as it appears and starts its pod once the pod's ConfigMaps and Secrets exist,
with the kubelet's per-volume mount back-off). Times come from the API server's own store: a listener stamps the
moment each object change is committed (creationTimestamp has one-second resolution, too coarse),
and a request listener counts every HTTP request by verb and resource. Every HTTP request the server
sees comes from the operator under test: the benchmark's own writes never go over HTTP.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import psutil
import yaml
from finetune_sandbox.cluster import CRD_FILE, Sandbox

# The kubelet's mount back-off, shared with the sandbox's own kubelet (read-only here): 0.5 s after the
# first failure, doubling, capped at 2 min 2 s, per (pod, volume); upstream nestedpendingoperations.
from finetune_sandbox.kubelet.mount_backoff import MountBackoffs

BENCH_DIR = Path(__file__).resolve().parent
NAMESPACE = "default"
WRITE_VERBS = ("create", "update", "patch", "delete", "deletecollection")
# Production defaults, not the sandbox's demo-friendly ones (it reconciles every 5 s and writes status every 2 s).
# The operator image has no official `kubernetes` client (kube/client.py speaks HTTP itself), but this
# venv does (the sandbox's tests use it), and Kopf imports it wherever it finds it: about 25 MiB of RSS
# that the deployed operator does not carry. The benchmarks' operator imports it as the image would fail to.
IMAGE_LIKE_PATH = BENCH_DIR / "image_like_imports"
PRODUCTION_ENV = {
    "FINETUNE_RECONCILE_INTERVAL_SECONDS": "30",
    "FINETUNE_STATUS_INTERVAL_SECONDS": "15",
}
Key = tuple[str, str]  # (namespace, name)


# --- pure helpers ---------------------------------------------------------------------------------


def run_sizes(sizes: str, prefix: str, measure_one: Callable[[int, Path], tuple[str, bool]]) -> int:
    """Measure each size in its own temporary sandbox folder, print its summary line; exit code 1 if any missed."""
    missed = False
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        for size in (int(s) for s in sizes.split(",") if s.strip()):
            line, size_missed = measure_one(size, Path(tmp) / str(size))
            print(line, flush=True)
            missed |= size_missed
    return 1 if missed else 0


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list: always one of the measured values."""
    if not values:
        raise ValueError("percentile of no values: the benchmark measured nothing")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def classify_request(method: str, path_qs: str) -> tuple[str, str]:
    """(verb, resource) of a Kubernetes REST request, e.g. ("patch", "finetunejobs/status").

    Verbs are RBAC's: get/list/watch for GET, create/update/patch/delete/deletecollection otherwise;
    requests outside /api and /apis (discovery, health) are ("get", "discovery").
    """
    parts = urlsplit(path_qs)
    query = parse_qs(parts.query)
    segments = [s for s in parts.path.split("/") if s]
    if segments[:1] == ["api"]:
        rest = segments[2:]
    elif segments[:1] == ["apis"]:
        rest = segments[3:]
    else:
        return "get", "discovery"
    watch = query.get("watch", ["false"])[0].lower() in ("true", "1")
    if rest[:1] == ["watch"]:
        watch, rest = True, rest[1:]
    if len(rest) >= 3 and rest[0] == "namespaces" and rest[2:3] != ["status"] and rest[2:3] != ["finalize"]:
        rest = rest[2:]
    if not rest:
        return "get", "discovery"
    resource = rest[0] + (f"/{rest[2]}" if len(rest) > 2 else "")
    named = len(rest) > 1
    method = method.upper()
    if method == "GET":
        verb = "watch" if watch else ("get" if named else "list")
    elif method == "POST":
        verb = "create"
    elif method == "PUT":
        verb = "update"
    elif method == "PATCH":
        verb = "patch"
    elif method == "DELETE":
        verb = "delete" if named else "deletecollection"
    else:
        verb = method.lower()
    return verb, resource


def finetunejob(name: str, *, suspend: bool = False) -> dict[str, Any]:
    """A valid FineTuneJob; with the sandbox's controllers off its trainer never runs."""
    return {
        "apiVersion": "finetune.dev/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "task": "text-classification",
            "model": {"source": "pvc://models/tiny-bert"},
            "dataset": {
                "train": "pvc://datasets/sentiment/train.csv",
                "columns": {"text": "sentence", "label": "label"},
            },
            "hyperparameters": {"maxSteps": 100, "batchSize": 8, "learningRate": 1.0e-3, "maxSeqLength": 16},
            "resources": {"nodes": 1, "gpusPerNode": 0, "cpu": "1", "memory": "2Gi"},
            "output": {"uri": f"pvc://models/out-{name}"},
            "runPolicy": {"suspend": suspend, "startupDeadlineSeconds": 3600},
        },
    }


def without_cel_rules(schema: Any) -> Any:
    """`schema` with every x-kubernetes-validations list removed (a copy)."""
    if isinstance(schema, dict):
        return {k: without_cel_rules(v) for k, v in schema.items() if k != "x-kubernetes-validations"}
    if isinstance(schema, list):
        return [without_cel_rules(v) for v in schema]
    return schema


def job_names(count: int, prefix: str = "bench") -> list[str]:
    return [f"{prefix}-{i:05d}" for i in range(count)]


def trainer_pod(job: dict[str, Any]) -> dict[str, Any]:
    """The pod the Job controller would create for `job` (rank 0), still Pending."""
    meta = job["metadata"]
    template_meta = job["spec"]["template"].get("metadata") or {}
    labels = dict(template_meta.get("labels") or {})
    labels.update(
        {
            "batch.kubernetes.io/job-name": meta["name"],
            "job-name": meta["name"],
            "batch.kubernetes.io/controller-uid": meta["uid"],
        }
    )
    owner = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{meta['name']}-0",
            "namespace": meta["namespace"],
            "labels": labels,
            "annotations": dict(template_meta.get("annotations") or {}),
            "ownerReferences": [owner],
        },
        "spec": job["spec"]["template"]["spec"],
        "status": {"phase": "Pending"},
    }


def container_status(name: str, state: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "state": state,
        "ready": "running" in state,
        "restartCount": 0,
        "image": "sandbox",
        "imageID": "sandbox",
        "started": "running" in state,
    }


def status_phase(obj: dict[str, Any]) -> str | None:
    return (obj.get("status") or {}).get("phase")


def container_running(pod: dict[str, Any]) -> bool:
    """Whether any of the pod's containers has been started (a containerStatuses entry in state.running)."""
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return any("running" in (cs.get("state") or {}) for cs in statuses)


def mounted_sources(pod: dict[str, Any]) -> dict[str, list[tuple[str, str]]]:
    """The ConfigMaps and Secrets each of the pod's volumes needs, as (plural, name), by volume name.

    configMap, secret and projected volumes only (a projected volume mounts once all its sources exist);
    an `optional: true` source is left out: the kubelet mounts it empty when it is missing.
    """

    def source(ref_holder: dict[str, Any]) -> tuple[str, str] | None:
        if "configMap" in ref_holder:
            ref = ref_holder["configMap"] or {}
            plural, name = "configmaps", ref.get("name", "")
        elif "secret" in ref_holder:
            ref = ref_holder["secret"] or {}
            plural, name = "secrets", ref.get("secretName") or ref.get("name", "")
        else:
            return None
        return None if ref.get("optional") else (plural, name)

    needs: dict[str, list[tuple[str, str]]] = {}
    for volume in (pod.get("spec") or {}).get("volumes") or []:
        holders = ((volume.get("projected") or {}).get("sources") or []) if "projected" in volume else [volume]
        sources = [s for s in (source(h) for h in holders) if s is not None]
        if sources:
            needs[volume["name"]] = sources
    return needs


def failed_mount_message(volume: str, missing: tuple[str, str]) -> str:
    """The kubelet's FailedMount event message for a missing ConfigMap or Secret."""
    kind = "configmap" if missing[0] == "configmaps" else "secret"
    return f'MountVolume.SetUp failed for volume "{volume}" : {kind} "{missing[1]}" not found'


# --- the sandbox the benchmarks drive -------------------------------------------------------------


class BenchSandbox:
    """A controller-less Sandbox on the running loop, with commit-time stamps and request counts."""

    def __init__(self, data_dir: Path, operator_env: dict[str, str] | None = None, *, cel: bool = False) -> None:
        # The sandbox evaluates the CRD's CEL rules with an interpreter (celpy): ~45 ms per FineTuneJob
        # write on this machine, where a real API server's compiled CEL takes microseconds. Left in,
        # that cost would swamp what is measured here: the operator's own work.
        crd = yaml.safe_load(CRD_FILE.read_text())
        self.sandbox = Sandbox(
            data_dir,
            run_operator=False,
            controllers=False,
            crd=crd if cel else without_cel_rules(crd),
            operator_env={
                **PRODUCTION_ENV,
                "PYTHONPATH": os.pathsep.join(filter(None, [str(IMAGE_LIKE_PATH), os.environ.get("PYTHONPATH")])),
                **(operator_env or {}),
            },
        )
        self.requests: collections.Counter[tuple[str, str]] = collections.Counter()
        self.last_request = time.perf_counter()
        self.operator: psutil.Process | None = None
        self._popen: subprocess.Popen[bytes] | None = None
        self._http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> BenchSandbox:
        await self.sandbox.start()
        self.server.request_listeners.append(self._count)
        self._http = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._http is not None:
            await self._http.close()
        await asyncio.to_thread(self.stop_operator)
        await self.sandbox.stop()

    @property
    def server(self) -> Any:
        assert self.sandbox.server is not None, "start the sandbox first"
        return self.sandbox.server

    @property
    def http(self) -> aiohttp.ClientSession:
        assert self._http is not None
        return self._http

    def _count(self, method: str, path_qs: str) -> None:
        self.requests[classify_request(method, path_qs)] += 1
        self.last_request = time.perf_counter()

    # -- operators ----------------------------------------------------------------------------------

    def start_operator(self, which: str, env: dict[str, str] | None = None) -> None:
        """Start "ours" (python -m finetune_operator, as the sandbox does) or "baseline" (bench/baseline_operator.py,
        with `env` added to its environment)."""
        if which == "ours":
            self.sandbox.start_operator()
            self._popen = self.sandbox.operator
        elif which == "baseline":
            log = open(self.sandbox.data_dir / "baseline.log", "ab")  # noqa: SIM115 (the child owns it)
            env = {**os.environ, **(env or {}), "KUBECONFIG": str(self.sandbox.kubeconfig)}
            self._popen = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "kopf",
                    "run",
                    str(BENCH_DIR / "baseline_operator.py"),
                    "--all-namespaces",
                    "--standalone",
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            log.close()
        else:
            raise ValueError(f"operator must be 'ours' or 'baseline', not {which!r}")
        self.operator = psutil.Process(self._popen.pid)

    def stop_operator(self) -> None:
        if self._popen is None:
            return
        if self._popen is self.sandbox.operator:
            self.sandbox.stop_operator()
        else:
            self._popen.terminate()
            try:
                self._popen.wait(10)
            except subprocess.TimeoutExpired:
                self._popen.kill()
                self._popen.wait()
        self._popen = None

    def operator_alive(self) -> None:
        if self._popen is not None and self._popen.poll() is not None:
            raise RuntimeError(f"the operator exited with {self._popen.returncode}; see {self.sandbox.data_dir}/*.log")

    async def warm_up(self, timeout: float = 60.0) -> None:
        """Create one job and wait for its Job: the operator is then watching (excluded from results)."""
        created = self.first_time("batch", "jobs")
        self.create_finetunejob(finetunejob("warmup"))
        await self.wait_until(lambda: (NAMESPACE, "warmup") in created, timeout, "the warm-up job's Job")
        self.stop_stamping(created)

    # -- in-process API: what a user and the missing controllers do --------------------------------

    def _rt(self, api_version: str, plural: str) -> Any:
        group, _, version = api_version.rpartition("/")
        return self.server.registry.get(group, version, plural)

    def create_finetunejob(self, body: dict[str, Any]) -> None:
        self.server.objects.create(self._rt("finetune.dev/v1alpha1", "finetunejobs"), NAMESPACE, body)

    def create(self, api_version: str, plural: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.server.objects.create(self._rt(api_version, plural), body["metadata"]["namespace"], body)

    def patch_status(self, api_version: str, plural: str, key: Key, status: dict[str, Any]) -> None:
        self.server.objects.patch(
            self._rt(api_version, plural), key[0], key[1], "application/merge-patch+json", {"status": status}, "status"
        )

    def delete(self, api_version: str, plural: str, key: Key) -> None:
        self.server.objects.delete(self._rt(api_version, plural), key[0], key[1], {"propagationPolicy": "Background"})

    def get(self, group: str, plural: str, key: Key) -> dict[str, Any] | None:
        return self.server.store.get(group, plural, key[0], key[1])

    def progress_token(self, key: Key) -> str:
        secret = self.get("", "secrets", (key[0], f"{key[1]}-progress"))
        if secret is None:
            raise RuntimeError(f"no Secret {key[1]}-progress: the operator has not created {key[1]}'s children")
        data = secret.get("data") or {}
        if "token" in data:
            return base64.b64decode(data["token"]).decode()
        return (secret.get("stringData") or {})["token"]

    # -- timing -------------------------------------------------------------------------------------

    def first_time(
        self, group: str, plural: str, test: Callable[[dict[str, Any]], bool] | None = None
    ) -> dict[Key, float]:
        """From now on, stamp (perf_counter) the first committed change of each object that passes `test`."""
        seen: dict[Key, float] = {}

        def listener(event: Any) -> None:
            key = (event.key[2], event.key[3])
            if (
                event.key[:2] == (group, plural)
                and event.type != "DELETED"
                and key not in seen
                and (test is None or test(event.obj))
            ):
                seen[key] = time.perf_counter()

        listener.stamps = seen  # type: ignore[attr-defined]
        self.server.store.listeners.append(listener)
        return seen

    def stop_stamping(self, stamps: dict[Key, float] | None = None) -> None:
        """Remove the listener that fills `stamps`, or every stamping listener."""
        self.server.store.listeners[:] = [
            f
            for f in self.server.store.listeners
            if not hasattr(f, "stamps") or (stamps is not None and f.stamps is not stamps)
        ]

    async def wait_until(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            self.operator_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}; see {self.sandbox.data_dir}")
            await asyncio.sleep(0.05)

    async def quiet(self, seconds: float = 2.0, timeout: float = 120.0) -> None:
        """Wait until the operator has sent no API request for `seconds` (its backlog is drained)."""
        await self.wait_until(
            lambda: time.perf_counter() - self.last_request > seconds, timeout, "the operator to go quiet"
        )

    # -- playing the Job controller and kubelet ---------------------------------------------------

    def create_pods(self, keys: list[Key]) -> None:
        for key in keys:
            job = self.get("batch", "jobs", key)
            if job is None:
                raise RuntimeError(f"no Job {key[1]}: create pods only after the operator made the Jobs")
            self.create("v1", "pods", trainer_pod(job))

    def run_pods(self, keys: list[Key]) -> None:
        """Pods go Running (what the kubelet reports), then the Job counts them active (what its controller does)."""
        for key in keys:
            pod = (key[0], f"{key[1]}-0")
            self.patch_status(
                "v1",
                "pods",
                pod,
                {
                    "phase": "Running",
                    "containerStatuses": [
                        container_status("trainer", {"running": {"startedAt": "2026-01-01T00:00:00Z"}})
                    ],
                },
            )
            self.patch_status("batch/v1", "jobs", key, {"active": 1, "ready": 1, "startTime": "2026-01-01T00:00:00Z"})

    def finish_pods(self, keys: list[Key]) -> None:
        """Trainers exit 0 and the Job completes."""
        done = {
            "terminated": {
                "exitCode": 0,
                "reason": "Completed",
                "startedAt": "2026-01-01T00:00:00Z",
                "finishedAt": "2026-01-01T00:10:00Z",
            }
        }
        for key in keys:
            self.patch_status(
                "v1",
                "pods",
                (key[0], f"{key[1]}-0"),
                {"phase": "Succeeded", "containerStatuses": [container_status("trainer", done)]},
            )
            conditions = [
                {"type": t, "status": "True", "lastTransitionTime": "2026-01-01T00:10:00Z"}
                for t in ("SuccessCriteriaMet", "Complete")
            ]
            self.patch_status(
                "batch/v1",
                "jobs",
                key,
                {
                    "active": 0,
                    "ready": 0,
                    "succeeded": 1,
                    "completionTime": "2026-01-01T00:10:00Z",
                    "conditions": conditions,
                },
            )

    # -- the operator's outputs --------------------------------------------------------------------

    async def scrape(self) -> str:
        async with self.http.get(self.sandbox.metrics_url, timeout=aiohttp.ClientTimeout(total=30)) as response:
            return await response.text()


class KubeletPlay:
    """The Job controller and a kubelet, played in-process for every Job created while it is on.

    - Job controller: a Job's ADDED event (not suspended) creates its rank-0 pod, `pod_delay` seconds
      later (0: at once, which leaves a Job sent before its ConfigMap no time to be rescued by the race).
    - Kubelet, first sync of a new pod: one status write (Pending, containers waiting ContainerCreating),
      as the real kubelet's status manager and the sandbox's kubelet both do, then an attempt to mount
      every ConfigMap and Secret volume (`mounted_sources`), reading the store as its informer would.
    - A volume whose source is missing fails: a FailedMount Warning event (the first failure creates it,
      repeats add to its count, as client-go's event correlator does) and no retry of that volume until
      its back-off expires: `finetune_sandbox.kubelet.mount_backoff.MountBackoffs`, 0.5 s after the first
      failure, doubling, capped at 2 min 2 s, per volume (upstream nestedpendingoperations). Like the
      sandbox's kubelet it retries exactly when the back-off expires (upstream's reconciler looks every
      100 ms). Mounted volumes stay mounted.
    - Every volume mounted: the container starts. One pod status write (Running, the container in
      state.running: the commit a benchmark stamps as "started"), then the Job counts the pod active.

    Not played: the scheduler's bind write, PVC binding (the pods' claims are taken as bound), image pulls,
    and the pod worker's 2 min 3 s WaitForAttachAndMount timeout (no source is missing that long here).
    """

    def __init__(self, bench: BenchSandbox, pod_delay: float = 0.0) -> None:
        self.bench = bench
        self.pod_delay = pod_delay
        self.loop = asyncio.get_running_loop()
        self.backoffs: dict[Key, MountBackoffs] = {}
        self.mounted: dict[Key, set[str]] = {}
        self.failed_mounts = 0  # mount attempts that met a missing source
        self.delayed_pods: set[Key] = set()  # pods that met at least one
        self.started: set[Key] = set()
        self._event_counts: dict[tuple[Key, str], int] = {}
        self._handles: set[asyncio.TimerHandle] = set()
        bench.server.store.listeners.append(self._on_event)

    def close(self) -> None:
        listeners = self.bench.server.store.listeners
        if self._on_event in listeners:
            listeners.remove(self._on_event)
        for handle in self._handles:
            handle.cancel()
        self._handles.clear()

    def _later(self, delay: float, callback: Callable[[Key], None], key: Key) -> None:
        """Run `callback(key)` on the loop after `delay` s: never inside the store's commit that woke us."""

        def run() -> None:
            self._handles.discard(handle)
            callback(key)

        handle = self.loop.call_later(max(0.0, delay), run)
        self._handles.add(handle)

    def _on_event(self, event: Any) -> None:
        if event.type != "ADDED":
            return
        group, plural, namespace, name = event.key
        if (group, plural) == ("batch", "jobs") and not (event.obj.get("spec") or {}).get("suspend"):
            self._later(self.pod_delay, self._create_pod, (namespace, name))
        elif (group, plural) == ("", "pods"):
            self._later(0.0, self._first_sync, (namespace, name))

    def _create_pod(self, job_key: Key) -> None:
        job = self.bench.get("batch", "jobs", job_key)
        if job is not None and self.bench.get("", "pods", (job_key[0], f"{job_key[1]}-0")) is None:
            self.bench.create("v1", "pods", trainer_pod(job))

    def _containers(self, pod: dict[str, Any], state: dict[str, Any]) -> list[dict[str, Any]]:
        return [container_status(c["name"], state) for c in (pod.get("spec") or {}).get("containers") or []]

    def _first_sync(self, key: Key) -> None:
        pod = self.bench.get("", "pods", key)
        if pod is None:
            return
        waiting = {"waiting": {"reason": "ContainerCreating"}}
        self.bench.patch_status(
            "v1", "pods", key, {"phase": "Pending", "containerStatuses": self._containers(pod, waiting)}
        )
        self.backoffs[key], self.mounted[key] = MountBackoffs(), set()
        self._attempt(key)

    def _attempt(self, key: Key) -> None:
        pod = self.bench.get("", "pods", key)
        if pod is None or key not in self.mounted:
            self._forget(key)
            return
        now = self.loop.time()
        backoffs, mounted = self.backoffs[key], self.mounted[key]
        waiting: list[str] = []
        for volume, sources in mounted_sources(pod).items():
            if volume in mounted:
                continue
            if not backoffs.safe_to_retry(volume, now):
                waiting.append(volume)
                continue
            missing = [s for s in sources if self.bench.get("", s[0], (key[0], s[1])) is None]
            if missing:
                message = failed_mount_message(volume, missing[0])
                backoffs.failed(volume, message, now)
                self.failed_mounts += 1
                self.delayed_pods.add(key)
                self._failed_mount_event(pod, volume, message)
                waiting.append(volume)
            else:
                backoffs.succeeded(volume)
                mounted.add(volume)
        if waiting:
            retry_at = backoffs.next_retry_at(waiting)
            assert retry_at is not None
            self._later(retry_at - now, self._attempt, key)
        else:
            self._start(key, pod)

    def _start(self, key: Key, pod: dict[str, Any]) -> None:
        self._forget(key)
        self.started.add(key)
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        running = {"running": {"startedAt": now}}
        self.bench.patch_status(
            "v1",
            "pods",
            key,
            {"phase": "Running", "startTime": now, "containerStatuses": self._containers(pod, running)},
        )
        owner = next((r for r in pod["metadata"].get("ownerReferences") or [] if r.get("kind") == "Job"), None)
        if owner is not None and self.bench.get("batch", "jobs", (key[0], owner["name"])) is not None:
            self.bench.patch_status(
                "batch/v1", "jobs", (key[0], owner["name"]), {"active": 1, "ready": 1, "startTime": now}
            )

    def _forget(self, key: Key) -> None:
        self.backoffs.pop(key, None)
        self.mounted.pop(key, None)

    def _failed_mount_event(self, pod: dict[str, Any], volume: str, message: str) -> None:
        key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
        name = f"{key[1]}.failedmount-{volume}"
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        count = self._event_counts.get((key, volume), 0) + 1
        self._event_counts[(key, volume)] = count
        if count > 1:
            self.bench.server.objects.patch(
                self.bench._rt("v1", "events"),
                key[0],
                name,
                "application/merge-patch+json",
                {"count": count, "lastTimestamp": now, "message": message},
            )
            return
        involved = {"apiVersion": "v1", "kind": "Pod", "namespace": key[0], "name": key[1]}
        involved["uid"] = pod["metadata"].get("uid", "")
        self.bench.create(
            "v1",
            "events",
            {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"name": name, "namespace": key[0]},
                "involvedObject": involved,
                "type": "Warning",
                "reason": "FailedMount",
                "message": message,
                "source": {"component": "kubelet", "host": "bench-node"},
                "reportingComponent": "kubelet",
                "reportingInstance": "bench-node",
                "firstTimestamp": now,
                "lastTimestamp": now,
                "count": 1,
            },
        )


def metric_value(text: str, family: str, labels: dict[str, str] | None = None) -> float:
    """Sum of the samples of one metric in Prometheus text whose labels include `labels`."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for metric in text_string_to_metric_families(text):
        for sample in metric.samples:
            if sample.name == family and all(sample.labels.get(k) == v for k, v in (labels or {}).items()):
                total += sample.value
    return total


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"
