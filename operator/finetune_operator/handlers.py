"""Kopf registrations: start-up and shutdown, the indexes of our children, and the events that reconcile.

Every handler here is glue: it names the job an event concerns and hands it to reconcile.loop, which
observes, plans (pure) and acts. Progress reports arrive separately (progress.server -> progress.hub)
and are written to the status on their own throttled path.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import os
import secrets
from typing import Any

import kopf

from . import clock
from .config import OperatorConfig
from .kube import ApiClient, KubeApi, newer_version
from .kube.client import POOL_SIZE
from .metrics import OperatorMetrics
from .names import GROUP, LABEL_JOB_NAME, LABEL_MANAGED_BY, LABEL_SEARCH, MANAGED_BY, PLURAL, VERSION
from .progress.hub import ProgressHub
from .progress.server import Servers
from .progress.tls import ProgressTls
from .reconcile.loop import reconcile_from_cache, reconcile_queued, sweep
from .reconcile.queue import ReconcileQueue
from .reconcile.state import RECONCILE_CONCURRENCY, OperatorState
from .registry import JobRegistry
from .snapshots import child_snapshot, finetunejob_snapshot

log = logging.getLogger(__name__)

CHILDREN = {LABEL_MANAGED_BY: MANAGED_BY}
CHILD_SELECTOR = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
# Every kind the operator watches besides FineTuneJobs: each watch carries CHILD_SELECTOR.
CHILD_RESOURCES = (("batch", "v1", "jobs"), ("v1", "pods"))
PROGRESS_KEY_SECRET = "finetune-operator-progress-key"
API_THREADS = POOL_SIZE


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    # The logins kube/client.py uses, wherever the operator runs: without this, Kopf would log in through the official
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
    # Only our children travel: the API server filters pods and Jobs by label (labelSelector on list and watch),
    # so the thousands of foreign pods of a shared cluster are never sent, decoded or indexed here. The
    # handlers' labels= filters alone would apply on this side, after every pod of the cluster had arrived.
    for resource in CHILD_RESOURCES:
        settings.watching.label_selectors[resource] = CHILD_SELECTOR
    # Kopf's worker for an object holds that object's last watch event until it has idled this long (5 s by
    # default). At 10,000 jobs, whose status writes echo back every few seconds, most workers never idle
    # that long and their events were 6 KB a job (docs/scaling.md); a worker made again costs less.
    settings.queueing.idle_timeout = 1.0
    # Handler logs are not Kubernetes events; only explicit kopf.event() calls and errors are posted.
    settings.posting.level = logging.ERROR
    settings.execution.max_workers = 16
    # The API calls run in threads (asyncio.to_thread): asyncio's default pool has cpu_count + 4 threads,
    # six on two cores, which serialised a burst's creates; one thread per pooled API connection instead.
    asyncio.get_running_loop().set_default_executor(
        concurrent.futures.ThreadPoolExecutor(max_workers=API_THREADS, thread_name_prefix="kube-api")
    )
    # Peering (--peering): how soon a paused replica takes over from one that died without saying goodbye.
    settings.peering.lifetime = int(os.environ.get("FINETUNE_PEERING_LIFETIME_SECONDS", "60"))
    config = OperatorConfig.from_env()
    # Credentials from Kopf's logins: the pod's ServiceAccount, else the kubeconfig (kube.client.login).
    kube = KubeApi(ApiClient.from_login())
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
    # The progress endpoint's certificate and CA (None: TLS disabled); trainers get the CA bundle through config.
    tls = await ProgressTls.start(config, kube)
    config = tls.configured(config) if tls else config
    registry = JobRegistry()
    metrics = OperatorMetrics(registry.all)

    async def trial_reported(namespace: str, search: str) -> None:
        # A trial's progress can stop it early or free a slot: reconcile its search job.
        await reconcile_from_cache(state, namespace, search)

    hub = ProgressHub(
        key,
        registry,
        kube.patch_finetunejob_status,
        metrics,
        status_interval=config.status_interval_seconds,
        clock=clock.now,
        trial_reported=trial_reported,
    )
    # Kopf gives each object a shallow copy of this memo: what handlers share is this one object.
    memo.state = state = OperatorState(config=config, kube=kube, registry=registry, metrics=metrics, hub=hub)
    if tls:
        tls.follow(state)
    state.servers = Servers(hub, progress_port=config.progress_port, metrics_port=config.metrics_port, tls=tls)
    await state.servers.start()
    state.sweeper = asyncio.get_running_loop().create_task(sweep(state))
    # What events ask for: a reconcile per job, run by a fixed set of workers (reconcile/queue.py).
    state.queue = ReconcileQueue(functools.partial(reconcile_queued, state), workers=RECONCILE_CONCURRENCY)


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
    state: OperatorState = memo.state
    if state.sweeper is not None:
        state.sweeper.cancel()
    await state.queue.close()
    await state.servers.stop()
    await state.hub.close()


@kopf.index("batch", "v1", "jobs", labels=CHILDREN)
def training_jobs(namespace: str, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return {(namespace, labels[LABEL_JOB_NAME]): child_snapshot(body)}


@kopf.index("v1", "pods", labels=CHILDREN)
def trainer_pods(namespace: str, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return {(namespace, labels[LABEL_JOB_NAME]): child_snapshot(body)}


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
    state: OperatorState = memo.state
    if type == "DELETED":
        # No finalizer needed: children go by owner references; only in-memory state is ours to drop.
        state.forget(namespace, name)
        return
    record = state.registry.get(namespace, name)
    if (
        record is not None
        and record.generation == body.metadata.get("generation")
        and not newer_version(body.metadata.get("resourceVersion"), state.kube.written_versions.get((namespace, name)))
    ):
        return
    # An event older than the operator's own last write is reconciled from that write's (newer) answer,
    # which the queued reconcile reads from the cache when it runs.
    state.kube.remember(finetunejob_snapshot(body))
    state.indexes = (training_jobs, trainer_pods)
    state.queue.add(namespace, name)


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
    # A search trial's (or promote Job's) children belong to the search job: reconcile that one. The queued
    # reconcile reads the newest version of it the watch (or our own write) delivered: no GET per child event.
    state: OperatorState = memo.state
    name = labels.get(LABEL_SEARCH) or labels[LABEL_JOB_NAME]
    record = state.registry.get(namespace, labels[LABEL_JOB_NAME])
    if type == "ADDED" and body.get("kind") == "Job" and record is not None and record.children_complete:
        # A Job this process has just created, status still empty: its reconcile already counted on it.
        # (Skipping it matters in a burst: the next jobs' events wait behind these reconciles.)
        return
    state.indexes = (training_jobs, trainer_pods)
    state.queue.add(namespace, name)
