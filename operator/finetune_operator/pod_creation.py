"""Why a Job has fewer pods than it should (pure): the Job controller's FailedCreate events.

When admission refuses a pod (a ResourceQuota used up, a PriorityClass that does not exist, Pod Security,
a LimitRange), the Job simply has no pod; the reason is only in the Events the Job controller posts on
the Job: `Error creating: pods "x" is forbidden: exceeded quota: ...`. The operator lists those Events
(field-selected by the Job's uid and reason) while pods are missing, and says what they say.
"""

from __future__ import annotations

from typing import Any

from . import reasons as r
from .redaction import redact

MAX_MESSAGE = 1024


def _condition_true(job: dict[str, Any], type_: str) -> bool:
    return any(
        c.get("type") == type_ and c.get("status") == "True" for c in (job.get("status") or {}).get("conditions") or ()
    )


def pods_missing(job: dict[str, Any] | None, live_pods: int, nodes: int) -> bool:
    """An active, unsuspended, unfinished Job with fewer live pods than ranks: worth asking why."""
    if job is None or (job.get("spec") or {}).get("suspend"):
        return False
    if any(_condition_true(job, c) for c in ("Complete", "Failed", "FailureTarget", "SuccessCriteriaMet")):
        return False
    return live_pods < nodes


def ask_again_after(age_seconds: float) -> float:
    """How long until the operator asks again why pods are missing, for a job `age_seconds` old: every
    second at first, then less often (a quarter of the job's age, at most every 30 s). Refusals show up
    within a second of the apply; a Job that waits minutes for its pods costs a list per 30 s, not one
    per reconcile."""
    return min(30.0, max(1.0, age_seconds / 4))


def _when(event: dict[str, Any]) -> str:
    return event.get("lastTimestamp") or event.get("eventTime") or event.get("firstTimestamp") or ""


def _hint(detail: str) -> str:
    if "exceeded quota" in detail or "must specify" in detail:
        return (
            "the namespace's ResourceQuota has no room for the pods: wait for other work to finish, ask for more "
            "quota, or lower spec.resources"
        )
    if "PriorityClass" in detail:
        return "create that PriorityClass or fix spec.scheduling.priorityClassName"
    if "violates PodSecurity" in detail:
        return "the namespace enforces a Pod Security level the trainer pods do not meet"
    return "an admission check refused the pods: fix what the message names"


def creation_failure(events: list[dict[str, Any]], pods: list[dict[str, Any]]) -> tuple[str, str] | None:
    """(reason, message) from the newest FailedCreate event newer than every pod the Job has; None if none.

    Older events describe refusals a pod created since has answered (quota freed up, a retry).
    """
    newest_pod = max((p["metadata"].get("creationTimestamp") or "" for p in pods), default="")
    current = [e for e in events if e.get("reason") == "FailedCreate" and _when(e) >= newest_pod]
    if not current:
        return None
    event = max(current, key=_when)
    # client-go's recorder folds 10 similar messages into one: "(combined from similar events): Error creating: ..."
    detail = (event.get("message") or "").removeprefix("(combined from similar events): ")
    detail = detail.removeprefix("Error creating: ").strip()
    attempts = int(event.get("count") or 1)
    tried = f" ({attempts} attempts)" if attempts > 1 else ""
    message = redact(f"the Job cannot create its pods{tried}: {detail}; {_hint(detail)}")
    return r.PODS_CANNOT_BE_CREATED, message[:MAX_MESSAGE]
