"""What a reconcile decided, as data: status changes, children to create or delete, events, metrics.

A plan is computed by a pure function (reconcile.job.plan_job, search.plan.plan_search) from what was
observed, and carried out by reconcile.apply.apply_plan. Tests compare plans; only apply talks to the API.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .. import reasons as r
from ..progress.records import JobRecord


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event on the FineTuneJob."""

    type: str  # "Normal" or "Warning"
    reason: str
    message: str


@dataclass
class MetricDeltas:
    """What the operator's lifecycle metrics gain from this reconcile."""

    gpu_seconds: float = 0.0
    time_to_running: float | None = None
    queue_wait: float | None = None
    failures: list[str] = field(default_factory=list)  # one reason per job or search that failed now
    retries: int = 0


@dataclass
class Plan:
    # Status fields to patch (only what changed); empty: no write.
    status: dict[str, Any] = field(default_factory=dict)
    # Write the status before creating children (a search records a trial before its Job exists, so a
    # restarted operator neither repeats nor loses it); else after, once pending Job creations went out.
    status_first: bool = False
    # Groups of children to create if absent, the Job last: it is sent once what its pods mount (ConfigMap,
    # Secret) exists (apply.create_children).
    create: list[list[dict[str, Any]]] = field(default_factory=list)
    # The children may exist from an attempt the API server refused: bring their ConfigMap up to date.
    refresh_children: bool = False
    # (Job name, suspend): Jobs whose spec.suspend must change.
    suspend: list[tuple[str, bool]] = field(default_factory=list)
    # Jobs to delete (a failed job's held resources, early-stopped trials).
    delete_jobs: list[str] = field(default_factory=list)
    # (status field, pod): the pod whose log tail goes into status.failure (read once, as the job turns
    # Failed) or status.lastRestart (as a multi-rank job starts a restart).
    log_tail: tuple[str, str] | None = None
    events: list[Event] = field(default_factory=list)
    metrics: MetricDeltas = field(default_factory=MetricDeltas)
    # Runs to register (JobRegistry.track's arguments, by name): the trials a search starts.
    track: dict[str, dict[str, Any]] = field(default_factory=dict)
    # JobRecord fields to set, by job or trial name.
    remember: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Jobs whose progress fields the progress hub should write now (it is their one writer).
    write_progress: list[str] = field(default_factory=list)
    # The TTL after finishing has passed: delete the FineTuneJob.
    delete_finetunejob: bool = False
    # Look again after this many seconds even if no event comes (pods the Job controller cannot create
    # post Events on the Job, which the operator does not watch).
    requeue_after: float | None = None


def phase_event(derived: dict[str, Any]) -> Event:
    """The event of a phase (or reason) change: a Warning when the job failed or lost a rank."""
    warning = derived["phase"] == r.FAILED or derived.get("reason") == r.RESTARTING
    return Event(
        "Warning" if warning else "Normal",
        derived.get("reason") or derived["phase"],
        f"{derived['phase']}: {derived.get('message', '')}",
    )


def account_running(record: JobRecord, running: bool, now: datetime) -> tuple[dict[str, Any], float]:
    """(record fields, GPU-seconds for the counter) as a job or trial is seen running or not at `now`."""
    running_since, gpu_seconds = record.running_interval(running, now)
    total = record.gpu_seconds_with(running_since, gpu_seconds, now)
    fields = {"running_since": running_since, "gpu_seconds": gpu_seconds, "gpu_counted": total}
    return fields, max(0.0, total - record.gpu_counted)
