"""Creating a training run's children and keeping its Job's suspension in step with the spec (I/O).

Shared by a plain FineTuneJob (one run, named after the job) and a search (one run per trial, named
after the trial and labelled with the search's name).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import kopf

from .builders import build_config_map, build_job, build_progress_secret, build_service, config_hash
from .config import OperatorConfig
from .kube import KubeApi
from .names import LABEL_SEARCH
from .spec import FineTuneJobSpec

log = logging.getLogger(__name__)


class JobsFirst:
    """Under a burst of new FineTuneJobs, every training Job is sent before anything else.

    A Job is what the scheduler (and Kueue) wait for; ConfigMaps, Secrets, Services, status writes and
    events are not. While any Job creation is pending, the other writes wait, so the hundredth job of a
    burst does not queue behind the first ninety-nine jobs' bookkeeping at the API server.
    """

    # A burst's FineTuneJob events reach the handlers over some milliseconds, not at once: the other
    # writes wait until no Job creation has been pending for this long.
    QUIET_SECONDS = 0.05

    def __init__(self) -> None:
        self._pending = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._last_done = float("-inf")

    @contextlib.asynccontextmanager
    async def creating_job(self) -> AsyncIterator[None]:
        self._pending += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._pending -= 1
            self._last_done = asyncio.get_running_loop().time()
            if not self._pending:
                self._idle.set()

    async def after_jobs(self) -> None:
        """Return once no Job creation is pending or recent (at once when none was for a while)."""
        loop = asyncio.get_running_loop()
        while True:
            await self._idle.wait()
            wait = self._last_done + self.QUIET_SECONDS - loop.time()
            if wait <= 0 and self._idle.is_set():
                return
            await asyncio.sleep(max(wait, 0.001))


def _labelled(child: dict[str, Any], search: str) -> dict[str, Any]:
    """A trial's child carries its search's name, so its events reconcile the search job."""
    child["metadata"].setdefault("labels", {})[LABEL_SEARCH] = search
    template = (child.get("spec") or {}).get("template")
    if template is not None:
        template["metadata"].setdefault("labels", {})[LABEL_SEARCH] = search
    return child


async def create_children(
    kube: KubeApi,
    owner: dict[str, Any],
    spec: FineTuneJobSpec,
    name: str,
    config: OperatorConfig,
    token: str,
    jobs_first: JobsFirst,
    *,
    search: str | None = None,
) -> dict[str, Any]:
    """Create a run's children (idempotently: 409s are fine) and return the Job manifest that was sent.

    The Job first, the rest together after it (and after any other job's pending Job creation, see
    JobsFirst): that puts the scheduler's work (and Kueue's) one round trip after the FineTuneJob appears. Its pods wait in ContainerCreating until their ConfigMap and
    Secret exist, as kubelets do; a restarted operator re-sends all four once per run (see
    JobRecord.children_complete), so a crash between the two steps cannot leave a child missing.
    """
    namespace = owner["metadata"]["namespace"]
    config_map = build_config_map(spec, name, namespace)
    rest = [config_map, build_progress_secret(name, namespace, token), build_service(spec, name, namespace)]
    job = build_job(spec, name, namespace, config=config, config_hash=config_hash(config_map))
    for child in (job, *rest):
        if search is not None:
            _labelled(child, search)
        kopf.adopt(child, owner=owner)
    async with jobs_first.creating_job():
        if await asyncio.to_thread(kube.create_if_absent, job):
            log.info("created training Job %s/%s", namespace, name)
    await jobs_first.after_jobs()
    await asyncio.gather(*(asyncio.to_thread(kube.create_if_absent, child) for child in rest))
    return job


def apply_suspension(kube: KubeApi, spec: FineTuneJobSpec, job: dict[str, Any]) -> None:
    desired = spec.run_policy.suspend
    actual = bool((job.get("spec") or {}).get("suspend"))
    # With a queue, unsuspending belongs to Kueue (admission); the operator only ever suspends.
    if desired != actual and (desired or not spec.scheduling.queue_name):
        kube.set_job_suspended(job["metadata"]["namespace"], job["metadata"]["name"], desired)
