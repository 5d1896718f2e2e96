"""Observe a FineTuneJob for one reconcile: its children from Kopf's indexes, its records in the registry.

No API calls: the watch streams keep the indexes current. Registering a job (or a search's unfinished
trials) in the JobRegistry on first sight is part of observing it: the plan reads the records, and a
trainer's progress reports need one to land in.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from .. import reasons as r
from ..kube import KubeApi
from ..names import promote_job_name
from ..pod_creation import ask_again_after, pods_missing
from ..registry import JobRegistry
from ..search.plan import SearchObservation
from ..search.specs import frozen_spec, trial_spec
from ..spec import FineTuneJobSpec
from ..status import Observed, live_pods, parse_timestamp
from .failed_create_lookups import FailedCreateLookups
from .job import JobObservation

log = logging.getLogger(__name__)

# Kopf's index of a kind: (namespace, run name) -> the objects of that run.
Index = Mapping[tuple[str, str], Any]


def children_of(jobs: Index, pods: Index, namespace: str, run: str) -> Observed:
    """The run's Job and the pods it owns: pods of an earlier Job of the same name (a restarted gang's
    failed ranks, until the garbage collector removes them) are not this Job's."""
    key = (namespace, run)
    job = next(iter(jobs.get(key, ())), None)
    run_pods = list(pods.get(key, ()))
    uid = (job or {}).get("metadata", {}).get("uid")
    if uid:
        run_pods = [pod for pod in run_pods if _owner_uids(pod) in ({uid}, set())]
    return Observed(job=job, pods=run_pods)


def _owner_uids(pod: dict[str, Any]) -> set[str]:
    return {ref.get("uid") for ref in pod["metadata"].get("ownerReferences") or () if ref.get("controller")}


def observe_job(
    ftj: dict[str, Any],
    spec: FineTuneJobSpec | None,
    spec_error: str | None,
    *,
    registry: JobRegistry,
    jobs: Index,
    pods: Index,
    token: str,
    now: datetime,
) -> JobObservation:
    meta = ftj["metadata"]
    previous = ftj.get("status") or {}
    registry.track(
        meta["namespace"],
        meta["name"],
        uid=meta.get("uid", ""),
        created=parse_timestamp(meta.get("creationTimestamp")) or now,
        gpus=spec.total_gpus if spec is not None else 0,
        gpu_seconds=float(previous.get("gpuSeconds") or 0) if spec is not None else 0.0,
    )
    return JobObservation(
        ftj=ftj,
        spec=spec,
        spec_error=spec_error,
        children=children_of(jobs, pods, meta["namespace"], meta["name"]),
        token=token,
    )


def observe_search(
    ftj: dict[str, Any], spec: FineTuneJobSpec, *, registry: JobRegistry, jobs: Index, pods: Index, now: datetime
) -> SearchObservation:
    """The search's record, its unfinished trials' records, and every trial's and the promote Job's children."""
    meta = ftj["metadata"]
    namespace, name, uid = meta["namespace"], meta["name"], meta.get("uid", "")
    created = parse_timestamp(meta.get("creationTimestamp")) or now
    parent = registry.track(namespace, name, uid=uid, created=created, gpus=0, gpu_seconds=0)
    previous = ftj.get("status") or {}
    spec_dict, frozen = frozen_spec(ftj, spec)
    records = {}
    for entry in previous.get("trials") or []:
        if entry["state"] in r.TRIAL_FINISHED_STATES:
            continue
        tspec = trial_spec(spec_dict, entry["parameters"], frozen.output.uri, entry["name"])
        records[entry["name"]] = registry.track(
            namespace,
            entry["name"],
            uid=uid,
            created=created,
            gpus=tspec.total_gpus,
            gpu_seconds=float(entry.get("gpuSeconds") or 0),
            parent=name,
        )
    runs = [*(entry["name"] for entry in previous.get("trials") or []), promote_job_name(name)]
    children = {run: children_of(jobs, pods, namespace, run) for run in runs}
    return SearchObservation(ftj=ftj, spec=spec, children=children, parent=parent, trials=records)


async def with_failed_creates(
    kube: KubeApi, observation: JobObservation, lookups: FailedCreateLookups, now: datetime
) -> JobObservation:
    """The Job controller's FailedCreate events, read only while the Job has fewer live pods than ranks
    (one field-selected list, at most once per Job per ask_again_after of its age, however often it is
    reconciled; a plain job's reconcile needs none otherwise)."""
    children, spec = observation.children, observation.spec
    if spec is None or children.job is None:
        return observation
    meta = children.job["metadata"]
    if not meta.get("uid"):
        return observation  # the Job about to be created (no uid yet): nothing can have failed
    if not pods_missing(children.job, len(live_pods(children.pods)), spec.resources.nodes):
        lookups.forget(meta["uid"])
        return observation

    async def fetch() -> list[dict[str, Any]]:
        return await asyncio.to_thread(kube.failed_create_events, meta["namespace"], meta["uid"])

    try:
        fresh_for = ask_again_after((now - observation.created(now)).total_seconds())
        events = await lookups.events(meta["uid"], fetch, fresh_for=fresh_for)
    except Exception:  # noqa: BLE001 - the reason is a courtesy; the status still says what the pods show
        log.warning("could not list the events of Job %s/%s", meta["namespace"], meta["name"], exc_info=True)
        return observation
    return dataclasses.replace(observation, children=dataclasses.replace(children, failed_creates=events))
