"""The sandbox's batch/v1 Job controller: watches Jobs and their pods, applies `plan_job` decisions."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from ..client import ApiError, SandboxClient
from ..conditions import utcnow
from .plan import LABEL_CONTROLLER_UID, LABEL_JOB_NAME, TRACKING_FINALIZER, JobPlan, plan_job

log = logging.getLogger(__name__)

Key = tuple[str, str]


class JobController:
    """Level-triggered: any event about a Job or its pods re-plans that Job from the server's current state."""

    def __init__(self, client: SandboxClient, *, now: Callable = utcnow) -> None:
        self.client = client
        self.now = now
        self._queue: asyncio.Queue[Key] = asyncio.Queue()
        self._queued: set[Key] = set()
        self._timers: dict[Key, asyncio.TimerHandle] = {}
        self._tasks: list[asyncio.Task] = []
        self.errors_total = 0

    async def run(self) -> None:
        """Run until `stop()`; the watches and the worker run as tasks of this call."""
        self._tasks = [
            asyncio.create_task(self._watch_jobs(), name="jobcontroller-jobs"),
            asyncio.create_task(self._watch_pods(), name="jobcontroller-pods"),
            asyncio.create_task(self._work(), name="jobcontroller-worker"),
        ]
        try:
            await asyncio.gather(*self._tasks)
        except asyncio.CancelledError:
            pass

    async def stop(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    def enqueue(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        if key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)

    def _enqueue_later(self, key: Key, delay: float) -> None:
        old = self._timers.pop(key, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()
        # A little slack so the timestamps (second precision) are surely past when we re-plan.
        self._timers[key] = loop.call_later(max(0.0, delay) + 0.05, self.enqueue, *key)

    async def _watch_jobs(self) -> None:
        async for _, job in self.client.watch("batch/v1", "jobs"):
            meta = job.get("metadata") or {}
            self.enqueue(meta.get("namespace", ""), meta.get("name", ""))

    async def _watch_pods(self) -> None:
        async for _, pod in self.client.watch("v1", "pods", label_selector=LABEL_CONTROLLER_UID):
            meta = pod.get("metadata") or {}
            owner = next(
                (
                    ref
                    for ref in meta.get("ownerReferences") or []
                    if ref.get("kind") == "Job" and ref.get("controller")
                ),
                None,
            )
            name = owner["name"] if owner else (meta.get("labels") or {}).get(LABEL_JOB_NAME)
            if name:
                self.enqueue(meta.get("namespace", ""), name)

    async def _work(self) -> None:
        while True:
            key = await self._queue.get()
            self._queued.discard(key)
            try:
                await self.reconcile(*key)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - one bad Job must not stop the controller; it is retried.
                self.errors_total += 1
                log.exception("job %s/%s: reconcile failed; retrying in 1s", *key)
                self._enqueue_later(key, 1.0)

    async def reconcile(self, namespace: str, name: str) -> JobPlan | None:
        """Plan and apply one Job; returns the plan applied (None when the Job is gone)."""
        try:
            job = await self.client.get("batch/v1", "jobs", namespace, name)
        except ApiError as error:
            if error.status == 404:
                await self._release_orphans(namespace, name)
                return None
            raise
        uid = job["metadata"].get("uid", "")
        listing = await self.client.list("v1", "pods", namespace, label_selector=f"{LABEL_CONTROLLER_UID}={uid}")
        plan = plan_job(job, listing.get("items") or [], self.now())
        await self._apply(job, plan)
        if plan.requeue_after is not None:
            self._enqueue_later((namespace, name), plan.requeue_after)
        return plan

    async def _apply(self, job: dict, plan: JobPlan) -> None:
        namespace, name = job["metadata"].get("namespace", "default"), job["metadata"]["name"]
        for pod_name in plan.delete:
            # Pods the controller removes itself (suspend, deadline, success) are not failures: stop tracking first.
            await self._release(namespace, pod_name)
            await self._ignore_missing(self.client.delete("v1", "pods", namespace, pod_name))
        for pod in plan.create:
            await self.client.create("v1", "pods", namespace, pod)
        if plan.status != (job.get("status") or {}):
            await self.client.patch("batch/v1", "jobs", namespace, name, {"status": plan.status}, subresource="status")
        # Only after the counts are stored may the pods go: otherwise a crash in between loses them.
        for pod_name in plan.release:
            await self._release(namespace, pod_name)
        if plan.delete_job:
            await self._ignore_missing(
                self.client.delete("batch/v1", "jobs", namespace, name, propagation_policy="Background")
            )

    async def _release_orphans(self, namespace: str, job_name: str) -> None:
        """The Job is gone (deleted while running): its pods must not be held by our finalizer forever."""
        listing = await self.client.list("v1", "pods", namespace, label_selector=f"{LABEL_JOB_NAME}={job_name}")
        for pod in listing.get("items") or []:
            if TRACKING_FINALIZER in ((pod.get("metadata") or {}).get("finalizers") or []):
                await self._release(namespace, pod["metadata"]["name"])

    async def _release(self, namespace: str, pod_name: str) -> None:
        try:
            pod = await self.client.get("v1", "pods", namespace, pod_name)
        except ApiError as error:
            if error.status == 404:
                return
            raise
        finalizers = (pod.get("metadata") or {}).get("finalizers") or []
        if TRACKING_FINALIZER not in finalizers:
            return
        index = finalizers.index(TRACKING_FINALIZER)
        # JSON patch with a test: removes exactly our finalizer even if others changed the list meanwhile.
        patch = [
            {"op": "test", "path": f"/metadata/finalizers/{index}", "value": TRACKING_FINALIZER},
            {"op": "remove", "path": f"/metadata/finalizers/{index}"},
        ]
        await self._ignore_missing(self.client.patch("v1", "pods", namespace, pod_name, patch, patch_type="json"))

    @staticmethod
    async def _ignore_missing(call) -> None:
        try:
            await call
        except ApiError as error:
            if error.status != 404:
                raise
