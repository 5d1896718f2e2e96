"""What every handler, the periodic sweep and the progress hub share: one typed object, made at start-up.

Kopf gives each object a shallow copy of its memo, so state that handlers must share lives in this one
mutable object (memo.state), never in memo attributes set later.
"""

from __future__ import annotations

import asyncio
import contextvars
from dataclasses import dataclass, field
from typing import Any

import kopf

from ..config import OperatorConfig
from ..kube import KubeApi
from ..kube.client import POOL_SIZE
from ..metrics import OperatorMetrics
from ..progress.hub import ProgressHub
from ..registry import JobRegistry
from .apply import Actuators
from .children_first import ChildrenFirst
from .failed_create_lookups import FailedCreateLookups
from .queue import ReconcileQueue

Key = tuple[str, str]
# How many reconciles plan and act at once. A burst of 1,000 new FineTuneJobs would otherwise hold
# 1,000 plans (each with its children's manifests) in memory while they queue for the API threads:
# that was the operator's memory peak (docs/scaling.md). Twice the pooled API connections keeps every
# connection busy, so the burst takes no longer.
RECONCILE_CONCURRENCY = 2 * POOL_SIZE


async def _nothing(_key: Key) -> None:
    """The queue's work until start-up gives it the reconcile."""


@dataclass
class OperatorState:
    config: OperatorConfig
    kube: KubeApi
    registry: JobRegistry
    metrics: OperatorMetrics
    hub: ProgressHub
    children_first: ChildrenFirst = field(default_factory=ChildrenFirst)
    # One reconcile per FineTuneJob at a time: child events for one job arrive concurrently.
    locks: dict[Key, asyncio.Lock] = field(default_factory=dict)
    # Taken after the job's lock, for the observe-plan-act only (see RECONCILE_CONCURRENCY).
    reconcile_slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(RECONCILE_CONCURRENCY))
    # The last FailedCreate answer per Job short of pods (one events list per Job per interval).
    failed_create_lookups: FailedCreateLookups = field(default_factory=FailedCreateLookups)
    # Kopf's indexes of our Jobs and pods (live views), once a handler has run: the sweep and trial
    # reports, which are no handlers, reconcile through them.
    indexes: tuple[kopf.Index, kopf.Index] | None = None
    # A handler's context variables: kopf.event() needs them (its event queue) outside handlers too.
    context: contextvars.Context | None = None
    # One pending retry per job.
    retries: dict[Key, asyncio.Task[None]] = field(default_factory=dict)
    # One pending look-again per job (a plan's requeue_after).
    requeues: dict[Key, asyncio.Task[None]] = field(default_factory=dict)
    # The jobs that events asked to reconcile, and the workers that do (made at start-up).
    queue: ReconcileQueue = field(default_factory=lambda: ReconcileQueue(_nothing, workers=0))
    # The progress and metrics servers and the sweep task, stopped at shutdown.
    servers: Any = None
    sweeper: asyncio.Task[None] | None = None

    def actuators(self) -> Actuators:
        return Actuators(
            kube=self.kube,
            registry=self.registry,
            hub=self.hub,
            metrics=self.metrics,
            post_event=kopf.event,
            children_first=self.children_first,
        )

    def forget(self, namespace: str, name: str) -> None:
        """A deleted FineTuneJob: drop its records (its trials' too), pending writes, lock and versions."""
        self.hub.forget(self.registry.forget(namespace, name))
        self.locks.pop((namespace, name), None)
        requeue = self.requeues.pop((namespace, name), None)
        if requeue is not None:
            requeue.cancel()
        self.kube.forget(namespace, name)
