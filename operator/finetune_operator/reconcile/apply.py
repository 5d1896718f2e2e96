"""Carry out a reconcile's Plan: the API calls, events, metrics and record changes it asks for (I/O).

The order matters and is the same for every plan: new records; the children, each group in dependency
order (what a pod mounts before the Job that makes the pod), after the status when the plan records its
status first; the records' changes and the metrics; suspensions and deletions; the status write; events;
progress writes; and last the TTL's deletion of the FineTuneJob itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ..failure import LOG_TAIL_BYTES, LOG_TAIL_LINES, with_log_tail
from ..kube import ApiError, KubeApi
from ..metrics import OperatorMetrics
from ..names import TRAINER_CONTAINER
from ..progress.hub import ProgressHub
from ..registry import JobRegistry
from ..rejection import PERMANENT_STATUSES, Rejection
from .children_first import ChildrenFirst
from .plan import MetricDeltas, Plan

log = logging.getLogger(__name__)

# kopf.event's shape: (the object, type, reason, message).
PostEvent = Callable[..., None]


class ChildRejected(Exception):
    """The API server refused a child for good (400, 403, 422): the job fails instead of retrying."""

    def __init__(self, rejection: Rejection) -> None:
        super().__init__(f"{rejection.kind} {rejection.name}: HTTP {rejection.status}: {rejection.message}")
        self.rejection = rejection


@dataclass
class Actuators:
    """What a plan is carried out with: the API, the records, the progress hub and the metrics."""

    kube: KubeApi
    registry: JobRegistry
    hub: ProgressHub
    metrics: OperatorMetrics
    post_event: PostEvent
    children_first: ChildrenFirst


async def apply_plan(plan: Plan, ftj: dict[str, Any], act: Actuators) -> None:
    namespace, name = ftj["metadata"]["namespace"], ftj["metadata"]["name"]
    # Before the children: a trainer that starts at once must find its record (else its reports get 404).
    for job, tracked in plan.track.items():
        act.registry.track(namespace, job, **tracked)
    status = plan.status
    field, pod = plan.log_tail or ("", "")
    if field and status.get(field):
        status = {**status, field: await _with_log_tail(act.kube, namespace, pod, status[field])}
    if plan.status_first:
        await _write_status(act, namespace, name, status)
    for children in plan.create:
        async with act.children_first.creating():
            await create_children(act.kube, children, refresh=plan.refresh_children)
    # Once the children went out (children_complete must not claim what failed to be sent), before the
    # status write: the child events of a burst find their job's children complete and skip.
    for job, fields in plan.remember.items():
        record = act.registry.get(namespace, job)
        if record is not None:
            record.update(**fields)
    record_metrics(act.metrics, plan.metrics)
    for job, suspend in plan.suspend:
        await asyncio.to_thread(_suspend, act.kube, namespace, job, suspend)
    for job in plan.delete_jobs:
        await asyncio.to_thread(act.kube.delete_job, namespace, job)
    if not plan.status_first:
        if status or plan.events:
            # Status writes and events wait for a burst's pending child creations.
            await act.children_first.after_children()
        await _write_status(act, namespace, name, status)
    for event in plan.events:
        act.post_event(ftj, type=event.type, reason=event.reason, message=event.message)
    for job in plan.write_progress:
        act.hub.schedule_write(namespace, job)
    if plan.delete_finetunejob:
        await asyncio.to_thread(act.kube.delete_finetunejob, namespace, name)


# What a pod mounts or reads at start: created before the Job that makes the pod.
MOUNTED_KINDS = ("ConfigMap", "Secret")


async def create_children(kube: KubeApi, children: list[dict[str, Any]], *, refresh: bool = False) -> None:
    """Create a group of children if absent (409s are fine), in dependency order: what the pods mount
    (ConfigMap, Secret) together, then the Job (the group's last) together with the rest (the Service,
    which only the trainers' rendezvous needs, seconds later). A kubelet that meets a pod before its
    ConfigMap or Secret does not wait for them: it fails the mount and retries with its own backoff
    (0.5 s doubling to about two minutes), so a Job sent first would delay the trainer, not hasten it.

    `refresh`: the ConfigMap may exist from an attempt the API server refused, built from an older spec;
    it is brought up to date. Raises ChildRejected when the API server refuses a child for good."""
    *prerequisites, job = children
    mounted = [child for child in prerequisites if child["kind"] in MOUNTED_KINDS]
    alongside = [child for child in prerequisites if child["kind"] not in MOUNTED_KINDS]
    await asyncio.gather(*(asyncio.to_thread(_send, kube, child, refresh) for child in mounted))
    created, *_ = await asyncio.gather(
        asyncio.to_thread(_send, kube, job, refresh),
        *(asyncio.to_thread(_send, kube, child, refresh) for child in alongside),
    )
    if created:
        # A run's Job comes with what it mounts; a lone Job is a search's promote Job.
        what = "training Job" if prerequisites else job["kind"]
        log.info("created %s %s/%s", what, job["metadata"]["namespace"], job["metadata"]["name"])


def _send(kube: KubeApi, child: dict[str, Any], refresh: bool) -> bool:
    with _rejections(child["kind"], child["metadata"]["name"]):
        if refresh and child["kind"] == "ConfigMap":
            kube.create_or_update(child)
            return True
        return kube.create_if_absent(child)


@contextlib.contextmanager
def _rejections(kind: str, name: str) -> Iterator[None]:
    """A permanent API error (400, 403, 422) on a child becomes ChildRejected; others pass as they are."""
    try:
        yield
    except ApiError as exc:
        if exc.status in PERMANENT_STATUSES:
            raise ChildRejected(Rejection(kind, name, exc.status, exc.message or str(exc))) from exc
        raise


def _suspend(kube: KubeApi, namespace: str, job: str, suspend: bool) -> None:
    with _rejections("Job", job):
        kube.set_job_suspended(namespace, job, suspend)


async def _write_status(act: Actuators, namespace: str, name: str, status: dict[str, Any]) -> None:
    if status:
        act.metrics.status_writes.labels("reconcile").inc()
        await asyncio.to_thread(act.kube.patch_finetunejob_status, namespace, name, status)


async def _with_log_tail(kube: KubeApi, namespace: str, pod: str, failure: dict[str, Any]) -> dict[str, Any]:
    """status.failure (or status.lastRestart) plus its pod's log tail; read once, as the job turns Failed
    or starts a restart (not on every reconcile)."""
    try:
        # Over-read: redaction and the byte bound are applied to the text, by failure.with_log_tail.
        text = await asyncio.to_thread(
            kube.read_log_tail, namespace, pod, TRAINER_CONTAINER, lines=LOG_TAIL_LINES, max_bytes=4 * LOG_TAIL_BYTES
        )
    except Exception:  # noqa: BLE001 - the failure itself must still be recorded; the tail is a courtesy
        log.warning("could not read the log of failed pod %s/%s", namespace, pod, exc_info=True)
        return failure
    return with_log_tail(failure, text)


def record_metrics(metrics: OperatorMetrics, deltas: MetricDeltas) -> None:
    if deltas.gpu_seconds > 0:
        metrics.gpu_seconds.inc(deltas.gpu_seconds)
    if deltas.time_to_running is not None:
        metrics.time_to_running.observe(deltas.time_to_running)
    if deltas.queue_wait is not None:
        metrics.queue_wait.observe(deltas.queue_wait)
    for reason in deltas.failures:
        metrics.failures.labels(reason).inc()
    if deltas.retries > 0:
        metrics.retries.inc(deltas.retries)
