"""Kopf handlers: thin glue between the watch streams, the pure builders/status code and kube.py.

Every trigger (a FineTuneJob created/resumed/updated, an event on its Job or pods, a periodic timer)
runs the same idempotent `reconcile`: read the FineTuneJob, make sure its children exist, derive the
status from what the children show, write only what changed. Level-triggered, so a restarted
operator or a missed event converges on the next trigger.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import os
from typing import Any

import kopf

from . import clock
from . import reasons as r
from .builders import build_config_map, build_job, build_service, config_hash
from .config import OperatorConfig
from .kube import KubeApi, load_config
from .names import GROUP, LABEL_JOB_NAME, LABEL_MANAGED_BY, MANAGED_BY, PLURAL, VERSION, training_job_name
from .spec import InvalidSpec, parse_spec
from .status import (
    Observed,
    derive_status,
    invalid_spec_status,
    parse_timestamp,
    startup_deadline_exceeded,
    startup_failure_status,
    status_changes,
    ttl_expired,
)

CHILDREN = {LABEL_MANAGED_BY: MANAGED_BY}
# Deadlines and TTLs need a clock tick even when nothing else happens to a job.
RECONCILE_INTERVAL_SECONDS = float(os.environ.get("FINETUNE_RECONCILE_INTERVAL_SECONDS", "30"))
# Spec fields that may change after creation; the training Job's pod template is immutable.
MUTABLE_SPEC_FIELDS = {("runPolicy", "suspend")}


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Kopf's own bookkeeping goes into annotations so the typed status schema stays ours alone.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP, key="last-handled-configuration")
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    # Without these, a silently dropped watch connection leaves the operator blind (Kopf's most common report).
    settings.watching.server_timeout = int(os.environ.get("FINETUNE_WATCH_SERVER_TIMEOUT", "300"))
    settings.watching.client_timeout = int(os.environ.get("FINETUNE_WATCH_CLIENT_TIMEOUT", "330"))
    settings.watching.connect_timeout = 30
    # Handler logs are not Kubernetes events; only explicit kopf.event() calls and errors are posted.
    settings.posting.level = logging.ERROR
    settings.execution.max_workers = 16
    memo.config = OperatorConfig.from_env()
    memo.locks = {}
    load_config()
    memo.kube = KubeApi()


@kopf.index("batch", "v1", "jobs", labels=CHILDREN)
def training_jobs(namespace: str, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return {(namespace, labels[LABEL_JOB_NAME]): _plain(body)}


@kopf.index("v1", "pods", labels=CHILDREN)
def trainer_pods(namespace: str, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return {(namespace, labels[LABEL_JOB_NAME]): _plain(body)}


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
async def job_created(namespace: str, name: str, memo: kopf.Memo, training_jobs: kopf.Index, trainer_pods: kopf.Index, **_: Any) -> None:
    await reconcile(namespace, name, memo, training_jobs, trainer_pods)


@kopf.on.update(GROUP, VERSION, PLURAL)
async def job_updated(
    namespace: str, name: str, body: kopf.Body, diff: kopf.Diff, memo: kopf.Memo,
    training_jobs: kopf.Index, trainer_pods: kopf.Index, **_: Any,
) -> None:
    ignored = sorted({".".join(field[1:]) for _, field, _, _ in diff if field[:1] == ("spec",) and tuple(field[1:3]) not in MUTABLE_SPEC_FIELDS})
    if ignored:
        kopf.event(body, type="Warning", reason="SpecChangeIgnored",
                   message=f"only spec.runPolicy.suspend can change after creation; ignored changes to {', '.join(ignored)}: "
                           "delete and recreate the job to apply them")
    await reconcile(namespace, name, memo, training_jobs, trainer_pods)


@kopf.on.event("batch", "v1", "jobs", labels=CHILDREN)
@kopf.on.event("v1", "pods", labels=CHILDREN)
async def child_changed(namespace: str, labels: kopf.Labels, memo: kopf.Memo, training_jobs: kopf.Index, trainer_pods: kopf.Index, **_: Any) -> None:
    await reconcile(namespace, labels[LABEL_JOB_NAME], memo, training_jobs, trainer_pods)


@kopf.timer(GROUP, VERSION, PLURAL, interval=RECONCILE_INTERVAL_SECONDS, initial_delay=RECONCILE_INTERVAL_SECONDS)
async def job_tick(namespace: str, name: str, memo: kopf.Memo, training_jobs: kopf.Index, trainer_pods: kopf.Index, **_: Any) -> None:
    await reconcile(namespace, name, memo, training_jobs, trainer_pods)


async def reconcile(namespace: str, name: str, memo: kopf.Memo, jobs: kopf.Index, pods: kopf.Index) -> None:
    # One reconcile per FineTuneJob at a time: child events for one job arrive concurrently.
    lock = memo.locks.setdefault((namespace, name), asyncio.Lock())
    async with lock:
        kube: KubeApi = memo.kube
        ftj = await asyncio.to_thread(kube.get_finetunejob, namespace, name)
        if ftj is None or ftj["metadata"].get("deletionTimestamp"):
            memo.locks.pop((namespace, name), None)
            return
        previous = ftj.get("status") or {}
        generation = ftj["metadata"].get("generation")
        now = clock.now()
        try:
            spec = parse_spec(ftj.get("spec"), name)
        except InvalidSpec as exc:
            if previous.get("reason") != r.INVALID_SPEC:
                await asyncio.to_thread(kube.patch_finetunejob_status, namespace, name,
                                        invalid_spec_status(str(exc), previous, generation=generation, now=now))
                kopf.event(ftj, type="Warning", reason=r.INVALID_SPEC, message=str(exc))
            return

        key = (namespace, name)
        job = next(iter(jobs.get(key, ())), None)
        observed = Observed(job=job, pods=list(pods.get(key, ())))
        if previous.get("phase") not in r.TERMINAL_PHASES:
            if job is None:
                await asyncio.to_thread(_create_children, kube, ftj, spec, memo.config)
            else:
                await asyncio.to_thread(_apply_suspension, kube, spec, job)

        derived = derive_status(spec, previous, observed, job_name=training_job_name(name), generation=generation, now=now)
        created = parse_timestamp(ftj["metadata"].get("creationTimestamp")) or now
        if startup_deadline_exceeded(spec, derived, created, now):
            derived.update(startup_failure_status(derived, generation=generation, now=now))
            # Release whatever the job holds (quota, pending pods) now that it has failed.
            await asyncio.to_thread(kube.delete_job, namespace, training_job_name(name))

        changes = status_changes(previous, derived)
        if changes:
            await asyncio.to_thread(kube.patch_finetunejob_status, namespace, name, changes)
        if "phase" in changes or ("reason" in changes and derived["phase"] != r.RUNNING):
            failed = derived["phase"] == r.FAILED
            kopf.event(ftj, type="Warning" if failed else "Normal", reason=derived["reason"] or derived["phase"],
                       message=f"{derived['phase']}: {derived['message']}")
        if ttl_expired(spec, derived, now):
            await asyncio.to_thread(kube.delete_finetunejob, namespace, name)


def _create_children(kube: KubeApi, ftj: dict[str, Any], spec: Any, config: OperatorConfig) -> None:
    name, namespace = ftj["metadata"]["name"], ftj["metadata"]["namespace"]
    config_map = build_config_map(spec, name, namespace)
    # The ConfigMap and Service first: the Job's pods mount the one and resolve rank 0 through the other.
    children = [config_map, build_service(spec, name, namespace),
                build_job(spec, name, namespace, config=config, config_hash=config_hash(config_map))]
    for child in children:
        kopf.adopt(child, owner=ftj)
        kube.create_if_absent(child)


def _apply_suspension(kube: KubeApi, spec: Any, job: dict[str, Any]) -> None:
    desired = spec.run_policy.suspend
    actual = bool((job.get("spec") or {}).get("suspend"))
    # With a queue, unsuspending belongs to Kueue (admission); the operator only ever suspends.
    if desired != actual and (desired or not spec.scheduling.queue_name):
        kube.set_job_suspended(job["metadata"]["namespace"], job["metadata"]["name"], desired)


def _plain(body: kopf.Body) -> dict[str, Any]:
    # Index values must be snapshots: Kopf's Body is a live view that changes under our feet.
    return copy.deepcopy(dict(body))
