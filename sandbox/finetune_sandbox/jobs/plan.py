"""The Job controller's decisions, as a pure function of (Job, its pods, now).

Follows the real batch/v1 Job controller (Kubernetes 1.31+): pods carry the `batch.kubernetes.io/job-tracking`
finalizer until their outcome is counted into the Job's status; failures first set the `FailureTarget`
condition, delete the remaining pods and only then `Failed`; success sets `SuccessCriteriaMet` then `Complete`.
Not modelled: backoffLimitPerIndex/FailIndex, successPolicy, the exponential delay before re-creating failed pods
(the sandbox re-creates at once so tests stay fast), elastic indexed jobs.
"""

from __future__ import annotations

import copy
import datetime as dt
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from ..conditions import condition_is_true, find_condition, format_time, parse_time, set_condition

TRACKING_FINALIZER = "batch.kubernetes.io/job-tracking"
LABEL_JOB_NAME = "batch.kubernetes.io/job-name"
LABEL_CONTROLLER_UID = "batch.kubernetes.io/controller-uid"
LABEL_COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
LEGACY_LABEL_JOB_NAME = "job-name"
LEGACY_LABEL_CONTROLLER_UID = "controller-uid"
ANNOTATION_COMPLETION_INDEX = LABEL_COMPLETION_INDEX
ENV_COMPLETION_INDEX = "JOB_COMPLETION_INDEX"
DEFAULT_BACKOFF_LIMIT = 6

TERMINAL_PHASES = ("Succeeded", "Failed")


@dataclass
class JobPlan:
    """What to do for one Job: apply deletes, creates, then the status, then release counted pods."""

    create: list[dict] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)
    release: list[str] = field(default_factory=list)
    status: dict = field(default_factory=dict)
    requeue_after: float | None = None
    delete_job: bool = False


def random_suffix(length: int = 5) -> str:
    # Same alphabet as Kubernetes' generateName (no vowels, no ambiguous characters).
    return "".join(random.choices("bcdfghjklmnpqrstvwxz2456789", k=length))


def is_finished(job: dict) -> bool:
    conditions = (job.get("status") or {}).get("conditions")
    return condition_is_true(conditions, "Complete") or condition_is_true(conditions, "Failed")


def is_terminal(pod: dict) -> bool:
    return (pod.get("status") or {}).get("phase") in TERMINAL_PHASES


def is_terminating(pod: dict) -> bool:
    return bool((pod.get("metadata") or {}).get("deletionTimestamp")) and not is_terminal(pod)


def is_active(pod: dict) -> bool:
    return not is_terminal(pod) and not (pod.get("metadata") or {}).get("deletionTimestamp")


def is_tracked(pod: dict) -> bool:
    return TRACKING_FINALIZER in ((pod.get("metadata") or {}).get("finalizers") or [])


def pod_index(pod: dict) -> int | None:
    meta = pod.get("metadata") or {}
    raw = (meta.get("annotations") or {}).get(ANNOTATION_COMPLETION_INDEX)
    if raw is None:
        raw = (meta.get("labels") or {}).get(LABEL_COMPLETION_INDEX)
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


def format_indexes(indexes: set[int]) -> str:
    """Kubernetes' compressed interval form: {0,1,2,4} -> "0-2,4"."""
    parts: list[str] = []
    ordered = sorted(indexes)
    start = prev = None
    for index in ordered + [None]:
        if start is not None and (index is None or index != prev + 1):
            parts.append(str(start) if start == prev else f"{start}-{prev}")
            start = None
        if index is not None and start is None:
            start = index
        prev = index
    return ",".join(parts)


def parse_indexes(text: str | None) -> set[int]:
    indexes: set[int] = set()
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            low, high = part.split("-", 1)
            indexes.update(range(int(low), int(high) + 1))
        else:
            indexes.add(int(part))
    return indexes


def match_pod_failure_policy(policy: dict | None, pod: dict) -> tuple[str | None, str]:
    """The action ("FailJob", "Ignore", "Count", ...) of the first matching rule and the real controller's message."""
    meta = pod.get("metadata") or {}
    pod_ref = f"{meta.get('namespace')}/{meta.get('name')}"
    status = pod.get("status") or {}
    for index, rule in enumerate((policy or {}).get("rules") or []):
        action = rule.get("action")
        on_exit = rule.get("onExitCodes")
        if on_exit:
            statuses = (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or [])
            for container in statuses:
                terminated = (container.get("state") or {}).get("terminated")
                # Like the real controller, only non-zero exit codes can match (so NotIn [..] skips successes).
                if not terminated or not terminated.get("exitCode"):
                    continue
                if on_exit.get("containerName") and on_exit["containerName"] != container.get("name"):
                    continue
                code = terminated["exitCode"]
                in_values = code in (on_exit.get("values") or [])
                if in_values == (on_exit.get("operator", "In") == "In"):
                    return action, (
                        f"Container {container.get('name')} for pod {pod_ref} failed with exit code {code} "
                        f"matching {action} rule at index {index}"
                    )
        for pattern in rule.get("onPodConditions") or []:
            condition = find_condition(status.get("conditions"), pattern.get("type", ""))
            if condition and condition.get("status") == pattern.get("status", "True"):
                return (
                    action,
                    f"Pod {pod_ref} has condition {pattern.get('type')} matching {action} rule at index {index}",
                )
    return None, ""


def build_pod(job: dict, index: int | None, suffix: str) -> dict:
    """A pod from the Job's template, labelled, annotated and owned like the real controller's pods."""
    meta = job["metadata"]
    job_name, uid = meta["name"], meta.get("uid", "")
    template = copy.deepcopy((job.get("spec") or {}).get("template") or {})
    template_meta = template.get("metadata") or {}
    labels = {
        **(template_meta.get("labels") or {}),
        LABEL_JOB_NAME: job_name,
        LEGACY_LABEL_JOB_NAME: job_name,
        LABEL_CONTROLLER_UID: uid,
        LEGACY_LABEL_CONTROLLER_UID: uid,
    }
    annotations = dict(template_meta.get("annotations") or {})
    spec = template.get("spec") or {}
    if index is not None:
        labels[LABEL_COMPLETION_INDEX] = str(index)
        annotations[ANNOTATION_COMPLETION_INDEX] = str(index)
        spec["hostname"] = f"{job_name}-{index}"
        index_env = {
            "name": ENV_COMPLETION_INDEX,
            "valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{ANNOTATION_COMPLETION_INDEX}']"}},
        }
        for container in (spec.get("initContainers") or []) + (spec.get("containers") or []):
            env = container.setdefault("env", [])
            if not any(variable.get("name") == ENV_COMPLETION_INDEX for variable in env):
                env.append(copy.deepcopy(index_env))
    prefix = generate_name(job_name, index)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            # The controller sends generateName only: the API server picks the suffix (and names refused pods).
            "name": prefix + suffix,
            "generateName": prefix,
            "namespace": meta.get("namespace", "default"),
            "labels": labels,
            "annotations": annotations,
            "finalizers": [TRACKING_FINALIZER],
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": job_name,
                    "uid": uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": spec,
    }


def generate_name(job_name: str, index: int | None) -> str:
    """The pods' generateName: `JOB-` or, for an Indexed Job, `JOB-INDEX-` cut to fit 63 characters."""
    if index is None:
        return f"{job_name}-"
    tail = f"-{index}-"
    return (job_name if len(job_name) + len(tail) <= 63 else job_name[: 63 - len(tail)]) + tail


def owned_by(pod: dict, job: dict) -> bool:
    uid = job["metadata"].get("uid")
    refs = (pod.get("metadata") or {}).get("ownerReferences") or []
    return any(ref.get("uid") == uid and ref.get("controller") for ref in refs)


def plan_job(
    job: dict,
    pods: list[dict],
    now: dt.datetime,
    *,
    suffix: Callable[[], str] = random_suffix,
) -> JobPlan:
    """Decide creates, deletes, releases and the new status of `job`, given all its pods (in any state)."""
    spec = job.get("spec") or {}
    old_status = job.get("status") or {}
    status = copy.deepcopy(old_status)
    conditions = list(status.get("conditions") or [])
    pods = [pod for pod in pods if owned_by(pod, job)]
    plan = JobPlan()
    indexed = spec.get("completionMode") == "Indexed"

    if is_finished(job):
        # Counts are final; let go of whatever is left and wait for the TTL.
        plan.release = [pod["metadata"]["name"] for pod in pods if is_tracked(pod)]
        plan.delete = [pod["metadata"]["name"] for pod in pods if is_active(pod)]
        plan.status = status
        _plan_ttl(job, now, plan)
        return plan

    policy = spec.get("podFailurePolicy")
    replace_only_failed = spec.get("podReplacementPolicy") == "Failed" or bool(policy)
    succeeded = int(status.get("succeeded") or 0)
    failed = int(status.get("failed") or 0)
    completed = parse_indexes(status.get("completedIndexes"))
    failure: tuple[str, str] | None = None
    existing_target = find_condition(conditions, "FailureTarget")
    if existing_target and existing_target.get("status") == "True":
        failure = (existing_target.get("reason", ""), existing_target.get("message", ""))

    # 1. Count pods whose outcome is known but not yet in the status.
    for pod in pods:
        if not is_tracked(pod):
            continue
        name = pod["metadata"]["name"]
        phase = (pod.get("status") or {}).get("phase")
        if phase == "Succeeded":
            index = pod_index(pod)
            if not indexed:
                succeeded += 1
            elif index is not None and index not in completed and index < int(spec.get("completions") or 0):
                completed.add(index)
                succeeded += 1
            plan.release.append(name)
        elif phase == "Failed":
            action, message = match_pod_failure_policy(policy, pod)
            if action == "Ignore":
                pass
            else:
                failed += 1
                if action == "FailJob" and failure is None:
                    failure = ("PodFailurePolicy", message)
            plan.release.append(name)
        elif is_terminating(pod) and not replace_only_failed:
            # Without a podFailurePolicy a deleted pod counts as failed as soon as it starts terminating.
            failed += 1
            plan.release.append(name)

    active = [pod for pod in pods if is_active(pod)]
    terminating = [pod for pod in pods if is_terminating(pod)]
    suspended = bool(spec.get("suspend"))

    # 2. Terminal verdicts.
    backoff_limit = spec.get("backoffLimit", DEFAULT_BACKOFF_LIMIT)
    if failure is None and failed > backoff_limit:
        failure = ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
    deadline = spec.get("activeDeadlineSeconds")
    start = parse_time(status.get("startTime"))
    if failure is None and deadline is not None and start is not None and not suspended:
        remaining = (start + dt.timedelta(seconds=deadline) - now).total_seconds()
        if remaining <= 0:
            failure = ("DeadlineExceeded", "Job was active longer than specified deadline")
        else:
            plan.requeue_after = remaining

    completions = spec.get("completions")
    if indexed:
        success = completions is not None and len(completed) >= int(completions)
    elif completions is not None:
        success = succeeded >= int(completions)
    else:
        success = succeeded > 0 and not active
    success = success or condition_is_true(conditions, "SuccessCriteriaMet")

    created = 0
    if failure is not None:
        reason, message = failure
        conditions = set_condition(conditions, "FailureTarget", "True", reason, message, now, probe_time=True)
        plan.delete = [pod["metadata"]["name"] for pod in active]
        if not active and not terminating:
            conditions = set_condition(conditions, "Failed", "True", reason, message, now, probe_time=True)
        plan.requeue_after = None
    elif success:
        message = "Reached expected number of succeeded pods"
        conditions = set_condition(
            conditions, "SuccessCriteriaMet", "True", "CompletionsReached", message, now, probe_time=True
        )
        plan.delete = [pod["metadata"]["name"] for pod in active]
        if not active and not terminating:
            conditions = set_condition(
                conditions, "Complete", "True", "CompletionsReached", message, now, probe_time=True
            )
            status["completionTime"] = format_time(now)
        plan.requeue_after = None
    elif suspended:
        plan.delete = [pod["metadata"]["name"] for pod in active]
        conditions = set_condition(
            conditions, "Suspended", "True", "JobSuspended", "Job suspended", now, probe_time=True
        )
        plan.requeue_after = None
    else:
        if condition_is_true(conditions, "Suspended"):
            conditions = set_condition(
                conditions, "Suspended", "False", "JobResumed", "Job resumed", now, probe_time=True
            )
            # The deadline measures continuous activity, so it restarts on resume (as the real controller does).
            status["startTime"] = format_time(now)
            if deadline is not None:
                plan.requeue_after = float(deadline)
        if not status.get("startTime"):
            status["startTime"] = format_time(now)
            if deadline is not None:
                plan.requeue_after = float(deadline)
        blocking = active + (terminating if replace_only_failed else [])
        plan.create = _pods_to_create(job, blocking, completed, succeeded, indexed, suffix)
        created = len(plan.create)

    # Pods being released now are counted; pods deleted now stop being active.
    deleted = set(plan.delete)
    still_active = [pod for pod in active if pod["metadata"]["name"] not in deleted]
    status["active"] = len(still_active) + created
    status["ready"] = sum(1 for pod in still_active if _pod_ready(pod))
    status["terminating"] = len(terminating) + len(deleted)
    status["succeeded"] = succeeded
    status["failed"] = failed
    if indexed:
        status["completedIndexes"] = format_indexes(completed)
    status["conditions"] = conditions
    plan.status = status
    return plan


def _pods_to_create(
    job: dict,
    blocking: list[dict],
    completed: set[int],
    succeeded: int,
    indexed: bool,
    suffix: Callable[[], str],
) -> list[dict]:
    spec = job.get("spec") or {}
    parallelism = int(spec.get("parallelism", 1))
    completions = spec.get("completions")
    if indexed:
        busy = {pod_index(pod) for pod in blocking}
        wanted = [i for i in range(int(completions or 0)) if i not in completed and i not in busy]
        slots = max(0, parallelism - len(blocking))
        return [build_pod(job, index, suffix()) for index in wanted[:slots]]
    if completions is None:
        # Work-queue mode: once any pod succeeded, no new pods start.
        want = 0 if succeeded > 0 else parallelism - len(blocking)
    else:
        want = min(parallelism, int(completions) - succeeded) - len(blocking)
    return [build_pod(job, None, suffix()) for _ in range(max(0, want))]


def _pod_ready(pod: dict) -> bool:
    return condition_is_true((pod.get("status") or {}).get("conditions"), "Ready")


def _plan_ttl(job: dict, now: dt.datetime, plan: JobPlan) -> None:
    ttl = (job.get("spec") or {}).get("ttlSecondsAfterFinished")
    if ttl is None:
        return
    status = job.get("status") or {}
    finished_at = parse_time(status.get("completionTime"))
    if finished_at is None:
        failed = find_condition(status.get("conditions"), "Failed")
        finished_at = parse_time((failed or {}).get("lastTransitionTime"))
    if finished_at is None:
        finished_at = now
    remaining = (finished_at + dt.timedelta(seconds=ttl) - now).total_seconds()
    if remaining <= 0:
        plan.delete_job = True
    else:
        plan.requeue_after = remaining
