"""Why a training run failed, from its Job's Failed condition and its failed pods (pure).

The reason is one of reasons.FAILURE_REASONS, taken in this order: the Job's deadline; the newest
failed pod's own failure (its termination message, an OOM kill, a documented exit code); a disruption
(node lost, preemption) only when no trainer failed by itself. Messages are redacted and bounded, and a
failed pod's log tail is added once, as the job turns Failed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from . import reasons as r
from .conditions import find_condition
from .names import TRAINER_CONTAINER
from .redaction import redact, tail

MAX_FAILURE_MESSAGE = 1024
# status.failure.logTail: enough to see the error and what led to it, small enough for every `kubectl get -o yaml`.
LOG_TAIL_LINES = 40
LOG_TAIL_BYTES = 4096
# DisruptionTarget reasons that mean the pod's node went away (Kubernetes' PodGC and taint manager).
_NODE_GONE_DISRUPTIONS = ("DeletionByPodGC", "DeletionByTaintManager")


def trainer_status(pod: dict[str, Any]) -> dict[str, Any]:
    for status in (pod.get("status") or {}).get("containerStatuses") or ():
        if status.get("name") == TRAINER_CONTAINER:
            return status
    statuses = (pod.get("status") or {}).get("containerStatuses") or [{}]
    return statuses[0]


def job_condition(job: dict[str, Any], type_: str) -> dict[str, Any] | None:
    condition = find_condition((job.get("status") or {}).get("conditions"), type_)
    return condition if condition and condition.get("status") == "True" else None


@dataclass(frozen=True)
class Failure:
    reason: str
    message: str
    exit_code: int | None = None
    pod: str | None = None
    log_tail: str | None = None

    def as_status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"reason": self.reason, "message": self.message}
        if self.exit_code is not None:
            out["exitCode"] = self.exit_code
        if self.pod:
            out["pod"] = self.pod
        if self.log_tail:
            out["logTail"] = self.log_tail
        return out


def failure_log_tail(log: str) -> str:
    """What of a failed trainer's log goes into status.failure.logTail: its last lines, credentials removed, bounded."""
    # Redact before cutting: a cut through a token could leave a recognisable half of it behind.
    return tail(
        redact(tail(log, max_lines=LOG_TAIL_LINES, max_bytes=4 * LOG_TAIL_BYTES)),
        max_lines=LOG_TAIL_LINES,
        max_bytes=LOG_TAIL_BYTES,
    )


def with_log_tail(failure: dict[str, Any], log: str | None) -> dict[str, Any]:
    """status.failure with the failed pod's log tail added (unchanged when there is no log)."""
    if not log:
        return failure
    return {**failure, "logTail": failure_log_tail(log)}


def _termination(pod: dict[str, Any]) -> dict[str, Any]:
    status = trainer_status(pod)
    return (status.get("state") or {}).get("terminated") or (status.get("lastState") or {}).get("terminated") or {}


def _disruption(pod: dict[str, Any]) -> dict[str, Any] | None:
    condition = find_condition((pod.get("status") or {}).get("conditions"), "DisruptionTarget")
    return condition if condition and condition.get("status") == "True" else None


def _lost_node(pod: dict[str, Any]) -> bool:
    disruption = _disruption(pod) or {}
    return (pod.get("status") or {}).get("reason") == "NodeLost" or disruption.get("reason") in _NODE_GONE_DISRUPTIONS


def disrupted(pod: dict[str, Any]) -> bool:
    """The pod ended by a disruption (preemption, eviction, a lost node): not the trainer's doing."""
    return _disruption(pod) is not None or _lost_node(pod)


def _disruption_failure(pod: dict[str, Any]) -> Failure:
    disruption = _disruption(pod) or {}
    name = pod["metadata"]["name"]
    if _lost_node(pod):
        node = (pod.get("spec") or {}).get("nodeName")
        detail = f"pod {name} was lost with its node{f' {node}' if node else ''}"
        reason = r.NODE_LOST
    else:
        why = ": ".join(x for x in (disruption.get("reason"), disruption.get("message")) if x)
        detail = f"pod {name} was disrupted{f' ({why})' if why else ''}"
        reason = r.PREEMPTED
    return Failure(reason, redact(f"{detail}; {r.FAILURE_HINTS[reason]}")[:MAX_FAILURE_MESSAGE], None, name)


def classify_failure(job: dict[str, Any], pods: list[dict[str, Any]]) -> Failure:
    """Why a training Job failed, from the Job's Failed condition and the failed pods' exits."""
    failed_condition = job_condition(job, "Failed") or job_condition(job, "FailureTarget") or {}
    job_reason = failed_condition.get("reason", "")
    if job_reason == "DeadlineExceeded":
        return Failure(
            r.DEADLINE_EXCEEDED,
            "the job ran longer than runPolicy.activeDeadlineSeconds; " + r.FAILURE_HINTS[r.DEADLINE_EXCEEDED],
        )
    failed = [p for p in pods if (p.get("status") or {}).get("phase") == "Failed"]
    # The newest failed pod tells the story of the last attempt.
    failed.sort(key=lambda p: _termination(p).get("finishedAt") or "")
    # Disrupted pods do not count against backoffLimit (podFailurePolicy Ignore), so a trainer's own
    # failure explains the Job's failure better; a disruption is the reason only when nothing else failed.
    own = [p for p in failed if not disrupted(p)]
    if not own and failed:
        return _disruption_failure(failed[-1])
    if not own:
        message = redact(failed_condition.get("message") or "the training Job failed")
        return Failure(r.TRAINER_CRASHED, message[:MAX_FAILURE_MESSAGE])
    return pod_failure(own[-1])


def finished_at(pod: dict[str, Any]) -> str:
    """When the pod's trainer ended (RFC 3339, sortable), or "" when unknown."""
    return _termination(pod).get("finishedAt") or ""


def reported_reason(pod: dict[str, Any]) -> str | None:
    """The reason in the trainer's own termination message, if it wrote one."""
    reported = _reported_failure(_termination(pod).get("message", ""))
    return reported[0] if reported else None


def pod_failure(pod: dict[str, Any]) -> Failure:
    """Why one failed pod's trainer ended: a disruption, its own report, an OOM kill or its exit code."""
    if disrupted(pod):
        return _disruption_failure(pod)
    terminated = _termination(pod)
    exit_code = terminated.get("exitCode")
    reported = _reported_failure(terminated.get("message", ""))
    if reported and reported[0] in r.FAILURE_REASONS:
        reason, detail = reported
    elif terminated.get("reason") == "OOMKilled":
        reason, detail = r.OUT_OF_MEMORY, "the trainer was killed for using more memory than its limit"
    elif exit_code in r.EXIT_CODE_REASONS:
        reason, detail = r.EXIT_CODE_REASONS[exit_code], (terminated.get("message") or "").strip()
    else:
        reason = r.TRAINER_CRASHED
        detail = (terminated.get("message") or "").strip() or f"the trainer exited with code {exit_code}"
    hint = r.FAILURE_HINTS.get(reason)
    message = redact(f"{detail}; {hint}" if hint and detail else (detail or hint or reason))
    return Failure(reason, message[:MAX_FAILURE_MESSAGE], exit_code, pod["metadata"]["name"])


def _reported_failure(message: str) -> tuple[str, str] | None:
    """The trainer's termination message is a JSON object {"reason", "message"} (docs/pod-contract.md)."""
    try:
        report = json.loads(message)
    except (ValueError, TypeError):
        return None
    if isinstance(report, dict) and isinstance(report.get("reason"), str):
        return report["reason"], str(report.get("message", ""))
    return None
