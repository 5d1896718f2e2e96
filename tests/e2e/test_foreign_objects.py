"""On a shared cluster the operator's watches carry only its own children.

The real operator process (Kopf over HTTP) runs in a sandbox without controllers, next to one FineTuneJob of
its own, while 10,000 foreign pods and 1,000 foreign Jobs are created and changed. The sandbox API server
counts what it sends each client (list items and watch events, by User-Agent): the operator's watches
(Kopf's client) must receive our pod and Job and none of the foreign ones, because they carry a server-side
label selector. An unfiltered watcher in the same test sees every foreign change, so the churn did happen.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from async_wait import eventually
from finetune_sandbox.cluster import Sandbox

FOREIGN_PODS = 10_000
FOREIGN_JOBS = 1_000
NAMESPACE = "default"
OPERATOR_CLIENT = "kopf"  # the User-Agent of Kopf's watches and lists (kopf/<version>)

pytestmark = pytest.mark.timeout(600)


async def wait_until(check, what: str, timeout: float = 120.0) -> None:
    async def probe() -> bool:
        return bool(check())

    await eventually(probe, what, timeout=timeout, interval=0.1)


def finetunejob(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "finetune.dev/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "task": "text-classification",
            "model": {"source": "pvc://models/tiny-bert"},
            "dataset": {"train": "pvc://data/train.csv", "columns": {"text": "sentence", "label": "label"}},
            "hyperparameters": {"maxSteps": 10, "batchSize": 8},
            "resources": {"gpusPerNode": 0, "cpu": "1", "memory": "1Gi"},
            "output": {"uri": f"pvc://models/out-{name}"},
        },
    }


def foreign_pod(i: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"web-{i:05d}", "namespace": NAMESPACE, "labels": {"app": "web", "tier": "frontend"}},
        "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]},
    }


def foreign_job(i: int) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": f"etl-{i:04d}", "namespace": NAMESPACE, "labels": {"app": "etl"}},
        "spec": {
            "template": {
                "metadata": {"labels": {"app": "etl"}},
                "spec": {"restartPolicy": "Never", "containers": [{"name": "etl", "image": "busybox:1.36"}]},
            }
        },
    }


def our_pod(job: dict[str, Any]) -> dict[str, Any]:
    """The pod the Job controller would make from the operator's Job (rank 0), Pending."""
    meta = job["metadata"]
    template = job["spec"]["template"]
    labels = {**template["metadata"]["labels"], "job-name": meta["name"], "batch.kubernetes.io/job-name": meta["name"]}
    owner = {"apiVersion": "batch/v1", "kind": "Job", "name": meta["name"], "uid": meta["uid"], "controller": True}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"{meta['name']}-0", "namespace": NAMESPACE, "labels": labels, "ownerReferences": [owner]},
        "spec": template["spec"],
        "status": {"phase": "Pending"},
    }


class UnfilteredWatcher:
    """A client that watches every pod of the namespace, as an operator without a selector would."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.events = 0
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        started = asyncio.Event()

        async def follow() -> None:
            async with aiohttp.ClientSession(headers={"User-Agent": "unfiltered/1.0"}) as session:
                query = {"watch": "true", "timeoutSeconds": "600"}
                async with session.get(f"{self.url}/api/v1/namespaces/{NAMESPACE}/pods", params=query) as response:
                    started.set()
                    async for line in response.content:
                        if line.strip() and json.loads(line).get("type") != "BOOKMARK":
                            self.events += 1

        self.task = asyncio.create_task(follow())
        await asyncio.wait_for(started.wait(), 30)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)


async def test_foreign_pods_and_jobs_never_reach_the_operator(tmp_path: Path) -> None:
    sandbox = Sandbox(tmp_path / "sandbox", controllers=False)
    await sandbox.start()
    server = sandbox.server
    assert server is not None
    unfiltered = UnfilteredWatcher(sandbox.url)
    try:
        pods = server.registry.get("", "v1", "pods")
        jobs = server.registry.get("batch", "v1", "jobs")
        ftjobs = server.registry.get("finetune.dev", "v1alpha1", "finetunejobs")
        server.objects.create(ftjobs, NAMESPACE, finetunejob("ours"))
        await wait_until(
            lambda: server.store.get("batch", "jobs", NAMESPACE, "ours") is not None,
            "the operator's Job for FineTuneJob ours",
        )
        await unfiltered.start()

        # Foreign churn: every pod and Job is created and then changes status, while ours starts.
        for i in range(FOREIGN_PODS):
            server.objects.create(pods, NAMESPACE, foreign_pod(i))
            if i % 500 == 0:
                await asyncio.sleep(0)  # let the watch streams flush, as a busy cluster interleaves them
        for i in range(FOREIGN_JOBS):
            server.objects.create(jobs, NAMESPACE, foreign_job(i))
        server.objects.create(pods, NAMESPACE, our_pod(server.store.get("batch", "jobs", NAMESPACE, "ours")))
        for i in range(FOREIGN_PODS):
            status = {"status": {"phase": "Running", "podIP": f"10.1.{i // 250}.{i % 250}"}}
            server.objects.patch(pods, NAMESPACE, f"web-{i:05d}", "application/merge-patch+json", status, "status")
            if i % 500 == 0:
                await asyncio.sleep(0)
        for i in range(FOREIGN_JOBS):
            status = {"status": {"active": 1, "startTime": "2026-01-01T00:00:00Z"}}
            server.objects.patch(jobs, NAMESPACE, f"etl-{i:04d}", "application/merge-patch+json", status, "status")

        # The operator saw its own pod (the job leaves Pending for Starting: it reads the pod's state) ...
        def phase() -> str | None:
            return (server.store.get("finetune.dev", "finetunejobs", NAMESPACE, "ours").get("status") or {}).get(
                "phase"
            )

        await wait_until(lambda: phase() == "Starting", "FineTuneJob ours to be Starting")
        # ... and every foreign change was sent to whoever watched without a selector.
        await wait_until(
            lambda: unfiltered.events >= 2 * FOREIGN_PODS + 1,
            f"the unfiltered watcher to see {2 * FOREIGN_PODS + 1} pod events",
        )
    finally:
        await unfiltered.stop()
        await sandbox.stop()

    received_pods = server.deliveries.received(OPERATOR_CLIENT, "", "pods")
    received_jobs = server.deliveries.received(OPERATOR_CLIENT, "batch", "jobs")
    assert unfiltered.events >= 2 * FOREIGN_PODS
    # Ours: the pod's ADDED plus a few status changes, the Job's ADDED plus its status writes.
    assert 1 <= received_pods <= 10, (
        f"the operator was sent {received_pods} pod objects: {dict(server.deliveries.objects)}"
    )
    assert 1 <= received_jobs <= 10, (
        f"the operator was sent {received_jobs} Job objects: {dict(server.deliveries.objects)}"
    )
