"""Gang restarts of a multi-rank job (pure): which rank ended the attempt, and whether the ranks start again.

Ranks train in lockstep. When one fails or disappears the others cannot go on: they wait in a collective
until its timeout (30 minutes by default), or fail themselves once its connection drops. So a multi-rank
Job fails as a whole at its first rank failure (builders.job.gang_pod_failure_policy: the Job controller
then stops the other ranks at once), and the operator sends a new Job whose ranks all resume from the
newest complete checkpoint, as JobSet's failure policy does for its child Jobs.

A restart counts once against runPolicy.backoffLimit however many ranks ended with it, and not at all
when a disruption (preemption, eviction, a lost node) caused it. Bad data (InvalidData) and the job's
deadline are final. The rank to blame is the first to end on its own: ranks whose trainer reports that
another rank ended them (reasons.FOLLOWER_REASONS) are skipped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from . import reasons as r
from .failure import Failure, disrupted, finished_at, job_condition, pod_failure, reported_reason
from .spec import FineTuneJobSpec

COMPLETION_INDEX_LABEL = "batch.kubernetes.io/job-completion-index"
# Failures no restart can fix.
FINAL_REASONS = r.FINAL_TRAINER_REASONS
# The Job controller names the pod whose failure matched a FailJob rule: "Container trainer for pod NS/NAME
# failed with exit code 143 matching FailJob rule at index 1", "Pod NS/NAME has condition DisruptionTarget ...".
_POLICY_POD = re.compile(r"\bpod ([a-z0-9.-]+)/([a-z0-9.-]+)", re.IGNORECASE)
_POLICY_EXIT = re.compile(r"failed with exit code (\d+)")
# An Indexed Job's pod: JOB-INDEX-SUFFIX.
_INDEXED_POD = re.compile(r"-(\d+)-[a-z0-9]{5}$")
# SIGTERM's exit code: a pod stopped without a disruption (deleted).
_SIGTERM_EXIT = 143


@dataclass(frozen=True)
class RankFailure:
    """The rank whose end ended a multi-rank attempt, and whether it counts against backoffLimit."""

    rank: int | None
    failure: Failure
    counted: bool
    job_uid: str
    # The rank reports that another rank ended it: the one to blame has not finished stopping yet.
    follower: bool = False

    def summary(self) -> str:
        who = f"rank {self.rank}" if self.rank is not None else "a rank"
        pod = f" (pod {self.failure.pod})" if self.failure.pod else ""
        verb = "was disrupted" if not self.counted else "failed"
        return f"{who}{pod} {verb}: {self.failure.reason}"

    def as_status(self, stamp: str) -> dict[str, Any]:
        """status.lastRestart (its log tail is added when the restart is applied)."""
        out: dict[str, Any] = {
            "time": stamp,
            "reason": self.failure.reason,
            "message": self.failure.message,
            "counted": self.counted,
            "jobUID": self.job_uid,
        }
        if self.rank is not None:
            out["rank"] = self.rank
        if self.failure.pod:
            out["pod"] = self.failure.pod
        if self.failure.exit_code is not None:
            out["exitCode"] = self.failure.exit_code
        return out


@dataclass(frozen=True)
class GangVerdict:
    """What a failed multi-rank Job means: restart (with the counts after it), or fail for good."""

    culprit: RankFailure
    restart: bool
    # Counted restarts (status.retries) and all restarts (status.restarts), this one included.
    retries: int
    restarts: int
    # True when the status already records this Job's restart (a later reconcile of the same failure).
    recorded: bool
    # The rank to blame is known: it ended on its own, or every rank has stopped (the Job is Failed).
    # Until then only ranks that another rank ended have finished: nothing is counted or recorded yet.
    settled: bool = True


def rank_of(pod: dict[str, Any]) -> int | None:
    labels = pod["metadata"].get("labels") or {}
    annotations = pod["metadata"].get("annotations") or {}
    index = labels.get(COMPLETION_INDEX_LABEL) or annotations.get(COMPLETION_INDEX_LABEL)
    return int(index) if index is not None and str(index).isdigit() else None


def _named_by_job(job: dict[str, Any]) -> str | None:
    """The pod the Job controller named when a FailJob rule matched, if any."""
    condition = job_condition(job, "FailureTarget") or job_condition(job, "Failed") or {}
    match = _POLICY_POD.search(condition.get("message") or "")
    return match.group(2) if match else None


def _failure_named_by_job(job: dict[str, Any]) -> RankFailure | None:
    """The rank to blame from the Job's own failure message, when its pods are gone (the Job controller
    releases a counted pod, and a deleted pod then disappears at once)."""
    condition = job_condition(job, "FailureTarget") or job_condition(job, "Failed") or {}
    message = condition.get("message") or ""
    pod = _POLICY_POD.search(message)
    if pod is None:
        return None
    name = pod.group(2)
    index = _INDEXED_POD.search(name)
    exit_match = _POLICY_EXIT.search(message)
    exit_code = int(exit_match.group(1)) if exit_match else None
    disruption = "DisruptionTarget" in message
    if disruption:
        reason = r.PREEMPTED
    elif exit_code == _SIGTERM_EXIT:
        reason = r.STOPPED
    else:
        reason = r.EXIT_CODE_REASONS.get(exit_code, r.TRAINER_CRASHED)
    hint = r.FAILURE_HINTS.get(reason)
    failure = Failure(reason, f"{message}; {hint}" if hint else message, exit_code, name)
    rank = int(index.group(1)) if index else None
    return RankFailure(rank, failure, not disruption, job["metadata"].get("uid", ""))


def first_failed_rank(job: dict[str, Any], pods: list[dict[str, Any]]) -> RankFailure | None:
    """The rank whose end ended this attempt: the first to end on its own, else the first to end (else the
    one the Job's failure names, when the failed pods are gone)."""
    failed = [p for p in pods if (p.get("status") or {}).get("phase") == "Failed"]
    if not failed:
        return _failure_named_by_job(job)
    own = [p for p in failed if reported_reason(p) not in r.FOLLOWER_REASONS] or failed
    named = _named_by_job(job)

    def order(pod: dict[str, Any]) -> tuple[str, bool, int]:
        # finishedAt has whole seconds: within one, trust the pod the Job controller saw first.
        rank = rank_of(pod)
        return (finished_at(pod) or "~", pod["metadata"]["name"] != named, rank if rank is not None else 1 << 30)

    pod = min(own, key=order)
    follower = reported_reason(pod) in r.FOLLOWER_REASONS
    return RankFailure(rank_of(pod), pod_failure(pod), not disrupted(pod), job["metadata"].get("uid", ""), follower)


def gang_verdict(
    spec: FineTuneJobSpec, previous: dict[str, Any], job: dict[str, Any], pods: list[dict[str, Any]]
) -> GangVerdict | None:
    """For a multi-rank job whose Job failed: restart its gang, or fail. None when this is not such a job,
    or when the Job failed as a whole (its deadline) rather than through a rank."""
    if spec.resources.nodes <= 1:
        return None
    condition = job_condition(job, "FailureTarget") or job_condition(job, "Failed")
    if condition is None or condition.get("reason") == "DeadlineExceeded":
        return None
    culprit = first_failed_rank(job, pods)
    if culprit is None:
        return None
    retries, restarts = int(previous.get("retries") or 0), int(previous.get("restarts") or 0)
    recorded = (previous.get("lastRestart") or {}).get("jobUID") == culprit.job_uid
    settled = recorded or not culprit.follower or job_condition(job, "Failed") is not None
    counted = int(culprit.counted)
    retries_before = retries - counted if recorded else retries
    restart = culprit.failure.reason not in FINAL_REASONS and (
        not culprit.counted or retries_before < spec.run_policy.backoff_limit
    )
    if restart and settled and not recorded:
        retries, restarts = retries + counted, restarts + 1
    return GangVerdict(culprit, restart, retries, restarts, recorded, settled)


def restart_message(verdict: GangVerdict, spec: FineTuneJobSpec) -> str:
    """The status message while a gang restarts."""
    culprit = verdict.culprit
    nodes = spec.resources.nodes
    budget = (
        f"retry {verdict.retries} of {spec.run_policy.backoff_limit}"
        if culprit.counted
        else "not counted against runPolicy.backoffLimit"
    )
    return (
        f"{culprit.summary()}; restarting all {nodes} ranks from the newest checkpoint ({budget}): "
        f"{culprit.failure.message}"
    )


def stopping_message(verdict: GangVerdict, spec: FineTuneJobSpec) -> str:
    """The status message while the ranks stop and the one to blame is not known yet."""
    culprit = verdict.culprit
    return (
        f"{culprit.summary()}, ended by another rank; waiting for all {spec.resources.nodes} ranks to stop "
        f"before restarting them from the newest checkpoint"
    )


def final_message(verdict: GangVerdict, spec: FineTuneJobSpec) -> str:
    """The status message of a multi-rank job that will not restart."""
    culprit = verdict.culprit
    if culprit.failure.reason in FINAL_REASONS:
        return culprit.failure.message  # the trainer's own words; status.failure.pod names the pod
    limit = spec.run_policy.backoff_limit
    return (
        f"{culprit.summary()}; no retries left (runPolicy.backoffLimit: {limit}, "
        f"{verdict.restarts} restarts so far): {culprit.failure.message}"
    )
