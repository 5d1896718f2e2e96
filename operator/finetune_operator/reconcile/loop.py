"""Run reconciles: one at a time per job, observe -> plan -> apply, retried with backoff, swept periodically.

Every trigger (a FineTuneJob event, an event on its Job or pods, a trial's progress report, the sweep)
runs the same idempotent `reconcile`. Level-triggered, so a restarted operator or a missed event
converges on the next trigger.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
from collections.abc import Awaitable, Coroutine
from typing import Any

import urllib3

from .. import clock
from ..search.plan import plan_search
from ..spec import InvalidSpec, parse_spec
from .apply import ChildRejected, apply_plan
from .job import plan_job, plan_rejection
from .observe import Index, observe_job, observe_search, with_failed_creates
from .plan import Plan
from .state import OperatorState

log = logging.getLogger(__name__)

# Deadlines, TTLs and stall detection need a clock tick even when nothing else happens to a job.
RECONCILE_INTERVAL_SECONDS = float(os.environ.get("FINETUNE_RECONCILE_INTERVAL_SECONDS", "30"))
# The cap of the exponential backoff after a failed reconcile (API errors, dropped connections).
RETRY_MAX_DELAY_SECONDS = 30


def retry_delay(retry: int) -> float:
    """Seconds before retry number `retry` + 1 of a failed reconcile: 1, 2, 4, ... capped at 30."""
    return float(min(RETRY_MAX_DELAY_SECONDS, 2 ** min(retry, 10)))


async def reconcile(
    namespace: str,
    name: str,
    state: OperatorState,
    jobs: Index,
    pods: Index,
    *,
    retry: int = 0,
    body: dict[str, Any] | None = None,
) -> None:
    """Reconcile one job from a handler; after a failure, try again with exponential backoff (1, 2, 4 ... 30 s).

    Kopf's event handlers are fire-and-forget (no retries), and its default for change handlers is a
    flat 60 s: one 409/429/5xx or dropped connection would stall a job for a minute. The retry runs as a
    task of its own, so the handler returns and Kopf keeps delivering the object's newer events.
    """
    # Kopf's indexes are live views; the periodic sweep, which is no handler, reconciles through them.
    state.indexes = (jobs, pods)
    # kopf.event() needs Kopf's context variables (its event queue), which only handlers have.
    state.context = contextvars.copy_context()
    try:
        await reconcile_once(namespace, name, state, jobs, pods, body=body)
    except Exception as exc:  # noqa: BLE001 - every failure is retried; bugs are logged with their traceback
        state.metrics.reconcile_errors.inc()
        status = getattr(exc, "status", None)
        if status is None and not isinstance(exc, (OSError, urllib3.exceptions.HTTPError)):
            log.exception("reconciling %s/%s failed unexpectedly", namespace, name)
        cause = f"HTTP {status} {getattr(exc, 'reason', '') or ''}".strip() if status else repr(exc)
        delay = retry_delay(retry)
        log.warning("reconciling %s/%s failed (%s); retrying in %.0f s", namespace, name, cause, delay)
        _retry_later(namespace, name, state, jobs, pods, retry=retry + 1, delay=delay)


def _retry_later(
    namespace: str, name: str, state: OperatorState, jobs: Index, pods: Index, *, retry: int, delay: float
) -> None:
    """One pending retry per job: a retry that fails schedules the next; a newer one replaces none."""
    key = (namespace, name)
    if key in state.retries and not state.retries[key].done():
        return

    async def again() -> None:
        await asyncio.sleep(delay)
        state.retries.pop(key, None)
        await reconcile(namespace, name, state, jobs, pods, retry=retry)  # re-reads the object: it may have changed

    state.retries[key] = in_handler_context(state, again())


def in_handler_context(state: OperatorState, coroutine: Coroutine[Any, Any, None]) -> Awaitable[None]:
    """Run a reconcile started outside Kopf's handlers (the sweep, a trial's report) in a handler's context."""
    loop = asyncio.get_running_loop()
    context = state.context
    return context.run(loop.create_task, coroutine) if context is not None else loop.create_task(coroutine)


async def reconcile_queued(state: OperatorState, key: tuple[str, str]) -> None:
    """A job's reconcile that an event queued (reconcile/queue.py), from the newest version of it known."""
    if state.indexes is None:
        return  # no handler has run yet, so none has queued anything
    await reconcile(*key, state, *state.indexes, body=state.kube.finetunejobs.get(key))


async def reconcile_from_cache(state: OperatorState, namespace: str, name: str) -> None:
    """Reconcile a job outside the handlers (the sweep, a trial's report), from the newest version known."""
    if state.indexes is None:
        return  # no handler has run yet: nothing is tracked
    body = state.kube.finetunejobs.get((namespace, name))
    await in_handler_context(state, reconcile_once(namespace, name, state, *state.indexes, body=body))


async def sweep(state: OperatorState) -> None:
    """Reconcile every known job once per interval: deadlines, TTLs and stalls need a clock tick.

    One task for all jobs instead of a Kopf timer per object: Kopf timers put a finalizer on every
    FineTuneJob (two extra writes per job and a round trip before its first reconcile).
    """
    while True:
        await asyncio.sleep(RECONCILE_INTERVAL_SECONDS)
        for namespace, name in state.registry.jobs():
            try:
                await reconcile_from_cache(state, namespace, name)
            except Exception:  # noqa: BLE001 - the next sweep retries; one job must not stop the others
                state.metrics.reconcile_errors.inc()
                log.warning("periodic reconcile of %s/%s failed; retrying next sweep", namespace, name, exc_info=True)


async def reconcile_once(
    namespace: str, name: str, state: OperatorState, jobs: Index, pods: Index, *, body: dict[str, Any] | None = None
) -> None:
    """Observe, plan, act, under the job's lock."""
    lock = state.locks.setdefault((namespace, name), asyncio.Lock())
    async with lock, state.reconcile_slots:
        # The newest version known once the lock is ours: a reconcile that waited for it may hold a body
        # older than the status the previous one just wrote.
        kube = state.kube
        ftj = (
            kube.remember(body) if body is not None else await asyncio.to_thread(kube.get_finetunejob, namespace, name)
        )
        if ftj is None or ftj["metadata"].get("deletionTimestamp"):
            return
        try:
            plan = await plan_reconcile(ftj, state, jobs, pods)
            try:
                await apply_plan(plan, ftj, state.actuators())
            except ChildRejected as exc:
                # Permanent: the job fails now and waits for a spec change instead of retrying forever.
                log.warning("the API server refused %s/%s's %s", namespace, name, exc)
                await apply_plan(plan_rejection(ftj, exc.rejection, clock.now()), ftj, state.actuators())
                return
            if plan.requeue_after is not None:
                requeue(state, namespace, name, plan.requeue_after)
        finally:
            record = state.registry.get(namespace, name)
            if record is not None:
                # The generation this operator has acted on: job events skip echoes only while it holds.
                record.generation = ftj["metadata"].get("generation")


def requeue(state: OperatorState, namespace: str, name: str, delay: float) -> None:
    """Reconcile the job again after `delay` seconds, unless a look-again is already pending for it."""
    key = (namespace, name)
    pending = state.requeues.get(key)
    if pending is not None and not pending.done():
        return

    async def again() -> None:
        await asyncio.sleep(delay)
        state.requeues.pop(key, None)
        if state.registry.get(namespace, name) is not None:  # not deleted meanwhile
            await reconcile_from_cache(state, namespace, name)

    state.requeues[key] = in_handler_context(state, again())


async def plan_reconcile(ftj: dict[str, Any], state: OperatorState, jobs: Index, pods: Index) -> Plan:
    """Observe the job (and register it) and plan what to do: a search, a plain job, or an invalid spec."""
    meta = ftj["metadata"]
    now = clock.now()
    try:
        spec, error = parse_spec(ftj.get("spec"), meta["name"]), None
    except InvalidSpec as exc:
        spec, error = None, str(exc)
    if spec is not None and spec.hyperparameter_search is not None:
        search = observe_search(ftj, spec, registry=state.registry, jobs=jobs, pods=pods, now=now)
        return plan_search(
            search,
            config=state.config,
            token_of=lambda run: state.hub.token(meta["namespace"], run, meta.get("uid", "")),
            now=now,
        )
    token = state.hub.token(meta["namespace"], meta["name"], meta.get("uid", ""))
    job = observe_job(ftj, spec, error, registry=state.registry, jobs=jobs, pods=pods, token=token, now=now)
    job = await with_failed_creates(state.kube, job, state.failed_create_lookups, now)
    record = state.registry.get(meta["namespace"], meta["name"])
    assert record is not None  # observe_job registered it
    return plan_job(job, record, config=state.config, now=now)
