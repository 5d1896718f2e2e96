"""From what the cluster shows (the training Job and its pods) to a FineTuneJob's status (pure).

`derive_status` is the one place that decides phase, conditions and the human message. It never
claims more than the children show: Running only when every rank's pod runs, Succeeded only when the
Job is Complete, and it always says why a job is not running.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from . import reasons as r
from .conditions import find_condition, set_condition
from .failure import MAX_FAILURE_MESSAGE, classify_failure, job_condition, trainer_status
from .gang import GangVerdict, final_message, gang_verdict, restart_message, stopping_message
from .pod_creation import creation_failure
from .redaction import redact
from .spec import FineTuneJobSpec

_IMAGE_PULL_WAITING = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull")
_CONFIG_WAITING = ("CreateContainerConfigError",)


def timestamp(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_timestamp(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass(frozen=True)
class Observed:
    """The children as last seen: the training Job (None while absent), its pods, and the Job controller's
    FailedCreate events on it (listed only while the Job has fewer pods than ranks)."""

    job: dict[str, Any] | None = None
    pods: list[dict[str, Any]] = field(default_factory=list)
    failed_creates: list[dict[str, Any]] = field(default_factory=list)


def live_pods(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pods still counting towards the Job's ranks: neither finished nor being deleted."""
    return [
        p
        for p in pods
        if not p["metadata"].get("deletionTimestamp")
        and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
    ]


def _is_running(pod: dict[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") == "Running" and "running" in (trainer_status(pod).get("state") or {})


def _why_not_running(pods: list[dict[str, Any]], nodes: int, failed_creates: list[dict[str, Any]]) -> tuple[str, str]:
    """The most useful explanation for pods that are not all running yet."""
    if len(pods) < nodes:
        refused = creation_failure(failed_creates, pods)
        if refused is not None:
            return refused
    for pod in pods:
        scheduled = find_condition((pod.get("status") or {}).get("conditions"), "PodScheduled")
        if scheduled and scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
            return (
                r.UNSCHEDULABLE,
                f"pod {pod['metadata']['name']} cannot be scheduled: {scheduled.get('message', '')}".strip(),
            )
    for pod in pods:
        waiting = (trainer_status(pod).get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in _IMAGE_PULL_WAITING:
            return r.IMAGE_PULL_FAILED, (
                f"pod {pod['metadata']['name']} cannot pull its image ({waiting['reason']}): "
                f"{waiting.get('message', '')}".strip()
            )
    for pod in pods:
        waiting = (trainer_status(pod).get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in _CONFIG_WAITING:
            detail = redact(waiting.get("message", "")).strip()
            return r.CONFIG_ERROR, (
                f"pod {pod['metadata']['name']} cannot start its trainer ({waiting['reason']}): {detail}; "
                f"{r.FAILURE_HINTS[r.CONFIG_ERROR]}"
            )
    running = sum(1 for p in pods if _is_running(p))
    return r.POD_PENDING, f"{running} of {nodes} trainer pods running"


class _StatusDraft:
    """The status being derived: the fields, and conditions set with one timestamp and generation."""

    def __init__(self, previous: dict[str, Any], *, generation: int | None, now: datetime) -> None:
        self.stamp = timestamp(now)
        self.generation = generation
        self.conditions = list(previous.get("conditions") or [])
        self.out: dict[str, Any] = {}

    def cond(self, type_: str, status: bool, reason: str, message: str) -> None:
        self.conditions = set_condition(
            self.conditions, type_, status, reason, message, now=self.stamp, generation=self.generation
        )

    def finish(self, phase: str, reason: str, message: str) -> dict[str, Any]:
        self.out.update(phase=phase, reason=reason, message=message, conditions=self.conditions)
        return self.out


def derive_status(
    spec: FineTuneJobSpec,
    previous: dict[str, Any],
    observed: Observed,
    *,
    job_name: str,
    generation: int | None,
    now: datetime,
) -> dict[str, Any]:
    """The status fields this module owns, computed afresh; callers write only what changed."""
    draft = _StatusDraft(previous, generation=generation, now=now)
    draft.out.update(
        jobName=job_name,
        gpus=spec.total_gpus,
        queue=spec.scheduling.queue_name,
        observedGeneration=generation,
        startTime=previous.get("startTime"),
        completionTime=previous.get("completionTime"),
        retries=previous.get("retries", 0),
        failure=previous.get("failure"),
    )
    if previous.get("restarts") is not None:
        draft.out.update(restarts=previous["restarts"], lastRestart=previous.get("lastRestart"))
    # A finished job stays finished: its children may be garbage-collected later.
    if previous.get("phase") in r.TERMINAL_PHASES:
        return draft.finish(previous["phase"], previous.get("reason", ""), previous.get("message", ""))
    job = observed.job
    if job is None:
        draft.cond(r.COND_RUNNING, False, r.POD_PENDING, "the training Job is being created")
        return draft.finish(r.PENDING, r.CREATED, "creating the training Job")
    if spec.resources.nodes == 1:
        # The Job controller retries a single pod and counts it; a gang's restarts are counted in gang.py.
        draft.out["retries"] = max(draft.out["retries"] or 0, int((job.get("status") or {}).get("failed") or 0))
    finished = _finished(draft, spec, previous, observed)
    if finished is not None:
        return finished
    draft.cond(r.COND_FAILED, False, r.NOT_FINISHED, "no failure")
    draft.cond(r.COND_SUCCEEDED, False, r.NOT_FINISHED, "training has not finished")
    if (job.get("spec") or {}).get("suspend"):
        return _suspended(draft, spec)
    if find_condition(draft.conditions, r.COND_SUSPENDED):
        draft.cond(r.COND_SUSPENDED, False, r.RESUMED, "not suspended")
    queue = spec.scheduling.queue_name
    if queue:
        draft.cond(r.COND_QUEUED, False, r.ADMITTED_BY_QUEUE, f"admitted by Kueue from LocalQueue {queue}")
        draft.cond(r.COND_ADMITTED, True, r.ADMITTED_BY_QUEUE, f"admitted by Kueue from LocalQueue {queue}")
    else:
        draft.cond(r.COND_ADMITTED, True, r.NO_QUEUE, "no queue: admitted on creation")
    return _running_or_starting(draft, spec, previous, observed)


def _finished(
    draft: _StatusDraft, spec: FineTuneJobSpec, previous: dict[str, Any], observed: Observed
) -> dict[str, Any] | None:
    """Succeeded or Failed, as the Job's conditions say (or Restarting, for a multi-rank job that lost a
    rank and has retries left); None while it has neither."""
    job, out = observed.job or {}, draft.out
    job_status = job.get("status") or {}
    if job_condition(job, "Complete") or job_condition(job, "SuccessCriteriaMet"):
        out["completionTime"] = job_status.get("completionTime") or draft.stamp
        out["startTime"] = out["startTime"] or job_status.get("startTime") or draft.stamp
        draft.cond(r.COND_RUNNING, False, r.COMPLETED, "training finished")
        draft.cond(r.COND_SUCCEEDED, True, r.COMPLETED, "training finished and the model was written")
        draft.cond(r.COND_FAILED, False, r.COMPLETED, "training finished")
        return draft.finish(r.SUCCEEDED, r.COMPLETED, f"training finished; model written to {spec.output.uri}")
    if job_condition(job, "Failed") or job_condition(job, "FailureTarget"):
        verdict = gang_verdict(spec, previous, job, observed.pods)
        if verdict is not None and (verdict.restart or not verdict.settled):
            return _restarting(draft, spec, verdict)
        failure = classify_failure(job, observed.pods) if verdict is None else verdict.culprit.failure
        if verdict is not None:
            failure = dataclasses.replace(failure, message=final_message(verdict, spec)[:MAX_FAILURE_MESSAGE])
        out["failure"] = failure.as_status()
        out["completionTime"] = draft.stamp
        draft.cond(r.COND_RUNNING, False, failure.reason, failure.message)
        draft.cond(r.COND_SUCCEEDED, False, failure.reason, "training did not finish")
        draft.cond(r.COND_FAILED, True, failure.reason, failure.message)
        return draft.finish(r.FAILED, failure.reason, failure.message)
    return None


def _restarting(draft: _StatusDraft, spec: FineTuneJobSpec, verdict: GangVerdict) -> dict[str, Any]:
    """A multi-rank job whose Job failed with one rank: Starting again, saying which rank, pod and why
    (or, until the rank to blame has stopped, that the ranks are stopping)."""
    out = draft.out
    if not verdict.settled:
        message = stopping_message(verdict, spec)
        draft.cond(r.COND_RUNNING, False, r.RESTARTING, message)
        return draft.finish(r.STARTING, r.RESTARTING, message)
    out.update(retries=verdict.retries, restarts=verdict.restarts)
    if not verdict.recorded:
        out["lastRestart"] = verdict.culprit.as_status(draft.stamp)
    message = restart_message(verdict, spec)[:MAX_FAILURE_MESSAGE]
    draft.cond(r.COND_RUNNING, False, r.RESTARTING, message)
    return draft.finish(r.STARTING, r.RESTARTING, message)


def _suspended(draft: _StatusDraft, spec: FineTuneJobSpec) -> dict[str, Any]:
    """A suspended Job: by the user, waiting for Kueue, or by someone else (about to be resumed)."""
    draft.cond(r.COND_RUNNING, False, r.COND_SUSPENDED, "the training Job is suspended")
    if spec.run_policy.suspend:
        message = "suspended by runPolicy.suspend; set it to false to resume"
        draft.cond(r.COND_SUSPENDED, True, r.SUSPENDED_BY_USER, message)
        return draft.finish(r.SUSPENDED, r.SUSPENDED_BY_USER, "suspended by runPolicy.suspend; its pods were released")
    queue = spec.scheduling.queue_name
    if queue:
        message = f"waiting for admission by Kueue in LocalQueue {queue}"
        draft.cond(r.COND_QUEUED, True, r.WAITING_FOR_ADMISSION, message)
        draft.cond(r.COND_ADMITTED, False, r.WAITING_FOR_ADMISSION, message)
        return draft.finish(r.QUEUED, r.WAITING_FOR_ADMISSION, message)
    draft.cond(r.COND_SUSPENDED, True, r.COND_SUSPENDED, "the training Job is suspended")
    return draft.finish(r.SUSPENDED, r.COND_SUSPENDED, "the training Job is suspended")


def _running_or_starting(
    draft: _StatusDraft, spec: FineTuneJobSpec, previous: dict[str, Any], observed: Observed
) -> dict[str, Any]:
    """Running once every rank's pod runs (or finished); else Starting, with the best reason why not."""
    out, nodes, pods = draft.out, spec.resources.nodes, observed.pods
    live = live_pods(pods)
    running = sum(1 for p in live if _is_running(p))
    succeeded = sum(1 for p in pods if (p.get("status") or {}).get("phase") == "Succeeded")
    if succeeded and running + succeeded >= nodes:
        # Ranks that exited 0 are done, not "starting": the Job controller has yet to mark it Complete.
        out["startTime"] = out["startTime"] or draft.stamp
        was_running = find_condition(previous.get("conditions"), r.COND_RUNNING)
        if previous.get("phase") == r.RUNNING and was_running:
            # Seconds before the Job completes: say nothing new, so this costs no status write (nor event).
            draft.cond(r.COND_RUNNING, True, was_running["reason"], was_running["message"])
            return draft.finish(r.RUNNING, previous.get("reason", r.PODS_RUNNING), previous.get("message", ""))
        message = f"{succeeded} of {nodes} trainer pods finished; waiting for the Job to complete"
        draft.cond(r.COND_RUNNING, True, r.FINISHING, message)
        return draft.finish(r.RUNNING, r.FINISHING, message)
    if running >= nodes:
        out["startTime"] = out["startTime"] or draft.stamp
        message = f"all {nodes} trainer pods running" if nodes > 1 else "the trainer pod is running"
        draft.cond(r.COND_RUNNING, True, r.PODS_RUNNING, message)
        return draft.finish(r.RUNNING, r.PODS_RUNNING, message)
    reason, message = _why_not_running(live, nodes, observed.failed_creates)
    last_restart = out.get("lastRestart") or {}
    if reason == r.POD_PENDING and last_restart and previous.get("reason") == r.RESTARTING:
        # The new gang is on its way: keep saying why it restarted until all its ranks run.
        reason = r.RESTARTING
        message = (
            f"restart {out.get('restarts')} after rank {last_restart.get('rank')} ended "
            f"({last_restart.get('reason')}): {message}"
        )
    elif out["retries"] and reason == r.POD_PENDING:
        reason = r.RETRYING
        message = f"retry {out['retries']} of {spec.run_policy.backoff_limit}: {message}"
    draft.cond(r.COND_RUNNING, False, reason, message)
    return draft.finish(r.STARTING, reason, message)


def invalid_spec_status(
    message: str,
    previous: dict[str, Any],
    *,
    generation: int | None,
    now: datetime,
    reason: str = r.INVALID_SPEC,
) -> dict[str, Any]:
    """Failed before any pod ran: the spec is invalid (InvalidSpec), or the API server forbade the job's
    children (Forbidden). A changed spec tries again (reasons.SPEC_REFUSALS)."""
    stamp = timestamp(now)
    why = "the spec is invalid" if reason == r.INVALID_SPEC else "the API server forbade the job's children"
    conditions = list(previous.get("conditions") or [])
    conditions = set_condition(conditions, r.COND_FAILED, True, reason, message, now=stamp, generation=generation)
    conditions = set_condition(conditions, r.COND_SUCCEEDED, False, reason, why, now=stamp, generation=generation)
    conditions = set_condition(
        conditions, r.COND_RUNNING, False, reason, "no pods were created", now=stamp, generation=generation
    )
    return {
        "phase": r.FAILED,
        "reason": reason,
        "message": message,
        "conditions": conditions,
        "observedGeneration": generation,
        "completionTime": stamp,
        "failure": {"reason": reason, "message": message},
    }


def refused_spec_changed(previous: dict[str, Any], generation: int | None) -> bool:
    """A job that failed on its spec (invalid, or its children forbidden) whose spec has changed since."""
    return (
        previous.get("phase") == r.FAILED
        and previous.get("reason") in r.SPEC_REFUSALS
        and previous.get("observedGeneration") != generation
    )


def startup_deadline_exceeded(spec: FineTuneJobSpec, status: dict[str, Any], created: datetime, now: datetime) -> bool:
    """A job that was admitted (or created, without a queue) but never ran within startupDeadlineSeconds."""
    if status.get("phase") not in (r.PENDING, r.STARTING) or status.get("startTime"):
        return False
    admitted = find_condition(status.get("conditions"), r.COND_ADMITTED)
    since = (
        parse_timestamp(admitted.get("lastTransitionTime"))
        if admitted and admitted.get("status") == "True"
        else created
    )
    return (now - (since or created)).total_seconds() > spec.run_policy.startup_deadline_seconds


def startup_failure_status(status: dict[str, Any], *, generation: int | None, now: datetime) -> dict[str, Any]:
    """Fail a job that never started; keeps the scheduler's explanation when there is one."""
    stamp = timestamp(now)
    why = status.get("reason")
    reason = why if why in (r.UNSCHEDULABLE, r.IMAGE_PULL_FAILED, r.CONFIG_ERROR) else r.STARTUP_DEADLINE_EXCEEDED
    message = f"did not start within runPolicy.startupDeadlineSeconds: {status.get('message', '')}".rstrip(": ")
    hint = r.FAILURE_HINTS.get(reason)
    if hint and hint not in message:
        message = f"{message}; {hint}"
    conditions = list(status.get("conditions") or [])
    for type_, value in ((r.COND_FAILED, True), (r.COND_RUNNING, False), (r.COND_SUCCEEDED, False)):
        conditions = set_condition(conditions, type_, value, reason, message, now=stamp, generation=generation)
    return {
        "phase": r.FAILED,
        "reason": reason,
        "message": message,
        "conditions": conditions,
        "completionTime": stamp,
        "failure": {"reason": reason, "message": message},
    }


def ttl_expired(spec: FineTuneJobSpec, status: dict[str, Any], now: datetime) -> bool:
    ttl = spec.run_policy.ttl_seconds_after_finished
    finished = parse_timestamp(status.get("completionTime"))
    if ttl is None or finished is None or status.get("phase") not in r.TERMINAL_PHASES:
        return False
    return (now - finished).total_seconds() >= ttl


def status_changes(previous: dict[str, Any], derived: dict[str, Any]) -> dict[str, Any]:
    """Only the fields that differ: unchanged status is never rewritten."""
    return {k: v for k, v in derived.items() if previous.get(k) != v}


def apply_stall(
    derived: dict[str, Any], seconds_idle: float | None, threshold: float, *, generation: int | None, now: datetime
) -> bool:
    """Set the Stalled condition on a derived status; True when the job is stalled now.

    Stalled: a Running job whose step has not advanced (or that has reported nothing) for `threshold`
    seconds. Any other phase, or a moving step, clears it.
    """
    stalled = derived.get("phase") == r.RUNNING and seconds_idle is not None and seconds_idle >= threshold
    current = find_condition(derived.get("conditions"), r.COND_STALLED)
    if not stalled and current is None:
        return False
    minutes = int(threshold // 60)
    if stalled:
        reason, message = (
            r.NO_PROGRESS,
            f"the training step has not advanced for {minutes}m or more; check the trainer's log (ftjob logs)",
        )
    else:
        reason, message = (
            r.PROGRESSING,
            "training is progressing" if derived.get("phase") == r.RUNNING else "not running",
        )
    derived["conditions"] = set_condition(
        list(derived.get("conditions") or []),
        r.COND_STALLED,
        stalled,
        reason,
        message,
        now=timestamp(now),
        generation=generation,
    )
    return stalled


def ran_to_completion(spec: FineTuneJobSpec, status: dict[str, Any]) -> bool:
    """A Succeeded job whose trainer certainly ran all its planned steps.

    The trainer exits 0 only at max_steps or after early stopping (docs/pod-contract.md), so without
    early stopping a completed Job proves the final step even when its final progress report was lost
    (the operator was down during the trainer's last seconds).
    """
    return status.get("phase") == r.SUCCEEDED and spec.regularization.early_stopping is None


def completed_progress(spec: FineTuneJobSpec, progress: dict[str, Any] | None) -> dict[str, Any] | None:
    """status.progress of a job that ran to completion, when the stored one stops short; else None."""
    progress = dict(progress or {})
    total = progress.get("totalSteps") or spec.hyperparameters.max_steps
    if not total or (progress.get("step") == total and progress.get("percent") == 100):
        return None
    progress.update(step=total, totalSteps=total, percent=100, etaSeconds=0, eta="0s")
    return progress
