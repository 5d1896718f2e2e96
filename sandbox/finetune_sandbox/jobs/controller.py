"""The sandbox's batch/v1 Job controller: watches Jobs and their pods, applies `plan_job` decisions.

Pods are created as upstream's `manageJob` creates them (pkg/controller/job/job_controller.go,
pkg/controller/controller_utils.go): with `generateName`, in slow-start batches of 1, 2, 4 ...; a batch with a
failure ends the sync's creates. Each pod created posts a Normal `SuccessfulCreate` event on the Job
(`Created pod: NAME`); each refusal a Warning `FailedCreate` (`Error creating: <the API server's message>`),
repeats counted on one event (events.py). A refused pod never existed: it is not active and not failed. The
failed sync is retried on the queue's rate limiter (backoff.py: 1 s doubling to 60 s); while a Job is backing
off, changes to it or its pods re-sync it after the 1 s batch period rather than at once (syncJobBatchPeriod).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from ..client import ApiError, SandboxClient
from ..conditions import utcnow
from .backoff import DEFAULT_JOB_API_BACKOFF, MAX_JOB_API_BACKOFF, ItemBackoff
from .events import NORMAL, WARNING, EventRecorder, object_reference
from .plan import LABEL_CONTROLLER_UID, LABEL_JOB_NAME, TRACKING_FINALIZER, JobPlan, plan_job

log = logging.getLogger(__name__)

Key = tuple[str, str]
COMPONENT = "job-controller"
SYNC_BATCH_PERIOD = 1.0  # upstream's syncJobBatchPeriod


class JobController:
    """Level-triggered: any event about a Job or its pods re-plans that Job from the server's current state."""

    def __init__(
        self,
        client: SandboxClient,
        *,
        now: Callable = utcnow,
        api_backoff: float = DEFAULT_JOB_API_BACKOFF,
        max_api_backoff: float = MAX_JOB_API_BACKOFF,
        batch_period: float = SYNC_BATCH_PERIOD,
    ) -> None:
        self.client = client
        self.now = now
        self.events = EventRecorder(client, COMPONENT, now)
        self.backoff = ItemBackoff(api_backoff, max_api_backoff)
        self.batch_period = batch_period
        self._queue: asyncio.Queue[Key] = asyncio.Queue()
        self._queued: set[Key] = set()
        self._timers: dict[Key, asyncio.TimerHandle] = {}
        self._tasks: list[asyncio.Task] = []
        self.errors_total = 0
        self.failed_creates_total = 0

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
        """Sync `key` after `delay`; an earlier pending timer wins (each sync arms the timers it needs again)."""
        loop = asyncio.get_running_loop()
        # A little slack so the timestamps (second precision) are surely past when we re-plan.
        when = loop.time() + max(0.0, delay) + 0.05
        old = self._timers.get(key)
        if old is not None:
            if old.when() <= when:
                return
            old.cancel()
        self._timers[key] = loop.call_at(when, self._fire, key)

    def _fire(self, key: Key) -> None:
        self._timers.pop(key, None)
        self.enqueue(*key)

    def _changed(self, namespace: str, name: str) -> None:
        """A Job or one of its pods changed: sync it now, or after the batch period while it is backing off."""
        if self.backoff.failures((namespace, name)):
            self._enqueue_later((namespace, name), self.batch_period)
        else:
            self.enqueue(namespace, name)

    async def _watch_jobs(self) -> None:
        async for _, job in self.client.watch("batch/v1", "jobs"):
            meta = job.get("metadata") or {}
            self._changed(meta.get("namespace", ""), meta.get("name", ""))

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
                self._changed(meta.get("namespace", ""), name)

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
        refused = await self._apply(job, plan)
        if refused:
            # The sync failed: retry on the rate limiter, as a controller's work queue does.
            self._enqueue_later((namespace, name), self.backoff.when((namespace, name)))
        else:
            self.backoff.forget((namespace, name))
        if plan.requeue_after is not None:
            self._enqueue_later((namespace, name), plan.requeue_after)
        return plan

    async def _apply(self, job: dict, plan: JobPlan) -> int:
        """Apply `plan`; returns how many pods the API server refused to create."""
        namespace, name = job["metadata"].get("namespace", "default"), job["metadata"]["name"]
        for pod_name in plan.delete:
            # Pods the controller removes itself (suspend, deadline, success) are not failures: stop tracking first.
            await self._release(namespace, pod_name)
            if await self._ignore_missing(self.client.delete("v1", "pods", namespace, pod_name)):
                await self.events.record(object_reference(job), NORMAL, "SuccessfulDelete", f"Deleted pod: {pod_name}")
        created, refused = await self._create_pods(job, plan.create)
        if created < len(plan.create):
            # Pods that were not created are not active (upstream decrements `active` for each failed create).
            plan.status = {**plan.status, "active": plan.status.get("active", 0) - (len(plan.create) - created)}
        if plan.status != (job.get("status") or {}):
            await self.client.patch("batch/v1", "jobs", namespace, name, {"status": plan.status}, subresource="status")
        # Only after the counts are stored may the pods go: otherwise a crash in between loses them.
        for pod_name in plan.release:
            await self._release(namespace, pod_name)
        if plan.delete_job:
            await self._ignore_missing(
                self.client.delete("batch/v1", "jobs", namespace, name, propagation_policy="Background")
            )
        return refused

    async def _create_pods(self, job: dict, pods: list[dict]) -> tuple[int, int]:
        """Slow start: batches of 1, 2, 4 ... created concurrently; a batch with a refusal ends this sync's
        creates. Returns (created, refused)."""
        created = refused = 0
        batch, remaining = 1, list(pods)
        while remaining:
            chunk, remaining = remaining[:batch], remaining[batch:]
            outcomes = await asyncio.gather(*(self._create_pod(job, pod) for pod in chunk))
            created += outcomes.count("created")
            refused += outcomes.count("refused")
            if len(chunk) > outcomes.count("created"):
                break
            batch *= 2
        return created, refused

    async def _create_pod(self, job: dict, pod: dict) -> str:
        """Create one pod by its generateName: "created", "refused" (an event says why) or "skipped" (its
        namespace is being deleted: nothing to report, nothing to retry)."""
        meta = {key: value for key, value in pod["metadata"].items() if key != "name"}
        namespace = meta.get("namespace", "default")
        try:
            answer = await self.client.create("v1", "pods", namespace, {**pod, "metadata": meta})
        except ApiError as error:
            causes = ((error.body.get("details") or {}).get("causes")) or []
            if any(cause.get("reason") == "NamespaceTerminating" for cause in causes):
                return "skipped"
            self.failed_creates_total += 1
            log.info("job %s/%s: pod refused: %s", namespace, job["metadata"]["name"], error.message)
            await self.events.record(object_reference(job), WARNING, "FailedCreate", f"Error creating: {error.message}")
            return "refused"
        created = (answer.get("metadata") or {}).get("name", "")
        await self.events.record(object_reference(job), NORMAL, "SuccessfulCreate", f"Created pod: {created}")
        return "created"

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
    async def _ignore_missing(call) -> bool:
        """Await `call`; False if what it acted on was gone already (404)."""
        try:
            await call
        except ApiError as error:
            if error.status != 404:
                raise
            return False
        return True
