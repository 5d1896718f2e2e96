"""Plan one reconcile of a plain FineTuneJob (pure): what was observed in, a Plan out.

The decision, in order: make sure the run's children exist (or that its Job's suspension follows the
spec); derive the status from what the children show; fail a job that could not start in time; account
GPU-seconds and lifecycle metrics; mark a stall; complete the progress of a job that ran to its end;
then the status changes, their events and the TTL. reconcile.apply carries the plan out.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .. import reasons as r
from ..builders import spec_hash
from ..children import run_children, suspension_change
from ..conditions import find_condition
from ..config import OperatorConfig
from ..failure import job_condition
from ..names import ANNOTATION_SPEC_HASH, training_job_name
from ..pod_creation import ask_again_after, pods_missing
from ..progress.records import JobRecord
from ..rejection import Rejection
from ..spec import FineTuneJobSpec, changed_paths
from ..status import (
    Observed,
    apply_stall,
    completed_progress,
    derive_status,
    invalid_spec_status,
    live_pods,
    parse_timestamp,
    ran_to_completion,
    refused_spec_changed,
    startup_deadline_exceeded,
    startup_failure_status,
    status_changes,
    ttl_expired,
)
from .plan import Event, Plan, account_running, phase_event


@dataclass(frozen=True)
class JobObservation:
    """What one reconcile of a FineTuneJob sees: the object, its parsed spec (or why not), its children."""

    ftj: dict[str, Any]
    spec: FineTuneJobSpec | None
    spec_error: str | None = None
    children: Observed = Observed()
    # The run's progress token, for the progress Secret (should the children be sent).
    token: str = ""

    @property
    def name(self) -> str:
        return self.ftj["metadata"]["name"]

    @property
    def generation(self) -> int | None:
        return self.ftj["metadata"].get("generation")

    @property
    def previous(self) -> dict[str, Any]:
        return self.ftj.get("status") or {}

    def created(self, now: datetime) -> datetime:
        return parse_timestamp(self.ftj["metadata"].get("creationTimestamp")) or now


def plan_job(observation: JobObservation, record: JobRecord, *, config: OperatorConfig, now: datetime) -> Plan:
    written, generation, name = observation.previous, observation.generation, observation.name
    if observation.spec is None:
        return plan_invalid_spec(observation.spec_error or "invalid spec", written, generation, name, now)
    spec = observation.spec
    plan = Plan()
    # A job that failed on its spec starts over once the spec changed: derived afresh, written over the old.
    restart = refused_spec_changed(written, generation)
    previous = {} if restart else written
    plan.refresh_children = restart
    observed = observation.children
    remember: dict[str, Any] = {}
    if previous.get("phase") not in r.TERMINAL_PHASES:
        observed = _plan_children(plan, remember, observation, spec, record, config, now, restart=restart)

    derived = derive_status(spec, previous, observed, job_name=training_job_name(name), generation=generation, now=now)
    if startup_deadline_exceeded(spec, derived, observation.created(now), now):
        derived.update(startup_failure_status(derived, generation=generation, now=now))
        # Release whatever the job holds (quota, pending pods) now that it has failed.
        plan.delete_jobs.append(training_job_name(name))
    failed_pod = (derived.get("failure") or {}).get("pod")
    if derived["phase"] == r.FAILED and previous.get("phase") != r.FAILED and failed_pod:
        plan.log_tail = ("failure", failed_pod)
    _plan_gang_restart(plan, previous, derived, observed)
    remember.update(_plan_lifecycle(plan, record, spec, previous, derived, now))

    seconds_idle = record.seconds_without_progress(now, running_since=remember["running_since"])
    stalled = apply_stall(derived, seconds_idle, config.stall_seconds, generation=generation, now=now)
    if stalled and not record.stalled:
        message = find_condition(derived["conditions"], r.COND_STALLED)["message"]
        plan.events.append(Event("Warning", r.NO_PROGRESS, message))
    remember["stalled"] = stalled
    if ran_to_completion(spec, derived) and not record.finished:
        # The final progress report may have been lost to an operator restart: the Job proves it.
        remember.update(finished=True, completed_progress=completed_progress(spec, previous.get("progress")))
        plan.write_progress.append(name)

    plan.status = status_changes(written, derived)
    if "phase" in plan.status or ("reason" in plan.status and derived["phase"] != r.RUNNING):
        plan.events.append(phase_event(derived))
    plan.delete_finetunejob = ttl_expired(spec, derived, now)
    plan.requeue_after = _requeue_after(spec, observed, observation.created(now), now)
    plan.remember[name] = remember
    return plan


def _plan_gang_restart(plan: Plan, previous: dict[str, Any], derived: dict[str, Any], observed: Observed) -> None:
    """A multi-rank job restarting (gang.py): keep the failed rank's log tail with status.lastRestart, and
    once the Job controller has stopped every rank of the failed Job (Failed, not just FailureTarget),
    delete it so that the next reconcile sends a new one. The status goes first: the restart is counted
    before its Job disappears."""
    if derived.get("reason") != r.RESTARTING or observed.job is None:
        return
    last = derived.get("lastRestart") or {}
    if last and last != previous.get("lastRestart"):
        if last.get("pod"):
            plan.log_tail = ("lastRestart", last["pod"])
        if previous.get("reason") == r.RESTARTING:
            # No phase or reason change to announce it: the ranks were already stopping (or restarting).
            plan.events.append(Event("Warning", r.RESTARTING, f"{derived['phase']}: {derived.get('message', '')}"))
    if job_condition(observed.job, "Failed") and last.get("jobUID") == observed.job["metadata"].get("uid"):
        plan.delete_jobs.append(observed.job["metadata"]["name"])
        plan.status_first = True


def _requeue_after(spec: FineTuneJobSpec, observed: Observed, created: datetime, now: datetime) -> float | None:
    """While the Job has fewer pods than ranks, look again soon: the Job controller says why only in Events
    on the Job, which bring no watch event (see ask_again_after)."""
    if not pods_missing(observed.job, len(live_pods(observed.pods)), spec.resources.nodes):
        return None
    return ask_again_after((now - created).total_seconds())


def plan_rejection(ftj: dict[str, Any], rejection: Rejection, now: datetime) -> Plan:
    """The API server refused a child for good: Failed at once (InvalidSpec, or Forbidden), one Warning
    event, no retry until the spec changes."""
    previous = ftj.get("status") or {}
    name, generation = ftj["metadata"]["name"], ftj["metadata"].get("generation")
    message = rejection.status_message()
    failed = invalid_spec_status(message, previous, generation=generation, now=now, reason=rejection.reason)
    plan = Plan(status=status_changes(previous, failed), remember={name: {"phase": r.FAILED}})
    plan.events.append(Event("Warning", rejection.reason, message))
    plan.metrics.failures.append(rejection.reason)
    return plan


def plan_invalid_spec(error: str, previous: dict[str, Any], generation: int | None, name: str, now: datetime) -> Plan:
    """A spec the operator cannot run (what the CRD schema could not refuse): Failed, InvalidSpec, once per
    spec (an edit that is still invalid gets its own message)."""
    plan = Plan(remember={name: {"phase": r.FAILED}})
    if previous.get("reason") == r.INVALID_SPEC and previous.get("observedGeneration") == generation:
        return plan
    if previous.get("reason") == r.INVALID_SPEC and previous.get("message") == error:
        plan.status = {"observedGeneration": generation}  # the same mistake again: nothing new to say
        return plan
    plan.status = invalid_spec_status(error, previous, generation=generation, now=now)
    plan.events.append(Event("Warning", r.INVALID_SPEC, error))
    plan.metrics.failures.append(r.INVALID_SPEC)
    return plan


def _plan_children(
    plan: Plan,
    remember: dict[str, Any],
    observation: JobObservation,
    spec: FineTuneJobSpec,
    record: JobRecord,
    config: OperatorConfig,
    now: datetime,
    *,
    restart: bool = False,
) -> Observed:
    """Children to send (none found, or not yet sent by this operator process, or a restart after the
    spec was refused), else the suspension to follow; returns what the status is derived from (the Job
    about to be sent, when there was none)."""
    observed, name = observation.children, observation.name
    if observed.job is None or not record.children_complete or restart:
        deadline = _remaining_deadline(spec, observation.previous, now)
        children = run_children(observation.ftj, spec, name, config, observation.token, deadline_seconds=deadline)
        plan.create.append(children)
        remember["children_complete"] = True
        if observed.job is None:
            # Status from the Job about to be sent, so the job goes straight to Starting (one write, one event).
            return Observed(job=children[-1], pods=observed.pods)
        return observed
    suspend = suspension_change(spec, observed.job)
    if suspend is not None:
        plan.suspend.append((observed.job["metadata"]["name"], suspend))
    plan.events.extend(_ignored_spec_change(remember, observation, spec, record))
    return observed


def _remaining_deadline(spec: FineTuneJobSpec, previous: dict[str, Any], now: datetime) -> int | None:
    """activeDeadlineSeconds for a Job sent again after the job ran (a gang restart, a deleted Job): what
    is left of it since the job first ran, so restarts do not extend the deadline. None: the spec's own."""
    deadline, started = spec.run_policy.active_deadline_seconds, parse_timestamp(previous.get("startTime"))
    if deadline is None or started is None:
        return None
    return max(1, deadline - int((now - started).total_seconds()))


def _ignored_spec_change(
    remember: dict[str, Any], observation: JobObservation, spec: FineTuneJobSpec, record: JobRecord
) -> list[Event]:
    """A Warning, once per new spec, when the spec no longer matches the one the Job was built from."""
    generation = observation.generation
    if record.spec_checked_generation == generation:
        return []  # the spec only changes with the generation: once per generation is enough
    remember["spec_checked_generation"] = generation
    spec_body = observation.ftj.get("spec") or {}
    spec_seen = record.spec_seen
    if spec_seen is None:
        spec_seen = remember["spec_seen"] = copy.deepcopy(spec_body)
    job = observation.children.job or {}
    built_from = ((job.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_SPEC_HASH)
    current = spec_hash(spec)
    if built_from is None or built_from == current or record.ignored_spec_hash == current:
        return []
    remember["ignored_spec_hash"] = current
    fields = [path for path in changed_paths(spec_seen, spec_body) if path != "runPolicy.suspend"]
    what = f"ignored changes to {', '.join(fields)}" if fields else "ignored the change"
    message = (
        f"only spec.runPolicy.suspend can change after creation; {what}: delete and recreate the job to apply them"
    )
    return [Event("Warning", r.SPEC_CHANGE_IGNORED, message)]


def _plan_lifecycle(
    plan: Plan,
    record: JobRecord,
    spec: FineTuneJobSpec,
    previous: dict[str, Any],
    derived: dict[str, Any],
    now: datetime,
) -> dict[str, Any]:
    """Lifecycle metrics and GPU-seconds from the transition between the old and the new status; returns
    the record fields that follow (phase, running interval, GPU-seconds)."""
    metrics = plan.metrics
    phase, old_phase = derived["phase"], previous.get("phase")
    running = phase == r.RUNNING
    remember, metrics.gpu_seconds = account_running(record, running, now)
    remember["phase"] = phase
    if running and not previous.get("startTime") and record.created is not None:
        metrics.time_to_running = max(0.0, (now - record.created).total_seconds())
    metrics.queue_wait = _queue_wait(spec, previous, derived, now)
    if phase == r.FAILED and old_phase != r.FAILED:
        metrics.failures.append(derived.get("reason") or r.TRAINER_CRASHED)
    metrics.retries = max(0, int(derived.get("retries") or 0) - int(previous.get("retries") or 0))
    if record.running_since is not None and not running:
        # Leaving Running: write the final GPU-seconds and progress now rather than at the next report.
        plan.write_progress.append(record.name)
    return remember


def _queue_wait(
    spec: FineTuneJobSpec, previous: dict[str, Any], derived: dict[str, Any], now: datetime
) -> float | None:
    """Seconds a queued job waited, observed as Kueue admits it."""
    admitted = find_condition(derived.get("conditions"), r.COND_ADMITTED)
    queued = find_condition(previous.get("conditions"), r.COND_QUEUED)
    if not (spec.scheduling.queue_name and admitted and queued):
        return None
    if admitted.get("status") != "True" or queued.get("status") != "True":
        return None
    waited_since = parse_timestamp(queued.get("lastTransitionTime"))
    return max(0.0, (now - waited_since).total_seconds()) if waited_since else None
