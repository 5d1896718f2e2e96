"""Kopf handlers: thin glue between the watch streams, the pure builders/status code and kube.py.

Every trigger (a FineTuneJob created/resumed/updated, an event on its Job or pods, a periodic timer)
runs the same idempotent `reconcile`: read the FineTuneJob, make sure its children exist, derive the
status from what the children show, write only what changed. Level-triggered, so a restarted
operator or a missed event converges on the next trigger. Progress reports arrive separately
(progress.server -> progress.hub) and are written to the status on their own throttled path.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import dataclasses
import logging
import os
import secrets
from collections.abc import Awaitable, Coroutine
from typing import Any

import kopf
import urllib3

from . import clock
from . import reasons as r
from .builders import spec_hash
from .children import JobsFirst, apply_suspension, create_children
from .conditions import find_condition
from .config import OperatorConfig
from .kube import ApiClient, KubeApi, newer_version
from .metrics import OperatorMetrics
from .names import (
    ANNOTATION_SPEC_HASH,
    GROUP,
    LABEL_JOB_NAME,
    LABEL_MANAGED_BY,
    LABEL_SEARCH,
    MANAGED_BY,
    PLURAL,
    TRAINER_CONTAINER,
    VERSION,
    training_job_name,
)
from .progress.hub import ProgressHub
from .progress.records import JobRecord
from .progress.server import Servers
from .search.controller import reconcile_search
from .spec import FineTuneJobSpec, InvalidSpec, changed_paths, parse_spec
from .status import (
    LOG_TAIL_BYTES,
    LOG_TAIL_LINES,
    Observed,
    apply_stall,
    completed_progress,
    derive_status,
    invalid_spec_status,
    parse_timestamp,
    ran_to_completion,
    startup_deadline_exceeded,
    startup_failure_status,
    status_changes,
    ttl_expired,
    with_log_tail,
)

log = logging.getLogger(__name__)

CHILDREN = {LABEL_MANAGED_BY: MANAGED_BY}
# Deadlines, TTLs and stall detection need a clock tick even when nothing else happens to a job.
RECONCILE_INTERVAL_SECONDS = float(os.environ.get("FINETUNE_RECONCILE_INTERVAL_SECONDS", "30"))
# The cap of the exponential backoff after a failed reconcile (API errors, dropped connections).
RETRY_MAX_DELAY_SECONDS = 30
PROGRESS_KEY_SECRET = "finetune-operator-progress-key"


@dataclasses.dataclass
class SharedState:
    """What every handler, the sweep and the progress hub share (Kopf copies the memo per object)."""

    # Kopf's indexes of our Jobs and pods (live views), once a handler has run: the sweep and trial
    # reports, which are no handlers, reconcile through them.
    indexes: tuple[kopf.Index, kopf.Index] | None = None
    # A handler's context variables: kopf.event() needs them (its event queue) outside handlers too.
    context: contextvars.Context | None = None
    # One pending retry per job (namespace, name).
    retries: dict[tuple[str, str], asyncio.Task[None]] = dataclasses.field(default_factory=dict)


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    # The logins kube.py uses, wherever the operator runs: without this, Kopf would log in through the official
    # client where one is installed (a development venv) and through these only in the image, which has none.
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Kopf's own bookkeeping goes into annotations so the typed status schema stays ours alone.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    # Without these, a silently dropped watch connection leaves the operator blind (Kopf's most common report).
    settings.watching.server_timeout = int(os.environ.get("FINETUNE_WATCH_SERVER_TIMEOUT", "300"))
    settings.watching.client_timeout = int(os.environ.get("FINETUNE_WATCH_CLIENT_TIMEOUT", "330"))
    settings.watching.connect_timeout = 30
    # Handler logs are not Kubernetes events; only explicit kopf.event() calls and errors are posted.
    settings.posting.level = logging.ERROR
    settings.execution.max_workers = 16
    # Peering (--peering): how soon a paused replica takes over from one that died without saying goodbye.
    settings.peering.lifetime = int(os.environ.get("FINETUNE_PEERING_LIFETIME_SECONDS", "60"))
    memo.config = config = OperatorConfig.from_env()
    memo.locks = {}
    memo.jobs_first = JobsFirst()
    # Kopf gives each object a shallow copy of this memo: state every handler must share lives in
    # mutable objects made here (the locks, this SharedState), not in attributes set later.
    memo.shared = shared = SharedState()
    # Credentials from Kopf's logins: the pod's ServiceAccount, else the kubeconfig (kube.login).
    memo.kube = kube = KubeApi(ApiClient.from_login())
    peering_name = getattr(memo, "peering_name", None)
    if peering_name:
        # Kopf waits, paused, for the peering object to exist; create it rather than hang on a fresh cluster.
        await asyncio.to_thread(kube.ensure_peering, peering_name, getattr(memo, "peering_namespaces", []))
        log.info(
            "peering %r with priority %d: only the live replica with the highest priority handles "
            "FineTuneJobs; this one pauses while such a peer exists",
            peering_name,
            settings.peering.priority,
        )
    key = await asyncio.to_thread(_progress_key, kube)

    async def trial_reported(namespace: str, search: str) -> None:
        # A trial's progress can stop it early or free a slot: reconcile its search job.
        if shared.indexes is not None:
            body = memo.kube.finetunejobs.get((namespace, search))
            await in_handler_context(memo, _reconcile(namespace, search, memo, *shared.indexes, body=body))

    memo.hub = hub = ProgressHub(
        key,
        kube.patch_finetunejob_status,
        OperatorMetrics(lambda: list(hub.records.values())),
        status_interval=config.status_interval_seconds,
        clock=clock.now,
        trial_reported=trial_reported,
    )
    memo.servers = Servers(hub, progress_port=config.progress_port, metrics_port=config.metrics_port)
    await memo.servers.start()
    memo.sweeper = asyncio.get_running_loop().create_task(sweep(memo))


def _progress_key(kube: KubeApi) -> bytes:
    if os.environ.get("FINETUNE_PROGRESS_KEY"):
        return os.environ["FINETUNE_PROGRESS_KEY"].encode()
    namespace = os.environ.get("POD_NAMESPACE")
    if namespace:
        return kube.progress_key(namespace, PROGRESS_KEY_SECRET)
    # Outside a cluster with no key given: tokens change when the operator restarts, so running
    # trainers' reports are refused (403) until their jobs restart. Set FINETUNE_PROGRESS_KEY to avoid it.
    log.warning("no FINETUNE_PROGRESS_KEY and no POD_NAMESPACE: using an ephemeral progress key")
    return secrets.token_bytes(32)


@kopf.on.cleanup()
async def shutdown(memo: kopf.Memo, **_: Any) -> None:
    memo.sweeper.cancel()
    await memo.servers.stop()
    await memo.hub.close()


@kopf.index("batch", "v1", "jobs", labels=CHILDREN)
def training_jobs(namespace: str, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return {(namespace, labels[LABEL_JOB_NAME]): _plain(body)}


@kopf.index("v1", "pods", labels=CHILDREN)
def trainer_pods(namespace: str, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return {(namespace, labels[LABEL_JOB_NAME]): _plain(body)}


@kopf.on.event(GROUP, VERSION, PLURAL)
async def job_event(
    type: str,
    namespace: str,
    name: str,
    body: kopf.Body,
    memo: kopf.Memo,  # noqa: A002 (Kopf's name)
    training_jobs: kopf.Index,
    trainer_pods: kopf.Index,
    **_: Any,
) -> None:
    """Every FineTuneJob event (and each one listed at start-up, type None) reconciles that job.

    One event handler instead of Kopf's create/update/resume handlers: those keep a copy of the last
    handled spec in an annotation (one more write per job) and re-read the object on retries. The
    watch's body is the newest state, so no GET is needed before the Job is created; the echo of the
    operator's own status write (a resourceVersion it wrote) brings nothing new and is skipped.
    """
    key = (namespace, name)
    if type == "DELETED":
        # No finalizer needed: children go by owner references; only in-memory state is ours to drop.
        memo.hub.forget(namespace, name)
        memo.locks.pop(key, None)
        memo.kube.forget(namespace, name)
        return
    record = memo.hub.records.get(key)
    if (
        record is not None
        and record.generation == body.metadata.get("generation")
        and not newer_version(body.metadata.get("resourceVersion"), memo.kube.written_versions.get(key))
    ):
        return
    # An event older than the operator's own last write is reconciled from that write's (newer) answer.
    await reconcile(namespace, name, memo, training_jobs, trainer_pods, body=memo.kube.remember(_plain(body)))


@kopf.on.event("batch", "v1", "jobs", labels=CHILDREN)
@kopf.on.event("v1", "pods", labels=CHILDREN)
async def child_changed(
    type: str,
    namespace: str,
    labels: kopf.Labels,
    body: kopf.Body,
    memo: kopf.Memo,  # noqa: A002
    training_jobs: kopf.Index,
    trainer_pods: kopf.Index,
    **_: Any,
) -> None:
    # A search trial's (or promote Job's) children belong to the search job: reconcile that one, from the
    # newest version of it the watch (or our own write) delivered: no GET per child event.
    name = labels.get(LABEL_SEARCH) or labels[LABEL_JOB_NAME]
    record = memo.hub.records.get((namespace, labels[LABEL_JOB_NAME]))
    if type == "ADDED" and body.get("kind") == "Job" and record is not None and record.children_complete:
        # A Job this process has just created, status still empty: its reconcile already counted on it.
        # (Skipping it matters in a burst: the next jobs' events wait behind these reconciles.)
        return
    await reconcile(
        namespace, name, memo, training_jobs, trainer_pods, body=memo.kube.finetunejobs.get((namespace, name))
    )


async def sweep(memo: kopf.Memo) -> None:
    """Reconcile every known job once per interval: deadlines, TTLs and stalls need a clock tick.

    One task for all jobs instead of a Kopf timer per object: Kopf timers put a finalizer on every
    FineTuneJob (two extra writes per job and a round trip before its first reconcile).
    """
    while True:
        await asyncio.sleep(RECONCILE_INTERVAL_SECONDS)
        indexes = memo.shared.indexes
        if indexes is None:
            continue  # no handler has run yet: nothing is tracked
        for namespace, name in memo.hub.jobs():
            try:
                body = memo.kube.finetunejobs.get((namespace, name))
                await in_handler_context(memo, _reconcile(namespace, name, memo, *indexes, body=body))
            except Exception:  # noqa: BLE001 - the next sweep retries; one job must not stop the others
                memo.hub.metrics.reconcile_errors.inc()
                log.warning("periodic reconcile of %s/%s failed; retrying next sweep", namespace, name, exc_info=True)


async def reconcile(
    namespace: str,
    name: str,
    memo: kopf.Memo,
    jobs: kopf.Index,
    pods: kopf.Index,
    *,
    retry: int = 0,
    body: dict[str, Any] | None = None,
) -> None:
    """Reconcile one job; after a failure, try again with exponential backoff (1, 2, 4 ... 30 s).

    Kopf's event handlers are fire-and-forget (no retries), and its default for change handlers is a
    flat 60 s: one 409/429/5xx or dropped connection would stall a job for a minute. The retry runs as a
    task of its own, so the handler returns and Kopf keeps delivering the object's newer events.
    """
    # Kopf's indexes are live views; the periodic sweep, which is no handler, reconciles through them.
    memo.shared.indexes = (jobs, pods)
    # kopf.event() needs Kopf's context variables (its event queue), which only handlers have.
    memo.shared.context = contextvars.copy_context()
    try:
        await _reconcile(namespace, name, memo, jobs, pods, body=body)
    except Exception as exc:  # noqa: BLE001 - every failure is retried; bugs are logged with their traceback
        memo.hub.metrics.reconcile_errors.inc()
        status = getattr(exc, "status", None)
        if status is None and not isinstance(exc, (OSError, urllib3.exceptions.HTTPError)):
            log.exception("reconciling %s/%s failed unexpectedly", namespace, name)
        cause = f"HTTP {status} {getattr(exc, 'reason', '') or ''}".strip() if status else repr(exc)
        delay = retry_delay(retry)
        log.warning("reconciling %s/%s failed (%s); retrying in %.0f s", namespace, name, cause, delay)
        _retry_later(namespace, name, memo, jobs, pods, retry=retry + 1, delay=delay)


def _retry_later(
    namespace: str, name: str, memo: kopf.Memo, jobs: kopf.Index, pods: kopf.Index, *, retry: int, delay: float
) -> None:
    """One pending retry per job: a retry that fails schedules the next; a newer one replaces none."""
    retries = memo.shared.retries
    key = (namespace, name)
    if key in retries and not retries[key].done():
        return

    async def again() -> None:
        await asyncio.sleep(delay)
        retries.pop(key, None)
        await reconcile(namespace, name, memo, jobs, pods, retry=retry)  # re-reads the object: it may have changed

    retries[key] = in_handler_context(memo, again())


def in_handler_context(memo: kopf.Memo, coroutine: Coroutine[Any, Any, None]) -> Awaitable[None]:
    """Run a reconcile started outside Kopf's handlers (the sweep, a trial's report) in a handler's context."""
    context = memo.shared.context
    loop = asyncio.get_running_loop()
    return context.run(loop.create_task, coroutine) if context is not None else loop.create_task(coroutine)


def retry_delay(retry: int) -> float:
    """Seconds before retry number `retry` + 1 of a failed reconcile: 1, 2, 4, ... capped at 30."""
    return float(min(RETRY_MAX_DELAY_SECONDS, 2 ** min(retry, 10)))


async def _reconcile(
    namespace: str,
    name: str,
    memo: kopf.Memo,
    jobs: kopf.Index,
    pods: kopf.Index,
    *,
    body: dict[str, Any] | None = None,
) -> None:
    # One reconcile per FineTuneJob at a time: child events for one job arrive concurrently.
    lock = memo.locks.setdefault((namespace, name), asyncio.Lock())
    async with lock:
        ftj: dict[str, Any] | None = None
        try:
            kube: KubeApi = memo.kube
            hub: ProgressHub = memo.hub
            # The newest version known once the lock is ours: a reconcile that waited for it may hold a body
            # older than the status the previous one just wrote.
            ftj = (
                kube.remember(body)
                if body is not None
                else await asyncio.to_thread(kube.get_finetunejob, namespace, name)
            )
            if ftj is None or ftj["metadata"].get("deletionTimestamp"):
                return
            previous = ftj.get("status") or {}
            generation = ftj["metadata"].get("generation")
            now = clock.now()
            created = parse_timestamp(ftj["metadata"].get("creationTimestamp")) or now
            try:
                spec = parse_spec(ftj.get("spec"), name)
            except InvalidSpec as exc:
                if previous.get("reason") != r.INVALID_SPEC:
                    await asyncio.to_thread(
                        kube.patch_finetunejob_status,
                        namespace,
                        name,
                        invalid_spec_status(str(exc), previous, generation=generation, now=now),
                    )
                    kopf.event(ftj, type="Warning", reason=r.INVALID_SPEC, message=str(exc))
                    hub.metrics.failures.labels(r.INVALID_SPEC).inc()
                hub.track(
                    namespace, name, uid=ftj["metadata"].get("uid", ""), created=created, gpus=0, gpu_seconds=0
                ).phase = r.FAILED
                return
            if spec.hyperparameter_search is not None:
                status = await reconcile_search(
                    ftj,
                    spec,
                    kube=kube,
                    hub=hub,
                    config=memo.config,
                    jobs=jobs,
                    pods=pods,
                    now=now,
                    jobs_first=memo.jobs_first,
                )
                if ttl_expired(spec, status, now):
                    await asyncio.to_thread(kube.delete_finetunejob, namespace, name)
                return
            record = hub.track(
                namespace,
                name,
                uid=ftj["metadata"].get("uid", ""),
                created=created,
                gpus=spec.total_gpus,
                gpu_seconds=float(previous.get("gpuSeconds") or 0),
            )

            key = (namespace, name)
            job = next(iter(jobs.get(key, ())), None)
            observed = Observed(job=job, pods=list(pods.get(key, ())))
            if previous.get("phase") not in r.TERMINAL_PHASES:
                if job is None or not record.children_complete:
                    token = hub.token(namespace, name, record.uid)
                    created_job = await create_children(kube, ftj, spec, name, memo.config, token, memo.jobs_first)
                    record.children_complete = True
                    if job is None:
                        # Status from the Job just sent, so the job goes straight to Starting (one write, one event).
                        observed = Observed(job=created_job, pods=observed.pods)
                else:
                    await asyncio.to_thread(apply_suspension, kube, spec, job)
                    _warn_of_ignored_spec_change(ftj, spec, job, record)

            derived = derive_status(
                spec, previous, observed, job_name=training_job_name(name), generation=generation, now=now
            )
            if startup_deadline_exceeded(spec, derived, created, now):
                derived.update(startup_failure_status(derived, generation=generation, now=now))
                # Release whatever the job holds (quota, pending pods) now that it has failed.
                await asyncio.to_thread(kube.delete_job, namespace, training_job_name(name))
            if derived["phase"] == r.FAILED and previous.get("phase") != r.FAILED:
                derived["failure"] = await _with_failed_pod_log(kube, namespace, derived.get("failure") or {})
            _account(hub, record, spec, previous, derived, now)
            stalled = apply_stall(
                derived, record.seconds_without_progress(now), memo.config.stall_seconds, generation=generation, now=now
            )
            if stalled and not record.stalled:
                kopf.event(
                    ftj,
                    type="Warning",
                    reason=r.NO_PROGRESS,
                    message=find_condition(derived["conditions"], r.COND_STALLED)["message"],
                )
            record.stalled = stalled
            if ran_to_completion(spec, derived):
                # The final progress report may have been lost to an operator restart: the Job proves it.
                record.finished = True
                final = completed_progress(spec, previous.get("progress"))
                if final:
                    derived["progress"] = final

            changes = status_changes(previous, derived)
            if changes:
                await memo.jobs_first.after_jobs()
                hub.metrics.status_writes.labels("reconcile").inc()
                await asyncio.to_thread(kube.patch_finetunejob_status, namespace, name, changes)
            if "phase" in changes or ("reason" in changes and derived["phase"] != r.RUNNING):
                failed = derived["phase"] == r.FAILED
                kopf.event(
                    ftj,
                    type="Warning" if failed else "Normal",
                    reason=derived["reason"] or derived["phase"],
                    message=f"{derived['phase']}: {derived['message']}",
                )
            if ttl_expired(spec, derived, now):
                await asyncio.to_thread(kube.delete_finetunejob, namespace, name)

        finally:
            record = memo.hub.records.get((namespace, name))
            if record is not None and ftj is not None:
                # The generation this operator has acted on: job_event skips echoes only while it holds.
                record.generation = ftj["metadata"].get("generation")


def _warn_of_ignored_spec_change(
    ftj: dict[str, Any], spec: FineTuneJobSpec, job: dict[str, Any], record: JobRecord
) -> None:
    """A Warning event, once per new spec, when the spec no longer matches the one the Job was built from."""
    generation = ftj["metadata"].get("generation")
    if record.spec_checked_generation == generation:
        return  # the spec only changes with the generation: once per generation is enough
    record.spec_checked_generation = generation
    built_from = ((job.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_SPEC_HASH)
    current = spec_hash(spec)
    if record.spec_seen is None:
        record.spec_seen = copy.deepcopy(ftj.get("spec") or {})
    if built_from is None or built_from == current or record.ignored_spec_hash == current:
        return
    record.ignored_spec_hash = current
    fields = [path for path in changed_paths(record.spec_seen, ftj.get("spec") or {}) if path != "runPolicy.suspend"]
    what = f"ignored changes to {', '.join(fields)}" if fields else "ignored the change"
    kopf.event(
        ftj,
        type="Warning",
        reason=r.SPEC_CHANGE_IGNORED,
        message=f"only spec.runPolicy.suspend can change after creation; {what}: "
        "delete and recreate the job to apply them",
    )


def _account(
    hub: ProgressHub,
    record: JobRecord,
    spec: FineTuneJobSpec,
    previous: dict[str, Any],
    derived: dict[str, Any],
    now: Any,
) -> None:
    """Lifecycle metrics and GPU-seconds, from the transition between the old and the new status."""
    metrics = hub.metrics
    phase, old_phase = derived["phase"], previous.get("phase")
    record.phase = phase
    running = phase == r.RUNNING
    was_running = record.running_since is not None
    record.set_running(running, now)
    total = record.gpu_seconds_at(now)
    metrics.gpu_seconds.inc(max(0.0, total - record.gpu_counted))
    record.gpu_counted = total
    if running and not previous.get("startTime") and record.created is not None:
        metrics.time_to_running.observe(max(0.0, (now - record.created).total_seconds()))
    admitted = find_condition(derived.get("conditions"), r.COND_ADMITTED)
    queued = find_condition(previous.get("conditions"), r.COND_QUEUED)
    if (
        spec.scheduling.queue_name
        and admitted
        and admitted.get("status") == "True"
        and queued
        and queued.get("status") == "True"
    ):
        waited_since = parse_timestamp(queued.get("lastTransitionTime"))
        if waited_since:
            metrics.queue_wait.observe(max(0.0, (now - waited_since).total_seconds()))
    if phase == r.FAILED and old_phase != r.FAILED:
        metrics.failures.labels(derived.get("reason") or r.TRAINER_CRASHED).inc()
    new_retries = int(derived.get("retries") or 0) - int(previous.get("retries") or 0)
    if new_retries > 0:
        metrics.retries.inc(new_retries)
    if was_running and not running:
        # Leaving Running: write the final GPU-seconds and progress now rather than at the next report.
        hub.schedule_write(record.namespace, record.name)


async def _with_failed_pod_log(kube: KubeApi, namespace: str, failure: dict[str, Any]) -> dict[str, Any]:
    """The failure plus its pod's log tail; read once, as the job turns Failed (not on every reconcile)."""
    if not failure.get("pod"):
        return failure
    try:
        # Over-read: redaction and the byte bound are applied to the text, by status.with_log_tail.
        log_text = await asyncio.to_thread(
            kube.read_log_tail,
            namespace,
            failure["pod"],
            TRAINER_CONTAINER,
            lines=LOG_TAIL_LINES,
            max_bytes=4 * LOG_TAIL_BYTES,
        )
    except Exception:  # noqa: BLE001 - the failure itself must still be recorded; the tail is a courtesy
        log.warning("could not read the log of failed pod %s/%s", namespace, failure["pod"], exc_info=True)
        return failure
    return with_log_tail(failure, log_text)


def _plain(body: kopf.Body) -> dict[str, Any]:
    # Index values must be snapshots: Kopf's Body is a live view that changes under our feet.
    return copy.deepcopy(dict(body))
